#!/bin/bash
# tools/test.sh - every test of seerfs, on a fresh Debian 12 machine.
#
# Needs root (it re-runs itself through sudo when started by another user):
# it installs what is missing, creates the user `seer`, makes /dev/fuse
# usable by everyone, then
#   1. builds three trees: build (debugoptimized), build-asan (ASan+UBSan)
#      and build-fuzz (clang, libFuzzer targets only);
#   2. runs the unit tests (meson test) in build and build-asan;
#   3. runs the fuzzers (config, ctlcmd, link) for $SEERFS_FUZZ_SECONDS (default 20) each;
#   4. runs the integration tests (pytest, tests/integration) as root against
#      build-asan, then test_posix.py and test_exec.py again as root against
#      build with SEERFS_TEST_PROVIDER=ssh (the same test bodies on a sandbox
#      of the ssh provider, served by a private sshd: docs/ssh.md), with
#      SEERFS_TEST_PROVIDER=docker with test_docker.py (a dockerd of the
#      tests' own: docs/docker.md; test_docker.py runs only there), with
#      SEERFS_TEST_PROVIDER=docker-remote with test_docker_remote.py (the
#      same dockerd forced remote: root/ over SFTP in the container), the two
#      tests that need fs/root/pass.c alone through the passmount harness
#      (build-asan), then all of them as the ordinary user seer against build.
# The summary lists each stage's counts, the skips grouped by their reason
# and the unexpected passes; it ends with one line, "N passed, N failed,
# N skipped" (skipped counts expected failures, which mark known bugs, too),
# and exits non-zero when anything failed. A skip that names no reason and an
# unexpected pass (xpass: a known bug's test passes, so its mark is stale)
# count as failed.
#
# Environment: SEERFS_FUZZ_SECONDS, SEERFS_TEST_ONLY (a pytest -k expression),
# SEERFS_TEST_SKIP_FUZZ=1, SEERFS_TEST_SKIP_SEER=1 (for quick local runs).
set -u

if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		exec sudo --preserve-env=SEERFS_FUZZ_SECONDS,SEERFS_TEST_ONLY,SEERFS_TEST_SKIP_FUZZ,SEERFS_TEST_SKIP_SEER \
			"$0" "$@"
	fi
	echo "tools/test.sh: run me as root (it installs packages and mounts as two users)" >&2
	exit 2
fi

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 2
PY=/usr/bin/python3            # Debian's, with python3-pytest; not a pyenv one on PATH
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONDONTWRITEBYTECODE=1
export DEBIAN_FRONTEND=noninteractive
LOGDIR=$(mktemp -d /tmp/seerfs-test-logs.XXXXXX)
chmod 755 "$LOGDIR"
START=$(date +%s)

PASSED=0 FAILED=0 SKIPPED=0 XPASSED=0
SUMMARY=()
# One line per pytest skip summary line, "stage<TAB>count<TAB>place<TAB>reason",
# and one per unexpected pass, "stage<TAB>test and reason".
SKIPS=$LOGDIR/skips.tsv XPASSES=$LOGDIR/xpasses.tsv
: >"$SKIPS"
: >"$XPASSES"

note() { printf '\n==== %s\n' "$*"; }
record() {   # stage passed failed skipped [extra words]
	PASSED=$((PASSED + $2)) FAILED=$((FAILED + $3)) SKIPPED=$((SKIPPED + $4))
	SUMMARY+=("$(printf '%-28s %4d passed, %d failed, %d skipped %s' "$1" "$2" "$3" "$4" "${5:-}")")
}
fail_step() { record "$1" 0 1 0 "($2)"; echo "tools/test.sh: $1: $2" >&2; }

