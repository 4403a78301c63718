#!/usr/bin/env bash
# Grafana's dashboard model as JSON Schema, for validating our dashboards without a Grafana server: the Dashboard
# type of npm's @grafana/schema (checksummed), converted by ts-json-schema-generator. Idempotent and cached.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

version=$(lab_var grafana_schema_version)
dir="$INFRA_OBS_CACHE/grafana"
schema="$dir/dashboard-$version.schema.json"
if [[ -s $schema ]]; then
  echo "$schema"
  exit 0
fi
command -v npm >/dev/null || die "npm is missing (scripts/setup-host.sh installs it)"
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "grafana: fetching @grafana/schema $version and ts-json-schema-generator $(lab_var ts_json_schema_generator_version)"
(cd "$work" && npm pack --silent "@grafana/schema@$version" >/dev/null)
tarball="$work/grafana-schema-$version.tgz"
echo "$(lab_var grafana_schema_sha256)  $tarball" | sha256sum --check --quiet ||
  die "@grafana/schema $version: sha256 differs from grafana_schema_sha256 in versions.yml"
tar -xzf "$tarball" -C "$work" package/dist/types/raw/dashboard/x/types.gen.d.ts
npm install --silent --no-audit --no-fund --prefix "$dir/tools" \
  "ts-json-schema-generator@$(lab_var ts_json_schema_generator_version)" >/dev/null
"$dir/tools/node_modules/.bin/ts-json-schema-generator" --no-type-check --type Dashboard \
  --path "$work/package/dist/types/raw/dashboard/x/types.gen.d.ts" -o "$schema.tmp"
mv "$schema.tmp" "$schema"
echo "$schema"
