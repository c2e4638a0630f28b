#!/bin/bash
# bench_sessions.sh - tests/bench/bench_sessions.py (a cell `1+1`, a served
# call, and exec of `true` as the same-run baseline) on one seerfs mount,
# on a sandbox of the local provider and on one of the ssh provider (host
# mode) served by a private OpenSSH sshd on 127.0.0.1
# (tests/integration/sshd_fixture.py, as tests/bench/bench_ssh.sh runs it).
#
#   tests/bench/bench_sessions.sh [N]        (default 200 round trips each;
#                                             run as root; SEERFS_BIN picks
#                                             the seerfs binary)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
N=${1:-200}
SEERFS=${SEERFS_BIN:-$ROOT/build/fs/seerfs}
[ -x "$SEERFS" ] || { echo "bench_sessions.sh: build seerfs first (ninja -C build)" >&2; exit 2; }
B=$(mktemp -d /tmp/bench-sessions.XXXXXX)
chmod 755 "$B"   # the local sandboxes' ids reach the state directory below

# The sshd runs as the user `seer` when there is one (tools/test.sh makes
# it): a login without a heavy ~/.bashrc, which sshd's bash reads for
# every command.
SRV=$B/srv
mkdir -p "$SRV"
RUNAS=()
if id -u "${SEERFS_BENCH_USER:-seer}" >/dev/null 2>&1; then
	RUNAS=(runuser -u "${SEERFS_BENCH_USER:-seer}" --)
	chown "${SEERFS_BENCH_USER:-seer}" "$SRV"
fi
"${RUNAS[@]}" python3 tests/integration/sshd_fixture.py "$SRV/env" &
PYPID=$!
for _ in $(seq 300); do [ -f "$SRV/env" ] && break; sleep 0.1; done
read -r HOST PORT USER KEY KH <"$SRV/env"

cleanup() {
	set +e
	for s in loc rem; do [ -d "$B/mnt/$s" ] && echo terminate >"$B/mnt/$s/ctl" 2>/dev/null; done
	sleep 1
	umount -l "$B/mnt" 2>/dev/null
	rm -f "$SRV/env"
	wait "$PYPID" 2>/dev/null
	rm -rf "$B"
}
trap cleanup EXIT

mkdir -p "$B/mnt" "$B/state" "$B/work"
chown "$USER" "$B/work"
cat >"$B/providers.json" <<JSON
{"b": {"type": "ssh", "host": "$HOST", "port": $PORT, "user": "$USER", "identity_file": "$KEY",
       "known_hosts": "$KH", "workdir": "$B/work"}}
JSON
"$SEERFS" "$B/mnt" -o "state=$B/state,providers=$B/providers.json"
mkdir "$B/mnt/loc" "$B/mnt/rem"
echo '{}' >"$B/mnt/loc/config.json"
echo '{"provider": "b"}' >"$B/mnt/rem/config.json"
for s in loc rem; do
	head -1 "$B/mnt/$s/wait" | grep -q running || { cat "$B/mnt/$s/error"; exit 1; }
done
echo "seerfs: $SEERFS; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "local provider:"
python3 tests/bench/bench_sessions.py "$B/mnt" loc "$N"
echo "ssh provider (host mode, sshd on 127.0.0.1):"
python3 tests/bench/bench_sessions.py "$B/mnt" rem "$N"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
