#!/bin/sh
# Gives one libFuzzer target a bounded run: FUZZ_SECONDS (default 30) over
# a copy of its seed corpus, so the seeds in the tree stay untouched.
# Usage: run_fuzz.sh TARGET SEED_DIR [DICT]
# A crash leaves its input in $MESON_BUILD_ROOT-style ./fuzz-artifacts/ and
# fails the run; replay it with `TARGET FILE`.
set -eu
target=$1 seeds=$2 dict=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -R "$seeds"/. "$work"/
mkdir -p fuzz-artifacts
name=$(basename "$target")
set -- -max_total_time="${FUZZ_SECONDS:-30}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="fuzz-artifacts/$name-"
[ -n "$dict" ] && set -- "$@" -dict="$dict"
exec "$target" "$@" "$work"
