#!/usr/bin/env bash
# scripts/build-wheelhouse.sh probe|cost: packs one of our host packages with the wheels of its dependencies (and of
# its extra), pinned by constraints.txt, into infra-obs-PACKAGE-VERSION.tar.gz for the mirror: hosts install it into
# a virtualenv without reaching PyPI.
#   probe: infra-obs-probe, the probe exporter and quality checker, with its grpc extra (the checker's gRPC checks)
#   cost:  infra-obs-cost, the cost collector, with its cloudwatch extra (the direct mode), and infra-obs-probe, whose
#          config grammar and Consul registration it shares
# pip's own wheel rides along as bootstrap/pip.whl (outside the find-links directory), so a host needs neither
# python3-venv nor ensurepip: the role makes the virtualenv --without-pip and runs pip from it. Rebuilt when the
# packages' sources or this recipe change; reproducible (fixed mtimes), so the same sources give the same sum.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

package=${1:-}
case $package in
  probe) extra=grpc; with=() ;;
  cost) extra=cloudwatch; with=(probe) ;;
  *) die "usage: scripts/build-wheelhouse.sh probe|cost" ;;
esac
module=infra_obs_$package
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$REPO_ROOT/$package/src/$module/__init__.py")
[[ -n $version ]] || die "$package/src/$module/__init__.py: no __version__"
name="infra-obs-$package-$version"
out="$INFRA_OBS_CACHE/artifacts/$package/$name.tar.gz"
# Outside artifacts/: the store serves everything in there.
stamp="$INFRA_OBS_CACHE/$package-wheelhouse.sources"
sources=$( (cat "$0" "$REPO_ROOT/constraints.txt"; cd "$REPO_ROOT" && for dir in "$package" "${with[@]}"; do
  find "$dir/pyproject.toml" "$dir/README.md" "$dir/src" -type f ! -name '*.pyc' -print0; done |
  sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)
artefact_fresh "$out" "$stamp" "$sources" && exit 0

log "packing $name with its dependencies"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Packages are built from copies: setuptools writes build/ and *.egg-info/ next to their sources.
targets=()
for dir in "$package" "${with[@]}"; do
  cp -r "$REPO_ROOT/$dir" "$work/$dir"
  rm -rf "$work/$dir/build" "$work/$dir/src/"*.egg-info
  targets+=("$work/$dir")
done
targets[0]="${targets[0]}[$extra]"
export SOURCE_DATE_EPOCH=315532800 PIP_DISABLE_PIP_VERSION_CHECK=1
"$INFRA_OBS_CACHE/venv/bin/pip" wheel --quiet --wheel-dir "$work/$name" \
  --constraint "$REPO_ROOT/constraints.txt" "${targets[@]}"
echo "infra-obs-$package==$version" >"$work/$name/requirements.txt"
"$INFRA_OBS_CACHE/venv/bin/pip" download --quiet --no-deps --dest "$work/bootstrap" \
  --constraint "$REPO_ROOT/constraints.txt" pip
mkdir "$work/$name/bootstrap"
mv "$work/bootstrap/"pip-*.whl "$work/$name/bootstrap/pip.whl"
pack_release "$work" "$name" "$out"
artefact_stamp "$stamp" "$sources"
