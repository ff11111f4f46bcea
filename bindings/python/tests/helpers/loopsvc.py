"""What the two loop-driven test services share (selectors_service.py and
asyncio_service.py): their command line, the events they report to the
test, their one file in the data directory, their line protocol and their
start-up up to the wait for Begin, which each does its own way.

Protocol: ``PING`` answers ``PONG <pid> <generation>``, one request per
connection. Data directory: ``state.json`` names the process that holds
the lock and its generation; it is written only with the lock held, so a
successor that never began leaves it as it was. Events are JSON lines
appended to ``--events`` (one writer at a time per line: O_APPEND).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import libhandoff

BUILD_ID = b"loop-svc"
TICK = 0.05  # seconds between loop iterations while nothing happens
PID = os.getpid()


@dataclass
class Options:
    data_dir: Path
    control: Path
    events: Path
    hold_drain_until: Path | None


def parse_args() -> Options:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--control-socket", type=Path, required=True)
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument(
        "--hold-drain-until",
        type=Path,
        help="complete a drain only once this file exists (checked every loop iteration)",
    )
    a = parser.parse_args()
    return Options(a.data_dir, a.control_socket, a.events, a.hold_drain_until)


def report(options: Options, event: str, **details: object) -> None:
    line = json.dumps({"pid": PID, "event": event, **details}) + "\n"
    with open(options.events, "a") as out:
        out.write(line)


def drain_released(options: Options) -> bool:
    return options.hold_drain_until is None or options.hold_drain_until.exists()


def answer(line: bytes, incumbent: libhandoff.Incumbent) -> bytes:
    if line.strip() == b"PING":
        return f"PONG {PID} {incumbent.generation}\n".encode()
    return b"ERR unknown command\n"


def claim(options: Options, generation: int) -> int:
    """Write ``state.json`` as the lock's holder; the previous holder's
    generation (0 for none), which the seal reported as its revision."""
    path = options.data_dir / "state.json"
    previous = json.loads(path.read_text())["generation"] if path.exists() else 0
    path.write_text(json.dumps({"owner": PID, "generation": generation}))
    return int(previous)


def listen_url(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"tcp://{host}:{port}"


def cold_start(
    options: Options, inherited: libhandoff.Inherited
) -> tuple[socket.socket, libhandoff.Incumbent]:
    with inherited:
        listener = inherited.take_listener("svc")
    lock = libhandoff.Lock.acquire(options.data_dir, timeout=2)
    with lock:
        claim(options, lock.generation)
        incumbent = libhandoff.Incumbent.bind(options.control, lock)
    report(options, "serving", generation=incumbent.generation)
    return listener, incumbent


def handshake(options: Options, inherited: libhandoff.Inherited) -> libhandoff.Successor:
    with inherited:
        successor = inherited.successor()
    successor.handshake(BUILD_ID)
    report(options, "waiting-for-begin")
    return successor


def take_over(
    options: Options, successor: libhandoff.Successor
) -> tuple[socket.socket, libhandoff.Incumbent]:
    """After Begin: the listener, the lock, the data directory, Ready."""
    with successor:
        successor.start_heartbeats()
        listener = successor.take_listener("svc")
        with libhandoff.Lock.acquire(options.data_dir, timeout=5) as lock:
            sealed_revision = claim(options, lock.generation)
            incumbent = successor.announce_ready(
                options.control,
                lock,
                listening_on=[listen_url(listener)],
                advertised_revision_per_shard=[sealed_revision],
            )
    report(options, "took-over", generation=incumbent.generation)
    return listener, incumbent
