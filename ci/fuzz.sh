#!/usr/bin/env bash
# Fuzzes the SIF parser: ci/fuzz.sh [SECONDS]   (default 60)
#
# Builds the libFuzzer target fuzz/fuzz_targets/sif_parse.rs with the coverage
# instrumentation cargo-fuzz uses (plain cargo and stable rustc: no cargo-fuzz install, and no
# AddressSanitizer, which safe Rust does not need), seeds a scratch corpus with the SIF fixtures
# and tests/fuzz-regressions/sif/, and runs it for SECONDS. When libFuzzer finds a crash,
# timeout or out-of-memory input, the input is copied into tests/fuzz-regressions/sif/
# (so `cargo test --test sif_fuzz_regressions` replays it from then on) and the script fails.
#
# Environment: SIFR_SHARED (default ../shared), FUZZ_MAX_LEN (default 65536).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
secs=${1:-60}
SHARED=${SIFR_SHARED:-$(cd .. && pwd)/shared}
max_len=${FUZZ_MAX_LEN:-65536}
regress="$repo/tests/fuzz-regressions/sif"

case "$secs" in ''|*[!0-9]*) echo "ci/fuzz.sh: SECONDS must be a whole number, got '$secs'" >&2; exit 2;; esac
echo "building fuzz target sif_parse"
# An explicit --target keeps the instrumentation flags away from build scripts.
host=$(rustc -vV | sed -n 's/^host: //p')
# The flags cargo-fuzz passes (sanitizer coverage for libFuzzer), without a sanitizer;
# debug assertions on, as cargo-fuzz builds.
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
    cargo build --release --manifest-path fuzz/Cargo.toml --bin sif_parse --target "$host" \
    --target-dir "$repo/fuzz/target"
fuzzer="$repo/fuzz/target/$host/release/sif_parse"
[ -x "$fuzzer" ] || { echo "ci/fuzz.sh: FAILED: the fuzz target was not built at $fuzzer" >&2; exit 1; }

work=$(mktemp -d /tmp/sifr-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$work/artifacts"
cp "$regress"/* "$work/corpus/" 2>/dev/null || true
if [ -d "$SHARED/testdata/sif" ]; then
    cp "$SHARED"/testdata/sif/*.sif "$work/corpus/" 2>/dev/null || true
    for f in "$SHARED"/testdata/sif/apptainer/*.sif; do
        [ -f "$f" ] && cp "$f" "$work/corpus/apptainer-$(basename "$f")"
    done
fi
echo "fuzzing sif_parse for ${secs}s ($(ls "$work/corpus" | wc -l) seeds, max_len $max_len)"

set +e
"$fuzzer" "$work/corpus" \
    -max_total_time="$secs" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$work/artifacts/" -print_final_stats=1
rc=$?
set -e

found=0
for a in "$work"/artifacts/*; do
    [ -f "$a" ] || continue
    name=$(basename "$a")
    cp "$a" "$regress/$name"
    echo "ci/fuzz.sh: saved $regress/$name (replay: $fuzzer $regress/$name)"
    found=1
done
if [ $rc -ne 0 ] || [ $found -ne 0 ]; then
    echo "ci/fuzz.sh: FAILED: the fuzzer found an input that breaks the SIF parser (exit $rc)" >&2
    exit 1
fi
echo "ci/fuzz.sh: no crash in ${secs}s"
