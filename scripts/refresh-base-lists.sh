#!/usr/bin/env bash
# Gives the test hosts' image (localhost/infra-obs-base:latest) today's package lists, as a layer of its own made
# once a day over scripts/build-base-image.sh's image: once the image's lists are a day old, every fresh host's
# first apt task (cache_valid_time: a day) fetches them again, in every scenario and stage. The layer also holds
# apt's binary caches, which each host would otherwise rebuild. Images built from the base (the MM2 image) keep the
# recipe's image, so they are not rebuilt daily. Without the network the recipe's image serves as it is, and the
# hosts refresh their lists as before. Prints the image :latest names.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

base=$("$REPO_ROOT/scripts/build-base-image.sh")
lists="$base-lists-$(date -u +%Y%m%d)"
if ! podman image exists "$lists"; then
  container=$(podman create "$base" apt-get update -qq)
  if podman start -a "$container" >/dev/null; then
    podman commit -q --change 'CMD ["/sbin/init"]' "$container" "$lists" >/dev/null
    # Earlier days' layers of the same recipe.
    podman images --format '{{.Repository}}:{{.Tag}}' | grep -F "$base-lists-" | grep -vxF "$lists" |
      xargs -r podman rmi >/dev/null || true
  else
    log "could not refresh the package lists: the test hosts use $base as it is"
    lists=$base
  fi
  podman rm "$container" >/dev/null
fi
podman tag "$lists" localhost/infra-obs-base:latest
echo "$lists"
