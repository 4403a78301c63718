#!/usr/bin/env bash
# Installs the Debian packages the controller needs and makes rootful podman work on this kind of machine.
# Idempotent: installs only what is missing and rewrites containers.conf only when it differs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# netavark + aardvark-dns give lab networks DNS, so hosts find each other by container name.
# nginx: the whitelist tests run the real thing on loopback, with their own config (no service is started).
# iproute2, procps: tests/probe makes network namespaces (ip netns) and sets sysctls in them.
# wrk: the whitelist benchmark's load generator. chromium: the probe matrix page's browser test (Playwright).
# openjdk-17-jre-headless, maven: Kafka and MirrorMaker 2 from Maven Central's jars (scripts/fetch-kafka.sh).
# openssh-client: Ansible reaches the lab's containers over SSH (scripts/lab-ssh-proxy.sh).
# openssl (with the JRE's keytool): the CA, keys and stores of the SCRAM-over-TLS Kafka tests.
# mariadb-server: the cost collector's tests run the real server on loopback, with a data directory of their own.
packages=(podman runc netavark aardvark-dns debootstrap uidmap iptables curl ca-certificates jq git make nginx libnginx-mod-stream
  iproute2 procps wrk chromium openjdk-17-jre-headless maven openssh-client openssl mariadb-server)
# npm fetches Grafana's dashboard schema; machines of this kind come with Node.js 20, Debian's is the fallback.
command -v npm >/dev/null || packages+=(nodejs npm)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# crun cannot run here (cgroups in hybrid mode) and raising RLIMIT_NOFILE is refused: use runc, keep ulimits.
conf=/etc/containers/containers.conf
want=$'[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n[network]\nnetwork_backend = "netavark"\n'
if [[ ! -f $conf ]] || [[ "$(cat "$conf")"$'\n' != "$want" ]]; then
  log "podman: writing $conf"
  mkdir -p /etc/containers
  printf '%s' "$want" >"$conf"
fi

# The key Ansible logs in to the lab's containers with (scripts/lab-ssh-proxy.sh authorises it in each one).
if [[ ! -f $INFRA_OBS_CACHE/ssh/id_ed25519 ]]; then
  log "ssh: making the lab's key $INFRA_OBS_CACHE/ssh/id_ed25519"
  install -d -m 700 "$INFRA_OBS_CACHE/ssh"
  ssh-keygen -q -t ed25519 -N '' -C infra-obs-lab -f "$INFRA_OBS_CACHE/ssh/id_ed25519"
fi
# The pipeline's deploy key: the user `deploy` on the test hosts authorises it, and the pipeline reaches them with it
# over the network, as Jenkins reaches a fleet (docs/pipeline.md).
if [[ ! -f $INFRA_OBS_CACHE/ssh/deploy_ed25519 ]]; then
  log "ssh: making the pipeline's deploy key $INFRA_OBS_CACHE/ssh/deploy_ed25519"
  install -d -m 700 "$INFRA_OBS_CACHE/ssh"
  ssh-keygen -q -t ed25519 -N '' -C infra-obs-deploy -f "$INFRA_OBS_CACHE/ssh/deploy_ed25519"
fi
