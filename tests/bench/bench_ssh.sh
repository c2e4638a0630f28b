#!/bin/bash
# bench_ssh.sh - root/ over SFTP (fs/sftpfs.c through tests/unit/sftpmount.c)
# against sshfs, on one private OpenSSH sshd (tests/integration/
# sshd_fixture.py) serving a local backing directory, plus native runs on
# that directory.  Prints a table of seconds with ratios to sshfs.
#
#   tests/bench/bench_ssh.sh [SIZE_MIB]      (default 1024; run as root:
#                                             it drops the page cache)
#
# Both clients get the same cipher and MAC, forced on the server side:
# aes128-ctr + hmac-sha2-256 (libssh2 1.10 has neither GCM, chacha20 nor
# the -etm MACs).  sshfs gets its caching options (kernel_cache, dir_cache,
# 60 s entry/attr/dcache timeouts) and one connection (its default);
# sftpmount caches for 60 s too.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SIZE=${1:-1024}
B=$(mktemp -d /tmp/bench-ssh.XXXXXX)
BIN=${SEERFS_SFTPMOUNT:-$ROOT/build/sftpmount}
if [ ! -x "$BIN" ]; then
	gcc -std=gnu11 -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -DFUSE_USE_VERSION=314 -I. \
		tests/unit/sftpmount.c fs/sftpfs.c core/sshconn.c core/sftp.c \
		$(pkg-config --cflags --libs fuse3 libssh2) -lpthread -o "$BIN"
fi

# --- the server -----------------------------------------------------------
python3 - "$B/env" <<'EOF' &
import os, sys, time
sys.path.insert(0, "tests/integration")
from sshd_fixture import SshdFixture
class Fixture(SshdFixture):
    def _write_config(self, authorized):
        super()._write_config(authorized)
        with open(self.config, "a") as f:
            f.write("Ciphers aes128-ctr\nMACs hmac-sha2-256\nCompression no\n")
s = SshdFixture.__new__(Fixture)
SshdFixture.__init__(s, sftp_server="sftp-server", log_level="ERROR")
s.start()
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{s.host} {s.port} {s.user} {s.identity_file} {s.known_hosts}\n")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
try:
    while os.path.exists(sys.argv[1]):
        time.sleep(0.2)
finally:
    s.stop()
EOF
PYPID=$!
for _ in $(seq 100); do [ -f "$B/env" ] && break; sleep 0.1; done
read -r HOST PORT USER KEY KH <"$B/env"

cleanup() {
	set +e
	for m in "$B"/mnt-*; do umount -l "$m" 2>/dev/null; done
	[ -n "${SFPID:-}" ] && kill "$SFPID" 2>/dev/null
	rm -f "$B/env"
	wait "$PYPID" 2>/dev/null
	rm -rf "$B"
}
trap cleanup EXIT

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
declare -A T
FAILS=

# tarball of /usr/include, made once
tar cf "$B/inc.tar" -C /usr include 2>/dev/null
NFILES=$(tar tf "$B/inc.tar" | wc -l)

