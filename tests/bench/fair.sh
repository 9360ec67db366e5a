#!/usr/bin/env bash
# fair.sh - does one moat worker keep answering while bulk transfers run?
#
# One moat with one worker, STREAMS bulk sessions moving mail through it
# (SMTP DATA up, or POP3 RETR down, implicit TLS), and meanwhile one more
# session timing SMTP NOOP round trips through the same worker: the
# p50/p90/p99/max of those round trips, next to the same with no bulk
# load. A worker that lets one busy session run until its sockets are dry
# shows it in the max (seconds); one that takes turns keeps every round
# trip within a few turns of the busy sessions.
#
# Usage: tests/bench/fair.sh [--reps N] [--streams S] [--rounds R]
#          BUILD_A [BUILD_B]
#   --reps N     repetitions (default 3); with two builds they alternate
#   --streams S  bulk sessions at once (default 4)
#   --rounds R   NOOP round trips per measurement (default 3000)
# BUILD_A and BUILD_B are build directories (meson setup DIR && ninja -C
# DIR); loadgen and backend come from BUILD_A. Prints one line per
# measurement and, with two builds, the median of each figure per build
# and B/A (medians of the runs where no round trip waited 10 s, loadgen's
# limit: such runs are counted as stalled). Uses ports 24780-24789 on
# 127.0.0.1. A measurement, not a test: it never runs in CI.
set -u -o pipefail
# shellcheck source=tests/bench/lib.sh
. "$(dirname "$0")/lib.sh"

REPS=3 STREAMS=4 ROUNDS=3000
while [ $# -gt 0 ]; do
	case $1 in
	--reps) REPS=$2; shift ;;
	--streams) STREAMS=$2; shift ;;
	--rounds) ROUNDS=$2; shift ;;
	-*) sed -n '12,22s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
	*) break ;;
	esac
	shift
done
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	sed -n '12,22s/^# \{0,1\}//p' "$0" >&2
	exit 2
fi
BUILDS=()
for b in "$@"; do
	d=$(cd "$b" 2>/dev/null && pwd) || { echo "fair.sh: no build $b" >&2; exit 2; }
	[ -x "$d/proxy/moat" ] || { echo "fair.sh: $d/proxy/moat missing: build the tree first" >&2; exit 2; }
	BUILDS+=("$d")
done
LOADGEN=${BUILDS[0]}/tests/bench/loadgen
BACKEND=${BUILDS[0]}/tests/bench/backend
for b in "$LOADGEN" "$BACKEND"; do
	[ -x "$b" ] || { echo "fair.sh: $b missing: build the tree first" >&2; exit 2; }
done

bench_setup fair.sh 24780 24789

# Backends: 24780 SMTP, 24781 POP3.
"$BACKEND" -l 127.0.0.1:24780 -m smtp >/dev/null 2>"$W/backend-smtp.log" &
PIDS+=($!)
"$BACKEND" -l 127.0.0.1:24781 -m pop3 >/dev/null 2>"$W/backend-pop3.log" &
PIDS+=($!)
wait_listen 24780 24781 || { echo "fair.sh: backends did not start" >&2; exit 1; }

{
	moat_conf_head "$W" "$W/cert.pem" "$W/key.pem" 1
	moat_listener smtps 24785 smtp implicit 24780
	moat_listener pop3s 24786 pop3 implicit 24781
	moat_conf_tail
} >"$W/moat.toml"

TLSARGS=(--groups X25519 --ciphersuites TLS_AES_128_GCM_SHA256)
# The figures of loadgen's RESULT line that are printed, in this order.
FIGS="p50_us p90_us p99_us max_us"

