#!/usr/bin/env bash
# Builds the collection's tarball (what a release ships) and installs it, as a user would, into DEST (default
# $INFRA_OBS_COLLECTION, see lib.sh): DEST/infra-obs-VERSION.tar.gz, DEST/ansible_collections/infra/obs and DEST/ansible.cfg, a config
# whose only collection path is DEST (the collections the `ansible` package bundles are found as always).
# Prints DEST. The tests, ansible-test sanity and the molecule scenario `mm2` use the installed tree, not the checkout.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

dest=$(realpath -m "${1:-$INFRA_OBS_COLLECTION}")
rm -rf "$dest"
mkdir -p "$dest"
printf '[defaults]\ncollections_path = %s\n' "$dest" >"$dest/ansible.cfg"
# Outside the checkout and with that config: the repository's ansible.cfg would show the checkout's collection as
# already installed, and the install would do nothing.
export ANSIBLE_CONFIG=$dest/ansible.cfg
cd "$dest"
ansible-galaxy collection build --output-path "$dest" "$REPO_ROOT/collections/ansible_collections/infra/obs" >/dev/null
ansible-galaxy collection install --offline -p "$dest" "$dest"/infra-obs-*.tar.gz >/dev/null
[[ -f $dest/ansible_collections/infra/obs/MANIFEST.json ]] || die "the collection did not install into $dest"
echo "$dest"
