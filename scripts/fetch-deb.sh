#!/usr/bin/env bash
# Usage: fetch-deb.sh SUITE PACKAGE VERSION
# Downloads one .deb from another Debian suite (e.g. bullseye's consul) without touching the system's sources:
# a private apt state under the cache. apt verifies the file against the suite's signed index; we record its
# sha256 beside it for the artifact store.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
suite=$1 package=$2 version=$3

dest="$INFRA_OBS_CACHE/artifacts/debian"
file="${package}_${version//:/%3a}_amd64.deb"
[[ -f $dest/$file && -f $dest/$file.sha256 ]] && exit 0

state="$INFRA_OBS_CACHE/apt-$suite"
mkdir -p "$state/lists/partial" "$state/archives/partial" "$dest"
echo "deb http://deb.debian.org/debian $suite main" >"$state/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$state/sources.list" -o "Dir::Etc::SourceParts=-"
  -o "Dir::State::Lists=$state/lists" -o "Dir::Cache::Archives=$state/archives" -o "APT::Get::List-Cleanup=0")
log "fetching $package=$version from Debian $suite"
apt-get "${apt_opts[@]}" update -qq
(cd "$dest" && apt-get "${apt_opts[@]}" download "$package=$version" -qq) ||
  die "apt could not download $package=$version from $suite (is the version still in the archive?)"
[[ -f $dest/$file ]] || die "expected $dest/$file after download"
(cd "$dest" && sha256sum "$file" >"$file.sha256")
