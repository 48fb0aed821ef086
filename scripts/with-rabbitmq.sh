#!/usr/bin/env bash
# Runs a command with a real, throwaway RabbitMQ node:
#
#     scripts/with-rabbitmq.sh CMD [ARGS...]
#
# The command sees EVENTDRIVEN_AMQP_URL (amqp://guest:guest@127.0.0.1:PORT/%2f), the variable the
# RabbitMQ bridge tests read, EVENTDRIVEN_RABBITMQ_SERVER (the rabbitmq-server start script) and
# EVENTDRIVEN_RABBITMQ_EPMD_PORT (the Erlang port mapper this script runs), which the outage tests
# use to start nodes of their own that they can stop and restart on the same data dir. If
# EVENTDRIVEN_AMQP_URL is already set, the command runs against that broker instead and nothing
# is started (the outage tests then also need EVENTDRIVEN_RABBITMQ_EPMD_PORT, an epmd to register
# their nodes with).
#
# Route: Debian's `rabbitmq-server` package (3.10 on bookworm, with its Erlang), installed with
# apt-get (one `apt-get update` first) if /usr/lib/rabbitmq/bin/rabbitmq-server is missing. It is
# the route SERVERS.md lists, and the same version every run. `/usr/sbin/rabbitmq-server` switches
# to the rabbitmq user; the script under /usr/lib/rabbitmq/bin runs as the caller, with
# everything (HOME and its Erlang cookie, config, data, logs) in a temp dir.
#
# The node listens only on 127.0.0.1 (AMQP, Erlang distribution and epmd, each on a free port).
# epmd is started here in the foreground so that its PID is known (a node would otherwise start
# one that daemonizes and outlives it). The node takes 10 to 15 s to boot; the wait is bounded
# (90 s). On exit, error, SIGINT or SIGTERM the command is stopped, the node is stopped
# (`rabbitmqctl stop`, then SIGTERM and SIGKILL to its process group), epmd is stopped by PID and
# the temp dir is removed. The script exits with the command's status.

set -euo pipefail

SERVER_SCRIPT=with-rabbitmq
# shellcheck source=lib/servers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/servers.sh"

[ "$#" -gt 0 ] || die "usage: $0 CMD [ARGS...]"


# --- locate (or install) the server --------------------------------------------------------------

bin=/usr/lib/rabbitmq/bin
server="$bin/rabbitmq-server"
if [ ! -x "$server" ]; then
    apt_install RabbitMQ rabbitmq-server 900
    [ -x "$server" ] || die "rabbitmq-server installed, but $server is missing"
fi
epmd_bin=$(command -v epmd 2>/dev/null) || epmd_bin=
if [ -z "$epmd_bin" ]; then
    for candidate in /usr/lib/erlang/erts-*/bin/epmd; do
        [ -x "$candidate" ] && epmd_bin=$candidate
    done
fi
[ -n "$epmd_bin" ] || die "no epmd found (it comes with Erlang)"
export EVENTDRIVEN_RABBITMQ_SERVER="$server"

if [ -n "${EVENTDRIVEN_AMQP_URL:-}" ]; then
    exec "$@"
fi

# --- free loopback ports -------------------------------------------------------------------------

free_ports() {
    python3 -c '
import socket
socks = [socket.socket() for _ in range(int(__import__("sys").argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}
command -v python3 >/dev/null 2>&1 || die "python3 is needed to pick free ports"

# --- cleanup, installed before anything is created -----------------------------------------------

tmp=
child=
node_pid=
epmd_pid=
node=

# (SC2317: shellcheck thinks code reached only from the traps is unreachable.)
# shellcheck disable=SC2317
ctl() {
    HOME="$tmp" ERL_EPMD_PORT="$epmd_port" RABBITMQ_CONFIG_FILE="$tmp/rabbitmq.conf" \
        "$bin/rabbitmqctl" -n "$node" "$@"
}

# shellcheck disable=SC2317
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    if [ -n "$child" ]; then
        stop_pid "$child"
    fi
    if [ -n "$node_pid" ]; then
        if kill -0 "$node_pid" 2>/dev/null; then
            bounded 30 ctl stop >/dev/null 2>&1
        fi
        # The node runs in a process group of its own (setsid): its helpers go with it.
        stop_pid "$node_pid" "-$node_pid"
    fi
    if [ -n "$epmd_pid" ]; then
        stop_pid "$epmd_pid"
    fi
    if [ -n "$tmp" ] && [ -d "$tmp" ]; then
        rm -rf "$tmp"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- start epmd and the throwaway node -----------------------------------------------------------

tmp=$(mktemp -d "${TMPDIR:-/tmp}/eventdriven-rabbitmq.XXXXXX")
read -r port dist_port epmd_port <<<"$(free_ports 3)" || die "no free loopback ports found"
node="eventdriven$$@localhost"
# Erlang distribution (the node's and the CLI's) on loopback only.
loopback_dist="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_CTL_ERL_ARGS="$loopback_dist"

"$epmd_bin" -port "$epmd_port" -address 127.0.0.1 </dev/null >"$tmp/epmd.log" 2>&1 &
epmd_pid=$!

cat >"$tmp/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$port
loopback_users.guest = true
disk_free_limit.absolute = 50MB
EOF
printf '[].\n' >"$tmp/enabled_plugins"

setsid env HOME="$tmp" \
    RABBITMQ_NODENAME="$node" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$port" \
    RABBITMQ_DIST_PORT="$dist_port" \
    ERL_EPMD_PORT="$epmd_port" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_CONFIG_FILE="$tmp/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$tmp/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$tmp/mnesia" \
    RABBITMQ_LOG_BASE="$tmp/log" \
    RABBITMQ_PID_FILE="$tmp/rabbitmq.pid" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$loopback_dist" \
    "$server" </dev/null >"$tmp/server.out" 2>&1 &
node_pid=$!

# `await_startup` fails at once while the node is not yet registered with epmd: ask again.
ready=
deadline=$((SECONDS + 90))
while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$node_pid" 2>/dev/null || break
    if bounded 30 env HOME="$tmp" ERL_EPMD_PORT="$epmd_port" \
        "$bin/rabbitmqctl" -n "$node" await_startup --timeout 20 >"$tmp/await.out" 2>&1; then
        ready=1
        break
    fi
    sleep 1
done
if [ -z "$ready" ]; then
    cat "$tmp/server.out" "$tmp/await.out" >&2 2>/dev/null
    tail -n 50 "$tmp"/log/*.log >&2 2>/dev/null
    die "the RabbitMQ node did not start within 90 s"
fi

export EVENTDRIVEN_AMQP_URL="amqp://guest:guest@127.0.0.1:$port/%2f"
export EVENTDRIVEN_RABBITMQ_EPMD_PORT="$epmd_port"
log "RabbitMQ $(ctl version 2>/dev/null || echo '?') running at $EVENTDRIVEN_AMQP_URL (node $node)"

# --- run the command -----------------------------------------------------------------------------

# In the background plus `wait`, so that SIGINT/SIGTERM run the traps at once instead of
# after the command ends; `<&0` keeps our stdin (a background job would get /dev/null).
"$@" <&0 &
child=$!
status=0
wait "$child" || status=$?
child=
exit "$status"
