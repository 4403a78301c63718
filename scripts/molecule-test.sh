#!/usr/bin/env bash
# molecule test for each SCENARIO, each with its whole output kept in .lab/logs/molecule-SCENARIO.log. One scenario
# streams its output; several run side by side (their own hosts and networks, and most of a scenario's time is spent
# waiting on its hosts, so two cores carry three), each printing one line when it ends. The failed tasks and tests
# of every failed scenario are printed again at the very end, where the tail of a CI log shows them.
#   --beside 'make lint'  runs that command beside the scenarios from the start, its output in beside.log (printed
#                       at the end if it failed): the scenarios' first minutes (creating hosts) leave a core free.
#   --then 'pytest -q'  runs that command, its output streamed, once every scenario but the first has ended: the
#                       first (the longest) spends its last minutes waiting on its hosts, which leaves the CPU free.
set -euo pipefail
source "$(dirname "$0")/lib.sh"  # INFRA_OBS_COLLECTION: the installed collection some scenarios converge from
beside_run= then_run=
while [[ ${1:-} == --beside || ${1:-} == --then ]]; do
    [[ -n ${2:-} ]] || { echo "$1 needs a command" >&2; exit 2; }
    if [[ $1 == --beside ]]; then beside_run=$2; else then_run=$2; fi
    shift 2
done
(($#)) || { echo "usage: scripts/molecule-test.sh [--beside COMMAND] [--then COMMAND] SCENARIO..." >&2; exit 2; }
log_dir=.lab/logs
mkdir -p "$log_dir"

run() {  # run SCENARIO [stream]: molecule test, logged; the exit status is molecule's
    local scenario=$1 log=$log_dir/molecule-$1.log start=$SECONDS status=0
    if [[ ${2:-} == stream ]]; then
        molecule test -s "$scenario" 2>&1 | tee "$log" || status=$?
    else
        molecule test -s "$scenario" >"$log" 2>&1 || status=$?
    fi
    if ((status == 0)); then
        echo "== molecule scenario $scenario passed in $((SECONDS - start)) s"
    else
        echo "== molecule scenario $scenario failed after $((SECONDS - start)) s (log: $log)"
    fi
    return "$status"
}

plain_log() {  # plain_log SCENARIO: its log without colours, and without the border ("  │ ") molecule draws
    sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^ *│ \{0,1\}//' "$log_dir/molecule-$1.log"
}

failures() {  # failures SCENARIO: what failed, from its log ("FAILED - RETRYING" is an until loop's, not a failure)
    echo "== what failed in molecule scenario $1, from $log_dir/molecule-$1.log:"
    plain_log "$1" | grep -a -v 'FAILED - RETRYING' |
        grep -a -n -E -A15 'fatal: \[|failed: \[|FAILED!|^E  |^FAILED |unreachable: \[' | tail -n 150 || true
}

headlines() {  # headlines SCENARIO: a line or three per failure, printed last, where the tail of a CI log shows them
    plain_log "$1" | grep -a -v 'FAILED - RETRYING' |
        grep -a -E -A3 '^(FAILED|ERROR)( [^ ]+::|$)|fatal: \[|failed: \[|unreachable: \[' | cut -c1-300 | tail -n 20 || true
}

if (($# == 1)) && [[ -z $then_run$beside_run ]]; then
    run "$1" stream || { failures "$1"; headlines "$1"; exit 1; }
    exit 0
fi

start=$SECONDS
beside_pid=
if [[ -n $beside_run ]]; then
    (
        if bash -c "$beside_run" >"$log_dir/beside.log" 2>&1; then
            echo "== $beside_run passed in $((SECONDS - start)) s"
        else
            echo "== $beside_run failed after $((SECONDS - start)) s (log: $log_dir/beside.log)"
            exit 1
        fi
    ) &
    beside_pid=$!
fi
declare -A pids
for scenario in "$@"; do
    run "$scenario" &
    pids[$scenario]=$!
done
echo "== molecule scenarios $* started side by side; logs in $log_dir/"
failed=()
for scenario in "${@:2}"; do
    wait "${pids[$scenario]}" || failed+=("$scenario")
done
then_failed=
if [[ -n $then_run ]]; then
    echo "== $then_run: started after molecule scenarios ${*:2}"
    then_start=$SECONDS
    if bash -c "$then_run" 2>&1 | tee "$log_dir/then.log"; then
        echo "== $then_run passed in $((SECONDS - then_start)) s"
    else
        echo "== $then_run failed after $((SECONDS - then_start)) s"
        then_failed=yes
    fi
fi
wait "${pids[$1]}" || failed+=("$1")
beside_failed=
if [[ -n $beside_pid ]]; then wait "$beside_pid" || beside_failed=yes; fi
echo "== molecule scenarios ended after $((SECONDS - start)) s; failed: ${failed[*]:-none}"
for scenario in "${failed[@]}"; do failures "$scenario"; done
if [[ -n $then_failed ]]; then
    echo "== what failed in $then_run, from $log_dir/then.log:"
    grep -a -E '^(FAILED|ERROR) ' "$log_dir/then.log" || tail -n 40 "$log_dir/then.log"
fi
if [[ -n $beside_failed ]]; then
    echo "== what $beside_run printed, from $log_dir/beside.log:"
    tail -n 60 "$log_dir/beside.log"
fi
for scenario in "${failed[@]}"; do
    echo "== molecule scenario $scenario, in short:"
    headlines "$scenario"
done
[[ ${#failed[@]} == 0 && -z $then_failed && -z $beside_failed ]]
