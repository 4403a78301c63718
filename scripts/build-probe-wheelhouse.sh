#!/usr/bin/env bash
# Packs our probe exporter and quality checker (probe/) with the wheels of its dependencies (its grpc extra's too),
# pinned by constraints.txt, into infra-obs-probe-VERSION.tar.gz for the mirror: hosts install it into a virtualenv
# without reaching PyPI. pip's own wheel rides along as bootstrap/pip.whl (outside the find-links directory), so a
# host needs neither python3-venv nor ensurepip: the role makes the virtualenv --without-pip and runs pip from it.
# Rebuilt when the package's sources or this recipe change; reproducible (fixed mtimes), so the same sources give the
# same sum.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$REPO_ROOT/probe/src/infra_obs_probe/__init__.py")
[[ -n $version ]] || die "probe/src/infra_obs_probe/__init__.py: no __version__"
name="infra-obs-probe-$version"
out="$INFRA_OBS_CACHE/artifacts/probe/$name.tar.gz"
# Outside artifacts/: the store serves everything in there.
stamp="$INFRA_OBS_CACHE/probe-wheelhouse.sources"
sources=$( (cat "$0" "$REPO_ROOT/constraints.txt"; cd "$REPO_ROOT/probe" &&
  find pyproject.toml src -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)
if [[ -f $out && -f $out.sha256 && "$(cat "$stamp" 2>/dev/null)" == "$sources" ]]; then
  exit 0
fi

log "packing $name with its dependencies"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The package is built from a copy: setuptools writes build/ and *.egg-info/ next to its sources.
cp -r "$REPO_ROOT/probe" "$work/src"
rm -rf "$work/src/build" "$work/src/src/"*.egg-info
export SOURCE_DATE_EPOCH=315532800 PIP_DISABLE_PIP_VERSION_CHECK=1
"$INFRA_OBS_CACHE/venv/bin/pip" wheel --quiet --wheel-dir "$work/$name" \
  --constraint "$REPO_ROOT/constraints.txt" "$work/src[grpc]"
echo "infra-obs-probe==$version" >"$work/$name/requirements.txt"
"$INFRA_OBS_CACHE/venv/bin/pip" download --quiet --no-deps --dest "$work/bootstrap" \
  --constraint "$REPO_ROOT/constraints.txt" pip
mkdir "$work/$name/bootstrap"
mv "$work/bootstrap/"pip-*.whl "$work/$name/bootstrap/pip.whl"
mkdir -p "$(dirname "$out")"
tar -C "$work" --sort=name --owner=0 --group=0 --mtime=@0 -c "$name" | gzip -n >"$out.tmp"
mv "$out.tmp" "$out"
(cd "$(dirname "$out")" && sha256sum "$(basename "$out")" >"$(basename "$out").sha256")
echo "$sources" >"$stamp"
log "built $out"