run_suite() { # name dir
	local n=$1 d=$2 t0
	set +e  # a failing step (sshfs's tar on symlinks) is recorded, not fatal
	local genv=(env GIT_AUTHOR_NAME=b GIT_AUTHOR_EMAIL=b@b GIT_COMMITTER_NAME=b GIT_COMMITTER_EMAIL=b@b HOME=$B)
	drop
	t0=$(now); dd if=/dev/zero of="$d/big" bs=1M count="$SIZE" conv=fsync status=none
	T[$n,seqw]=$(echo "$(now) - $t0" | bc)
	drop
	t0=$(now); dd if="$d/big" of=/dev/null bs=1M status=none
	T[$n,seqr]=$(echo "$(now) - $t0" | bc)
	rm -f "$d/big"
	mkdir "$d/many"
	t0=$(now)
	python3 -c "
import sys
d = sys.argv[1]
for i in range(10000):
    with open(f'{d}/f{i}', 'w') as f: f.write('x')" "$d/many"
	T[$n,create]=$(echo "$(now) - $t0" | bc)
	mkdir "$d/src"
	t0=$(now); tar xf "$B/inc.tar" -C "$d/src" 2>"$B/tar-$n.err" || FAILS+="$n: tar x failed, $(grep -c . "$B/tar-$n.err") errors, e.g.: $(head -2 "$B/tar-$n.err" | tr '\n' ' ')"$'\n'
	T[$n,tarx]=$(echo "$(now) - $t0" | bc)
	(cd "$d/src" && git init -q && git config core.preloadindex true)
	t0=$(now); (cd "$d/src" && "${genv[@]}" git add -A 2>"$B/git-$n.err" && "${genv[@]}" git commit -q -m bench) ||
		FAILS+="$n: git add/commit failed: $(head -1 "$B/git-$n.err")"$'\n'
	T[$n,commit]=$(echo "$(now) - $t0" | bc)
	(cd "$d/src" && git status --porcelain >/dev/null)
	t0=$(now); (cd "$d/src" && git status --porcelain >/dev/null)
	T[$n,gsw]=$(echo "$(now) - $t0" | bc)
	drop
	t0=$(now); (cd "$d/src" && git status --porcelain >/dev/null)
	T[$n,gsc]=$(echo "$(now) - $t0" | bc)
	drop
	t0=$(now); find "$d/src" >/dev/null
	T[$n,find]=$(echo "$(now) - $t0" | bc)
	t0=$(now); du -s "$d/src" >/dev/null
	T[$n,du]=$(echo "$(now) - $t0" | bc)
	diff -r --no-dereference /usr/include "$d/src/include" >"$B/diff-$n" 2>&1 ||
		FAILS+="$n: tree differs from /usr/include after tar x: $(grep -c . "$B/diff-$n") lines, e.g.: $(head -1 "$B/diff-$n")"$'\n'
	rm -rf "$d/many" "$d/src"
	set -e
}

# --- native ---------------------------------------------------------------
mkdir -p "$B/remote-native"
run_suite native "$B/remote-native"

# --- sshfs ----------------------------------------------------------------
mkdir -p "$B/remote-sshfs" "$B/mnt-sshfs"
sshfs -o "port=$PORT,IdentityFile=$KEY,UserKnownHostsFile=$KH,StrictHostKeyChecking=yes,BatchMode=yes" \
	-o kernel_cache,dir_cache=yes,dcache_timeout=60,entry_timeout=60,attr_timeout=60 \
	-o Ciphers=aes128-ctr,MACs=hmac-sha2-256,Compression=no \
	"$USER@$HOST:$B/remote-sshfs" "$B/mnt-sshfs"
run_suite sshfs "$B/mnt-sshfs"
umount "$B/mnt-sshfs"

# --- sftpfs ---------------------------------------------------------------
mkdir -p "$B/remote-sftpfs" "$B/mnt-sftpfs"
SFTPMOUNT_TIMEOUT=60 "$BIN" "$HOST" "$PORT" "$USER" "$KEY" "$KH" "$B/remote-sftpfs" "$B/mnt-sftpfs" \
	-o fsname=sftpfs 2>"$B/sftpmount.log" &
SFPID=$!
for _ in $(seq 100); do grep -q " $B/mnt-sftpfs " /proc/self/mountinfo && break; sleep 0.1; done
run_suite sftpfs "$B/mnt-sftpfs"
umount "$B/mnt-sftpfs"
wait "$SFPID" || true
SFPID=

# --- table ----------------------------------------------------------------
printf '| %-34s | %9s | %9s | %9s | %15s |\n' "operation ($(nproc) CPUs)" native sshfs sftpfs "sshfs/sftpfs"
printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..36})" "-----------" "-----------" "-----------" "-----------------"
row() { # key label
	local s=${T[sshfs,$1]} f=${T[sftpfs,$1]}
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
echo "seconds; ratio > 1: sftpfs faster.  seq MB/s: sshfs w $(echo "$SIZE / ${T[sshfs,seqw]}" | bc) r $(echo "$SIZE / ${T[sshfs,seqr]}" | bc), sftpfs w $(echo "$SIZE / ${T[sftpfs,seqw]}" | bc) r $(echo "$SIZE / ${T[sftpfs,seqr]}" | bc)"
