"""The demo: a stateful key-value service handed off again and again,
across C, C++, Python, Go and Rust, under load, with nothing refused and
nothing lost.

Starts handoff-supervisor with the C service on 127.0.0.1, runs closed-loop
clients (loadgen.py), triggers handoffs in the cycle C -> C++ -> Python -> Go -> Rust -> C,
reads every acknowledged write back, prints a report, and draws
demo-report.svg (latency over time, each handoff's phases as bands).

The report says, for the persistent clients, how many connections stayed
open across every handoff, how many each handoff closed, and how many times
they reconnected; and which handoffs moved the connections (protocol v2: both
services move them, the library's drain says "moving up to N descriptor(s)")
and which drained them (v1: the drain closes them, and the clients reconnect
and resend). Exits non-zero if any request failed, any acknowledged write
was lost, or a kept connection was closed by a handoff that moved
connections (or by one of which the log does not say, or outside any
handoff): a v1 handoff, into or out of a service that does not move its
connections (one started with --no-moves), may close them.

    python3 examples/demo/demo.py [--handoffs 10] [--cycle cpp,python,go,rust,c] [--report demo-report.svg]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen
import report

ROOT = Path(__file__).resolve().parents[2]
SUPERVISOR = ROOT / "target/release/handoff-supervisor"
VENV_PYTHON = ROOT / "target/venv/bin/python"
CYCLE = ["cpp", "python", "go", "rust", "c"]
KINDS = ("c", "cpp", "python", "go", "rust")


@dataclass
class Handoff:
    target: str
    started: float
    ended: float = 0.0
    committed: bool = False
    phases: list[tuple[str, float]] = field(default_factory=list)
    detail: str = ""
    handoff_id: str = ""
    # The implementation it hands off from.
    source: str = ""
    # "v2": the drain moved the connections; "v1": it closed them;
    # "unknown": the supervisor's log does not say (see drain_protocol).
    protocol: str = "unknown"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_binaries(work: Path) -> dict[str, Path]:
    """The five implementations; Python through a launcher for the venv."""
    python = work / "kv-python"
    python.write_text(f'#!/bin/sh\nexec "{VENV_PYTHON}" "{ROOT / "examples/python/kv.py"}" "$@"\n')
    python.chmod(0o755)
    binaries = {
        "c": ROOT / "examples/c/build/kv-c",
        "cpp": ROOT / "examples/cpp/build/kv-cpp",
        "python": python,
        "go": ROOT / "examples/go/build/kv-go",
        "rust": ROOT / "target/release/examples/kv-rust",
    }
    for name, path in binaries.items():
        if not path.exists():
            sys.exit(f"demo: the {name} service is not built ({path}); run `make demo`")
    if not VENV_PYTHON.exists():
        sys.exit(f"demo: {VENV_PYTHON} is missing; run `make demo`")
    return binaries


def write_config(work: Path, port: int, first: Path) -> Path:
    """A handoff-supervisor config that starts `first` on 127.0.0.1:port."""
    data, control = work / "data", work / "control.sock"
    config = work / "kv.toml"
    config.write_text(
        f"""[service]
binary = "{first}"
args = ["--data-dir", "{data}", "--control-socket", "{control}"]
env = {{ HANDOFF_LIBRARY = "{ROOT / "target/release/libhandoff.so"}" }}
control_socket = "{control}"
trigger_socket = "{work / "trigger.sock"}"
journal = "{work / "state.bin"}"
data_dir = "{data}"

[[listener]]
name = "kv"
address = "tcp://127.0.0.1:{port}"

[timeouts]
deadline_secs = 30
drain_grace_secs = 5
"""
    )
    return config


def start_supervisor(config: Path, log: IO[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [SUPERVISOR, "run", "--config", config],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_supervisor(supervisor: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the supervisor stops the service), SIGKILL the group if stuck."""
    supervisor.send_signal(signal.SIGTERM)
    try:
        supervisor.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait()


