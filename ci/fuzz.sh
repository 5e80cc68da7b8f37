#!/usr/bin/env bash
# Fuzzes every parser of untrusted input: ci/fuzz.sh [SECONDS [TARGET...]]   (default 60, all)
#
# Targets (fuzz/fuzz_targets/): sif_parse (SIF loader), squashfs_read and ext_read (the image
# readers, walked through the FUSE backend interface), deffile_parse (definition files: parse,
# render, parse again), layer_apply (OCI layer unpacking, checked to stay in its root).
#
# Builds all targets in ONE cargo invocation with the coverage instrumentation cargo-fuzz
# uses (plain cargo and stable rustc: no cargo-fuzz install, and no AddressSanitizer, which
# safe Rust does not need), seeds a scratch corpus per target (tiny images made here with
# mksquashfs in several compressors and mke2fs -d, the definition files of
# src/build/deffile/testdata, small tar layers, the SIF fixtures, and the target's saved
# inputs in tests/fuzz-regressions/<dir>/), and runs each target for an equal share of
# SECONDS. When libFuzzer finds a crash, timeout or out-of-memory input, the input is copied
# into tests/fuzz-regressions/<dir>/ (so the *_fuzz_regressions tests replay it from then on)
# and the script fails.
#
# Environment: SIFR_SHARED (default ../shared), FUZZ_MAX_LEN (default 65536).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
SHARED=${SIFR_SHARED:-$(cd .. && pwd)/shared}
max_len=${FUZZ_MAX_LEN:-65536}
all=(sif_parse squashfs_read ext_read deffile_parse layer_apply)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

case "$secs" in ''|*[!0-9]*) echo "ci/fuzz.sh: SECONDS must be a whole number, got '$secs'" >&2; exit 2;; esac
for t in "${targets[@]}"; do
    case " ${all[*]} " in *" $t "*) ;; *) echo "ci/fuzz.sh: unknown target '$t' (one of: ${all[*]})" >&2; exit 2;; esac
done
# Where each target's saved inputs live.
regress_dir() { case "$1" in sif_parse) echo "$repo/tests/fuzz-regressions/sif";; *) echo "$repo/tests/fuzz-regressions/$1";; esac; }

echo "building fuzz targets: ${targets[*]}"
# An explicit --target keeps the instrumentation flags away from build scripts.
host=$(rustc -vV | sed -n 's/^host: //p')
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
built=$(date +%s)
# The flags cargo-fuzz passes (sanitizer coverage for libFuzzer), without a sanitizer;
# debug assertions on, as cargo-fuzz builds.
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
    cargo build --release --manifest-path fuzz/Cargo.toml "${bins[@]}" --target "$host" \
    --target-dir "$repo/fuzz/target"
echo "built in $(( $(date +%s) - built ))s"

work=$(mktemp -d /tmp/sifr-fuzz.XXXXXX)
# Layers may leave read-only directories in the scratch roots.
trap 'chmod -R u+rwX "$work" 2>/dev/null; rm -rf "$work"' EXIT

# seed TARGET CORPUS: the run-time seeds of a target.
seed() {
    local t=$1 c=$2 tree="$work/tree"
    if [ ! -d "$tree" ]; then
        mkdir -p "$tree/aa/sub" "$tree/bb"
        echo hello > "$tree/file"
        ln -s file "$tree/link"
        ln -s ../../.. "$tree/aa/up"
        echo z > "$tree/aa/sub/z"
        head -c 5000 /dev/zero | tr '\0' x > "$tree/bb/big"
        : > "$tree/bb/.wh.gone"
    fi
    case "$t" in
    sif_parse)
        if [ -d "$SHARED/testdata/sif" ]; then
            cp "$SHARED"/testdata/sif/*.sif "$c/" 2>/dev/null || true
            for f in "$SHARED"/testdata/sif/apptainer/*.sif; do
                [ -f "$f" ] && cp "$f" "$c/apptainer-$(basename "$f")"
            done
        fi ;;
    squashfs_read)
        command -v mksquashfs >/dev/null || { echo "ci/fuzz.sh: mksquashfs missing (squashfs-tools)" >&2; return 1; }
        local comp
        for comp in gzip xz lzo lz4 zstd; do
            mksquashfs "$tree" "$c/tiny-$comp.sqfs" -noappend -all-root -quiet -comp "$comp" >/dev/null \
                || echo "ci/fuzz.sh: note: mksquashfs -comp $comp failed; seed left out"
        done
        mksquashfs "$tree" "$c/tiny-uncompressed.sqfs" -noappend -all-root -quiet \
            -noI -noD -noF -noX -no-fragments >/dev/null ;;
    ext_read)
        command -v mke2fs >/dev/null || { echo "ci/fuzz.sh: mke2fs missing (e2fsprogs)" >&2; return 1; }
        # No journal: the smallest one (1 MiB) would not fit in max_len.
        # ext4 without flex_bg (it does not fit in 64 KiB), with and without checksums.
        local name opts
        for name in ext2:^resize_inode ext4:^resize_inode,^flex_bg \
                ext4-nocsum:^resize_inode,^flex_bg,^metadata_csum; do
            opts=${name#*:}; name=${name%%:*}
            mke2fs -q -t "${name%-*}" -b 1024 -N 24 -O "$opts,^has_journal" -E root_owner=0:0 \
                -d "$tree" "$c/tiny.$name" 64k
            truncate -s 64k "$c/tiny.$name"
        done ;;
    deffile_parse)
        find src/build/deffile/testdata -name '*.def' -exec cp {} "$c/" \; ;;
    layer_apply)
        tar -C "$tree" -cf "$c/tiny.tar" .
        tar -C "$tree" -czf "$c/tiny.tar.gz" .
        tar -C "$tree" --format=pax -cf "$c/tiny-pax.tar" . ;;
    esac
}

share=$(( secs / ${#targets[@]} ))
[ "$share" -ge 1 ] || share=1
failed=()
for t in "${targets[@]}"; do
    fuzzer="$repo/fuzz/target/$host/release/$t"
    [ -x "$fuzzer" ] || { echo "ci/fuzz.sh: FAILED: the fuzz target was not built at $fuzzer" >&2; exit 1; }
    regress=$(regress_dir "$t")
    mkdir -p "$regress" "$work/$t/corpus" "$work/$t/artifacts"
    cp "$regress"/* "$work/$t/corpus/" 2>/dev/null || true
    seed "$t" "$work/$t/corpus"
    echo "fuzzing $t for ${share}s ($(ls "$work/$t/corpus" | wc -l) seeds, max_len $max_len)"
    set +e
    (cd "$work/$t" && TMPDIR="$work/$t" "$fuzzer" "$work/$t/corpus" \
        -max_total_time="$share" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$work/$t/artifacts/" -print_final_stats=1)
    rc=$?
    set -e
    found=0
    for a in "$work/$t"/artifacts/*; do
        [ -f "$a" ] || continue
        name=$(basename "$a")
        cp "$a" "$regress/$name"
        echo "ci/fuzz.sh: saved $regress/$name (replay: $fuzzer $regress/$name)"
        found=1
    done
    if [ $rc -ne 0 ] || [ $found -ne 0 ]; then
        echo "ci/fuzz.sh: $t found an input that breaks it (exit $rc)" >&2
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "ci/fuzz.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "ci/fuzz.sh: no crash in ${secs}s (${targets[*]})"
