#!/bin/bash
# bench_ssh.sh - seerfs's ssh provider against sshfs, on one private OpenSSH
# sshd (tests/integration/sshd_fixture.py) on 127.0.0.1, plus native runs on
# the backing disk.  The files workloads run in root/workspace of a
# host-mode sandbox of a real seerfs mount (fs/root/sftpfs.c under fs/ll.c) and
# in an sshfs mount of a directory beside it; the exec round trip of `true`
# runs through NAME/exec beside `ssh host true` over a new connection and
# over an OpenSSH ControlMaster connection.  Prints a table of seconds with
# ratios to sshfs.
#
#   tests/bench/bench_ssh.sh [SIZE_MIB]      (default 1024; run as root:
#                                             it drops the page cache)
#
# Both clients get the same cipher and MAC, forced on the server side:
# aes128-ctr + hmac-sha2-256 (libssh2 1.10 has neither GCM, chacha20 nor
# the -etm MACs).  sshfs gets its best caching options (kernel_cache,
# dir_cache, 60 s entry/attr/dcache timeouts) and one connection (its
# default); seerfs runs with its defaults.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SIZE=${1:-1024}
B=$(mktemp -d /tmp/bench-ssh.XXXXXX)
# As root, everything below $B (the server's files, both clients' backing
# directories, seerfs's state) lives on one fresh ext4: a sparse loop
# image on the same disk, mkfs.ext4's defaults. On a journal-less ext4
# (this project's VMs) the inode allocator skips every inode deleted in
# the last minutes one by one, so each row paid for the deletions of the
# rows and benchmarks before it.
FRESH=
if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null 2>&1; then
	if truncate -s $((SIZE * 4 + 8192))M "$B.img" && mkfs.ext4 -q -F "$B.img" >/dev/null 2>&1 &&
		mount -o loop "$B.img" "$B"; then
		FRESH=1
	else
		rm -f "$B.img"
	fi
fi
SEERFS=${SEERFS_BIN:-$ROOT/build/fs/seerfs}
[ -x "$SEERFS" ] || { echo "bench_ssh.sh: build seerfs first (ninja -C build)" >&2; exit 2; }

# --- the server -----------------------------------------------------------
# It runs as the user `seer` when there is one (tools/test.sh makes it): a
# login without a heavy ~/.bashrc, which sshd's bash reads for every
# command (root's here loads pyenv: +280 ms on every `ssh host true`).
SRV=$B/srv
mkdir -p "$SRV"
RUNAS=()
if id -u "${SEERFS_BENCH_USER:-seer}" >/dev/null 2>&1; then
	RUNAS=(runuser -u "${SEERFS_BENCH_USER:-seer}" --)
	chmod 755 "$B"
	chown "${SEERFS_BENCH_USER:-seer}" "$SRV"
fi
"${RUNAS[@]}" python3 tests/integration/sshd_fixture.py "$SRV/env" --sftp-server sftp-server \
	--config "Ciphers aes128-ctr" --config "MACs hmac-sha2-256" --config "Compression no" &
PYPID=$!
for _ in $(seq 100); do [ -f "$SRV/env" ] && break; sleep 0.1; done
read -r HOST PORT USER KEY KH <"$SRV/env"

cleanup() {
	set +e
	[ -n "${CM:-}" ] && ssh -S "$CM" -O exit "$USER@$HOST" 2>/dev/null
	[ -d "$B/mnt-seerfs/s" ] && echo terminate >"$B/mnt-seerfs/s/ctl" 2>/dev/null
	for m in "$B"/mnt-*; do umount -l "$m" 2>/dev/null; done
	rm -f "$SRV/env"
	wait "$PYPID" 2>/dev/null
	if [ -n "$FRESH" ]; then
		umount -l "$B"
		rm -f "$B.img"
		rmdir "$B"
	else
		rm -rf "$B"
	fi
}
trap cleanup EXIT

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
declare -A T
FAILS=

# tarball of /usr/include without Boost (about 9,000 files, as in the files
# benchmark), made once
tar cf "$B/inc.tar" -C /usr --exclude=include/boost include 2>/dev/null
NFILES=$(tar tf "$B/inc.tar" | wc -l)

