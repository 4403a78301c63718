#!/usr/bin/env bash
# Builds YACE (yet-another-cloudwatch-exporter) from the Go module proxy and packs it in the shape of an upstream
# release tarball (promu's: yet-another-cloudwatch-exporter-VERSION.linux-amd64/{yace,LICENSE,NOTICE}), so the
# yace role installs the lab's build exactly as it would install the release from an internal mirror. Cached by
# version. Also puts the binary on the controller ($INFRA_OBS_CACHE/bin/yace) for the tests.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
YACE_VERSION=$(lab_var yace_version)
YACE_CLOUDWATCH_SDK_VERSION=$(lab_var yace_cloudwatch_sdk_version)

name="yet-another-cloudwatch-exporter-${YACE_VERSION}.linux-amd64"
out="$INFRA_OBS_CACHE/artifacts/yace/$name.tar.gz"

if [[ ! -f $out || ! -f $out.sha256 ]]; then
  go_env
  module=github.com/prometheus-community/yet-another-cloudwatch-exporter@v$YACE_VERSION
  log "building YACE $YACE_VERSION ($module, CloudWatch SDK $YACE_CLOUDWATCH_SDK_VERSION); takes several minutes"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  module_source "$module" "$work/src"
  # The pin: v0.67.0's CloudWatch SDK (v1.61) speaks the smithy RPC v2 CBOR protocol, which moto 5.2.5 (the newest
  # moto on PyPI, the lab's AWS) does not serve: ListMetrics answers 404 and YACE exports nothing. v1.52.8 still
  # speaks the query protocol that both moto and AWS serve; YACE's code builds against it unchanged.
  (
    cd "$work/src"
    go mod edit -replace "github.com/aws/aws-sdk-go-v2/service/cloudwatch=github.com/aws/aws-sdk-go-v2/service/cloudwatch@$YACE_CLOUDWATCH_SDK_VERSION"
    go mod tidy
  )

  stage="$work/$name"
  mkdir -p "$stage"
  ldflags=$(version_ldflags "$YACE_VERSION" "v$YACE_VERSION+cloudwatch-$YACE_CLOUDWATCH_SDK_VERSION")
  (cd "$work/src" && go build -trimpath -ldflags "$ldflags" -o "$stage/yace" ./cmd/yace)
  cp "$work/src/LICENSE" "$work/src/NOTICE" "$stage/"
  "$stage/yace" --version >/dev/null 2>&1 || die "built yace does not run"

  pack_release "$work" "$name" "$out"
fi

# The same yace as the hosts run, for the tests on the controller.
controller_binary "$out" "$name/yace" yace "$YACE_VERSION"
