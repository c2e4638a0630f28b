#!/bin/bash
# tools/demo.sh - seerfs in one minute: installs what is missing (Debian 12),
# builds, mounts a temporary seerfs, makes a sandbox, shows its status, log
# and files, runs a command in it, terminates it, removes it and unmounts.
# Everything it makes lives in a temporary directory that is removed at the
# end. Needs root for the package installation (it re-runs itself through
# sudo when started by another user); the demo itself works for any user.
set -eu

if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 && exec sudo "$0" "$@"
	echo "tools/demo.sh: run me as root (it installs packages)" >&2
	exit 2
fi

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() {
	step "$*"
	"$@"
}

PKGS="meson ninja-build gcc pkg-config libfuse3-dev fuse3 libjson-c-dev libcurl4-openssl-dev libssh2-1-dev libseccomp-dev libarchive-dev bubblewrap"
missing=""
for p in $PKGS; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "installing:$missing"
	apt-get update -q && apt-get install -y -q --no-install-recommends $missing
fi

[ -f build/build.ninja ] || meson setup build --buildtype=debugoptimized >/dev/null
ninja -C build >/dev/null
SEERFS=$REPO/build/fs/seerfs

TMP=$(mktemp -d /tmp/seerfs-demo.XXXXXX)
chmod 711 "$TMP"   # as root the sandboxes (an id range of their own) pass through it
M=$TMP/mnt
mkdir "$M"
cleanup() {
	cd /
	if grep -q " $M fuse.seerfs " /proc/self/mountinfo 2>/dev/null; then
		[ -d "$M/demo" ] && { echo terminate >"$M/demo/ctl"; cat "$M/demo/wait" >/dev/null; } 2>/dev/null || true
		fusermount3 -u "$M" 2>/dev/null || true
	fi
	[ -n "${PID:-}" ] && wait "$PID" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

step "seerfs $M -o state=$TMP/state -f &"
"$SEERFS" "$M" -o state="$TMP/state" -f &
PID=$!
for _ in $(seq 100); do
	grep -q " $M fuse.seerfs " /proc/self/mountinfo && break
	sleep 0.05
done
cd "$M"
run ls -l
run head -12 README
run mkdir demo
run cat demo/status
step "echo '{\"env\": {\"GREETING\": \"hello\"}, \"timeout\": 600}' > demo/config.json"
echo '{"env": {"GREETING": "hello"}, "timeout": 600}' >demo/config.json
run cat demo/wait
run cat demo/info.json
step "echo 'echo \$GREETING from \$(hostname); uname -sr; id' > demo/exec"
if echo 'echo $GREETING from $(hostname); uname -sr; id; echo demo > /workspace/note' >demo/exec 2>/dev/null; then
	run cat demo/jobs/latest/exit      # waits for the job to end
	run cat demo/jobs/latest/output
	run ls -l demo/root/workspace
	run cat demo/root/workspace/note
else
	echo "(exec: $(cat demo/error))"
fi
step "echo '{\"gpu\": \"A100\"}' > demo/config.json     # refused: the sandbox runs"
echo '{"gpu": "A100"}' >demo/config.json || true
run cat demo/error
run cat demo/log
step "echo terminate > demo/ctl"
echo terminate >demo/ctl
run cat demo/wait
run rmdir demo
run ls
cd /
step "fusermount3 -u $M"
fusermount3 -u "$M"
wait "$PID"
PID=
echo
echo "seerfs unmounted cleanly. Read README.md and docs/ for more."
