#!/bin/sh
# Soak benchmark, never in CI: N minutes (default 30) of legitimate and
# abusive clients at a bounded rate against one moat; prints RSS, open
# descriptors, threads, sessions, completed sessions, bans and reloads
# every interval, and RSS growth after warm-up at the end
# (tests/bench/soak.py has the mix).
#
# Usage: tests/bench/soak.sh [-b BUILD_DIR] [--minutes N] [--rate R]
#            [--abuse-rate R] [--interval S] [--ops] [--workers N]
#            [--reload S] [--ctl S] [--scrape S]
#   --ops      2 workers, a reload every 30 s between two configurations,
#              moatctl every 10 s, a metrics scrape every 5 s (soak.py
#              says what each does; each option alone overrides its part)
#   BUILD_DIR  defaults to build/ in the tree; a normal (non-sanitizer)
#              build gives meaningful RSS figures
# Needs root (binds 127.0.0.x source addresses; raises RLIMIT_NOFILE),
# python3 and openssl. Everything stays on loopback.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$here/../../build
if [ "${1:-}" = "-b" ]; then
	build=$2
	shift 2
fi
[ -x "$build/proxy/moat" ] || { echo "soak.sh: no $build/proxy/moat (meson setup build && ninja -C build)" >&2; exit 2; }
MOAT_BUILD_ROOT=$(cd "$build" && pwd)
export MOAT_BUILD_ROOT
exec /usr/bin/python3 "$here/soak.py" "$@"
