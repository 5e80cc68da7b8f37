#!/bin/sh
# Runs the FUSE mount tests (fuse/tests/fuse_mount.rs, and fuse/tests/ext_tree.rs, which
# also builds ext images with e2fsprogs) as an UNPRIVILEGED user: the server must mount and
# serve inside its own user+mount namespace with no root and no fusermount.
# Needs root for the setup only: creates the user, makes /dev/fuse 0666 (as distros do),
# stages the test binaries and the SIF fixtures where that user can read them.
# Usage: fuse/tests/unprivileged.sh [user]   (default user: sqfstest; SIFR_CI=1 turns SKIPs into failures)
set -eu
user=${1:-sqfstest}
root=$(cd "$(dirname "$0")/../.." && pwd)
id "$user" >/dev/null 2>&1 || useradd -m "$user"
chmod 0666 /dev/fuse
stage=$(mktemp -d /tmp/sifr-unpriv.XXXXXX)
trap 'rm -rf "$stage"' EXIT
for t in fuse_mount ext_tree; do
    bin=$(cd "$root" && cargo test -p sifr-fuse --test "$t" --no-run 2>&1 |
        sed -n "s/.*Executable tests\/$t.rs (\(.*\))/\1/p" | tail -n 1)
    [ -n "$bin" ] || { echo "could not build the $t test binary" >&2; exit 1; }
    cp "$root/$bin" "$stage/$t"
done
testdata=${SIFR_TESTDATA:-$root/../shared/testdata}
mkdir -p "$stage/testdata/sif"
for f in busybox_amd64.sif two-groups.sif; do
    [ -f "$testdata/sif/$f" ] && cp "$testdata/sif/$f" "$stage/testdata/sif/"
done
chmod -R a+rX "$stage"
mkdir "$stage/tmp" && chown "$user" "$stage/tmp"
for t in fuse_mount ext_tree; do
    # mke2fs, e2fsck and debugfs live in /usr/sbin, outside a plain user's PATH.
    su "$user" -s /bin/sh -c "cd '$stage' && PATH=/usr/sbin:/sbin:\$PATH TMPDIR='$stage/tmp' SIFR_CI='${SIFR_CI:-}' SIFR_TESTDATA='$stage/testdata' ./$t --test-threads=1"
done
