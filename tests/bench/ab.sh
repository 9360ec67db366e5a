#!/usr/bin/env bash
# ab.sh - two builds of moat side by side: which one spends less CPU?
#
# On a shared machine, two runs made one after the other differ by more
# than most changes are worth. This script starts build A and build B at
# the same time, each with its own listeners in front of the same
# backends, and drives the same load through both at once, so that both
# meet the same noise. Each repetition reads each moat's CPU ticks
# (utime+stime, /proc/PID/stat) and prints B/A; the median of those
# ratios is the answer (below 1: B spends less).
#
# Usage: tests/bench/ab.sh [--mode down|up|handshake|reject] [--reps N]
#          [--mib M] [--n N] [--line L] [--streams S] BUILD_A BUILD_B
#   down       one POP3 RETR of M MiB (default 512): backend to client
#   up         one SMTP DATA of M MiB: client to backend
#   handshake  N TLS 1.3 handshakes (default 4000), 32 at once
#   reject     N connections (default 120000), 64 at once, from 127.0.0.2,
#              which both moats have banned (moatctl ban): figure 6
#   --reps N   repetitions (default 5); the first to start alternates
#   --streams S  down and up: S sessions at once, M MiB each (default 1)
#   --line L   message lines of L bytes (default 510; mail: 76 or so)
# BUILD_A and BUILD_B are build directories (meson setup DIR && ninja -C
# DIR); loadgen and backend come from BUILD_A. Uses ports 24760-24779 on
# 127.0.0.1. A measurement, not a test: it never runs in CI.
set -u -o pipefail
# shellcheck source=tests/bench/lib.sh
. "$(dirname "$0")/lib.sh"

MODE=down REPS=5 MIB=512 N='' LINE=510 STREAMS=1
while [ $# -gt 2 ]; do
	case $1 in
	--mode) MODE=$2; shift ;;
	--reps) REPS=$2; shift ;;
	--mib) MIB=$2; shift ;;
	--n) N=$2; shift ;;
	--line) LINE=$2; shift ;;
	--streams) STREAMS=$2; shift ;;
	*) break ;;
	esac
	shift
done
if [ $# -ne 2 ]; then
	sed -n '12,24s/^# \{0,1\}//p' "$0" >&2
	exit 2
fi
A=$(cd "$1" 2>/dev/null && pwd) || { echo "ab.sh: no build $1" >&2; exit 2; }
B=$(cd "$2" 2>/dev/null && pwd) || { echo "ab.sh: no build $2" >&2; exit 2; }
LOADGEN=$A/tests/bench/loadgen
BACKEND=$A/tests/bench/backend
MOATCTL=$A/proxy/moatctl
for b in "$A/proxy/moat" "$B/proxy/moat" "$LOADGEN" "$BACKEND" "$MOATCTL"; do
	[ -x "$b" ] || { echo "ab.sh: $b missing: build the tree first" >&2; exit 2; }
done
case $MODE in
down) PORT_OFF=2 LOAD=(stream --proto pop3 -n "$STREAMS" -c "$STREAMS" --mib "$MIB" --line "$LINE") ;;
up) PORT_OFF=1 LOAD=(stream --proto smtp -n "$STREAMS" -c "$STREAMS" --mib "$MIB" --line "$LINE") ;;
handshake) PORT_OFF=0 LOAD=(handshake -n "${N:-4000}" -c 32) ;;
reject) PORT_OFF=0 LOAD=(reject -s 127.0.0.2 -n "${N:-120000}" -c 64 --timeout 5) ;;
*) echo "ab.sh: --mode down, up, handshake or reject" >&2; exit 2 ;;
esac

bench_setup ab.sh 24760 24779

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# Backends: 24760 sink, 24761 SMTP, 24762 POP3 (as the listeners' order).
for m in sink smtp pop3; do
	port=$((24760 + ${#PIDS[@]}))
	"$BACKEND" -l "127.0.0.1:$port" -m $m -L "$LINE" >/dev/null 2>"$W/backend-$m.log" &
	PIDS+=($!)
done
wait_listen 24760 24761 24762 || { echo "ab.sh: backends did not start" >&2; exit 1; }

start_moat() {	# NAME BUILD BASE
	local d=$W/$1
	mkdir -p "$d"
	{
		moat_conf_head "$d" "$W/cert.pem" "$W/key.pem" 1
		moat_listener hs "$3" smtp implicit 24760
		moat_listener smtps $(($3 + 1)) smtp implicit 24761
		moat_listener pop3s $(($3 + 2)) pop3 implicit 24762
		moat_conf_tail
	} >"$d/moat.toml"
	"$2/proxy/moat" -c "$d/moat.toml" >"$d/out.log" 2>&1 &
	PIDS+=($!)
}

start_moat a "$A" 24770
PID_a=$!
start_moat b "$B" 24775
PID_b=$!
wait_listen 24770 24771 24772 24775 24776 24777 ||
	{ echo "ab.sh: moat did not start; see its log:" >&2; cat "$W"/[ab]/out.log >&2; exit 1; }

if [ "$MODE" = reject ]; then
	for m in a b; do
		"$MOATCTL" -s "$W/$m/moat.sock" ban 127.0.0.2 1h >"$W/moatctl.out" 2>&1 ||
			{ echo "ab.sh: moatctl ban failed: $(cat "$W/moatctl.out")" >&2; exit 1; }
	done
fi

TLSARGS=(--groups X25519 --ciphersuites TLS_AES_128_GCM_SHA256)
for port in 24770 24775; do	# warm up: lazy initialisation, page faults
	"$LOADGEN" handshake -t "127.0.0.1:$port" -n 50 -c 4 "${TLSARGS[@]}" >/dev/null 2>&1
done

run() {	# PORT OUT
	"$LOADGEN" "${LOAD[@]}" -t "127.0.0.1:$1" "${TLSARGS[@]}" --max-time 600 \
	    >"$2" 2>>"$W/loadgen.err"
}

echo "ab.sh: $MODE, $REPS repetitions, lines of $LINE bytes; A=$A B=$B"
ratios=()
for ((r = 1; r <= REPS; r++)); do
	a0=$(ticks "$PID_a") b0=$(ticks "$PID_b")
	if [ $((r % 2)) = 1 ]; then
		run $((24770 + PORT_OFF)) "$W/ra" & l1=$!
		run $((24775 + PORT_OFF)) "$W/rb" & l2=$!
	else
		run $((24775 + PORT_OFF)) "$W/rb" & l2=$!
		run $((24770 + PORT_OFF)) "$W/ra" & l1=$!
	fi
	wait $l1 $l2
	a1=$(ticks "$PID_a") b1=$(ticks "$PID_b")
	for f in ra rb; do
		grep -q 'complete=1' "$W/$f" ||
			{ echo "ab.sh: run $r incomplete: $(cat "$W/$f")" >&2; tail -3 "$W/loadgen.err" >&2; exit 1; }
	done
	ratio=$(awk "BEGIN { printf \"%.3f\", ($b1 - $b0) / ($a1 - $a0) }")
	ratios+=("$ratio")
	echo "  run $r: A $((a1 - a0)) ticks, B $((b1 - b0)) ticks, B/A $ratio"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ x[NR] = $1 }
    END { m = NR % 2 ? x[(NR + 1) / 2] : (x[NR / 2] + x[NR / 2 + 1]) / 2
          printf "B/A CPU: median %.3f (min %.3f, max %.3f) over %d runs; below 1: B spends less\n", m, x[1], x[NR], NR }'
