#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, clippy, then `cargo test` (unit,
# integration, trybuild ui, doc tests, and the examples run end to end).
#
# The test suites that need real servers (PostgreSQL, brokers) start them from
# scripts/servers/ on loopback and stop them when they finish; today's suites need none.
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

step "cargo test"
# Every test bounds its own waits; this outer limit only guards CI's time budget.
timeout 60m cargo test --all-features --locked
