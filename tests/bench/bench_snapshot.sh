#!/bin/sh
# bench_snapshot.sh - time of `snapshot NAME` and of restoring it into a new
# sandbox, for sandboxes holding 10 MB, 1 GB and 10,000 small files, beside
# `cp -a` of the same tree (the overlay's upper dir) on the same disk.
# Prints a table. Not run by CI.
#
#   tests/bench/bench_snapshot.sh [BUILD_DIR]     (default: build)
#
# The state directory goes under $BENCH_DIR (default /var/tmp), so that the
# copy measures a real disk rather than tmpfs.
set -eu

BUILD=${1:-build}
SEERFS=$BUILD/fs/seerfs
BASE=${BENCH_DIR:-/var/tmp}/seerfs-bench.$$
M=$BASE/mnt
S=$BASE/state
mkdir -p "$M"
"$SEERFS" "$M" -o state="$S"
cleanup() {
	for d in "$M"/*/; do
		n=$(basename "$d")
		[ "$n" = snapshots ] && continue
		echo terminate > "$d/ctl" 2>/dev/null || true
	done
	sleep 1
	fusermount3 -u "$M" 2>/dev/null || fusermount3 -u -z "$M" 2>/dev/null || true
	rm -rf "$BASE"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc; }

run() {   # run SANDBOX COMMAND: through exec, waits for the end
	printf '%s' "$2" > "$M/$1/exec"
	cat "$M/$1/jobs/latest/exit" > /dev/null
}

bench() {   # bench LABEL COMMAND-THAT-FILLS-/workspace
	name=$1
	mkdir "$M/$name"
	echo '{}' > "$M/$name/config.json"
	cat "$M/$name/wait" > /dev/null
	run "$name" "$2"
	sync
	t0=$(now)
	echo "snapshot snap-$name" > "$M/$name/ctl"
	t1=$(now)
	mkdir "$M/r-$name"
	echo "{\"snapshot\": \"snap-$name\"}" > "$M/r-$name/config.json"
	cat "$M/r-$name/wait" > /dev/null
	t2=$(now)
	sync
	t3=$(now)
	cp -a "$S/sandboxes/$name/fs/upper" "$BASE/cp-$name"
	sync
	t4=$(now)
	rm -rf "$BASE/cp-$name"
	frozen=$(grep -o "frozen [0-9.]* s" "$M/$name/log" | tail -1 | cut -d' ' -f2)
	printf '%-14s %12s %12s %12s %12s\n' "$name" "$(elapsed "$t0" "$t1")" "$frozen" "$(elapsed "$t1" "$t2")" \
		"$(elapsed "$t3" "$t4")"
	echo terminate > "$M/r-$name/ctl"
	echo terminate > "$M/$name/ctl"
}

printf 'state dir: %s (%s)\n' "$S" "$(df -T "$BASE" | awk 'NR==2 {print $2}')"
printf '%-14s %12s %12s %12s %12s\n' "sandbox" "snapshot s" "frozen s" "restore s" "cp -a s"
bench mb10 "head -c 10000000 /dev/urandom > /workspace/f"
bench gb1 "head -c 1000000000 /dev/urandom > /workspace/f"
bench small10k "mkdir /workspace/s && cd /workspace/s && seq 1 10000 | split -l 1 -a 5 - f"
