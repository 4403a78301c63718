#!/usr/bin/env bash
# Builds Prometheus + promtool from the Go module proxy (Debian's packages lack consul_sd_configs), with its web UI
# (the module's web/ui sources built with pnpm, then compiled in with the builtinassets tag), and packs them in the
# shape of an upstream release tarball, so roles install the lab's build exactly as they would install
# prometheus-VERSION.linux-amd64.tar.gz from an internal mirror. Cached by version and by this script's text.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
PROMETHEUS_VERSION=$(lab_var prometheus_version)
PROMETHEUS_MODULE_VERSION=$(lab_var prometheus_module_version)

name="prometheus-${PROMETHEUS_VERSION}.linux-amd64"
out="$INFRA_OBS_CACHE/artifacts/prometheus/$name.tar.gz"
# A tarball of an earlier recipe (before the UI, say) is rebuilt.
stamp="$INFRA_OBS_CACHE/prometheus/.recipe-$PROMETHEUS_VERSION"
recipe=$(sha256sum <"$0" | cut -c1-16)
artefact_fresh "$out" "$stamp" "$recipe" && exit 0

go_env
module=github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION
log "building Prometheus $PROMETHEUS_VERSION ($module) with its web UI; the first build takes several minutes"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
module_source "$module" "$work/src"

# The UI, as upstream's `make assets assets-compress` builds it (only the current UI, not the old one behind
# --enable-feature=old-ui), with the Node.js its .nvmrc names, from the npm registry.
tools=$("$REPO_ROOT/scripts/setup-node-tools.sh")
ui="$work/src/web/ui"
# The registry here lacks @mantine/code-highlight 9.7.2, which the lockfile pins beside the other Mantine packages'
# 9.7.2, and has no 9.7.x of it: it moves to 9.8.1 alone (its peers ask for Mantine 9.8.1, but the UI does not type-
# check against core 9.8.1; only the code block's highlighting comes from it). Everything else stays as locked. pnpm
# re-resolves that one package; its age policy cannot check a version missing from the registry, hence off (9.8.1
# was published weeks before this build was written).
cat >>"$ui/pnpm-workspace.yaml" <<'YAML'
overrides:
  '@mantine/code-highlight': 9.8.1
YAML
sed -i 's/^minimumReleaseAge: .*/minimumReleaseAge: 0/' "$ui/pnpm-workspace.yaml"
(
  export PATH="$tools:$PATH" CI=""
  cd "$ui"
  pnpm install --no-frozen-lockfile --store-dir "$INFRA_OBS_CACHE/pnpm-store" --reporter=append-only >&2
  bash build_ui.sh --mantine-ui >&2
  cd "$work/src"
  bash scripts/compress_assets.sh >&2
)

stage="$work/$name"
mkdir -p "$stage"
# Only the discoveries we use: Consul for services, file for static lists. Shortens the build by minutes.
tags="remove_all_sd,enable_consul_sd,enable_file_sd,builtinassets"
ldflags=$(version_ldflags "$PROMETHEUS_VERSION" "$PROMETHEUS_MODULE_VERSION")
(cd "$work/src" && go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$stage/" ./cmd/prometheus ./cmd/promtool)
cp "$work/src/LICENSE" "$work/src/NOTICE" "$stage/"
"$stage/prometheus" --version >/dev/null || die "built prometheus does not run"

pack_release "$work" "$name" "$out"
artefact_stamp "$stamp" "$recipe"
