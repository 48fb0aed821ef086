#!/usr/bin/env bash
# Runs a command with a real, throwaway PostgreSQL server:
#
#     scripts/with-postgres.sh CMD [ARGS...]
#
# The command sees EVENTDRIVEN_POSTGRES_URL (postgres://postgres@127.0.0.1:PORT/postgres), the
# variable the workspace's PostgreSQL tests read. If EVENTDRIVEN_POSTGRES_URL is already set,
# the command runs against that server instead and nothing is started.
#
# Route: the server binaries come from the OS packages (Debian's /usr/lib/postgresql/*/bin,
# highest version, else initdb/pg_ctl/postgres on PATH); if neither exists, the `postgresql`
# Debian package is installed with apt-get. No containers and no long-lived service: every run
# makes a fresh cluster in a temp dir, listening only on 127.0.0.1 at a free port with its
# unix socket in that temp dir, with trust auth for the `postgres` role. The data is disposable,
# so fsync, synchronous_commit and full_page_writes are off for speed. initdb refuses to run
# as root, so as root the cluster is owned and run by the `postgres` OS user (created if
# missing). On exit, error, SIGINT or SIGTERM the command is stopped, the server is stopped
# (immediate mode, then SIGKILL if it is still alive) and the temp dir is removed. The script
# exits with the command's status. Every wait is bounded.
set -euo pipefail

SERVER_SCRIPT=with-postgres
# shellcheck source=lib/servers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/servers.sh"

[ "$#" -gt 0 ] || die "usage: $0 CMD [ARGS...]"

if [ -n "${EVENTDRIVEN_POSTGRES_URL:-}" ]; then
    exec "$@"
fi

# --- locate (or install) the server binaries -------------------------------------------------

# Prints the directory holding initdb, pg_ctl and postgres, or fails.
find_pg_bin() {
    local dir cmd
    while IFS= read -r dir; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
            printf '%s\n' "$dir"
            return 0
        fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k5,5 -V -r)
    # On PATH: take pg_ctl's real directory (it may be a symlink) and make sure the other
    # two are there too, since pg_ctl starts the postgres binary next to itself.
    if cmd=$(command -v pg_ctl 2>/dev/null); then
        dir=$(dirname "$(readlink -f "$cmd")")
        if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then
            printf '%s\n' "$dir"
            return 0
        fi
    fi
    return 1
}

if pg_bin=$(find_pg_bin); then
    log "using $("$pg_bin/postgres" --version) from $pg_bin"
else
    apt_install PostgreSQL postgresql 900
    pg_bin=$(find_pg_bin) || die "postgresql installed, but initdb/pg_ctl/postgres not found"
    log "installed the postgresql Debian package; using $("$pg_bin/postgres" --version) from $pg_bin"
fi

# --- who runs the server -----------------------------------------------------------------------

if [ "$(id -u)" -eq 0 ]; then
    pg_user=postgres
    if ! id -u "$pg_user" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$pg_user" ||
            die "could not create the $pg_user OS user"
    fi
    # Under /tmp (not $TMPDIR, which may sit in root's home) so the postgres user can reach it.
    tmp_base=/tmp
else
    pg_user=
    tmp_base=${TMPDIR:-/tmp}
fi

# as_pg LIMIT CMD [ARGS...]: runs CMD as the server's OS user, for at most LIMIT.
as_pg() {
    local limit=$1
    shift
    if [ -z "$pg_user" ]; then
        bounded "$limit" "$@"
    elif command -v runuser >/dev/null 2>&1; then
        bounded "$limit" runuser -u "$pg_user" -- "$@"
    else
        bounded "$limit" su "$pg_user" -s /bin/bash -c "$(printf '%q ' "$@")"
    fi
}

# --- a free loopback port ------------------------------------------------------------------------

# --- cleanup, installed before anything is created -----------------------------------------

tmp=
child=
pg_pid=

# (SC2317: shellcheck 0.9 thinks code reached only from the traps is unreachable.)
# shellcheck disable=SC2317
# True while process $1 exists and is not a zombie (a zombie waits only for its reaper).
alive() {
    local state=
    kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/stat" ]; then
        state=$(sed -e 's/^.*) //' -e 's/ .*//' "/proc/$1/stat" 2>/dev/null) || state=
    fi
    [ "$state" != Z ]
}

# shellcheck disable=SC2317
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    # The command first (it only runs in the background when we are stopping early).
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        kill -TERM "$child" 2>/dev/null
        for _ in $(seq 100); do
            kill -0 "$child" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$child" 2>/dev/null
        wait "$child" 2>/dev/null
    fi
    if [ -n "$tmp" ] && [ -d "$tmp" ]; then
        if [ -f "$tmp/data/postmaster.pid" ]; then
            pg_pid=$(head -n 1 "$tmp/data/postmaster.pid" 2>/dev/null)
            as_pg 30 "$pg_bin/pg_ctl" -D "$tmp/data" -m immediate -w -t 20 stop >/dev/null 2>&1
        fi
        if [ -n "$pg_pid" ]; then
            # pg_ctl stop returns once postmaster.pid is gone, a moment before the process
            # itself exits: give it up to 5 s, then kill it.
            for _ in $(seq 50); do
                alive "$pg_pid" || break
                sleep 0.1
            done
            if alive "$pg_pid"; then
                log "postmaster $pg_pid survived pg_ctl stop; killing it"
                # pg_ctl starts the postmaster in its own session, so its process group holds
                # exactly the server's processes.
                kill -KILL -- "-$pg_pid" 2>/dev/null || kill -KILL "$pg_pid" 2>/dev/null
                for _ in $(seq 50); do
                    alive "$pg_pid" || break
                    sleep 0.1
                done
            fi
        fi
        rm -rf "$tmp"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- start the throwaway cluster ------------------------------------------------------------

tmp=$(mktemp -d "$tmp_base/eventdriven-pg.XXXXXX")
if [ -n "$pg_user" ]; then
    chown "$pg_user" "$tmp"
fi
port=$(free_port) || die "no free loopback port found"

# --locale=C: independent of the host's installed locales, deterministic collation.
if ! as_pg 120 "$pg_bin/initdb" -N -D "$tmp/data" -U postgres --auth=trust -E UTF8 \
    --locale=C >"$tmp/initdb.log" 2>&1; then
    cat "$tmp/initdb.log" >&2
    die "initdb failed"
fi

if ! as_pg 60 "$pg_bin/pg_ctl" -D "$tmp/data" -l "$tmp/log" -w -t 30 \
    -o "-p $port -k '$tmp' -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >"$tmp/pg_ctl.log" 2>&1; then
    cat "$tmp/pg_ctl.log" "$tmp/log" >&2 2>/dev/null
    die "the PostgreSQL server did not start"
fi
pg_pid=$(head -n 1 "$tmp/data/postmaster.pid")

export EVENTDRIVEN_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
log "PostgreSQL running at $EVENTDRIVEN_POSTGRES_URL"

# --- run the command ------------------------------------------------------------------------

# In the background plus `wait`, so that SIGINT/SIGTERM run the traps at once instead of
# after the command ends; `<&0` keeps our stdin (a background job would get /dev/null).
"$@" <&0 &
child=$!
status=0
wait "$child" || status=$?
child=
exit "$status"
