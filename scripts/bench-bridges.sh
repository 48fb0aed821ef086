#!/usr/bin/env bash
# Each broker bridge beside its raw client crate, same runs (benches/benches/bridges.rs):
# publish and end-to-end throughput per broker, a table of medians and ratios at the end.
#
#   scripts/bench-bridges.sh                   # NATS, Redis, RabbitMQ, Kafka and SQS, 3 runs
#   ED_BRIDGE_RUNS=5 scripts/bench-bridges.sh  # more runs
#   ED_BRIDGE_FEATURES=nats scripts/bench-bridges.sh [CRITERION FILTER]   # one broker
#
# Steps: build the `bridges` bench once with the brokers' features (so the other benches never
# compile a broker client); start the brokers with scripts/with-nats.sh, with-redis.sh,
# with-rabbitmq.sh, with-kafka.sh and with-sqs.sh (only those of the chosen features); run the
# executable ED_BRIDGE_RUNS times (default 3), recording the load average before each run and
# keeping each run's criterion results under $CARGO_TARGET_DIR/ed-bench/bridges/run-N; then
# print the median of the runs with `scripts/bench_table.py --bridges`, also saved as
# $CARGO_TARGET_DIR/ed-bench/bridges/report.md. Not part of scripts/test.sh: each run takes
# minutes here (NATS, Redis and RabbitMQ 2-4 of them), and it wants a quiet machine.
#
# A new broker is a feature of benches/Cargo.toml, a module of benches/benches/bridges/, and a
# line in the `servers` list below.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/eventdriven-target}"
reports="$CARGO_TARGET_DIR/ed-bench/bridges"
features="${ED_BRIDGE_FEATURES:-nats,redis,amqp,kafka,sqs}"
runs="${ED_BRIDGE_RUNS:-3}"

if [ -z "${ED_BRIDGE_EXE:-}" ]; then
    mkdir -p "$reports"
    cd "$root"
    built="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [ -n "$(git status --porcelain -- eventdriven eventdriven-macros benches 2>/dev/null)" ]; then
        built="$built + uncommitted changes"
    fi
    cargo bench -p eventdriven-benches --features "$features" --bench bridges --no-run \
        --message-format=json-render-diagnostics >"$reports/build.json"
    exe="$(python3 - "$reports/build.json" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    msg = json.loads(line)
    target = msg.get("target") or {}
    if msg.get("reason") == "compiler-artifact" and target.get("name") == "bridges" \
            and msg.get("executable"):
        print(msg["executable"])
        break
else:
    sys.exit("no executable for bench bridges")
PY
)"
    servers=()
    case ",$features," in *,nats,*) servers+=("$root/scripts/with-nats.sh") ;; esac
    case ",$features," in *,redis,*) servers+=("$root/scripts/with-redis.sh") ;; esac
    case ",$features," in *,amqp,*) servers+=("$root/scripts/with-rabbitmq.sh") ;; esac
    case ",$features," in *,kafka,*) servers+=("$root/scripts/with-kafka.sh") ;; esac
    case ",$features," in *,sqs,*) servers+=("$root/scripts/with-sqs.sh") ;; esac
    ED_BRIDGE_EXE="$exe" ED_BRIDGE_BUILT="$built" exec "${servers[@]}" "$0" "$@"
fi

# With the servers running.
cd "$root/benches"
rm -rf "$reports"/run-* "$reports/loads.txt.new"
for run in $(seq 1 "$runs"); do
    rm -rf "$CARGO_TARGET_DIR"/criterion/bridge_*
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "=== run $run of $runs, load average $load ==="
    start=$(date +%s)
    "$ED_BRIDGE_EXE" --bench "$@"
    mkdir -p "$reports/run-$run"
    cp -r "$CARGO_TARGET_DIR"/criterion/bridge_* "$reports/run-$run/"
    echo "run $run: load average $load at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end, $(($(date +%s) - start)) s" \
        >>"$reports/loads.txt.new"
done
mv "$reports/loads.txt.new" "$reports/loads.txt"
{
    echo "# eventdriven bridges beside their raw clients"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs; $(rustc --version); built from ${ED_BRIDGE_BUILT:-?}"
    echo
    sed 's/^/- /' "$reports/loads.txt"
    echo
    python3 "$root/scripts/bench_table.py" --bridges "$reports"/run-*
} | tee "$reports/report.md"
