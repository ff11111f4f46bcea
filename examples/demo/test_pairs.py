"""Every ordered pair of the five implementations hands off, one to the
other (25 transitions, C to C included), in one handoff-supervisor run
whose sequence of binaries walks each pair exactly once, with clients
running throughout: nothing refused, nothing lost, the new implementation
answers after each handoff; every pair moves the connections (protocol v2:
the supervisor's log says so) and no kept connection is closed. Run by
`make test-demo`."""

from __future__ import annotations

import itertools
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo
import loadgen
import report

KINDS = list(demo.KINDS)


def pair_walk(kinds: list[str]) -> list[str]:
    """A sequence of len(kinds)**2 + 1 kinds in which every ordered pair,
    (a, a) included, follows once: a de Bruijn sequence of order 2 (the
    concatenated Lyndon words of length 1 and 2, in order), closed by its
    first kind: 0, 0 1, 0 2, ..., 1, 1 2, ..., n-1, then 0."""
    n = len(kinds)
    order: list[int] = []
    for first in range(n):
        order.append(first)
        order.extend(x for second in range(first + 1, n) for x in (first, second))
    return [kinds[i] for i in order] + [kinds[order[0]]]


def test_the_walk_covers_every_pair_once() -> None:
    walk = pair_walk(KINDS)
    pairs = list(itertools.pairwise(walk))
    assert sorted(pairs) == sorted(itertools.product(KINDS, KINDS))


def pong_tag(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PING\n")
        return sock.recv(100).decode().split()[2]


def test_every_pair_hands_off(tmp_path: Path) -> None:
    walk = pair_walk(KINDS)
    binaries = demo.service_binaries(tmp_path)
    port = demo.free_port()
    config = demo.write_config(tmp_path, port, binaries[walk[0]])
    handoffs: list[demo.Handoff] = []
    with open(tmp_path / "supervisor.log", "w") as log:
        supervisor = demo.start_supervisor(config, log)
        try:
            demo.wait_for_service(port, 15)
            assert pong_tag(port) == walk[0]
            load = loadgen.LoadGenerator(("127.0.0.1", port), fresh=2, persistent=2)
            load.start()
            load.wait_acknowledged(10)
            epoch = time.monotonic()
            for source, target in itertools.pairwise(walk):
                handoff = demo.trigger(config, binaries[target], target, epoch)
                handoff.source = source
                handoffs.append(handoff)
                assert handoff.committed, f"{source} -> {target}: {handoff.detail}"
                demo.wait_for_service(port, 10)
                assert pong_tag(port) == target, f"{source} -> {target}"
                load.wait_acknowledged(10)
            results = load.stop()
            lost = loadgen.verify(("127.0.0.1", port), results.acknowledged)
        finally:
            demo.stop_supervisor(supervisor)
    assert results.failures == {}, results.examples
    assert results.acknowledged, "the clients made no acknowledged write"
    assert lost == []
    assert report.leftover_processes(tmp_path) == []
    for handoff in handoffs:
        handoff.protocol = demo.drain_protocol(tmp_path / "supervisor.log", handoff.handoff_id)
    protocols = {(h.source, h.target): h.protocol for h in handoffs}
    assert set(protocols.values()) == {"v2"}, protocols
    kept = report.kept_connections(results, handoffs, epoch)
    assert kept.offences == [], kept.examples
    assert (kept.closed, kept.reconnects, results.resent) == (0, 0, 0), kept.examples
    assert kept.stayed_open == kept.open_at_first, kept.examples