# One row for one client: the clients take turns row by row (run_rows),
# so writeback and the shared CPUs weigh on each of them alike.
step() { # name dir row
	local n=$1 d=$2 t0
	set +e  # a failing step (sshfs's tar on symlinks) is recorded, not fatal
	# safe.directory: the remote trees belong to the server's user, not to
	# the root that runs git here
	local genv=(env GIT_AUTHOR_NAME=b GIT_AUTHOR_EMAIL=b@b GIT_COMMITTER_NAME=b GIT_COMMITTER_EMAIL=b@b HOME=$B
		GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*')
	case $3 in
	seqw)
		drop
		t0=$(now); dd if=/dev/zero of="$d/big" bs=1M count="$SIZE" conv=fsync status=none ;;
	seqr)
		drop
		t0=$(now); dd if="$d/big" of=/dev/null bs=1M status=none ;;
	create)
		rm -f "$d/big"
		mkdir "$d/many"
		sync
		t0=$(now)
		python3 -c "
import sys
d = sys.argv[1]
for i in range(10000):
    with open(f'{d}/f{i}', 'w') as f: f.write('x')" "$d/many" ;;
	tarx)
		mkdir "$d/src"
		sync
		t0=$(now); tar xf "$B/inc.tar" --no-same-owner -C "$d/src" 2>"$B/tar-$n.err" ||
			FAILS+="$n: tar x failed, $(grep -c . "$B/tar-$n.err") errors, e.g.: $(head -2 "$B/tar-$n.err" | tr '\n' ' ')"$'\n' ;;
	commit)
		(cd "$d/src" && "${genv[@]}" git init -q && "${genv[@]}" git config core.preloadindex true)
		sync
		t0=$(now); (cd "$d/src" && "${genv[@]}" git add -A 2>"$B/git-$n.err" && "${genv[@]}" git commit -q -m bench) ||
			FAILS+="$n: git add/commit failed: $(head -1 "$B/git-$n.err")"$'\n' ;;
	gsw)
		(cd "$d/src" && "${genv[@]}" git status --porcelain >/dev/null)
		t0=$(now); (cd "$d/src" && "${genv[@]}" git status --porcelain >/dev/null) ;;
	gsc)
		drop
		t0=$(now); (cd "$d/src" && "${genv[@]}" git status --porcelain >/dev/null) ;;
	find)
		drop
		t0=$(now); find "$d/src" >/dev/null ;;
	du)
		t0=$(now); du -s "$d/src" >/dev/null ;;
	esac
	T[$n,$3]=$(echo "$(now) - $t0" | bc)
	set -e
}

run_rows() { # name=dir ...
	local row c
	for row in seqw seqr create tarx commit gsw gsc find du; do
		for c in "$@"; do
			step "${c%%=*}" "${c#*=}" "$row"
		done
	done
	set +e
	for c in "$@"; do
		diff -r --no-dereference --exclude=boost /usr/include "${c#*=}/src/include" >"$B/diff-${c%%=*}" 2>&1 ||
			FAILS+="${c%%=*}: tree differs from /usr/include after tar x: $(grep -c . "$B/diff-${c%%=*}") lines, e.g.: $(head -1 "$B/diff-${c%%=*}")"$'\n'
		rm -rf "${c#*=}/many" "${c#*=}/src"
	done
	set -e
}

# --- native ---------------------------------------------------------------
mkdir -p "$B/remote-native"

# --- sshfs ----------------------------------------------------------------
mkdir -p "$B/remote-sshfs" "$B/mnt-sshfs"
chown "$USER" "$B/remote-sshfs"
sshfs -o "port=$PORT,IdentityFile=$KEY,UserKnownHostsFile=$KH,StrictHostKeyChecking=yes,BatchMode=yes" \
	-o kernel_cache,dir_cache=yes,dcache_timeout=60,entry_timeout=60,attr_timeout=60 \
	-o Ciphers=aes128-ctr,MACs=hmac-sha2-256,Compression=no \
	"$USER@$HOST:$B/remote-sshfs" "$B/mnt-sshfs"

# --- seerfs, ssh provider, host mode ---------------------------------------
mkdir -p "$B/mnt-seerfs" "$B/state" "$B/work"
chown "$USER" "$B/work"
cat >"$B/providers.json" <<EOF
{"b": {"type": "ssh", "host": "$HOST", "port": $PORT, "user": "$USER", "identity_file": "$KEY",
       "known_hosts": "$KH", "workdir": "$B/work"}}
