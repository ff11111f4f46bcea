"""Handoffs between real processes, driven by the Python Supervisor, under
clients on 127.0.0.1: no refused connection, every acknowledged write
readable afterwards."""

from __future__ import annotations

from conftest import KvCluster, reap
from kvclient import Load, request

import libhandoff


def _commit(cluster: KvCluster, impl: str, previous: int) -> int:
    outcome = cluster.handoff(impl)
    assert outcome.committed, f"rolled back: {outcome.abort_reason}\n{cluster.logs()}"
    assert outcome.abort_reason is None
    assert outcome.incumbent_pid == previous
    assert outcome.successor_pid is not None
    assert outcome.timings.total_us >= outcome.timings.drain_us > 0
    assert outcome.timings.ready_us > 0
    # The old incumbent steps down and exits 0 once its connections are done.
    assert reap(previous, 15.0) == 0, cluster.logs()
    cluster.children.remove(previous)
    return outcome.successor_pid


def _tag_and_pid(port: int) -> tuple[str, int]:
    _, pid, tag = request(port, "PING").split()
    return tag, int(pid)


def test_python_to_python_under_load(cluster: KvCluster) -> None:
    first = cluster.spawn_cold("py")
    assert _tag_and_pid(cluster.port) == ("python", first)
    with Load(cluster.port) as load:
        load.wait_acked(15)
        second = _commit(cluster, "py", first)
        load.wait_acked(15)
    assert load.failures == [], cluster.logs()
    assert len(load.acked) >= 30, "the load did not run"
    assert load.unreadable() == []
    assert _tag_and_pid(cluster.port) == ("python", second)
    # The journal is cleared after a commit; the generation went up.
    assert libhandoff.read_journal(cluster.journal) is None
    assert request(cluster.port, "SET after handoff") == "OK 2"


def test_python_to_c_and_back(cluster: KvCluster) -> None:
    first = cluster.spawn_cold("py")
    with Load(cluster.port) as load:
        load.wait_acked(10)
        second = _commit(cluster, "c", first)
        load.wait_acked(10)
        assert _tag_and_pid(cluster.port) == ("c", second)
        third = _commit(cluster, "py", second)
        load.wait_acked(10)
    assert load.failures == [], cluster.logs()
    assert len(load.acked) >= 30, "the load did not run"
    assert load.unreadable() == [], cluster.logs()
    assert _tag_and_pid(cluster.port) == ("python", third)
    assert request(cluster.port, "SET after handoffs") == "OK 3"


def test_seal_that_raises_rolls_back(cluster: KvCluster) -> None:
    first = cluster.spawn_cold("py", "--fail-seal")
    assert request(cluster.port, "SET before x") == "OK 1"
    with Load(cluster.port, fresh=1, persistent=1) as load:
        outcome = cluster.handoff("py")
        load.wait_acked(5)  # the incumbent serves on after the rollback
    assert not outcome.committed
    assert outcome.successor_pid is None
    assert outcome.abort_reason is not None
    assert "RuntimeError: seal failed on purpose" in outcome.abort_reason
    assert (outcome.abort_step, outcome.abort_party, outcome.abort_cause) == (
        libhandoff.Step.SEAL,
        libhandoff.Party.INCUMBENT,
        libhandoff.Cause.SEAL_FAILED,
    )
    assert load.failures == [], cluster.logs()
    # The incumbent still answers, with its data and its lock (the seal
    # failed before releasing it: same generation).
    assert _tag_and_pid(cluster.port) == ("python", first)
    assert request(cluster.port, "GET before") == "VALUE x"
    assert request(cluster.port, "SET after y") == "OK 1"
    assert load.unreadable() == []
    # The exception was logged with its traceback, not swallowed.
    log = (cluster.root / "gen-1-py.log").read_text()
    assert "Traceback" in log
    assert "RuntimeError: seal failed on purpose" in log
    assert "resumed after an aborted handoff" in log
    assert libhandoff.read_journal(cluster.journal) is None