summary() {   # each stage's counts, the skips by reason, the xpasses, then the totals line
	local line
	for line in "${SUMMARY[@]}"; do
		echo "  $line"
	done
	if [ -s "$SKIPS" ]; then
		echo "skipped, by reason (count, reason, stages):"
		awk -F'\t' '
			{ n[$4] += $2; if (index(";" st[$4] ";", ";" $1 ";") == 0) st[$4] = st[$4] (st[$4] == "" ? "" : ";") $1 }
			$4 ~ /^NO REASON GIVEN/ { at[$4] = at[$4] " " $3 }
			END { for (r in n) { s = st[r]; gsub(/;/, ", ", s); printf "%6d  %s  [%s]%s\n", n[r], r, s, (r in at) ? "  at" at[r] : "" } }
		' "$SKIPS" | sort -k1,1nr -k2
	fi
	if [ -s "$XPASSES" ]; then
		echo "unexpected passes (xpass; counted as failed: drop the xfail mark of a fixed bug):"
		awk -F'\t' '{ printf "        %s  [%s]\n", $2, $1 }' "$XPASSES"
	fi
	[ "$XPASSED" -gt 0 ] && echo "$XPASSED xpassed (in failed)"
	echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
}

# ---- 1. packages, user, /dev/fuse ---------------------------------------------------

PKGS="meson ninja-build gcc clang libclang-rt-14-dev pkg-config libfuse3-dev fuse3 libjson-c-dev
libcurl4-openssl-dev libssh2-1-dev libseccomp-dev bubblewrap python3 python3-pytest openssh-server openssh-client git jupyter-notebook sshfs
vim-tiny attr rsync util-linux procps man-db groff-base python3-numpy python3-matplotlib python3-nbformat nodejs
libarchive-dev docker.io podman runc uidmap mmdebstrap openssl"
missing=""
for p in $PKGS; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
	note "installing:$missing"
	if ! { apt-get update -q && apt-get install -y -q --no-install-recommends $missing; }; then
		fail_step "install packages" "apt-get install failed:$missing"
	fi
fi
id -u seer >/dev/null 2>&1 || useradd -m -s /bin/bash seer
if [ -e /dev/fuse ]; then
	chmod 666 /dev/fuse
else
	fail_step "/dev/fuse" "no /dev/fuse on this machine: FUSE is unavailable"
fi

# ---- 2. builds ---------------------------------------------------------------------------

build() {   # dir [setup args...]; CC may be set by the caller
	local dir=$1
	shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" >"$LOGDIR/$dir-setup.log" 2>&1 || {
			cat "$LOGDIR/$dir-setup.log"
			return 1
		}
	fi
	return 0
}

# Warnings are errors here (-Dwerror=true); meson.build leaves it off so that a
# packager's release build does not fail on a new compiler's warning.
note "building build (debugoptimized), build-asan (ASan+UBSan), build-fuzz (clang)"
BUILD_OK=1 ASAN_OK=1 FUZZ_OK=1
if build build --buildtype=debugoptimized -Dwerror=true && ninja -C build >"$LOGDIR/build.log" 2>&1; then :; else
	tail -40 "$LOGDIR/build.log" 2>/dev/null
	fail_step "build" "see $LOGDIR/build.log"
	BUILD_OK=0
fi
if build build-asan --buildtype=debugoptimized -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false &&
	ninja -C build-asan >"$LOGDIR/build-asan.log" 2>&1; then :; else
	tail -40 "$LOGDIR/build-asan.log" 2>/dev/null
	fail_step "build-asan" "see $LOGDIR/build-asan.log"
	ASAN_OK=0
fi
if [ "${SEERFS_TEST_SKIP_FUZZ:-0}" = 1 ]; then
	FUZZ_OK=0
elif CC=clang build build-fuzz -Dwerror=true -Dfuzz=true && ninja -C build-fuzz tests/fuzz_config tests/fuzz_ctlcmd tests/fuzz_link \
	>"$LOGDIR/build-fuzz.log" 2>&1; then :; else
	tail -40 "$LOGDIR/build-fuzz.log" 2>/dev/null
	fail_step "build-fuzz" "see $LOGDIR/build-fuzz.log"
	FUZZ_OK=0
fi

# The container engines' base image (tests/integration/engines.py imports it
# into dockerd and Podman): a bookworm minbase from Debian's mirror, built once
# (about a minute) and cached in /var/cache/seerfs-test by its recipe's hash.
note "engine base image (tools/engine-image.sh)"
if ! IMAGE_TAR=$(tools/engine-image.sh 2>"$LOGDIR/engine-image.log"); then
	cat "$LOGDIR/engine-image.log"
	fail_step "engine base image" "tools/engine-image.sh (mmdebstrap) failed: see $LOGDIR/engine-image.log; the docker_engine and podman_engine tests fail without it"
