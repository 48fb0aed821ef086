#!/usr/bin/env bash
# Runs a command with Debian's Chromium and ChromeDriver at hand, for the browser tests:
#
#     scripts/with-chromium.sh CMD [ARGS...]
#
# The command sees EVENTDRIVEN_CHROMIUM (the chromium binary) and EVENTDRIVEN_CHROMEDRIVER (the
# chromedriver binary), the variables the live view's test (examples/tests/live_view.rs) reads.
# Nothing is started here: the test starts chromedriver on a free loopback port itself, and
# chromedriver starts a headless Chromium with a fresh profile for each session, so each test
# run owns its browser and nothing outlives it.
#
# Route: binaries given in EVENTDRIVEN_CHROMIUM and EVENTDRIVEN_CHROMEDRIVER, or `chromium` and
# `chromedriver` found on PATH, are used as they are; otherwise Debian's `chromium` and
# `chromium-driver` packages (one version, built together) are installed with apt-get (one
# `apt-get update` first, the install bounded by 15 minutes: it is a few hundred MB). It is the
# route that works on a closed build network, where a test tool's download of its own browser
# (Playwright's, Puppeteer's) fails.
#
# The script exits with the command's status. Every wait is bounded.
set -euo pipefail

SERVER_SCRIPT=with-chromium
# shellcheck source=lib/servers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/servers.sh"

[ "$#" -gt 0 ] || die "usage: $0 CMD [ARGS...]"

# --- locate (or install) the browser and its driver -------------------------------------------

# find VAR NAME: the executable in $VAR, else NAME on PATH.
find_binary() {
    local given=${!1:-}
    if [ -n "$given" ] && [ -x "$given" ]; then
        printf '%s\n' "$given"
        return 0
    fi
    command -v "$2" 2>/dev/null
}

if ! chromium=$(find_binary EVENTDRIVEN_CHROMIUM chromium) ||
    ! driver=$(find_binary EVENTDRIVEN_CHROMEDRIVER chromedriver); then
    apt_install "Chromium or ChromeDriver" chromium 900 chromium-driver
    chromium=$(find_binary EVENTDRIVEN_CHROMIUM chromium) || die "chromium installed, but not found"
    driver=$(find_binary EVENTDRIVEN_CHROMEDRIVER chromedriver) ||
        die "chromium-driver installed, but chromedriver not found"
fi
export EVENTDRIVEN_CHROMIUM="$chromium" EVENTDRIVEN_CHROMEDRIVER="$driver"
log "using $(bounded 30 "$chromium" --version 2>/dev/null || echo 'chromium (version unknown)') from $chromium"
log "using $(bounded 30 "$driver" --version 2>/dev/null || echo 'chromedriver (version unknown)') from $driver"

# --- run the command ------------------------------------------------------------------------

# Nothing of ours to clean up afterwards, so the command takes this process's place.
exec "$@"
