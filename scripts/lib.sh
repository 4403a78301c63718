# Shared shell helpers for the set-up and lab scripts. Sourced, not run.
# Everything built or fetched lives under one fixed cache directory so CI and later runs reuse it.
INFRA_OBS_CACHE=${INFRA_OBS_CACHE:-/var/cache/infra-obs}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Where scripts/install-collection.sh installs the built collection: per checkout, and outside any git work tree
# (ansible-test reads the file list from git, and .lab/ is ignored, so it would test nothing there).
INFRA_OBS_COLLECTION=${INFRA_OBS_COLLECTION:-/tmp/infra-obs-collection-$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-12)}
export INFRA_OBS_CACHE REPO_ROOT INFRA_OBS_COLLECTION

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# lab_var NAME: a value from inventories/lab/group_vars/all/versions.yml (simple `key: "value"` lines).
lab_var() {
  local value
  value=$(sed -n "s/^$1: *\"\{0,1\}\([^\"]*\)\"\{0,1\} *$/\1/p" "$REPO_ROOT/inventories/lab/group_vars/all/versions.yml")
  [[ -n $value ]] || die "no $1 in inventories/lab/group_vars/all/versions.yml"
  printf '%s' "$value"
}
