#!/usr/bin/env bash
# The fair-evaluation suite on one GPU: four seed-protocol runs side by side (docs/benchmarks.md,
# "Fair evaluation" and "Transfer generator"). Usage: bash bench/fair_suite.sh OUT_DIR COMMIT
# Each run's --json is resumable: run the script again to finish runs cut short.
set -uo pipefail
out=${1:?out dir}; commit=${2:-unknown}
common=(--draws 10 --k 1 3 10 30 --device cuda --commit "$commit")
run() {  # name, then seed_protocol options
    local name=$1; shift
    timeout "${SUITE_TIMEOUT_S:-540}" python3 bench/seed_protocol.py "${common[@]}" "$@" \
        --json "$out/$name.json" >"$out/$name.log" 2>&1
}
run mnist_auto_perclass --classifier-augment auto --generator per-class &
run mnist_none_perclass --classifier-augment none --generator per-class &
run mnist_auto_transfer --classifier-augment auto --generator transfer &
(run digits8_auto_perclass --dataset digits8 --classifier-augment auto --generator per-class
 run digits8_auto_transfer --dataset digits8 --classifier-augment auto --generator transfer) &
wait
