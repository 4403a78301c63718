#!/usr/bin/env bash
# ssh's ProxyCommand for the lab's containers (molecule's and `make demo`'s): `podman exec` starts an sshd for this
# one connection inside the container, speaking SSH over stdin/stdout (sshd -i), so no address or port is needed and
# nothing listens. Everything it needs is under /run/infra-obs-ssh, apart from the container's own ssh set-up (whose
# host keys a fresh container makes only once systemd has booted): the lab's key (scripts/setup-host.sh) as the
# only authorised one, and a host key made on the first connection (renamed into place, so that two first
# connections cannot clash). Written under umask 077 in a subshell: the sessions keep the container's umask, or
# every directory Ansible creates without a mode would be private. /run/sshd is sshd's privilege separation
# directory. Ansible keeps the connection open (ControlPersist) and pipelines modules over it: one round trip per
# task instead of the podman connection's four `podman exec` calls.
#   ssh -o ProxyCommand='scripts/lab-ssh-proxy.sh %h' -i $INFRA_OBS_CACHE/ssh/id_ed25519 root@CONTAINER
set -euo pipefail
container=${1:?usage: lab-ssh-proxy.sh CONTAINER}
key=$(cat "${INFRA_OBS_CACHE:-/var/cache/infra-obs}/ssh/id_ed25519.pub")
# shellcheck disable=SC2016 # expanded by the container's shell
exec podman --log-level=error exec -i -e "INFRA_OBS_LAB_KEY=$key" "$container" /bin/sh -c '
  dir=/run/infra-obs-ssh
  (umask 077 && mkdir -p $dir && printf "%s\n" "$INFRA_OBS_LAB_KEY" > $dir/authorized_keys &&
    if [ ! -e $dir/host_key ]; then
      ssh-keygen -q -t ed25519 -N "" -C "" -f $dir/host_key.$$ < /dev/null > /dev/null &&
        mv -f $dir/host_key.$$ $dir/host_key && rm -f $dir/host_key.$$.pub
    fi) &&
  mkdir -p /run/sshd &&
  exec /usr/sbin/sshd -i -h $dir/host_key -o AuthorizedKeysFile=$dir/authorized_keys -o LogLevel=ERROR'