measure() {	# BUILD LOAD(idle|up|down) REP: one line into $W/results
	local b=$1 load=$2 rep=$3 bulk='' out m
	"$b/proxy/moat" -c "$W/moat.toml" >"$W/moat.log" 2>&1 &
	m=$!
	wait_listen 24785 24786 || { echo "fair.sh: moat did not start:" >&2; cat "$W/moat.log" >&2; exit 1; }
	case $load in
	up) "$LOADGEN" stream -t 127.0.0.1:24785 --proto smtp -n "$STREAMS" \
	    -c "$STREAMS" --mib 4096 --max-time 120 "${TLSARGS[@]}" \
	    >/dev/null 2>>"$W/loadgen.err" & bulk=$! ;;
	down) "$LOADGEN" stream -t 127.0.0.1:24786 --proto pop3 -n "$STREAMS" \
	    -c "$STREAMS" --mib 4096 --max-time 120 "${TLSARGS[@]}" \
	    >/dev/null 2>>"$W/loadgen.err" & bulk=$! ;;
	esac
	[ -n "$bulk" ] && sleep 1	# the streams are up and moving
	out=$("$LOADGEN" latency -t 127.0.0.1:24785 --rounds "$ROUNDS" \
	    --max-time 120 "${TLSARGS[@]}" 2>>"$W/loadgen.err" | grep '^RESULT')
	if [ -n "$bulk" ]; then
		kill -0 "$bulk" 2>/dev/null ||
			echo "fair.sh: the bulk load ended before the round trips did; raise its size" >&2
		kill "$bulk" 2>/dev/null
		wait "$bulk" 2>/dev/null
	fi
	kill "$m"
	wait "$m" 2>/dev/null
	if ! grep -q 'complete=1' <<<"$out"; then
		# A round trip that waited 10 s (loadgen's --timeout): a
		# result, the worst one, not a failure of the script.
		grep -q 'fail=1' <<<"$out" ||
			{ echo "fair.sh: no result from loadgen: ${out:-nothing}" >&2; tail -3 "$W/loadgen.err" >&2; exit 1; }
		echo "$b $load $rep stalled" >>"$W/results"
		printf '  %-5s rep %d %s: a round trip got no answer for 10 s\n' "$load" "$rep" "${b##*/}"
		return
	fi
	local line="$b $load $rep"
	for f in $FIGS; do
		line+=" $(grep -o "$f=[0-9.]*" <<<"$out" | cut -d= -f2)"
	done
	echo "$line" >>"$W/results"
	printf '  %-5s rep %d %s: ' "$load" "$rep" "${b##*/}"
	for f in $FIGS; do printf '%s %s  ' "${f%_us}" "$(grep -o "$f=[0-9.]*" <<<"$out" | cut -d= -f2)"; done
	echo "(us)"
}

echo "fair.sh: NOOP round trips through one worker, $STREAMS bulk streams, $REPS repetitions"
for ((r = 1; r <= REPS; r++)); do
	for load in idle up down; do
		order=("${BUILDS[@]}")
		[ $((r % 2)) = 0 ] && [ ${#BUILDS[@]} = 2 ] && order=("${BUILDS[1]}" "${BUILDS[0]}")
		for b in "${order[@]}"; do
			measure "$b" "$load" "$r"
		done
	done
done

echo "medians (us):"
for load in idle up down; do
	for b in "${BUILDS[@]}"; do
		awk -v b="$b" -v l="$load" '
		    $1 == b && $2 == l && $4 == "stalled" { stalled++ }
		    $1 == b && $2 == l && $4 != "stalled" { n++; for (i = 4; i <= NF; i++) v[i, n] = $i }
		    function med(i,   k, j, t, a) {
			for (k = 1; k <= n; k++) a[k] = v[i, k]
			for (k = 1; k <= n; k++) for (j = k + 1; j <= n; j++)
			    if (a[j] < a[k]) { t = a[k]; a[k] = a[j]; a[j] = t }
			return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		    }
		    END { if (n == 0) { printf "  %-5s %-40s every run stalled\n", l, b; exit }
			  printf "  %-5s %-40s p50 %9.1f  p90 %9.1f  p99 %9.1f  max %10.1f", l, b,
			      med(4), med(5), med(6), med(7)
			  if (stalled) printf "  (and %d run(s) stalled)", stalled
			  printf "\n" }' "$W/results"
	done
done | tee "$W/medians"
if [ ${#BUILDS[@]} = 2 ]; then
	echo "B/A of the medians (below 1: B answers sooner):"
	awk -v a="${BUILDS[0]}" -v b="${BUILDS[1]}" '
	    $2 == a { for (i = 4; i <= 10; i += 2) A[$1, i] = $i }
	    $2 == b { for (i = 4; i <= 10; i += 2) B[$1, i] = $i }
	    END {
		n = split("idle up down", L, " ")
		for (o = 1; o <= n; o++) {
			l = L[o]
			printf "  %-5s p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", l,
			    B[l, 4] / A[l, 4], B[l, 6] / A[l, 6],
			    B[l, 8] / A[l, 8], B[l, 10] / A[l, 10]
		}
	    }' "$W/medians"
fi
