#!/bin/sh
# Coverage-guided fuzzing of the decoders (fuzz/, cargo-fuzz + libFuzzer).
#
#   scripts/fuzz.sh [SECONDS [TARGET...]]
#
# Runs each target (default: all four) for SECONDS (default 15) on one core,
# its corpus in fuzz/corpus/TARGET seeded from the golden vectors of
# tests/vectors and the committed regressions of fuzz/regressions/TARGET.
# A crash is written to fuzz/artifacts/TARGET/ and fails the script: copy it
# to fuzz/regressions/TARGET/ (tests/fuzz_regressions.rs replays that
# directory in `cargo test`) and fix the bug. Needs the nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -eu

TOP=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_EACH=${1:-15}
[ $# -gt 0 ] && shift
TARGETS=${*:-frame_reader message_decode journal_read ffi_decode}
CARGO_FUZZ=${CARGO_FUZZ:-cargo +nightly fuzz}

# seed DIR TARGET: the vectors, shaped as TARGET reads its input.
seed() {
    dir=$1 target=$2
    mkdir -p "$dir"
    case $target in
    journal_read)
        cp "$TOP"/tests/vectors/journal/*.bin "$dir"/ ;;
    message_decode)
        cp "$TOP"/tests/vectors/frames/*.bin "$dir"/ ;;
    frame_reader|ffi_decode)
        # The first byte chooses how the rest is cut into reads (0: byte by
        # byte); the rest is a stream of frames.
        for f in "$TOP"/tests/vectors/frames/*.bin; do
            name=$(basename "$f" .bin)
            { printf '\000'; cat "$f"; } >"$dir/$name.bytewise"
            { printf '\007'; cat "$f" "$f"; } >"$dir/$name.twice"
        done
        { printf '\003'; cat "$TOP"/tests/vectors/frames/*.bin; } >"$dir/all-frames.stream" ;;
    esac
    if [ -d "$TOP/fuzz/regressions/$target" ]; then
        cp "$TOP/fuzz/regressions/$target"/* "$dir"/ 2>/dev/null || true
    fi
}

cd "$TOP"
status=0
for target in $TARGETS; do
    corpus="$TOP/fuzz/corpus/$target"
    seed "$corpus" "$target"
    echo "== $target: ${SECONDS_EACH}s, corpus $(ls "$corpus" | wc -l) inputs"
    # -rss_limit_mb: a frame may legitimately be 1 MiB, keep headroom.
    if ! $CARGO_FUZZ run "$target" "$corpus" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1; then
        echo "== $target FAILED: see fuzz/artifacts/$target/"
        status=1
    fi
done
exit $status
