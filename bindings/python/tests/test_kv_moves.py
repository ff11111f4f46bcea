"""kv.py with protocol v2 (examples/README.md, "Moving connections"): its
client connections move to the successor with their state across real
kv.py -> kv.py handoffs through the Python supervisor, and stay open: no
end of file, no reset, nothing resent, every answer right and in order;
a successor that exits after adopting them rolls back with every
connection still served by the incumbent, nothing lost or answered twice;
and a successor that does not adopt (v1) gets them closed as in v1."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import KvCluster, reap
from kvclient import Kept, pipeline, request

from libhandoff import Party

BIG_KEYS = 10


def big_value(i: int) -> str:
    return f"{i}" + "a" * 255


def backlog_size() -> int:
    """GETs of 256-byte values whose answers are twice what the kernel can
    hold for a client that reads nothing (the service's send buffer grows
    up to tcp_wmem's maximum): the incumbent is left with answers it could
    not write when the drain comes."""
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    return 2 * wmem_max // len(f"VALUE {big_value(0)}\n")


BACKLOG = backlog_size()


class Clients:
    """One connection of each kind, all kept open across the handoffs."""

    def __init__(self, cluster: KvCluster) -> None:
        port = cluster.port
        for i in range(BIG_KEYS):
            assert request(port, f"SET big{i} {big_value(i)}").startswith("OK ")
        self.idle = Kept(port)
        self.pipelining = Kept(port)
        self.half = Kept(port)
        self.overlong = Kept(port)
        # Reads nothing until after the handoff: the incumbent has answers
        # it could not write when the drain comes (they move unwritten), and
        # requests it did not read (they move in the socket).
        self.backlogged = Kept(port, rcvbuf=4096)
        self.all = [self.idle, self.pipelining, self.half, self.overlong, self.backlogged]
        self.written: dict[str, str] = {}
        self.generation = 0

    def pids(self) -> list[int]:
        return [client.pid() for client in self.all]

    def before_handoff(self, generation: int) -> list[str]:
        """Requests in flight and half-sent lines; the SETs' keys."""
        self.generation = generation
        keys = [f"g{generation}-{i}" for i in range(20)]
        self.pipelining.send("".join(f"SET {key} v{key}\n" for key in keys))
        self.half.send(f"GET g{generation}")  # completed after the handoff
        self.overlong.send("x" * 1100)  # inside an overlong line
        self.backlogged.send("".join(f"GET big{i % BIG_KEYS}\n" for i in range(BACKLOG)))
        self.backlogged.send("PING\n")
        # Something is answered: the incumbent has begun on the backlog.
        assert self.backlogged.line() == f"VALUE {big_value(0)}"
        return keys

    def after_handoff(self, keys: list[str], server: int) -> list[int]:
        """Every answer to what was in flight, in order; the generations the
        SETs were acknowledged with."""
        acked = [self.pipelining.line() for _ in keys]
        assert all(re.fullmatch(r"OK \d+", answer) for answer in acked), acked
        self.written.update((key, f"v{key}") for key in keys)
        self.half.send("-0\n")
        assert self.half.line() == f"VALUE vg{self.generation}-0"
        self.overlong.send("x\nPING\n")
        assert self.overlong.line() == "ERR line too long (at most 1024 bytes)"
        assert self.overlong.line().split()[:2] == ["PONG", str(server)]
        for i in range(1, BACKLOG):
            assert self.backlogged.line() == f"VALUE {big_value(i % BIG_KEYS)}", i
        assert self.backlogged.line().split()[:2] == ["PONG", str(server)]
        return [int(answer.split()[1]) for answer in acked]

    def all_written_read_back(self) -> None:
        keys = sorted(self.written)
        answers = [self.pipelining.ask(f"GET {key}") for key in keys]
        assert answers == [f"VALUE {self.written[key]}" for key in keys]

    def close(self) -> None:
        for client in self.all:
            client.close()


@pytest.fixture
def clients(cluster: KvCluster) -> Iterator[Clients]:
    cluster.spawn_cold("py")
    c = Clients(cluster)
    try:
        yield c
    finally:
        c.close()


def commit(cluster: KvCluster, previous: int, *extra: str) -> int:
    outcome = cluster.handoff("py", *extra)
    assert outcome.committed, f"rolled back: {outcome.abort_reason}\n{cluster.logs()}"
    assert reap(previous, 15.0) == 0, cluster.logs()
    cluster.children.remove(previous)
    assert outcome.successor_pid is not None
    return outcome.successor_pid


def log_of(cluster: KvCluster, generation: int) -> str:
    return next(cluster.root.glob(f"gen-{generation}-py.log")).read_text()


def test_connections_survive_handoffs(cluster: KvCluster, clients: Clients) -> None:
    pid = cluster.children[0]
    assert clients.pids() == [pid] * 5
    for generation in range(1, 4):
        keys = clients.before_handoff(generation)
        new = commit(cluster, pid)
        assert new != pid
        acked = clients.after_handoff(keys, new)
        # Acknowledged by the incumbent (generation g) or, for what it had
        # not read yet, by the successor (g + 1), in that order.
        assert acked == sorted(acked)
        assert set(acked) <= {generation, generation + 1}, acked
        assert clients.pids() == [new] * 5
        moved = re.search(
            r"moving 5 connection\(s\) to the successor: (\d+) byte\(s\) unwritten",
            log_of(cluster, generation),
        )
        assert moved, log_of(cluster, generation)
        # How much of the backlog's answers is still unwritten at the drain
        # is the kernel's to decide (a loaded machine may have taken it all
        # into the socket): reported, not asserted. Whatever moved unwritten
        # was checked above, every answer once and in order.
        print(f"handoff {generation}: {moved.group(1)} byte(s) moved unwritten")
        assert "adopted 5 connection(s)" in log_of(cluster, generation + 1)
        pid = new
    clients.all_written_read_back()
    assert request(cluster.port, "PING").split()[1] == str(pid)


def test_a_successor_that_exits_after_adopting_rolls_back(
    cluster: KvCluster, clients: Clients
) -> None:
    first = cluster.children[0]
    keys = clients.before_handoff(1)
    outcome = cluster.handoff("py", "--exit-after-adopt")
    assert not outcome.committed, cluster.logs()
    assert outcome.abort_party is Party.SUCCESSOR
    assert "adopted 5 connection(s)" in log_of(cluster, 2)
    assert "exiting after adopting, as asked" in log_of(cluster, 2)
    # The incumbent took them back and answers everything exactly once:
    # the next answer on each connection is the PING's.
    clients.after_handoff(keys, first)
    assert clients.pids() == [first] * 5
    assert "5 moved connection(s) taken back" in log_of(cluster, 1)
    # And the next handoff moves them.
    keys = clients.before_handoff(2)
    new = commit(cluster, first)
    clients.after_handoff(keys, new)
    assert clients.pids() == [new] * 5
    clients.all_written_read_back()


def test_a_successor_that_does_not_adopt_gets_them_closed(cluster: KvCluster) -> None:
    first = cluster.spawn_cold("py")
    idle = Kept(cluster.port)
    answered = Kept(cluster.port)
    try:
        assert idle.pid() == first
        assert answered.ask("SET k v") == "OK 1"
        new = commit(cluster, first, "--no-moves")
        # Closed by the drain, cleanly, as in v1.
        assert idle.at_eof()
        assert answered.at_eof()
    finally:
        idle.close()
        answered.close()
    assert "draining " in log_of(cluster, 1)
    assert "moving" not in log_of(cluster, 1)
    assert "adopted" not in log_of(cluster, 2)
    assert pipeline(cluster.port, ["PING", "GET k"]) == [f"PONG {new} python", "VALUE v"]
