#!/usr/bin/env bash
# Puts Debian trixie's smokeping_prober (the newest packaged; bookworm ships 0.6.1) under the cache for
# bench/probe: $INFRA_OBS_CACHE/bin/smokeping_prober-<version>, plus a smokeping_prober-docs-<version>/ with
# the package's documentation. The .deb comes through fetch-deb.sh (private apt state, verified against the
# signed index, sha256 beside it). Idempotent; prints the binary's path on stdout.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# The Debian version in trixie (`apt-cache madison` with fetch-deb.sh's private apt state) and the upstream one.
deb_version="0.9.0-1+b5"
version=${deb_version%%-*}

bin="$INFRA_OBS_CACHE/bin"
target="$bin/smokeping_prober-$version"
docs="$bin/smokeping_prober-docs-$version"
if [[ ! -x $target || ! -d $docs ]]; then
  "$REPO_ROOT/scripts/fetch-deb.sh" trixie prometheus-smokeping-prober "$deb_version"
  deb="$INFRA_OBS_CACHE/artifacts/debian/prometheus-smokeping-prober_${deb_version//:/%3a}_amd64.deb"
  (cd "$(dirname "$deb")" && sha256sum --quiet -c "$(basename "$deb").sha256") || die "$deb does not match its sha256"
  mkdir -p "$bin"
  tmp=$(mktemp -d "$bin/.smokeping_prober.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  dpkg-deb -x "$deb" "$tmp"
  [[ -x $tmp/usr/bin/prometheus-smokeping-prober ]] || die "no usr/bin/prometheus-smokeping-prober in $deb"
  rm -rf "$docs"
  mv "$tmp/usr/share/doc/prometheus-smokeping-prober" "$docs"
  mv "$tmp/usr/bin/prometheus-smokeping-prober" "$target.tmp"
  chmod 0755 "$target.tmp"
  mv "$target.tmp" "$target"
  log "smokeping_prober $version in $target"
fi
printf '%s\n' "$target"
