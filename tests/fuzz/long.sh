#!/bin/sh
# Long fuzzing runs, benchmark-style (never in CI): every libFuzzer target
# of a fuzz build runs for SECONDS (default 1800) in turn, then one table
# gives executions, exec/s, coverage (edges), features, corpus size and
# crashes per target. Exits 1 if any target crashed or failed to run.
#
# Usage: tests/fuzz/long.sh [-j JOBS] [-s SECONDS] BUILD_DIR [TARGET...]
#   BUILD_DIR  a build made with
#              CC=clang meson setup BUILD_DIR -Dfuzz=true \
#                  -Db_sanitize=address,undefined -Db_lundef=false
#   TARGET     names such as toml, smtp (default: every fuzz_* in BUILD_DIR)
#   -j JOBS    targets run at once (default 1; each takes one core)
# FUZZ_TIMEOUT (default 10) is the per-input time limit in seconds; raise
# it on a loaded machine, where a slow moment is not a hang.
#
# Each target starts from its seeds (tests/fuzz/corpus/NAME) and the corpus
# it grew last time in BUILD_DIR/fuzz-long/NAME, so long runs accumulate.
# Crash inputs land in BUILD_DIR/fuzz-long/NAME-crash-*; replay one with
# BUILD_DIR/tests/fuzz/fuzz_NAME FILE, fix it, and add a regression test.
set -eu

seconds=1800 jobs=1
while getopts j:s: opt; do
	case $opt in
	j) jobs=$OPTARG ;;
	s) seconds=$OPTARG ;;
	*) sed -n '2,19s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { sed -n '2,19s/^# \{0,1\}//p' "$0" >&2; exit 2; }
build=$(cd "$1" && pwd)
shift
src=$(cd "$(dirname "$0")" && pwd)
out=$build/fuzz-long
mkdir -p "$out"

if [ $# -eq 0 ]; then
	for f in "$build"/tests/fuzz/fuzz_*; do
		[ -f "$f" ] && [ -x "$f" ] && set -- "$@" "${f##*/fuzz_}"
	done
fi
[ $# -ge 1 ] || { echo "long.sh: no fuzz targets in $build/tests/fuzz" >&2; exit 2; }

run_one() {	# run_one NAME: fuzz, write the log to $out/NAME.log
	name=$1
	exe=$build/tests/fuzz/fuzz_$name
	mkdir -p "$out/$name"
	set -- -max_total_time="$seconds" -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb=2048 \
	    -print_final_stats=1 -artifact_prefix="$out/$name-"
	[ -f "$src/$name.dict" ] && set -- "$@" -dict="$src/$name.dict"
	[ -d "$src/corpus/$name" ] && set -- "$@" "$out/$name" "$src/corpus/$name"
	[ -d "$src/corpus/$name" ] || set -- "$@" "$out/$name"
	if "$exe" "$@" >"$out/$name.log" 2>&1; then
		echo 0 >"$out/$name.rc"
	else
		echo $? >"$out/$name.rc"
	fi
}

echo "long.sh: $# target(s), ${seconds}s each, $jobs at a time, output in $out"
running=0
for name in "$@"; do
	[ -x "$build/tests/fuzz/fuzz_$name" ] || {
		echo "long.sh: no target $build/tests/fuzz/fuzz_$name" >&2; exit 2; }
	rm -f "$out/$name.rc"
	run_one "$name" &
	running=$((running + 1))
	if [ "$running" -ge "$jobs" ]; then
		wait
		running=0
	fi
done
wait

failed=0
printf '%-12s %14s %9s %8s %8s %8s %7s %s\n' target executions exec/s cov ft corpus crashes result
for name in "$@"; do
	log=$out/$name.log
	rc=$(cat "$out/$name.rc" 2>/dev/null || echo 1)
	execs=$(sed -n 's/^stat::number_of_executed_units: //p' "$log" | tail -1)
	speed=$(sed -n 's/^stat::average_exec_per_sec: //p' "$log" | tail -1)
	# The last status line, e.g. "#123 DONE cov: 456 ft: 789 corp: 12/3Kb ...".
	last=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -1 || true)
	cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
	ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
	corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
	crashes=$(find "$out" -maxdepth 1 -name "$name-*" -type f | wc -l)
	result=ok
	if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
		result="FAILED (rc=$rc, see $log)"
		failed=1
	fi
	printf '%-12s %14s %9s %8s %8s %8s %7s %s\n' "$name" "${execs:-?}" \
	    "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes" "$result"
done
exit $failed
