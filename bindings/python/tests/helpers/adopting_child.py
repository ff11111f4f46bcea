"""Run by the tests as a successor that adopts what moved (protocol v2):
argv[1] is the report (JSON, written once it serves, or once what moved
was refused), argv[2] the data dir, argv[3] the control socket, argv[4] a second
directory to take a lock on before Begin. Expects a memfd named "table"
and connections; answers each connection once after Ready (its carried
output, then ``got <its carried input and what followed up to a newline>
from <pid>``), then serves a trivial service until SIGTERM."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
from collections.abc import Callable

import libhandoff
from libhandoff import AdoptedItem, ItemKind

PID = os.getpid()


class Service:
    def drain(self, ctx: libhandoff.HookContext) -> None:
        pass

    def seal(self, ctx: libhandoff.HookContext) -> None:
        pass

    def resume_after_abort(self) -> None:
        pass


def write(report: dict[str, object]) -> None:
    with open(sys.argv[1] + ".tmp", "w") as out:
        json.dump(report, out)
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])


def raised(action: Callable[[], object]) -> str | None:
    """The name of the exception ``action`` raises, None if it does not."""
    try:
        action()
    except Exception as e:
        return type(e).__name__
    return None


def fds() -> list[int]:
    return sorted(int(fd) for fd in os.listdir("/proc/self/fd"))


def describe(item: AdoptedItem) -> dict[str, object]:
    return {
        "kind": item.kind.name,
        "name": item.name,
        "unread": item.unread.decode(),
        "unwritten": item.unwritten.decode(),
        "state": item.state.hex(),
    }


def read_table(item: AdoptedItem, report: dict[str, object]) -> None:
    report["socket_of_a_descriptor"] = raised(lambda: item.socket)
    with item.open("rb") as table:
        report["table_inheritable"] = os.get_inheritable(table.fileno())
        table.seek(0)  # the offset is shared with the incumbent's copy
        report["table"] = table.read().decode()
    report["detach_after_open"] = raised(item.detach)


def check_connection(sock: socket.socket, item: AdoptedItem, report: dict[str, object]) -> None:
    flags = fcntl.fcntl(sock.fileno(), fcntl.F_GETFL)
    report["conn"] = {
        "family": sock.family.name,
        "type": sock.type.name,
        "blocking": sock.getblocking(),
        "o_nonblock": bool(flags & os.O_NONBLOCK),
        "inheritable": os.get_inheritable(sock.fileno()),
        "detach": raised(item.detach),
    }


def answer(sock: socket.socket, item: AdoptedItem) -> None:
    """The carried output first, then the carried input with the rest of
    its line."""
    sock.setblocking(True)
    sock.sendall(item.unwritten)
    line = bytearray(item.unread)
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("the client closed before completing its line")
        line += chunk
    sock.sendall(b"got " + bytes(line[:-1]) + f" from {PID}\n".encode())


def main() -> int:
    data_dir, control, elsewhere = sys.argv[2], sys.argv[3], sys.argv[4]
    report: dict[str, object] = {}
    inherited = libhandoff.detect()
    with inherited, inherited.successor() as succ:
        succ.set_adopts_descriptors(True)
        succ.handshake(b"adopting-child")
        report["set_adopts_after_handshake"] = raised(lambda: succ.set_adopts_descriptors(False))
        with libhandoff.Lock.acquire(elsewhere) as other:
            report["adopt_before_begin"] = raised(lambda: succ.adopt(other))
        report["fds_before"] = fds()
        try:
            succ.wait_for_begin(30)
        except libhandoff.HandoffError as e:
            # What moved is refused as it arrives (a descriptor said to be
            # a connection that is not a socket).
            report["begin"] = f"{type(e).__name__}: {e}"
            report["fds_after"] = fds()
            write(report)
            return 1
        succ.start_heartbeats()
        listener = succ.take_listener("kv")
        with libhandoff.Lock.acquire(data_dir, timeout=5) as lock:
            report["adopt_none"] = raised(lambda: succ.adopt(None))  # type: ignore[arg-type]
            items = succ.adopt(lock)
            report["adopt_twice"] = raised(lambda: succ.adopt(lock))
            report["items"] = [describe(item) for item in items]
            conns = [item for item in items if item.kind is ItemKind.CONNECTION]
            for item in items:
                if item.kind is ItemKind.DESCRIPTOR:
                    read_table(item, report)
            for item in conns:
                check_connection(item.socket, item, report)
            incumbent = succ.announce_ready(
                control,
                lock,
                listening_on=[f"tcp://127.0.0.1:{listener.getsockname()[1]}"],
            )
    # From Ready on the connections are ours to serve.
    for item in conns:
        answer(item.socket, item)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with incumbent:
        incumbent.start(Service())
        write(report)
        incumbent.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
