#!/usr/bin/env bash
# Installs npm-groovy-lint, the Jenkinsfile linter of `make lint`, under the cache with `npm ci` from
# jenkins/lint/package.json and package-lock.json (the lock's integrity hashes are our checksums). Skipped when
# that lock is already installed. Links the binary into $INFRA_OBS_CACHE/bin and prints its path.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

pins="$REPO_ROOT/jenkins/lint"
dir="$INFRA_OBS_CACHE/npm-groovy-lint"
bin="$INFRA_OBS_CACHE/bin/npm-groovy-lint"

# npm-groovy-lint 16 declares node >= 20; npm would only warn, and it would then fail in odd ways.
command -v node >/dev/null || die "node not found: npm-groovy-lint needs Node.js 20 or later"
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 20)) || die "node $(node --version) is too old: npm-groovy-lint needs Node.js 20 or later"
# It runs CodeNarc on Java 17 to 24; given none of those, its java-caller would try to download a JRE.
command -v java >/dev/null || die "java not found: npm-groovy-lint runs CodeNarc on Java 17 to 24"
java_major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \(1\.\)\{0,1\}\([0-9]*\).*/\2/p')
((java_major >= 17 && java_major <= 24)) || die "java ${java_major:-of unknown version} found: npm-groovy-lint needs Java 17 to 24"

want=$(node -p "require('$pins/package.json').dependencies['npm-groovy-lint']")
npm_pinned "$pins" "$dir"
have=$(node -p "require('$dir/node_modules/npm-groovy-lint/package.json').version")
[[ $have == "$want" ]] || die "npm-groovy-lint $have installed in $dir, $want pinned"

mkdir -p "$(dirname "$bin")"
ln -sfn "$dir/node_modules/.bin/npm-groovy-lint" "$bin"
echo "$bin"
