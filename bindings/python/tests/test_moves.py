"""Protocol v2 through the binding: an incumbent in this process moves a
client connection and a memfd (a named descriptor) to a Python successor
(helpers/adopting_child.py), handed off by a Python supervisor (also in
this process, on a thread); what a successor that fails to adopt leaves
behind; and the errors of the API."""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HERE
from test_incumbent import Setup
from test_request import Handoff, next_request

import libhandoff
from libhandoff import Cause, ItemKind, Party, Request, RequestKind, ServeOutcome, SpawnSpec

ADOPTING_CHILD = HERE / "helpers" / "adopting_child.py"
TABLE = "k1 v1\nk2 v2\n"


class MoveSetup(Setup):
    """The in-process incumbent moves descriptors; its successor adopts."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.incumbent.set_moves_descriptors(True)
        self.server = socket.create_server(("127.0.0.1", 0))

    def spec(self) -> SpawnSpec:
        args = [
            str(ADOPTING_CHILD),
            str(self.report),
            str(self.data),
            str(self.control),
            str(self.root / "elsewhere"),
        ]
        return SpawnSpec(sys.executable, args, deadline=20, drain_grace=5)

    def connection(self) -> tuple[socket.socket, socket.socket]:
        """A TCP connection: (the client's end, the service's end)."""
        client = socket.create_connection(self.server.getsockname(), timeout=10)
        conn, _ = self.server.accept()
        return client, conn

    def close(self) -> None:
        super().close()
        self.server.close()


@pytest.fixture
def setup(short_tmp: Path) -> Iterator[MoveSetup]:
    s = MoveSetup(short_tmp)
    try:
        yield s
    finally:
        s.close()


def memfd_table() -> int:
    fd = os.memfd_create("table")
    os.write(fd, TABLE.encode())
    return fd


def read_line(sock: socket.socket) -> bytes:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        assert chunk, f"the connection was closed after {bytes(data)!r}"
        data += chunk
    return bytes(data)


def refused_moves(drain: Request, conn: socket.socket) -> None:
    """Every bad move is refused before anything is recorded."""
    closed = socket.socket()
    closed.close()
    with pytest.raises(libhandoff.InvalidArgumentError, match="closed"):
        drain.move(ItemKind.CONNECTION, "kv", closed)
    with pytest.raises(libhandoff.InvalidArgumentError, match="255"):
        drain.move(ItemKind.CONNECTION, "x" * 256, conn)
    with pytest.raises(libhandoff.InvalidArgumentError, match="kind"):
        drain.move(7, "kv", conn)  # type: ignore[arg-type]
    with pytest.raises(libhandoff.InvalidArgumentError, match="1048000"):
        drain.move(ItemKind.CONNECTION, "kv", conn, state=bytes(1_048_001))
    with pytest.raises(ValueError, match="NUL"):
        drain.move(ItemKind.CONNECTION, "k\0v", conn)
    with pytest.raises(TypeError):
        drain.move(ItemKind.CONNECTION, "kv", "not a descriptor")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        drain.move(ItemKind.CONNECTION, "kv", True)


def move_both(drain: Request, conn: socket.socket, table: int) -> None:
    assert drain.kind is RequestKind.DRAIN
    assert drain.moves
    assert drain.move_limit > 0
    refused_moves(drain, conn)
    drain.move(ItemKind.DESCRIPTOR, "table", table, state=b"\x02")
    drain.move(
        ItemKind.CONNECTION, "kv", conn, unread=b"GET k", unwritten=b"carried\n", state=b"\x01"
    )
    drain.complete()


def test_a_connection_and_a_memfd_move_to_the_successor(setup: MoveSetup) -> None:
    incumbent = setup.incumbent
    incumbent.start_loop()
    with pytest.raises(libhandoff.WrongStateError):
        incumbent.set_moves_descriptors(False)  # only before starting
    client, conn = setup.connection()
    conn.setblocking(True)  # the successor's socket comes non-blocking all the same
    table = memfd_table()
    running = Handoff(setup)
    move_both(next_request(incumbent), conn, table)
    seal = next_request(incumbent)
    assert seal.kind is RequestKind.SEAL
    assert not seal.moves
    assert seal.move_limit == 0
    with seal:
        seal.push_revision(1)
    ended = next_request(incumbent)
    assert ended.outcome is ServeOutcome.COMMITTED
    assert running.join().committed
    # Committed: our copies are closed, never shut down.
    conn.close()
    os.close(table)

    # The successor wrote the carried output, then answered the carried
    # input completed on the same connection, which never closed.
    assert read_line(client) == b"carried\n"
    client.sendall(b"0\n")
    got = read_line(client).decode().split()
    assert got[:3] == ["got", "GET", "k0"], got
    report = setup.read_report()
    assert got[4] == str(setup.children[0])
    assert report["items"] == [
        {"kind": "DESCRIPTOR", "name": "table", "unread": "", "unwritten": "", "state": "02"},
        {
            "kind": "CONNECTION",
            "name": "kv",
            "unread": "GET k",
            "unwritten": "carried\n",
            "state": "01",
        },
    ]
    assert report["table"] == TABLE
    assert report["table_inheritable"] is False
    assert report["conn"] == {
        "family": "AF_INET",
        "type": "SOCK_STREAM",
        "blocking": False,
        "o_nonblock": True,
        "inheritable": False,
        "detach": "WrongStateError",
    }
    assert report["socket_of_a_descriptor"] == "WrongStateError"
    assert report["detach_after_open"] == "WrongStateError"
    assert report["set_adopts_after_handshake"] == "WrongStateError"
    assert report["adopt_before_begin"] == "WrongStateError"
    assert report["adopt_none"] == "NullPointerError"
    assert report["adopt_twice"] == "WrongStateError"
    client.close()


def test_a_successor_that_fails_to_adopt_leaks_nothing_and_rolls_back(
    setup: MoveSetup,
) -> None:
    incumbent = setup.incumbent
    incumbent.start_loop()
    client, conn = setup.connection()
    conn.setblocking(True)
    table = memfd_table()
    running = Handoff(setup)
    drain = next_request(incumbent)
    # The connection first, then a memfd that claims to be a connection:
    # the successor refuses the second as it arrives, before Begin.
    drain.move(ItemKind.CONNECTION, "kv", conn, unwritten=b"never sent\n")
    drain.move(ItemKind.CONNECTION, "kv", table)
    drain.complete()
    request = next_request(incumbent)
    if request.kind is RequestKind.SEAL:  # unless the rollback came first
        with request as seal:
            seal.push_revision(1)
        request = next_request(incumbent)
    assert request.kind is RequestKind.RESUME
    with request:
        pass
    outcome = running.join()
    assert not outcome.committed
    assert outcome.abort_party is Party.SUCCESSOR
    assert outcome.abort_cause in (Cause.CLOSED, Cause.EXITED)
    report = setup.read_report()
    # The library refuses it (every binding alike) as it arrives.
    assert report["begin"].startswith(
        'ProtocolError: protocol violation: moved item "kv" is a connection, but its descriptor '
        "is not a socket"
    ), report["begin"]
    # Both moved descriptors are closed, and nothing else was opened.
    assert report["fds_after"] == report["fds_before"]
    # Ours again, its file status flags as they were (blocking), untouched.
    assert not fcntl.fcntl(conn.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
    conn.sendall(b"still ours\n")
    assert read_line(client) == b"still ours\n"
    os.lseek(table, 0, os.SEEK_SET)
    assert os.read(table, 100) == TABLE.encode()
    for sock in (client, conn):
        sock.close()
    os.close(table)


def test_a_v1_successor_moves_nothing(short_tmp: Path) -> None:
    """A moving incumbent, a successor that does not adopt
    (helpers/successor_child.py): the drain may move nothing."""
    setup = Setup(short_tmp)
    try:
        incumbent = setup.incumbent
        incumbent.set_moves_descriptors(True)
        incumbent.start_loop()
        running = Handoff(setup)
        drain = next_request(incumbent)
        assert not drain.moves
        assert drain.move_limit == 0
        with socket.socket() as sock, pytest.raises(libhandoff.WrongStateError, match="moves no"):
            drain.move(ItemKind.CONNECTION, "kv", sock)
        drain.complete()
        with next_request(incumbent) as seal:
            seal.push_revision(1)
        assert next_request(incumbent).kind is RequestKind.ENDED
        assert running.join().committed
    finally:
        setup.close()


def test_a_context_moves_only_while_it_is_valid() -> None:
    ctx = libhandoff.HookContext(None)
    with pytest.raises(libhandoff.WrongStateError):
        _ = ctx.move_limit
    with pytest.raises(libhandoff.WrongStateError), socket.socket() as sock:
        ctx.move(ItemKind.CONNECTION, "kv", sock)


def test_an_adopted_descriptor_is_owned_until_taken() -> None:
    read, write = os.pipe()
    item = libhandoff.AdoptedItem(ItemKind.DESCRIPTOR, "pipe", read)
    os.write(write, b"x")
    os.close(write)
    with item.open("rb", buffering=0) as pipe:
        assert pipe.read(1) == b"x"
    with pytest.raises(libhandoff.WrongStateError, match="taken"):
        item.detach()
    # A descriptor never taken is closed with its item: the pipe's last
    # writer gone, its reader sees the end of file.
    read, write = os.pipe()
    kept = libhandoff.AdoptedItem(ItemKind.DESCRIPTOR, "pipe", write)
    del kept
    assert os.read(read, 1) == b""
    os.close(read)
