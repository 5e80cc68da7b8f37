#!/usr/bin/env bash
# Fuzzes the SIF parser: ci/fuzz.sh [SECONDS]   (default 60)
#
# Builds the cargo-fuzz target fuzz/fuzz_targets/sif_parse.rs (stable Rust, with
# RUSTC_BOOTSTRAP=1 for the sanitizer flags), seeds a scratch corpus with the SIF fixtures
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
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "ci/fuzz.sh: cargo-fuzz not found; install it with 'cargo install cargo-fuzz --locked'" >&2
    exit 2
fi
# cargo-fuzz passes -Zsanitizer and friends; stable rustc accepts them with this.
export RUSTC_BOOTSTRAP=1

echo "building fuzz target sif_parse"
cargo fuzz build sif_parse

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
cargo fuzz run sif_parse "$work/corpus" -- \
    -max_total_time="$secs" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$work/artifacts/" -print_final_stats=1
rc=$?
set -e

found=0
for a in "$work"/artifacts/*; do
    [ -f "$a" ] || continue
    name=$(basename "$a")
    cp "$a" "$regress/$name"
    echo "ci/fuzz.sh: saved $regress/$name (replay: cargo fuzz run sif_parse $regress/$name)"
    found=1
done
if [ $rc -ne 0 ] || [ $found -ne 0 ]; then
    echo "ci/fuzz.sh: FAILED: the fuzzer found an input that breaks the SIF parser (exit $rc)" >&2
    exit 1
fi
echo "ci/fuzz.sh: no crash in ${secs}s"
