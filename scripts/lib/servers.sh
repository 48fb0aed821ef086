# Shared by the scripts/with-*.sh server scripts (sourced, not run): log lines, bounded waits,
# installing a Debian package, a free loopback port, stopping a process. The sourcing script
# sets SERVER_SCRIPT (its name, the prefix of its log lines) first.
# shellcheck shell=bash

log() { printf '%s: %s\n' "$SERVER_SCRIPT" "$*" >&2; }
die() { log "$*"; exit 1; }

# Runs its arguments with a time limit when coreutils' timeout is available.
bounded() {
    local limit=$1
    shift
    if command -v timeout >/dev/null 2>&1; then
        timeout "$limit" "$@"
    else
        "$@"
    fi
}

# apt_install WHAT PACKAGE LIMIT [MORE...]: installs Debian's PACKAGE and any MORE packages (one
# `apt-get update` first, the install bounded by LIMIT seconds), through sudo when not root;
# dies with apt's output if that fails. WHAT names the missing server in the messages.
apt_install() {
    local what=$1 package=$2 limit=$3 install_log sudo=()
    shift 3
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "no $what found and not root (no sudo) to install it"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 || die "no $what found and no apt-get to install it"
    install_log=$(mktemp)
    log "installing the $package${*:+ $*} Debian package"
    if ! { bounded 300 "${sudo[@]}" apt-get update &&
        bounded "$limit" "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "$package" "$@"; } >"$install_log" 2>&1; then
        cat "$install_log" >&2
        rm -f "$install_log"
        die "installing the $package${*:+ $*} Debian package failed"
    fi
    rm -f "$install_log"
}

# A free port on 127.0.0.1: asked of the kernel through python3, else the first port of a
# random range that refuses a connection (each probe bounded).
free_port() {
    local port
    if command -v python3 >/dev/null 2>&1 &&
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null); then
        printf '%s\n' "$port"
        return 0
    fi
    for ((port = 42000 + RANDOM % 20000; port < 65000; port++)); do
        if ! bounded 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    return 1
}

# stop_pid PID [TARGET]: SIGTERM to TARGET (PID, or a process group as -PGID), up to 10 s for
# PID to go, then SIGKILL; reaps PID if it is our child.
# (SC2317: shellcheck thinks code reached only from traps is unreachable.)
# shellcheck disable=SC2317
stop_pid() {
    local pid=$1 target=${2:-$1}
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM -- "$target" 2>/dev/null
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "$target" 2>/dev/null
    wait "$pid" 2>/dev/null
}
