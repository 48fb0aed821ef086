#!/usr/bin/env bash
# Runs a command with a real, throwaway SQS server (fauxqs 1.9.2, an SQS emulator on Node):
#
#     scripts/with-sqs.sh CMD [ARGS...]
#
# The command sees EVENTDRIVEN_SQS_URL (http://127.0.0.1:PORT), the variable the SQS bridge
# tests read, and EVENTDRIVEN_SQS_SERVER (a script that starts a server on the port given as its
# one argument, in the foreground), which the tests that stop a server use to start servers of
# their own. If EVENTDRIVEN_SQS_URL is already set, the command runs against that server
# instead and nothing is started (those tests then still need EVENTDRIVEN_SQS_SERVER).
#
# Route: `npm ci` of scripts/sqs/package.json and its package-lock.json (fauxqs 1.9.2, the
# version that installs on Node 20, pinned with its dependencies) into
# $HOME/.cache/eventdriven-sqs (reused by later runs). Node 20 or later must be installed
# (Debian: the nodejs package). fauxqs speaks the SQS JSON protocol with long polling, batches,
# visibility timeouts and FIFO queues, and answers fast enough for the suite (moto, tried
# first, closes the connection after every request and reached fewer than 300 events in 30 s,
# and its receive and delete are not atomic). It keeps its state in memory only: a restarted
# server starts empty, which is why the outage test pauses the server (SIGSTOP/SIGCONT)
# instead of restarting it. fauxqs's own CLI listens on 0.0.0.0; scripts/sqs/server.mjs builds
# the same app and listens on 127.0.0.1 only, without request logs.
#
# On exit, error, SIGINT or SIGTERM the command is stopped, the server is stopped (SIGTERM,
# then SIGKILL) and the temp dir is removed. The script exits with the command's status.
# Every wait is bounded.
set -euo pipefail

SERVER_SCRIPT=with-sqs
# shellcheck source=lib/servers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/servers.sh"

[ "$#" -gt 0 ] || die "usage: $0 CMD [ARGS...]"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pinned="$here/sqs"
cache="$HOME/.cache/eventdriven-sqs"
fauxqs="$cache/node_modules/fauxqs"

# --- install fauxqs (npm ci of the pinned lock file) if missing or not the pinned one ----------

command -v node >/dev/null 2>&1 || die "node (20 or later) is needed for the SQS server: apt-get install nodejs npm"
command -v npm >/dev/null 2>&1 || die "npm is needed to install the SQS server: apt-get install npm"

installed() {
    [ -f "$fauxqs/dist/app.js" ] &&
        cmp -s "$pinned/package-lock.json" "$cache/package-lock.json" &&
        cmp -s "$pinned/package.json" "$cache/package.json"
}

if ! installed; then
    mkdir -p "$cache"
    cp "$pinned/package.json" "$pinned/package-lock.json" "$cache/"
    install_log=$(mktemp)
    if ! (cd "$cache" && bounded 300 npm ci --no-audit --no-fund --loglevel=error) >"$install_log" 2>&1; then
        cat "$install_log" >&2
        rm -f "$install_log"
        die "npm could not install fauxqs (the SQS server) into $cache"
    fi
    rm -f "$install_log"
    log "installed fauxqs $(node -p "require('$fauxqs/package.json').version") (npm ci) in $cache"
fi

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

tmp=$(mktemp -d "${TMPDIR:-/tmp}/eventdriven-sqs.XXXXXX")

# The command the tests start servers of their own with: `$EVENTDRIVEN_SQS_SERVER PORT`, in the
# foreground (exec: its PID is node's, which the outage test freezes and resumes).
if [ -z "${EVENTDRIVEN_SQS_SERVER:-}" ]; then
    cat >"$tmp/sqs-server" <<SERVER
#!/bin/sh
exec node "$pinned/server.mjs" "\$1" "$fauxqs"
SERVER
    chmod +x "$tmp/sqs-server"
    export EVENTDRIVEN_SQS_SERVER="$tmp/sqs-server"
fi

if [ -n "${EVENTDRIVEN_SQS_URL:-}" ]; then
    "$@" <&0 &
    child=$!
    status=0
    wait "$child" || status=$?
    child=
    exit "$status"
fi

# --- start the throwaway server -------------------------------------------------------------

port=$(free_port) || die "no free loopback port found"
node "$pinned/server.mjs" "$port" "$fauxqs" </dev/null >"$tmp/fauxqs.log" 2>&1 &
server_pid=$!
ready=
for _ in $(seq 100); do
    if bounded 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 && grep -q ok <&3" 2>/dev/null; then
        ready=1
        break
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$ready" ]; then
    cat "$tmp/fauxqs.log" >&2 2>/dev/null
    die "the fauxqs server did not answer /health within 10 s"
fi

export EVENTDRIVEN_SQS_URL="http://127.0.0.1:$port"
log "fauxqs $(node -p "require('$fauxqs/package.json').version") (SQS, in memory) running at $EVENTDRIVEN_SQS_URL"

# --- run the command ------------------------------------------------------------------------

# In the background plus `wait`, so that SIGINT/SIGTERM run the traps at once instead of
# after the command ends; `<&0` keeps our stdin (a background job would get /dev/null).
"$@" <&0 &
child=$!
status=0
wait "$child" || status=$?
child=
exit "$status"
