#!/usr/bin/env bash
# Runs every benchmark of eventdriven-benches (eventdriven beside raw tokio, kameo, actix,
# ractor and xtra, same runs) and prints one combined report.
#
#   scripts/bench.sh                 # the whole suite: ~3.5 min of running on 2 cores, plus the build
#   scripts/bench.sh tell_1to1       # only the criterion groups matching a filter, then the report
#
# Steps: build all bench binaries once; run `core` (criterion groups tell_1to1,
# ask_round_trip, fanout_1to8, monolith_10k), `latency` (round-trip p50/p99, unloaded and under
# load) and `spawn` (100 000 idle actors per contender, one process each: time and memory per
# actor); then scripts/bench_table.py. The binaries are run directly rather than through
# `cargo bench`, so every step measures the same build even if the sources change meanwhile.
# With arguments, only the criterion step runs (the arguments go to criterion) before the
# report; the latency and spawn tables then come from the last full run.
#
# CARGO_TARGET_DIR defaults to $HOME/.cache/eventdriven-target. Criterion writes under
# $CARGO_TARGET_DIR/criterion, the other two benches under $CARGO_TARGET_DIR/ed-bench; the
# combined report is also saved as $CARGO_TARGET_DIR/ed-bench/report.md.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/eventdriven-target}"
reports="$CARGO_TARGET_DIR/ed-bench"
mkdir -p "$reports"

cd "$root"
# What is built: the commit, and whether the sources that go into the benches differ from it.
built="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain -- eventdriven eventdriven-macros benches 2>/dev/null)" ]; then
    built="$built + uncommitted changes"
fi
build_start=$(date +%s)
cargo bench -p eventdriven-benches --no-run --message-format=json-render-diagnostics \
    >"$reports/build.json"
build_end=$(date +%s)

# The executable cargo built for bench target $1.
executable() {
    python3 - "$1" "$reports/build.json" <<'EOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
for line in open(path):
    msg = json.loads(line)
    target = msg.get("target") or {}
    if msg.get("reason") == "compiler-artifact" and target.get("name") == name \
            and "bench" in target.get("kind", []) and msg.get("executable"):
        print(msg["executable"])
        break
else:
    sys.exit(f"no executable for bench {name} in {path}")
EOF
}
core="$(executable core)"
latency="$(executable latency)"
spawn="$(executable spawn)"

# cargo runs benches from the package directory; do the same.
cd "$root/benches"
start=$(date +%s)
if [ "$#" -eq 0 ]; then
    # A full run starts from empty groups, so the table cannot mix in an older run's results.
    for group in tell_1to1 ask_round_trip fanout_1to8 monolith_10k; do
        rm -rf "$CARGO_TARGET_DIR/criterion/$group"
    done
    "$core" --bench
    "$latency" --bench
    "$spawn" --bench
else
    "$core" --bench "$@"
fi
end=$(date +%s)

{
    echo "# eventdriven benchmarks"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg);" \
        "$(rustc --version); built from $built in $((build_end - build_start)) s;" \
        "benchmarks ran $((end - start)) s"
    echo
    python3 "$root/scripts/bench_table.py" --spread
} | tee "$reports/report.md"
