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

# pack_release DIR NAME OUT: DIR/NAME packed into the tarball OUT reproducibly (sorted, owner 0, time 0, gzip without
# a name or time), with OUT.sha256 beside it, as the artefact store serves every release.
pack_release() {
  local dir=$1 name=$2 out=$3
  mkdir -p "$(dirname "$out")"
  tar -C "$dir" --sort=name --owner=0 --group=0 --mtime=@0 -c "$name" | gzip -n >"$out.tmp"
  mv "$out.tmp" "$out"
  (cd "$(dirname "$out")" && sha256sum "$(basename "$out")" >"$(basename "$out").sha256")
  log "built $out"
}

# artefact_fresh OUT STAMP KEY: OUT and OUT.sha256 are in the cache and STAMP holds KEY, the hash of what they were
# made from (stamps live outside artifacts/, which the store serves whole). artefact_stamp STAMP KEY records it, last,
# so an interrupted build is redone rather than trusted.
artefact_fresh() {
  [[ -f $1 && -f $1.sha256 && $(cat "$2" 2>/dev/null) == "$3" ]]
}
artefact_stamp() {
  mkdir -p "$(dirname "$1")"
  echo "$2" >"$1"
}

# controller_binary TARBALL MEMBER NAME VERSION: the tarball's MEMBER as $INFRA_OBS_CACHE/bin/NAME-VERSION, linked as
# NAME: the same binary the hosts run, for the tests on the controller.
controller_binary() {
  local tarball=$1 member=$2 name=$3 version=$4 bin="$INFRA_OBS_CACHE/bin"
  if [[ ! -x $bin/$name-$version ]]; then
    mkdir -p "$bin"
    tar -xzf "$tarball" -O "$member" >"$bin/$name-$version.tmp"
    chmod 0755 "$bin/$name-$version.tmp"
    mv "$bin/$name-$version.tmp" "$bin/$name-$version"
  fi
  ln -sfn "$name-$version" "$bin/$name"
}

# version_ldflags VERSION REVISION: the linker flags of our Go builds of Prometheus-ecosystem programs: stripped, and
# the version `--version` prints stamped into prometheus/common's version package.
version_ldflags() {
  local package=github.com/prometheus/common/version
  echo "-s -w -X $package.Version=$1 -X $package.Branch=module -X $package.Revision=$2"
}

# go_env: the Go settings of every build from the module proxy (module and build caches under the fixed cache).
go_env() {
  export GOMODCACHE="$INFRA_OBS_CACHE/go/mod" GOCACHE="$INFRA_OBS_CACHE/go/build" GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0
}

# module_source MODULE@VERSION DEST: that one version from the Go module proxy, copied writable to DEST (the module
# cache is read-only). Builds run inside it: `go install module@version` reads the module's version list, which the
# proxy refuses for some modules, and refuses modules with replace directives.
module_source() {
  local module=$1 dest=$2 src
  src=$(cd /tmp && go mod download -json "$module" | jq -r .Dir)
  [[ -d $src ]] || die "go mod download $module gave no source directory"
  cp -R "$src" "$dest"
  chmod -R u+w "$dest"
}

# npm_pinned PINS DIR: `npm ci` of PINS's package.json and package-lock.json (the lock's integrity hashes are our
# checksums) into DIR, skipped when that lock is already installed there. Installed beside, then moved in place, so
# an interrupted install is never taken for a complete one.
npm_pinned() {
  local pins=$1 dir=$2 key stage
  command -v npm >/dev/null || die "npm not found: scripts/setup-host.sh installs it"
  key=$(cat "$pins/package.json" "$pins/package-lock.json" | sha256sum | cut -c1-12)
  [[ $(cat "$dir/.installed" 2>/dev/null) == "$key" ]] && return 0
  log "installing $pins's packages into $dir"
  stage="$dir.tmp.$$"
  rm -rf "$stage"
  mkdir -p "$stage"
  cp "$pins/package.json" "$pins/package-lock.json" "$stage/"
  npm ci --prefix "$stage" --ignore-scripts --no-audit --no-fund --loglevel=error >&2
  echo "$key" >"$stage/.installed"
  rm -rf "$dir"
  mv "$stage" "$dir"
}
