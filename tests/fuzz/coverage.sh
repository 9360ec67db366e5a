#!/bin/sh
# Line and branch coverage that each fuzz target's corpus reaches in the
# code it is about, benchmark-style (never in CI): every input of the seed
# corpus and of what long.sh grew runs once through a coverage build, and
# llvm-cov reports the target's own source files.
#
# Usage: tests/fuzz/coverage.sh COV_BUILD [LONG_BUILD] [TARGET...]
#   COV_BUILD   a build made with
#               CC=clang meson setup COV_BUILD -Dfuzz=true -Db_lundef=false \
#                 -Dc_args='-fprofile-instr-generate -fcoverage-mapping' \
#                 -Dc_link_args=-fprofile-instr-generate
#   LONG_BUILD  a fuzz build whose LONG_BUILD/fuzz-long/NAME corpora
#               (tests/fuzz/long.sh) are replayed too; "-" for none
#   TARGET      names such as toml, smtp (default: all)
# Needs llvm-profdata and llvm-cov (Debian's llvm package, same version
# as clang).
set -eu

[ $# -ge 1 ] || { sed -n '2,16s/^# \{0,1\}//p' "$0" >&2; exit 2; }
cov=$(cd "$1" && pwd)
long=-
[ $# -ge 2 ] && { long=$2; shift; }
shift
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$cov/fuzz-cov
mkdir -p "$out"
[ $# -ge 1 ] || set -- toml config state addr proxyproto smtp pop3

files_of() {	# the sources a target exists to exercise
	case $1 in
	toml) echo policy/toml.c ;;
	config) echo policy/config.c ;;
	state) echo policy/state.c ;;
	addr) echo policy/addr.c policy/cidr.c policy/duration.c ;;
	proxyproto) echo proxy/proxyproto.c ;;
	smtp) echo proxy/smtp.c proxy/smtp_parse.c proxy/cmdflow.c ;;
	pop3) echo proxy/pop3.c proxy/pop3_parse.c proxy/cmdflow.c ;;
	esac
}

printf '%-11s %7s %7s %9s  %s\n' target inputs lines branches files
for name in "$@"; do
	exe=$cov/tests/fuzz/fuzz_$name
	[ -x "$exe" ] || { echo "coverage.sh: no $exe" >&2; exit 2; }
	set --
	[ -d "$src/tests/fuzz/corpus/$name" ] && set -- "$src/tests/fuzz/corpus/$name"
	[ "$long" != - ] && [ -d "$long/fuzz-long/$name" ] && set -- "$@" "$long/fuzz-long/$name"
	inputs=$(find "$@" -type f | wc -l)
	rm -f "$out/$name".prof*
	LLVM_PROFILE_FILE=$out/$name.profraw "$exe" -runs=0 "$@" \
	    >"$out/$name.log" 2>&1
	llvm-profdata merge -sparse -o "$out/$name.profdata" "$out/$name.profraw"
	paths=
	for f in $(files_of "$name"); do paths="$paths $src/$f"; done
	# The TOTAL line: regions, missed, cover, functions, missed, cover,
	# lines, missed, cover, branches, missed, cover.
	# shellcheck disable=SC2086
	total=$(llvm-cov report "$exe" -instr-profile="$out/$name.profdata" \
	    $paths | awk '/^TOTAL/ { print $10, $13 }')
	set -- $total
	printf '%-11s %7s %7s %9s  %s\n' "$name" "$inputs" "$1" "$2" \
	    "$(files_of "$name")"
done
