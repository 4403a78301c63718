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
  "$venv/bin/pip" install -q --upgrade pip -c "$REPO_ROOT/constraints.txt"
  "$venv/bin/pip" install -q -r "$REPO_ROOT/requirements.txt" -c "$REPO_ROOT/constraints.txt"
  touch "$venv/.complete"
fi
ln -sfn "$venv" "$INFRA_OBS_CACHE/venv"

# `ansible-test sanity --venv` bootstraps pip with a script from a host out of reach: give it ours.
pip_version=$(sed -n "s/^ *pip='\([0-9.]*\)',$/\1/p" "$venv"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)
[[ -n $pip_version ]] || die "cannot find the pip version ansible-test bootstraps"
bootstrap="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
mkdir -p "$(dirname "$bootstrap")"
cmp -s "$REPO_ROOT/scripts/ansible_test_get_pip.py" "$bootstrap" || cp "$REPO_ROOT/scripts/ansible_test_get_pip.py" "$bootstrap"
echo "$venv"
