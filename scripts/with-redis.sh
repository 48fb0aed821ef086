#!/usr/bin/env bash
# Runs a command with a real, throwaway Redis server (Streams need Redis 7 or later):
#
#     scripts/with-redis.sh CMD [ARGS...]
#
# The command sees EVENTDRIVEN_REDIS_URL (redis://127.0.0.1:PORT), the variable the Redis bridge
# tests read, and EVENTDRIVEN_REDIS_SERVER (the redis-server binary), which the outage tests use
# to start servers of their own (with an append-only file) that they can stop and restart. If
# EVENTDRIVEN_REDIS_URL is already set, the command runs against that server instead and nothing
# is started (the outage tests then still need EVENTDRIVEN_REDIS_SERVER, or `redis-server` on
# PATH).
#
# Route: a redis-server given in EVENTDRIVEN_REDIS_SERVER or found on PATH is used as it is;
# otherwise Debian's `redis-server` package (7.0 on bookworm) is installed with apt-get (one
# `apt-get update` first). It is the route SERVERS.md lists for Redis, a small package with no
# service started by us (the package's own systemd unit does not run in a container), and the
# same version every run.
#
# The server listens only on 127.0.0.1 at a free port, keeps nothing on disk (`--save ''
# --appendonly no`; its working dir is a temp dir) and runs in the background with a pid file.
# On exit, error, SIGINT or SIGTERM the command is stopped, the server is stopped (SIGTERM, then
# SIGKILL) and the temp dir is removed. The script exits with the command's status. Every wait is
# bounded.
set -euo pipefail

SERVER_SCRIPT=with-redis
# shellcheck source=lib/servers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/servers.sh"

[ "$#" -gt 0 ] || die "usage: $0 CMD [ARGS...]"


# --- locate (or install) the server binary ---------------------------------------------------

find_server() {
    if [ -n "${EVENTDRIVEN_REDIS_SERVER:-}" ] && [ -x "$EVENTDRIVEN_REDIS_SERVER" ]; then
        printf '%s\n' "$EVENTDRIVEN_REDIS_SERVER"
        return 0
    fi
    command -v redis-server 2>/dev/null
}

if ! server=$(find_server); then
    apt_install redis-server redis-server 600
    server=$(find_server) || die "redis-server installed, but not found"
fi
export EVENTDRIVEN_REDIS_SERVER="$server"

if [ -n "${EVENTDRIVEN_REDIS_URL:-}" ]; then
    exec "$@"
fi
log "using $("$server" --version 2>&1) from $server"

# --- a free loopback port ------------------------------------------------------------------------

# Sends PING over a plain TCP connection (no redis-cli needed); true on +PONG.
ping() {
    bounded 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && printf 'PING\r\n' >&3 && head -c 5 <&3" \
        2>/dev/null | grep -q '+PONG'
}

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
    if [ -z "$server_pid" ] && [ -n "$tmp" ] && [ -s "$tmp/redis.pid" ]; then
        server_pid=$(cat "$tmp/redis.pid")
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

tmp=$(mktemp -d "${TMPDIR:-/tmp}/eventdriven-redis.XXXXXX")
port=$(free_port) || die "no free loopback port found"

bounded 10 "$server" --port "$port" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no \
    --daemonize yes --pidfile "$tmp/redis.pid" --logfile "$tmp/redis.log" </dev/null ||
    die "redis-server did not start: $(cat "$tmp/redis.log" 2>/dev/null)"
ready=
for _ in $(seq 100); do
    if [ -z "$server_pid" ] && [ -s "$tmp/redis.pid" ]; then
        server_pid=$(cat "$tmp/redis.pid")
    fi
    if ping "$port"; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    cat "$tmp/redis.log" >&2 2>/dev/null
    die "the Redis server did not answer PING within 10 s"
fi
[ -n "$server_pid" ] || server_pid=$(cat "$tmp/redis.pid")

export EVENTDRIVEN_REDIS_URL="redis://127.0.0.1:$port"
log "Redis running at $EVENTDRIVEN_REDIS_URL"

# --- run the command ------------------------------------------------------------------------

# In the background plus `wait`, so that SIGINT/SIGTERM run the traps at once instead of
# after the command ends; `<&0` keeps our stdin (a background job would get /dev/null).
"$@" <&0 &
child=$!
status=0
wait "$child" || status=$?
child=
exit "$status"