else
	note "engine base image: $IMAGE_TAR"
fi

# ---- 3. unit tests and fuzzers (meson test) ----------------------------------------------

meson_counts() {   # stage logfile: adds the counts of a meson test summary
	local ok xf fail up skip to
	ok=$(awk '/^Ok:/{print $2}' "$2" | tail -1)
	xf=$(awk '/^Expected Fail:/{print $3}' "$2" | tail -1)
	fail=$(awk '/^Fail:/{print $2}' "$2" | tail -1)
	up=$(awk '/^Unexpected Pass:/{print $3}' "$2" | tail -1)
	skip=$(awk '/^Skipped:/{print $2}' "$2" | tail -1)
	to=$(awk '/^Timeout:/{print $2}' "$2" | tail -1)
	if [ -z "$ok" ]; then
		fail_step "$1" "no meson test summary; see $2"
		return
	fi
	# meson's summary gives no reason for a skip (exit status 77): none of
	# these tests may skip, so one counts as failed.
	XPASSED=$((XPASSED + ${up:-0}))
	record "$1" "$((ok + ${xf:-0}))" "$((${fail:-0} + ${up:-0} + ${to:-0} + ${skip:-0}))" 0 \
		"$(extras "${xf:-0}" "${up:-0}" "${skip:-0}")"
}

extras() {   # xfailed xpassed skips-without-reason: the words after a stage's counts
	local w=()
	[ "$1" -gt 0 ] && w+=("$1 xfailed: known bugs")
	[ "$2" -gt 0 ] && w+=("$2 xpassed: counted as failed")
	[ "$3" -gt 0 ] && w+=("$3 skipped without a reason: counted as failed")
	[ ${#w[@]} -gt 0 ] && (IFS=';'; echo "(${w[*]})" | sed 's/;/; /g')
	return 0
}

# pytest -rsX prints "SKIPPED [N] file:line: reason" for each place and reason
# and "XPASS file::test reason" for each unexpected pass; this files them in
# $SKIPS and $XPASSES and prints how many skips name no reason: pytest's own
# words when none was given ("Skipped", "unconditional skip", a bare
# skipif's "condition: ...").
skips_of() {   # stage logfile
	awk -v stage="$1" -v skips="$SKIPS" -v xpasses="$XPASSES" '
		/^SKIPPED \[[0-9]+\] / {
			n = substr($2, 2, length($2) - 2)
			rest = substr($0, length($1) + length($2) + 3)
			i = index(rest, ": ")
			if (i) {
				place = substr(rest, 1, i - 1)
				why = substr(rest, i + 2)
			} else {
				place = rest
				why = ""
			}
			sub(/:$/, "", place)
			gsub(/^[ \t]+|[ \t]+$/, "", why)
			if (why == "" || why == "Skipped" || why == "unconditional skip" || why ~ /^condition: /) {
				bare += n
				why = "NO REASON GIVEN (" (why == "" ? "empty" : why) ")"
			}
			printf "%s\t%d\t%s\t%s\n", stage, n, place, why >> skips
		}
		/^XPASS / { printf "%s\t%s\n", stage, substr($0, 7) >> xpasses }
		END { print bare + 0 }' "$2"
}


if [ $BUILD_OK = 1 ]; then
	note "unit tests: build"
	# The 'net' suite (hub downloader, SSH client: real servers) runs once,
	# under the sanitizers below; here only the C unit tests.
	meson test -C build --no-rebuild --no-suite net --print-errorlogs >"$LOGDIR/meson-build.log" 2>&1
	grep -E '^ *[0-9]+/[0-9]+ ' "$LOGDIR/meson-build.log"
	meson_counts "unit tests (build)" "$LOGDIR/meson-build.log"
fi
if [ $ASAN_OK = 1 ]; then
	note "unit tests: build-asan"
	meson test -C build-asan --no-rebuild --print-errorlogs >"$LOGDIR/meson-asan.log" 2>&1
	grep -E '^ *[0-9]+/[0-9]+ ' "$LOGDIR/meson-asan.log"
	meson_counts "unit tests (build-asan)" "$LOGDIR/meson-asan.log"
fi
if [ $FUZZ_OK = 1 ]; then
	note "fuzzers: ${SEERFS_FUZZ_SECONDS:-20} s each"
	SEERFS_FUZZ_SECONDS=${SEERFS_FUZZ_SECONDS:-20} meson test -C build-fuzz --no-rebuild --suite fuzz \
		--print-errorlogs >"$LOGDIR/meson-fuzz.log" 2>&1
	grep -E '^ *[0-9]+/[0-9]+ ' "$LOGDIR/meson-fuzz.log"
	meson_counts "fuzzers (build-fuzz)" "$LOGDIR/meson-fuzz.log"
fi

# ---- 4. integration tests -----------------------------------------------------------------

pytest_counts() {   # stage logfile: adds the counts of pytest's closing line
	local line n kw p=0 f=0 s=0 xf=0 xp=0 bare
	line=$(grep -E '(passed|failed|errors?|skipped|xfailed|xpassed|deselected|no tests ran)(,| ).*in [0-9.]+s( \([0-9:]+\))?( =+)?$' "$2" | tail -1)
	if [ -z "$line" ]; then
		fail_step "$1" "no pytest summary (crashed or timed out); see $2"
		return
	fi
	for kw in passed failed errors error skipped xfailed xpassed; do
		n=$(echo "$line" | grep -oE "(^|[^a-z])[0-9]+ $kw\b" | grep -oE '[0-9]+' | head -1)
		n=${n:-0}
		case $kw in
		passed) p=$((p + n)) ;;
		xpassed) xp=$((xp + n)) ;;
		failed | error | errors) f=$((f + n)) ;;
		skipped) s=$((s + n)) ;;
		xfailed) xf=$((xf + n)) ;;
		esac
	done
	bare=$(skips_of "$1" "$2")
	[ "$bare" -gt "$s" ] && bare=$s
	XPASSED=$((XPASSED + xp))
	record "$1" "$p" "$((f + xp + bare))" "$((s - bare + xf))" "$(extras "$xf" "$xp" "$bare")"
}

