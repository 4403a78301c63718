#!/usr/bin/env bash
# molecule test -s SCENARIO with its whole output kept in .lab/logs/molecule-SCENARIO.log. When it fails, the failed
# tasks and tests are printed again at the very end, where the tail of a CI log shows them.
set -euo pipefail
source "$(dirname "$0")/lib.sh"  # INFRA_OBS_COLLECTION: the installed collection some scenarios converge from
scenario=${1:?usage: scripts/molecule-test.sh SCENARIO}
log_dir=.lab/logs
mkdir -p "$log_dir"
log=$log_dir/molecule-$scenario.log
start=$SECONDS
if molecule test -s "$scenario" 2>&1 | tee "$log"; then
    echo "== molecule scenario $scenario passed in $((SECONDS - start)) s"
    exit 0
fi
echo "== molecule scenario $scenario failed after $((SECONDS - start)) s; what failed, from $log:"
# With colours on, molecule draws a border ("  │ ") before each line of the commands it runs.
sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^ *│ \{0,1\}//' "$log" |
    grep -a -n -E -A15 'fatal: \[|failed: \[|FAILED!|^E  |^FAILED |unreachable: \[' | tail -n 150 || true
exit 1
