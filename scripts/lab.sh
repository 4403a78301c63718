#!/usr/bin/env bash
# The lab's hosts: one podman container with systemd per host of inventories/lab (named by its ansible_host),
# on a network of their own with an IPv6 ULA subnet.
#   lab.sh up      remove stale lab containers, then create every host
#   lab.sh down    remove the lab's containers and network
#   lab.sh clean PREFIX   remove containers and networks whose names start with PREFIX
set -euo pipefail
source "$(dirname "$0")/lib.sh"

network=infraobs-lab-net
prefix=infraobs-lab-

clean() {
  local names
  names=$(podman ps -a --format '{{.Names}}' | grep "^$1" || true)
  if [[ -n $names ]]; then
    log "removing containers: $(echo $names)"
    # A container whose conmon was killed (e.g. with the shell that started it) fails the first removal while
    # podman times out waiting for its exit file and marks it exited; the second removal then succeeds.
    podman rm -f -i -t 2 $names >/dev/null || podman rm -f -i -t 2 $names >/dev/null
  fi
  names=$(podman volume ls --format '{{.Name}}' | grep "^$1" || true)
  if [[ -n $names ]]; then
    log "removing volumes: $(echo $names)"
    # After a reboot podman may have lost a volume's lock ("freeing lock ... no such file or directory"): it removes
    # the volume all the same and fails; only a volume still listed is an error.
    podman volume rm -f $names >/dev/null || ! podman volume ls --format '{{.Name}}' | grep "^$1"
  fi
  names=$(podman network ls --format '{{.Name}}' | grep "^$1" || true)
  [[ -z $names ]] || { log "removing networks: $(echo $names)"; podman network rm -f $names >/dev/null; }
}

# One line per host: container name, IPv4, IPv6, inventory name, whether it runs containers itself.
hosts() {
  "$INFRA_OBS_CACHE/venv/bin/ansible-inventory" -i "$REPO_ROOT/inventories/lab/hosts.yml" --list |
    jq -r '._meta.hostvars | to_entries[] |
      "\(.value.ansible_host) \(.value.lab_ipv4) \(.value.lab_ipv6) \(.key) \(.value.lab_nested_containers // false)"'
}

containers() { hosts | cut -d' ' -f1; }

# The lab's AWS for YACE (playbooks/cost.yml): moto, seeded, on the network's gateway (the one address of this
# machine the hosts reach, and only once a container is on the network), at the inventory's lab_aws_port. Its pid file is the one the lab's group_vars name.
lab_aws() {  # lab_aws up|down
  local script=("$INFRA_OBS_CACHE/venv/bin/python" "$REPO_ROOT/scripts/lab_aws.py") pidfile="$INFRA_OBS_CACHE/run/lab-aws-lab.pid"
  "${script[@]}" down --pidfile "$pidfile"
  [[ $1 == up ]] || return 0
  local gateway port endpoint
  gateway=$(podman network inspect "$network" --format '{{range .Subnets}}{{.Gateway}} {{end}}' | tr ' ' '\n' | grep -m1 '^[0-9.]\+$')
  port=$("$INFRA_OBS_CACHE/venv/bin/ansible-inventory" -i "$REPO_ROOT/inventories/lab/hosts.yml" --host mon | jq -r .lab_aws_port)
  endpoint=$("${script[@]}" up --host "$gateway" --port "$port" --pidfile "$pidfile")
  log "the lab's AWS: $endpoint"
}

up() {
  local image
  image=$("$REPO_ROOT/scripts/refresh-base-lists.sh")
  clean "$prefix"
  podman network create --ipv6 --subnet 10.89.60.0/24 --subnet fd00:89:60::/64 "$network" >/dev/null
  while read -r name ipv4 ipv6 host nested; do
    # A new container is a new machine: facts cached for its predecessor (ansible.cfg) would mislead the roles.
    # (ansible-core 2.19 names the files <schema>_<host>, e.g. s1_mon.)
    rm -f "$HOME/.cache/infra-obs/facts/$host" "$HOME/.cache/infra-obs/facts/"*_"$host"
    # A host that runs containers (the MM2 host) needs privileges, the host's cgroups and, for overlay storage, a
    # volume that is not itself on overlayfs (LAB.md's nested-podman recipe).
    nesting=()
    if [[ $nested == true ]]; then
      podman volume rm -f "$name-storage" >/dev/null 2>&1 || true
      nesting=(--privileged --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw -v "$name-storage:/var/lib/containers")
    fi
    podman run -d --name "$name" --hostname "${name#"$prefix"}" --network "$network" --ip "$ipv4" --ip6 "$ipv6" \
      --systemd=always --cap-add NET_ADMIN,NET_RAW "${nesting[@]}" "$image" /sbin/init >/dev/null
  done < <(hosts)
  for name in $(containers); do
    for _ in $(seq 50); do
      state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
      [[ $state == running || $state == degraded ]] && break
      sleep 0.2
    done
  done
  log "lab hosts up: $(containers | tr '\n' ' ')"
  # Once a host runs: podman gives this machine the gateway's address with the network's first container.
  lab_aws up
}

case ${1:-} in
  up) up ;;
  down) lab_aws down; clean "$prefix" ;;
  clean) clean "${2:?prefix}" ;;
  *) die "usage: lab.sh up|down|clean PREFIX" ;;
esac
