#!/usr/bin/env bash
# Creates the controller's virtualenv under the cache, keyed by the hash of the pinned requirements, so a
# clean clone reuses it and a changed pin builds a new one. Prints the venv path.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

key=$(cat "$REPO_ROOT/requirements.txt" "$REPO_ROOT/constraints.txt" | sha256sum | cut -c1-12)
venv="$INFRA_OBS_CACHE/venv-$key"
if [[ ! -f $venv/.complete ]]; then
  log "creating $venv"
  rm -rf "$venv"
  python3.11 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r "$REPO_ROOT/requirements.txt" -c "$REPO_ROOT/constraints.txt"
  touch "$venv/.complete"
fi
ln -sfn "$venv" "$INFRA_OBS_CACHE/venv"
echo "$venv"