# test_hf_unit.py and test_ssh_unit.py run through meson test (suite net).
# -rs and -rX print the skips' reasons and the unexpected passes the summary lists.
PYTEST_ARGS=(-p no:cacheprovider -q -rfEsxX --ignore=tests/integration/test_hf_unit.py
	--ignore=tests/integration/test_ssh_unit.py)
[ -n "${SEERFS_TEST_ONLY:-}" ] && PYTEST_ARGS+=(-k "$SEERFS_TEST_ONLY")

if [ $ASAN_OK = 1 ] && [ -e /dev/fuse ]; then
	note "integration tests as root, build-asan"
	env SEERFS_BUILD="$REPO/build-asan" SEERFS_TEST_PROVIDER=local \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:print_summary=1 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		timeout 1800 "$PY" -m pytest "${PYTEST_ARGS[@]}" --ignore=tests/integration/test_docker.py --ignore=tests/integration/test_docker_remote.py tests/integration 2>&1 | tee "$LOGDIR/pytest-root.log" |
		tail -80
	pytest_counts "integration (root, asan)" "$LOGDIR/pytest-root.log"
fi

# The POSIX, editor, git, fsx and exec tests once more, on the ssh provider
# (about 3 minutes on 2 cores). The plain build: under ASan the SFTP round
# trips of these tests take several times as long.
if [ $BUILD_OK = 1 ] && [ -e /dev/fuse ]; then
	note "integration tests on the ssh provider as root, build"
	env SEERFS_BUILD="$REPO/build" SEERFS_TEST_PROVIDER=ssh \
		timeout 900 "$PY" -m pytest "${PYTEST_ARGS[@]}" tests/integration/test_posix.py \
		tests/integration/test_exec.py 2>&1 | tee "$LOGDIR/pytest-ssh.log" | tail -40
	pytest_counts "integration (root, ssh)" "$LOGDIR/pytest-ssh.log"
fi