EOF
"$SEERFS" "$B/mnt-seerfs" -o "state=$B/state,providers=$B/providers.json"
mkdir "$B/mnt-seerfs/s"
echo '{"provider": "b"}' >"$B/mnt-seerfs/s/config.json"
head -1 "$B/mnt-seerfs/s/wait" | grep -q running || { cat "$B/mnt-seerfs/s/error"; exit 1; }
# --- the files rows, the three in turn -----------------------------------
run_rows native="$B/remote-native" sshfs="$B/mnt-sshfs" seerfs="$B/mnt-seerfs/s/root/workspace"
umount "$B/mnt-sshfs"

# --- exec round trip of true ----------------------------------------------
SSHO=(-p "$PORT" -i "$KEY" -o "UserKnownHostsFile=$KH" -o StrictHostKeyChecking=yes -o BatchMode=yes
	-o Ciphers=aes128-ctr -o MACs=hmac-sha2-256)
CM=$B/cm.sock
ssh "${SSHO[@]}" -o ControlMaster=yes -o "ControlPath=$CM" -fN "$USER@$HOST"
# The same bubblewrap sandbox a host-mode command runs in, over the
# ControlMaster: what isolation itself costs on top of `ssh host true`.
BW="bwrap --die-with-parent --new-session --unshare-pid --unshare-ipc --unshare-uts --cap-drop ALL \
--ro-bind /usr /usr --ro-bind-try /bin /bin --ro-bind-try /lib /lib --ro-bind-try /lib64 /lib64 --ro-bind /etc /etc \
--proc /proc --dev /dev --bind $B/work /workspace --chdir /workspace -- /bin/sh -c true"
read -r RT_NEW RT_CM RT_CMBW RT_SEER < <(SEERFS_BW="$BW" python3 - "$B/mnt-seerfs/s/exec" "$CM" "$USER@$HOST" "${SSHO[@]}" <<'EOF'
import os, statistics, subprocess, sys, time
exe, cm, dest, ssho = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def med(fn, n):
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return statistics.median(t) * 1000
def seer():
    fd = os.open(exe, os.O_RDWR)
    os.write(fd, b"true")
    while os.read(fd, 65536):
        pass
    os.close(fd)
new = med(lambda: subprocess.run(["ssh", *ssho, dest, "true"], check=True), 20)
cmt = med(lambda: subprocess.run(["ssh", *ssho, "-o", "ControlPath=" + cm, dest, "true"], check=True), 50)
cmbw = med(lambda: subprocess.run(["ssh", *ssho, "-o", "ControlPath=" + cm, dest, os.environ["SEERFS_BW"]],
                                  check=True), 50)
print(f"{new:.1f} {cmt:.1f} {cmbw:.1f} {med(seer, 50):.1f}")
EOF
)
echo terminate >"$B/mnt-seerfs/s/ctl"
umount "$B/mnt-seerfs"

# --- table ----------------------------------------------------------------
printf '| %-34s | %9s | %9s | %9s | %15s |\n' "operation ($(nproc) CPUs)" native sshfs seerfs "sshfs/seerfs"
printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..36})" "-----------" "-----------" "-----------" "-----------------"
row() { # key label
	local s=${T[sshfs,$1]} f=${T[seerfs,$1]}
	printf '| %-34s | %9.2f | %9.2f | %9.2f | %14.2fx |\n' "$2" "${T[native,$1]}" "$s" "$f" "$(echo "$s / $f" | bc -l)"
}
row seqw "seq write $SIZE MiB (dd, fsync)"
row seqr "seq read $SIZE MiB (cold)"
row create "create 10,000 files"
row tarx "tar x /usr/include ($NFILES entries)"
row commit "git add -A && git commit"
row gsw "git status (warm)"
row gsc "git status (after drop_caches)"
row find "find (cold)"
row du "du -s (after find)"
printf '%s' "$FAILS"
echo "seconds; ratio > 1: seerfs faster.  seq MB/s: sshfs w $(echo "$SIZE / ${T[sshfs,seqw]}" | bc) r $(echo "$SIZE / ${T[sshfs,seqr]}" | bc), seerfs w $(echo "$SIZE / ${T[seerfs,seqw]}" | bc) r $(echo "$SIZE / ${T[seerfs,seqr]}" | bc)"
echo "exec round trip of true (median, ms): ssh over a new connection $RT_NEW, ssh over ControlMaster $RT_CM, the same bwrap over ControlMaster $RT_CMBW, seerfs NAME/exec (host mode, bwrap) $RT_SEER"
[ -n "$FRESH" ] && echo "all of it on a fresh ext4 (a loop image on the same disk, mkfs.ext4 defaults)"
