#!/usr/bin/env bash
# Builds Thanos (Apache-2.0) from the Go module proxy and packs it in the shape of an upstream release tarball
# (thanos-VERSION.linux-amd64/{thanos,LICENSE}), so the thanos role installs the lab's build exactly as it would
# install the release from an internal mirror. Cached by version. Also puts the binary on the controller
# ($INFRA_OBS_CACHE/bin/thanos) for the tests.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
THANOS_VERSION=$(lab_var thanos_version)
# Thanos's go.mod asks for a newer Go than the machine's: the go command fetches this toolchain from the module
# proxy (the one newer toolchain served here) and checks it against the checksum database.
THANOS_GO_TOOLCHAIN=$(lab_var thanos_go_toolchain)

name="thanos-${THANOS_VERSION}.linux-amd64"
out="$INFRA_OBS_CACHE/artifacts/thanos/$name.tar.gz"

if [[ ! -f $out || ! -f $out.sha256 ]]; then
  go_env
  export GOTOOLCHAIN="$THANOS_GO_TOOLCHAIN"
  module=github.com/thanos-io/thanos@v$THANOS_VERSION
  log "building Thanos $THANOS_VERSION ($module, $THANOS_GO_TOOLCHAIN); the first build takes several minutes"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  module_source "$module" "$work/src"
  stage="$work/$name"
  mkdir -p "$stage"
  ldflags=$(version_ldflags "$THANOS_VERSION" "v$THANOS_VERSION")
  # The tags of upstream's release build (.promu.yml): slicelabels above all, without which Prometheus's default
  # label layout (stringlabels) meets Thanos's zero-copy protobuf casts and the store gateway panics on its first
  # Series call ("makeslice: len out of range", thanos-io/thanos#8543).
  (cd "$work/src" && go build -trimpath -tags netgo,slicelabels -ldflags "$ldflags" -o "$stage/thanos" ./cmd/thanos)
  cp "$work/src/LICENSE" "$stage/"
  "$stage/thanos" --version >/dev/null 2>&1 || die "built thanos does not run"

  pack_release "$work" "$name" "$out"
fi

# The same thanos as the hosts run, for the tests on the controller.
controller_binary "$out" "$name/thanos" thanos "$THANOS_VERSION"
