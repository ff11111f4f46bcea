#!/bin/sh
# Where a handoff's time goes, as the kernel sees it: runs benches/compare,
# one system at a time (K handoffs under the same load, no ramp), under `perf trace`
# of the syscalls that wait for the disk or start a program, then sums them
# per thread name and syscall, per handoff. Needs perf (linux-perf) and
# root, or kernel.perf_event_paranoid <= -1. Build first (`make
# bench-programs`).
#
#   benches/compare/profile.sh [K [SYSTEMS]]
#   e.g. benches/compare/profile.sh 100 libhandoff-c,beyond,tableflip
#
# Thread names: `handoff` is handoff-supervisor's handoff worker, kv-c /
# kv-go the example services (`handoff-incumb` their library's incumbent
# thread), bench-beyond-s / bench-beyond-k the reference supervisor and its
# service, tableflip-kv the tableflip service. fdatasync is mostly the
# services' group commits under load; fsync and rename are the journal,
# the data-dir lock files and the seals.
set -eu
k=${1:-50}
systems=${2:-libhandoff-c,libhandoff-go,beyond,tableflip}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/target/bench/profile
mkdir -p "$out"
for system in $(echo "$systems" | tr ',' ' '); do
    perf trace -e fsync,fdatasync,flock,execve,rename,renameat,renameat2 \
        -o "$out/trace-$system.txt" -- \
        cargo bench --manifest-path "$root/Cargo.toml" --bench compare -- \
        --systems "$system" --handoffs "$k" --ramp none --steady-secs 1 --calibrate-secs 2 \
        > "$out/compare-$system.txt" 2> "$out/compare-$system.err" || {
        tail -20 "$out/compare-$system.err"
        exit 1
    }
    echo
    grep '^compare: .*committed' "$out/compare-$system.err" || true
    python3 - "$out/trace-$system.txt" "$k" <<'PY'
import collections
import re
import sys

# A timed call: `( 0.4 ms): comm/tid call(`; one that another interrupted
# is an untimed `call(... ...` line, then a timed `... [continued]: call()`.
pattern = re.compile(r"\(\s*([\d.]+) ms\): (.+?)/(\d+) +(?:\.\.\. \[continued\]: )?(\w+)\(")
lines = open(sys.argv[1]).read().splitlines()
# perf trace can go on naming a process after the thread that forked it
# (handoff-supervisor's `handoff` worker) after its execve: name every
# thread that exec'd after the program it became.
became = {}
for line in lines:
    m = pattern.search(line)
    if m and m.group(4) == "execve":
        became[m.group(3)] = m.group(2)
total = collections.defaultdict(lambda: [0, 0.0])
for line in lines:
    m = pattern.search(line)
    if not m:
        continue
    ms, comm, call = float(m.group(1)), became.get(m.group(3), m.group(2)), m.group(4)
    if ms > 60000:  # an unfinished call perf could not time
        continue
    total[(comm, call)][0] += 1
    total[(comm, call)][1] += ms
k = int(sys.argv[2])
print(f"{'thread':<16}{'syscall':<11}{'count':>7}{'total ms':>10}{'mean ms':>9}{'per handoff: n':>16}{'ms':>7}")
for (comm, call), (n, ms) in sorted(total.items(), key=lambda kv: -kv[1][1]):
    if comm in ("cargo", "rustc", "go", "date", "git") or comm.startswith(("compare", ":")):
        continue
    print(f"{comm:<16}{call:<11}{n:>7}{ms:>10.1f}{ms / n:>9.2f}{n / k:>16.1f}{ms / k:>7.1f}")
PY
done
