"""Each ordered pair of the three implementations hands off to the other
(9 pairs) under handoff-supervisor, with clients running: nothing refused,
nothing lost, the new implementation answers; the supervisor's log says
whether the handoff moved the connections (protocol v2) or drained them
(v1), and one that moved them closed no kept connection (a pair of services
that both move their connections must move them). Run by `make test-demo`."""

from __future__ import annotations

import itertools
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo
import loadgen
import report

KINDS = ["c", "python", "go"]
# The implementations known to move their connections (and so to hand off
# to each other in protocol v2); a pair of others may negotiate v2 too.
MOVE = {"c", "python", "go"}


def pong_tag(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PING\n")
        return sock.recv(100).decode().split()[2]


@pytest.mark.parametrize(("first", "second"), list(itertools.product(KINDS, KINDS)))
def test_handoff_between(first: str, second: str, tmp_path: Path) -> None:
    binaries = demo.service_binaries(tmp_path)
    port = demo.free_port()
    config = demo.write_config(tmp_path, port, binaries[first])
    with open(tmp_path / "supervisor.log", "w") as log:
        supervisor = demo.start_supervisor(config, log)
        try:
            demo.wait_for_service(port, 15)
            assert pong_tag(port) == first
            load = loadgen.LoadGenerator(("127.0.0.1", port), fresh=2, persistent=2)
            load.start()
            load.wait_acknowledged(10)
            epoch = time.monotonic()
            handoff = demo.trigger(config, binaries[second], second, epoch)
            handoff.source = first
            demo.wait_for_service(port, 10)
            load.wait_acknowledged(10)
            results = load.stop()
            lost = loadgen.verify(("127.0.0.1", port), results.acknowledged)
            assert handoff.committed, handoff.detail
            assert pong_tag(port) == second
        finally:
            demo.stop_supervisor(supervisor)
    assert results.failures == {}, results.examples
    assert results.acknowledged, "the clients made no acknowledged write"
    assert lost == []
    assert report.leftover_processes(tmp_path) == []
    handoff.protocol = demo.drain_protocol(tmp_path / "supervisor.log", handoff.handoff_id)
    assert handoff.protocol in ("v1", "v2"), (tmp_path / "supervisor.log").read_text()[-3000:]
    if first in MOVE and second in MOVE:
        assert handoff.protocol == "v2"
    kept = report.kept_connections(results, [handoff], epoch)
    assert kept.offences == [], kept.examples
    if handoff.protocol == "v2":
        assert (kept.closed, kept.reconnects, results.resent) == (0, 0, 0), kept.examples
        assert kept.stayed_open == kept.open_at_first, kept.examples