# The same bodies on the docker provider, plus its own tests (test_docker.py:
# package layers, snapshots, adoption, an engine killed mid-job, TLS, escapes)
# against a dockerd of the tests' own (tests/integration/engines.py), as root.
# The plain build: the container's init is a static, unsanitized agent either way.
if [ $BUILD_OK = 1 ] && [ -e /dev/fuse ] && command -v dockerd >/dev/null; then
	note "integration tests on the docker provider as root, build"
	env SEERFS_BUILD="$REPO/build" SEERFS_TEST_PROVIDER=docker \
		timeout 1200 "$PY" -m pytest "${PYTEST_ARGS[@]}" tests/integration/test_posix.py \
		tests/integration/test_exec.py tests/integration/test_docker.py 2>&1 | tee "$LOGDIR/pytest-docker.log" | tail -40
	pytest_counts "integration (root, docker)" "$LOGDIR/pytest-docker.log"
	# The same dockerd as a remote engine (its TLS endpoint, "local": false):
	# root/ is SFTP in the container, commands go through the perl agent over
	# one Engine API exec stream (one exec each without perl), models
	# are volumes (test_docker_remote.py runs only here).
	note "integration tests on the docker provider, remote engine, as root, build"
	env SEERFS_BUILD="$REPO/build" SEERFS_TEST_PROVIDER=docker-remote \
		timeout 1200 "$PY" -m pytest "${PYTEST_ARGS[@]}" tests/integration/test_posix.py \
		tests/integration/test_exec.py tests/integration/test_docker_remote.py 2>&1 |
		tee "$LOGDIR/pytest-docker-remote.log" | tail -40
	pytest_counts "integration (root, docker-remote)" "$LOGDIR/pytest-docker-remote.log"
fi

# fs/root/pass.c alone, through the passmount harness (tests/drivers/passmount.c):
# the tests that need to reach into it (pass_kill, the fd budget).
if [ $ASAN_OK = 1 ] && [ -e /dev/fuse ]; then
	note "root/ through the passmount harness, build-asan"
	env SEERFS_BUILD="$REPO/build-asan" SEERFS_TEST_PASSMOUNT=1 \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:print_summary=1 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		timeout 600 "$PY" -m pytest "${PYTEST_ARGS[@]}" -k "pass_kill or fd_budget" tests/integration/test_posix.py \
		2>&1 | tee "$LOGDIR/pytest-harness.log" | tail -20
	pytest_counts "integration (harness)" "$LOGDIR/pytest-harness.log"
fi

if [ $BUILD_OK = 1 ] && [ -e /dev/fuse ] && [ "${SEERFS_TEST_SKIP_SEER:-0}" != 1 ]; then
	note "integration tests as user seer, build"
	WORK=$REPO
	# seer must reach the tests and the binaries; when the checkout is not
	# readable by others (say under /root), test a readable copy of it.
	if ! runuser -u seer -- test -r "$REPO/tests/integration/conftest.py" -a -x "$REPO/build/fs/seerfs"; then
		WORK=$(mktemp -d /tmp/seerfs-test-tree.XXXXXX)
		rsync -a --exclude .git --exclude build-asan --exclude build-fuzz "$REPO/" "$WORK/"
		chmod -R a+rX "$WORK"
		chmod 755 "$WORK"
	fi
	(cd "$WORK" && runuser -u seer -- env -i PATH="$PATH" HOME="$(getent passwd seer | cut -d: -f6)" \
		USER=seer LOGNAME=seer LANG=C.UTF-8 TMPDIR=/tmp PYTHONDONTWRITEBYTECODE=1 \
		SEERFS_BUILD="$WORK/build" SEERFS_TEST_USER=seer \
		timeout 1800 "$PY" -m pytest "${PYTEST_ARGS[@]}" tests/integration) 2>&1 |
		tee "$LOGDIR/pytest-seer.log" | tail -80
	pytest_counts "integration (seer)" "$LOGDIR/pytest-seer.log"
	[ "$WORK" != "$REPO" ] && rm -rf "$WORK"
fi

# ---- summary ---------------------------------------------------------------------------------

note "summary ($(($(date +%s) - START)) s; logs in $LOGDIR)"
summary
[ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]
