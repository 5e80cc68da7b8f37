#!/bin/sh
# Runs the FUSE mount tests (fuse/tests/fuse_mount.rs) as an UNPRIVILEGED user: the server
# must mount and serve inside its own user+mount namespace with no root and no fusermount.
# Needs root for the setup only: creates the user, makes /dev/fuse 0666 (as distros do),
# stages the test binary and the busybox fixture where that user can read them.
# Usage: fuse/tests/unprivileged.sh [user]   (default user: sqfstest; SIFR_CI=1 turns SKIPs into failures)
set -eu
user=${1:-sqfstest}
root=$(cd "$(dirname "$0")/../.." && pwd)
id "$user" >/dev/null 2>&1 || useradd -m "$user"
chmod 0666 /dev/fuse
bin=$(cd "$root" && cargo test -p sifr-fuse --test fuse_mount --no-run 2>&1 |
    sed -n 's/.*Executable tests\/fuse_mount.rs (\(.*\))/\1/p' | tail -n 1)
[ -n "$bin" ] || { echo "could not build the fuse_mount test binary" >&2; exit 1; }
stage=$(mktemp -d /tmp/sifr-unpriv.XXXXXX)
trap 'rm -rf "$stage"' EXIT
cp "$root/$bin" "$stage/fuse_mount"
testdata=${SIFR_TESTDATA:-$root/../shared/testdata}
if [ -f "$testdata/sif/busybox_amd64.sif" ]; then
    mkdir -p "$stage/testdata/sif"
    cp "$testdata/sif/busybox_amd64.sif" "$stage/testdata/sif/"
fi
chmod -R a+rX "$stage"
mkdir "$stage/tmp" && chown "$user" "$stage/tmp"
su "$user" -s /bin/sh -c "cd '$stage' && TMPDIR='$stage/tmp' SIFR_CI='${SIFR_CI:-}' SIFR_TESTDATA='$stage/testdata' ./fuse_mount --test-threads=1"
