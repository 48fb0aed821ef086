#!/usr/bin/env bash
# Runs the core benchmarks (eventdriven beside raw tokio, same run) and prints the summary table.
#
#   scripts/bench.sh                 # the whole suite (a few minutes on 2 cores)
#   scripts/bench.sh tell_1to1       # extra arguments go to criterion, e.g. a filter
#
# CARGO_TARGET_DIR defaults to $HOME/.cache/eventdriven-target; criterion writes its results
# under $CARGO_TARGET_DIR/criterion, where scripts/bench_table.py reads them.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/eventdriven-target}"

cd "$root"
cargo bench -p eventdriven-benches --bench core -- "$@"
python3 "$root/scripts/bench_table.py" --spread
