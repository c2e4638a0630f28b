#!/bin/sh
# run.sh FUZZER SEED_DIR WORK_DIR [SECONDS] - run one libFuzzer target for a
# while (default $SEERFS_FUZZ_SECONDS or 20 s) over the committed seed corpus.
# New inputs go to WORK_DIR/corpus, never into the seed directory; a crash
# leaves its input in WORK_DIR/artifacts/ and fails the run.
set -eu
fuzzer=$1 seed=$2 work=$3
secs=${4:-${SEERFS_FUZZ_SECONDS:-20}}
mkdir -p "$work/corpus" "$work/artifacts"
exec "$fuzzer" "$work/corpus" "$seed" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
	-artifact_prefix="$work/artifacts/" -print_final_stats=1
