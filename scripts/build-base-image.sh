#!/usr/bin/env bash
# Builds the lab's test-host image (Debian 12 + systemd + sshd + python3) with debootstrap, since no image
# registry is reachable. Tagged with the hash of this recipe, so it is rebuilt only when the recipe changes.
# Prints the image name.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# python3-apt lets Ansible's apt module run without installing it on every host first.
include=python3,python3-apt,sudo,openssh-server,iproute2,iputils-ping,systemd,systemd-sysv,dbus,ca-certificates,curl,procps,iptables
tag=$( (cat "$0"; echo "$include") | sha256sum | cut -c1-12)
image="localhost/infra-obs-base:$tag"
if ! podman image exists "$image"; then
  rootfs=$(mktemp -d "$INFRA_OBS_CACHE/rootfs.XXXX")
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap bookworm into $rootfs (about a minute)"
  debootstrap --variant=minbase --include="$include" bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  # A host's identity must be its own: machine-id and ssh host keys are made at first boot, not baked in.
  : >"$rootfs/etc/machine-id"
  rm -f "$rootfs"/etc/ssh/ssh_host_*
  mkdir -p "$rootfs/etc/systemd/system/ssh.service.d"
  printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
    >"$rootfs/etc/systemd/system/ssh.service.d/keygen.conf"
  # Package lists stay: apt tasks with cache_valid_time refresh them once they are a day old.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' - "$image" >/dev/null
  podman tag "$image" localhost/infra-obs-base:latest
fi
echo "$image"
