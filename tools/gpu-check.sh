#!/bin/sh
# gpu-check.sh - the GPU check of the foundation issue, for a machine with an
# NVIDIA GPU: a sandbox with "gpu": TYPE runs nvidia-smi inside and sees the
# GPU, one with gpu null sees none, one asking for a type the host lacks is
# refused with the reason; then the same on the docker provider where an
# engine with the NVIDIA container toolkit answers. Needs root (it mounts
# without fusermount3).
#   tools/gpu-check.sh [DEVDIR]
# DEVDIR (optional) holds seerfs, seerfs-agent, a bwrap wrapper and the
# libraries they need, for a machine without the Debian packages.
set -u
dev=${1:-}
run_seerfs() {
	if [ -n "$dev" ]; then
		SEERFS_BWRAP="$dev/bin/bwrap" "$dev/lib/ld-linux-x86-64.so.2" --library-path "$dev/lib" \
			"$dev/bin/seerfs" "$@" -o agent="$dev/bin/seerfs-agent"
	else
		build/fs/seerfs "$@"
	fi
}
echo "== host"; uname -r; (. /etc/os-release; echo "$PRETTY_NAME"); command -v nvidia-smi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
type=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -o 'H100\|H200\|A100\|L4\|A10G' | head -1)
echo "GPU type asked for: $type"
m=$(mktemp -d); st=$(mktemp -d)
run_seerfs "$m" -o state="$st" || { echo "FAIL: seerfs did not mount"; exit 1; }
smi=$(command -v nvidia-smi)
pass=0; fail=0
check() { if [ "$1" = 0 ]; then pass=$((pass+1)); echo "ok: $2"; else fail=$((fail+1)); echo "FAIL: $2"; fi; }
mkdir "$m/g"; echo "{\"gpu\": \"$type\"}" > "$m/g/config.json"; head -1 "$m/g/wait"
cat "$m/g/error"
printf '%s -L; ls /dev/nvidia* ' "$smi" > "$m/g/exec"; sleep 0.2
cat "$m/g/jobs/latest/exit" >/dev/null; cat "$m/g/jobs/latest/output"
grep -q "GPU 0" "$m/g/jobs/latest/output"; check $? "gpu $type: nvidia-smi inside sees the GPU"
mkdir "$m/n"; echo '{}' > "$m/n/config.json"; head -1 "$m/n/wait"
echo "ls /dev/nvidia* 2>&1; $smi -L 2>&1; echo done" > "$m/n/exec"; sleep 0.2
cat "$m/n/jobs/latest/exit" >/dev/null; cat "$m/n/jobs/latest/output"
! grep -q "GPU 0" "$m/n/jobs/latest/output" && ! grep -q "^/dev/nvidia" "$m/n/jobs/latest/output"; check $? "gpu null: no GPU device inside"
other=A100; [ "$type" = A100 ] && other=H100
mkdir "$m/r"; echo "{\"gpu\": \"$other\"}" > "$m/r/config.json"; head -1 "$m/r/wait"; cat "$m/r/error"
grep -q failed "$m/r/status" && grep -q "$other" "$m/r/error"; check $? "gpu $other: refused with the reason"
for s in g n; do echo terminate > "$m/$s/ctl"; cat "$m/$s/wait" >/dev/null; done
umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null

# The docker provider (docs/docker.md), where an engine answers at
# $SEERFS_DOCKER_ENDPOINT (default unix:///var/run/docker.sock) with the
# NVIDIA container toolkit: a sandbox with "gpu" gets the engine's device
# request (driver nvidia, count, [["gpu"]]) and nvidia-smi inside sees the
# GPU; one without sees none. Image: $SEERFS_DOCKER_IMAGE (default
# debian:bookworm-slim; the toolkit brings nvidia-smi into the container).
dep=${SEERFS_DOCKER_ENDPOINT:-unix:///var/run/docker.sock}
if command -v docker >/dev/null && docker -H "$dep" info >/dev/null 2>&1; then
	echo "== docker provider on $dep"
	img=${SEERFS_DOCKER_IMAGE:-debian:bookworm-slim}
	dm=$(mktemp -d); dst=$(mktemp -d); pf=$(mktemp)
	printf '{"box": {"type": "docker", "endpoint": "%s", "image": "%s", "timeout": 120}}\n' "$dep" "$img" > "$pf"
	run_seerfs "$dm" -o state="$dst" -o providers="$pf" || { echo "FAIL: seerfs (docker) did not mount"; exit 1; }
	mkdir "$dm/g"; echo '{"provider": "box", "gpu": "any", "gpu_count": 1}' > "$dm/g/config.json"; head -1 "$dm/g/wait"
	cat "$dm/g/error"
	echo 'nvidia-smi -L; ls /dev/nvidia*' > "$dm/g/exec"
	cat "$dm/g/jobs/latest/exit" >/dev/null; cat "$dm/g/jobs/latest/output"
	grep -q "GPU 0" "$dm/g/jobs/latest/output"; check $? "docker, gpu: nvidia-smi inside the container sees the GPU"
	mkdir "$dm/n"; echo '{"provider": "box"}' > "$dm/n/config.json"; head -1 "$dm/n/wait"
	echo 'ls /dev/nvidia* 2>&1; nvidia-smi -L 2>&1; echo done' > "$dm/n/exec"
	cat "$dm/n/jobs/latest/exit" >/dev/null; cat "$dm/n/jobs/latest/output"
	! grep -q "GPU 0" "$dm/n/jobs/latest/output" && ! grep -q "^/dev/nvidia" "$dm/n/jobs/latest/output"; check $? "docker, no gpu: no GPU device inside"
	for s in g n; do echo terminate > "$dm/$s/ctl"; cat "$dm/$s/wait" >/dev/null; rmdir "$dm/$s"; done
	umount "$dm" 2>/dev/null || fusermount3 -u "$dm" 2>/dev/null
	rm -f "$pf"
else
	echo "== docker provider: no engine answers at $dep (set SEERFS_DOCKER_ENDPOINT); not checked"
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
