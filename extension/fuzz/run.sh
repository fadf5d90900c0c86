#!/usr/bin/env bash
# Runs cargo-fuzz targets one after the other, each for a fixed time, on the stable toolchain.
#
#   extension/fuzz/run.sh SECONDS [TARGET...]     (default: every target)
#
# libFuzzer runs with coverage instrumentation only (`--sanitizer none`): cargo-fuzz then passes
# no `-Z` flag, so stable rustc builds it. FUZZ_SANITIZER=address adds AddressSanitizer, which
# needs `-Zsanitizer` and so RUSTC_BOOTSTRAP=1 (set here); the code under test has no `unsafe`.
#
# Corpora start from the fixtures (seed.py) and grow in corpus/<target> (git-ignored); crashes
# are written to artifacts/<target>/. Exits non-zero when any target crashes, hangs or fails.

set -uo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CRATE_DIR="$(dirname "$FUZZ_DIR")"
CARGO="${CARGO:-cargo}"
SANITIZER="${FUZZ_SANITIZER:-none}"
ALL_TARGETS=(datagram trace_header telemetry otlp)

if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS [TARGET...]" >&2
    exit 2
fi
SECONDS_EACH="$1"
shift
TARGETS=("$@")
[[ ${#TARGETS[@]} -eq 0 ]] && TARGETS=("${ALL_TARGETS[@]}")

if [[ "$SANITIZER" != none ]]; then
    export RUSTC_BOOTSTRAP=1
fi

# Longest input per target: a datagram can be a whole UDP payload (65,507 bytes), so the
# size checks are reachable; telemetry batches and trace headers are far smaller.
max_len() {
    case "$1" in
        datagram) echo 66000 ;;
        otlp) echo 66000 ;;
        telemetry) echo 16384 ;;
        *) echo 512 ;;
    esac
}

cd "$CRATE_DIR" || exit 2
python3 "$FUZZ_DIR/seed.py" || exit 2

log_dir="$FUZZ_DIR/target/fuzz-logs"
mkdir -p "$log_dir"
started=$(date +%s)
echo "fuzz: building (sanitizer: $SANITIZER)"
for target in "${TARGETS[@]}"; do
    if ! "$CARGO" fuzz build --sanitizer "$SANITIZER" "$target" >"$log_dir/build.log" 2>&1; then
        tail -n 30 "$log_dir/build.log" >&2
        echo "fuzz: building $target failed" >&2
        exit 1
    fi
done
built=$(date +%s)

summary=()
failed=0
for target in "${TARGETS[@]}"; do
    log="$log_dir/$target.log"
    mkdir -p "$FUZZ_DIR/corpus/$target" "$FUZZ_DIR/artifacts/$target"
    echo "fuzz: $target for ${SECONDS_EACH}s (log: ${log#"$CRATE_DIR/"})"
    target_started=$(date +%s)
    # Inputs of fixed bugs are replayed first on every run (libFuzzer reads every corpus
    # directory given, and writes new inputs only to the first).
    regressions=()
    if [[ -d "$FUZZ_DIR/regressions/$target" ]]; then
        regressions=("$FUZZ_DIR/regressions/$target")
    fi
    "$CARGO" fuzz run --sanitizer "$SANITIZER" "$target" "$FUZZ_DIR/corpus/$target" "${regressions[@]}" -- \
        -max_total_time="$SECONDS_EACH" \
        -timeout=10 \
        -max_len="$(max_len "$target")" \
        -dict="$FUZZ_DIR/dict/$target.dict" \
        -print_final_stats=1 \
        >"$log" 2>&1
    status=$?
    elapsed=$(($(date +%s) - target_started))
    # `Done N runs in S second(s)` on a clean finish; otherwise the last progress line's `#N`.
    runs=$(sed -n 's/^Done \([0-9]*\) runs in.*/\1/p' "$log" | tail -n 1)
    if [[ -z "$runs" ]]; then
        runs=$(sed -n 's/^#\([0-9]*\)[[:space:]].*/\1/p' "$log" | tail -n 1)
        runs="~${runs:-0}"
    fi
    cov=$(sed -n 's/.*[[:space:]]cov: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
    corpus=$(find "$FUZZ_DIR/corpus/$target" -type f | wc -l)
    if [[ $status -eq 0 ]]; then
        result=ok
    else
        result="FAILED (exit $status)"
        failed=1
        grep -m1 -A2 "panicked at" "$log" >&2
        grep -E "^(artifact_prefix|Test unit written to)|Reproduce with|cargo fuzz run" "$log" >&2
    fi
    summary+=("$(printf '%-13s %8s %14s %6s %7s  %s' "$target" "${elapsed}s" "$runs" "${cov:-?}" "$corpus" "$result")")
done
finished=$(date +%s)

echo
printf '%-13s %8s %14s %6s %7s  %s\n' target seconds executions cov corpus result
printf '%s\n' "${summary[@]}"
echo "fuzz: build $((built - started))s, total $((finished - started))s"
exit "$failed"
