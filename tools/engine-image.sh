#!/bin/sh
# tools/engine-image.sh - builds the base image of the docker provider's
# tests once: a Debian bookworm minbase root (mmdebstrap) with python3, a
# venv, pip, an sftp-server and procps, as a tarball that `docker import`
# and `podman import` take. No image registry is reachable in CI, Debian's
# mirror is. Cached at $SEERFS_IMAGE_CACHE (default /var/cache/seerfs-test)
# and rebuilt only when missing or when the package list (or this recipe)
# changed: the hash of both sits beside it. Prints the tarball's path.
# Needs root (mmdebstrap's root mode makes the files root-owned).
set -eu

CACHE=${SEERFS_IMAGE_CACHE:-/var/cache/seerfs-test}
OUT=$CACHE/bookworm-base.tar
SUITE=bookworm
INCLUDE=python3,python3-venv,python3-pip,openssh-sftp-server,perl-base,procps,ca-certificates
MIRROR=${SEERFS_DEBIAN_MIRROR:-}

mkdir -p "$CACHE"
# One build at a time (several test sessions may ask at once): the others
# wait for it and then find the tarball.
exec 9>"$CACHE/.lock"
flock 9
want=$(printf '%s\n' "recipe=3" "suite=$SUITE" "variant=minbase" "include=$INCLUDE" | sha256sum | cut -d' ' -f1)
if [ -f "$OUT" ] && [ -s "$OUT" ] && [ -f "$OUT.hash" ] && [ "$(cat "$OUT.hash")" = "$want" ]; then
	echo "$OUT"
	exit 0
fi
command -v mmdebstrap >/dev/null || { echo "engine-image.sh: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
tmp=$CACHE/bookworm-base.tmp.$$.tar   # mmdebstrap writes a tarball when the name ends in .tar
log=$CACHE/bookworm-base.log
trap 'rm -f "$tmp"' EXIT
# The image's own apt lists and caches are dropped: the provider's
# system_packages step runs apt-get update itself.
# Documentation, manual pages and translations are left out (a fifth of the
# image); dpkg keeps leaving them out when the provider installs packages.
if ! mmdebstrap --variant=minbase --include="$INCLUDE" \
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
	--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
	"$SUITE" "$tmp" $MIRROR >"$log" 2>&1; then
	echo "engine-image.sh: mmdebstrap failed building $OUT; its log ($log) ends:" >&2
	tail -n 30 "$log" >&2
	exit 1
fi
[ -f "$tmp" ] || { echo "engine-image.sh: mmdebstrap made no tarball at $tmp" >&2; exit 1; }
rm -rf "$OUT"
mv -f "$tmp" "$OUT"
echo "$want" >"$OUT.hash"
echo "$OUT"
