#!/usr/bin/env bash
# Builds Alertmanager and amtool (Apache-2.0) from the Go module proxy and packs them in the shape of an upstream
# release tarball (alertmanager-VERSION.linux-amd64/{alertmanager,amtool,LICENSE,NOTICE}), so the alertmanager role
# installs the lab's build as it would the release from an internal mirror. Cached by version. Also puts both
# binaries on the controller ($INFRA_OBS_CACHE/bin) for the tests.
#
# Why 0.31.1: its web UI is in the module as generated Go (asset/assets_vfsdata.go), so the Go build alone gives a
# complete Alertmanager. From 0.32 the UI is embedded from ui/app/dist, which the module does not hold: it would need
# the Elm UI built with npm first. Debian bookworm's 0.25 predates the UTF-8 matchers and the v2-only API.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ALERTMANAGER_VERSION=$(lab_var alertmanager_version)

name="alertmanager-${ALERTMANAGER_VERSION}.linux-amd64"
out="$INFRA_OBS_CACHE/artifacts/alertmanager/$name.tar.gz"

if [[ ! -f $out || ! -f $out.sha256 ]]; then
  go_env
  module=github.com/prometheus/alertmanager@v$ALERTMANAGER_VERSION
  log "building Alertmanager $ALERTMANAGER_VERSION ($module)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  module_source "$module" "$work/src"
  stage="$work/$name"
  mkdir -p "$stage"
  ldflags=$(version_ldflags "$ALERTMANAGER_VERSION" "v$ALERTMANAGER_VERSION")
  for binary in alertmanager amtool; do
    # Upstream's release tags (.promu.yml).
    (cd "$work/src" && go build -trimpath -tags netgo -ldflags "$ldflags" -o "$stage/$binary" "./cmd/$binary")
    "$stage/$binary" --version >/dev/null 2>&1 || die "built $binary does not run"
  done
  cp "$work/src/LICENSE" "$work/src/NOTICE" "$stage/"
  pack_release "$work" "$name" "$out"
fi

controller_binary "$out" "$name/alertmanager" alertmanager "$ALERTMANAGER_VERSION"
controller_binary "$out" "$name/amtool" amtool "$ALERTMANAGER_VERSION"
