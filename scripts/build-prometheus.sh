#!/usr/bin/env bash
# Builds Prometheus + promtool from the Go module proxy (Debian's packages lack consul_sd_configs) and packs
# them in the shape of an upstream release tarball, so roles install the lab's build exactly as they would
# install prometheus-VERSION.linux-amd64.tar.gz from an internal mirror. Cached by version.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
PROMETHEUS_VERSION=$(lab_var prometheus_version)
PROMETHEUS_MODULE_VERSION=$(lab_var prometheus_module_version)

name="prometheus-${PROMETHEUS_VERSION}.linux-amd64"
out="$INFRA_OBS_CACHE/artifacts/prometheus/$name.tar.gz"
if [[ -f $out && -f $out.sha256 ]]; then
  exit 0
fi

go_env
module=github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION
log "building Prometheus $PROMETHEUS_VERSION ($module); first build takes several minutes"
src=$(cd /tmp && go mod download -json "$module" | jq -r .Dir)
[[ -d $src ]] || die "go mod download $module gave no source directory"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage="$work/$name"
mkdir -p "$stage"
# Only the discoveries we use: Consul for services, file for static lists. Shortens the build by minutes.
tags="remove_all_sd,enable_consul_sd,enable_file_sd"
ldflags=$(version_ldflags "$PROMETHEUS_VERSION" "$PROMETHEUS_MODULE_VERSION")
(cd "$src" && go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$stage/" ./cmd/prometheus ./cmd/promtool)
cp "$src/LICENSE" "$src/NOTICE" "$stage/"
"$stage/prometheus" --version >/dev/null || die "built prometheus does not run"

pack_release "$work" "$name" "$out"
