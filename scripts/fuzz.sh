#!/bin/sh
# Coverage-guided fuzzing of the decoders (fuzz/, libFuzzer through
# libfuzzer-sys), built with plain cargo: no cargo-fuzz needed.
#
#   scripts/fuzz.sh [SECONDS [TARGET...]]
#
# Runs each target (default: all four) for SECONDS (default 15) on one core.
# Its working corpus is fuzz/corpus/TARGET (ignored by git), seeded from the
# golden vectors of tests/vectors; it also reads the committed, minimised
# corpus fuzz/seeds/TARGET and the regressions fuzz/regressions/TARGET. A
# crash is written to fuzz/artifacts/TARGET/ and fails the script: copy it
# to fuzz/regressions/TARGET/ (tests/fuzz_regressions.rs replays that
# directory in `cargo test`) and fix the bug.
#
# FUZZ_SANITIZER=none (default): the default toolchain (stable works),
#   coverage only; the properties in fuzz/src/lib.rs, Rust's own checks,
#   debug assertions and overflow checks find the bugs. `make test` runs it for a few seconds.
# FUZZ_SANITIZER=address: the nightly toolchain with AddressSanitizer (and
#   LeakSanitizer), for the unsafe code behind the C ABI; the long runs.
set -eu

TOP=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_EACH=${1:-15}
[ $# -gt 0 ] && shift
TARGETS=${*:-frame_reader message_decode journal_read ffi_decode}
SANITIZER=${FUZZ_SANITIZER:-none}
CARGO=${CARGO:-cargo}

# The flags cargo-fuzz uses: libFuzzer's coverage instrumentation.
FLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
FLAGS="$FLAGS -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
FLAGS="$FLAGS -Cllvm-args=-sanitizer-coverage-pc-table"
FLAGS="$FLAGS -Cllvm-args=-sanitizer-coverage-trace-compares"
FLAGS="$FLAGS -Cdebug-assertions -Coverflow-checks"
case $SANITIZER in
none) TOOLCHAIN= ;; # a new machine may have no toolchain named "stable"
address) TOOLCHAIN=+nightly FLAGS="$FLAGS -Zsanitizer=address" ;;
*) echo "FUZZ_SANITIZER must be none or address, not $SANITIZER" >&2; exit 2 ;;
esac
# An explicit --target keeps the instrumentation out of build scripts.
HOST=$(rustc $TOOLCHAIN -vV | sed -n 's/^host: //p')
BUILD="$TOP/target/fuzz-$SANITIZER"

echo "== building the fuzz targets ($SANITIZER, $TOOLCHAIN)"
(cd "$TOP/fuzz" && RUSTFLAGS="$FLAGS" $CARGO $TOOLCHAIN build --release --bins \
    --target "$HOST" --target-dir "$BUILD")

# seed DIR TARGET: the vectors, shaped as TARGET reads its input.
seed() {
    dir=$1 target=$2
    mkdir -p "$dir"
    case $target in
    journal_read)
        cp "$TOP"/tests/vectors/journal/*.bin "$dir"/ ;;
    message_decode)
        cp "$TOP"/tests/vectors/frames/*.bin "$TOP"/tests/vectors/v2/*.bin "$dir"/ ;;
    frame_reader|ffi_decode)
        # The first byte chooses how the rest is cut into reads (0: byte by
        # byte); the rest is a stream of frames (v1's and v2's).
        for f in "$TOP"/tests/vectors/frames/*.bin "$TOP"/tests/vectors/v2/*.bin; do
            name=$(basename "$f" .bin)
            { printf '\000'; cat "$f"; } >"$dir/$name.bytewise"
            { printf '\007'; cat "$f" "$f"; } >"$dir/$name.twice"
        done
        { printf '\003'; cat "$TOP"/tests/vectors/frames/*.bin "$TOP"/tests/vectors/v2/*.bin; } >"$dir/all-frames.stream" ;;
    esac
}

status=0
for target in $TARGETS; do
    corpus="$TOP/fuzz/corpus/$target"
    seed "$corpus" "$target"
    mkdir -p "$TOP/fuzz/artifacts/$target"
    extra=""
    for d in "$TOP/fuzz/seeds/$target" "$TOP/fuzz/regressions/$target"; do
        [ -d "$d" ] && extra="$extra $d"
    done
    echo "== $target: ${SECONDS_EACH}s, corpus $(ls "$corpus" | wc -l) inputs +$extra"
    # -rss_limit_mb: a frame may legitimately be 1 MiB, keep headroom.
    # shellcheck disable=SC2086 # $extra is a list of directories
    if ! "$BUILD/$HOST/release/$target" "$corpus" $extra \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$TOP/fuzz/artifacts/$target/" 2>"$BUILD/$target.log"; then
        tail -n 40 "$BUILD/$target.log"
        echo "== $target FAILED: see fuzz/artifacts/$target/"
        status=1
    else
        grep -E '^stat::number_of_executed_units|^#[0-9]+ *DONE' "$BUILD/$target.log" || true
    fi
done
exit $status