def wait_for_service(port: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\n")
                answer = sock.recv(100).decode().strip()
                if answer.startswith("PONG"):
                    return answer
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit("demo: the service did not start")


def trigger(config: Path, binary: Path, target: str, epoch: float) -> Handoff:
    handoff = Handoff(target, time.monotonic() - epoch)
    done = subprocess.run(
        [SUPERVISOR, "trigger", "--config", config, "--binary", binary],
        capture_output=True,
        text=True,
        timeout=120,
    )
    handoff.ended = time.monotonic() - epoch
    handoff.committed = done.returncode == 0
    for line in done.stdout.splitlines():
        words = line.split()
        # "  <phase>  <ms> ms" lines, one per phase as it completes.
        if len(words) == 3 and words[2] == "ms":
            handoff.phases.append((words[0], float(words[1])))
    handoff.detail = (done.stdout + done.stderr).strip().splitlines()[-1] if (done.stdout + done.stderr).strip() else ""
    # "... (handoff ID)" ends the committed and the rolled-back lines.
    ids = re.findall(r"\(handoff ([^ ()]+)\)$", done.stdout + done.stderr, re.MULTILINE)
    handoff.handoff_id = ids[-1] if ids else ""
    return handoff


def drain_protocol(log: Path, handoff_id: str) -> str:
    """Whether handoff ``handoff_id``'s drain moved the connections ("v2")
    or closed them ("v1"), from the library's own line in the incumbent's
    log (every example service prints the library's info lines to stderr,
    which goes to the supervisor's log): "handoff ID: draining (budget ...)",
    followed by ", moving up to N descriptor(s)" when the supervisor sent the
    incumbent a Transfer, which it does only when both services move their
    connections (docs/protocol.md, "Protocol v2"). "unknown" when there is no
    such line."""
    if not handoff_id:
        return "unknown"
    marker = f"handoff {handoff_id}: draining"
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "unknown"
    for line in text.splitlines():
        if marker in line:
            return "v2" if "moving up to" in line else "v1"
    return "unknown"


def describe_protocol(protocol: str) -> str:
    return {
        "v2": "protocol v2: connections moved",
        "v1": "protocol v1: connections closed by the drain",
    }.get(protocol, "protocol unknown: no drain line in the log")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handoffs", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4, help="clients of each kind")
    parser.add_argument("--report", default=str(ROOT / "demo-report.svg"))
    parser.add_argument("--pause", type=float, default=0.6, help="seconds between handoffs")
    parser.add_argument(
        "--cycle",
        default=",".join(CYCLE),
        help="the implementations handed off to in turn, from C (default: cpp,python,go,rust,c; c alone: C to C)",
    )
    args = parser.parse_args()
    cycle = [kind.strip() for kind in args.cycle.split(",") if kind.strip()]
    if not cycle or any(kind not in KINDS for kind in cycle):
        parser.error(f"--cycle: a comma-separated list of {', '.join(KINDS)}")

    with tempfile.TemporaryDirectory(prefix="handoff-demo-") as tmp:
        work = Path(tmp)
        binaries = service_binaries(work)
        port = free_port()
        config = write_config(work, port, binaries["c"])
        with open(work / "supervisor.log", "w") as log:
            supervisor = start_supervisor(config, log)
            try:
                first = wait_for_service(port, 15)
                print(f"demo: handoff-supervisor {supervisor.pid} started the C service: {first}")
                load = loadgen.LoadGenerator(("127.0.0.1", port), args.clients, args.clients)
                epoch = time.monotonic()
                load.start()
                time.sleep(1.5)  # steady state before the first handoff
                handoffs = []
                serving = "c"
                for n in range(args.handoffs):
                    target = cycle[n % len(cycle)]
                    handoff = trigger(config, binaries[target], target, epoch)
                    handoff.source = serving
                    handoff.protocol = drain_protocol(work / "supervisor.log", handoff.handoff_id)
                    handoffs.append(handoff)
                    if handoff.committed:
                        serving = target
                    phases = "  ".join(f"{name} {ms:.1f}" for name, ms in handoff.phases)
                    state = "committed" if handoff.committed else f"ROLLED BACK ({handoff.detail})"
                    answer = wait_for_service(port, 10)
                    print(
                        f"demo: handoff {n + 1}/{args.handoffs} {handoff.source} -> {target:<6} {state} in "
                        f"{(handoff.ended - handoff.started) * 1000:.1f} ms ({describe_protocol(handoff.protocol)}) "
                        f"[{phases}]; now {answer}"
                    )
                    time.sleep(args.pause)
                time.sleep(1.0)
                results = load.stop()
                lost = loadgen.verify(("127.0.0.1", port), results.acknowledged)
            finally:
                stop_supervisor(supervisor)

        leftovers = report.leftover_processes(work)
        summary = report.summarize(results, handoffs, lost, epoch, leftovers, args.clients)
        print(summary.text)
        report.write_svg(Path(args.report), results, handoffs, epoch)
        print(f"demo: picture of the run: {args.report}")
        if not summary.ok:
            print(f"demo: supervisor log: {(work / 'supervisor.log').read_text()[-3000:]}")
        return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
