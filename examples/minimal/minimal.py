"""minimal.py DATA_DIR CONTROL_SOCKET: the smallest real service on the Python binding, to copy as
a start: a durable counter on the supervisor's TCP listener "counter" (see README.md)."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys

import libhandoff
from libhandoff import RequestKind, ServeOutcome

MAX_LINE = 64


class CounterLog:
    """The log: one line per INCR, each fdatasynced before it is answered."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.open()

    def open(self) -> None:
        """Cold start, successor, resume: open it and count its whole lines."""
        path = os.path.join(self.data_dir, "counter.log")
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        directory = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        os.fsync(directory)  # a new file's name is durable too
        os.close(directory)
        with open(path, "rb") as existing:
            self.value = existing.read().count(b"\n")

    def incr(self) -> bytes:
        self.value += 1
        record = b"%d\n" % self.value  # the record is the answer
        if os.write(self.fd, record) != len(record):  # a failure raises, ending the service
            raise OSError("writing the log: a short write (disk full?)")
        os.fdatasync(self.fd)  # raises: what reached the disk is unknown, never answer
        return record


def answer(log: CounterLog, line: bytes) -> bytes:
    if line == b"INCR":
        return log.incr()
    if line == b"GET":
        return b"%d\n" % log.value
    if line == b"PING":
        return b"PONG %d python\n" % os.getpid()
    return b"ERR unknown command\n"


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.pending = sock, bytearray()

    def serve(self, log: CounterLog) -> bool:
        """Answer every whole line the (readable, non-blocking) client sent; False: close it."""
        try:
            data = self.sock.recv(MAX_LINE - len(self.pending))
        except OSError:
            return False
        self.pending += data
        answers = []
        while (nl := self.pending.find(b"\n")) >= 0:
            answers.append(answer(log, bytes(self.pending[:nl]).removesuffix(b"\r")))
            del self.pending[: nl + 1]
        try:  # non-blocking: a client that lets its answers pile up unread is dropped
            self.sock.sendall(b"".join(answers))
        except OSError:
            return False
        return len(data) > 0 and len(self.pending) < MAX_LINE  # an overlong line closes it


def serve(incumbent: libhandoff.Incumbent, listener: socket.socket, log: CounterLog) -> int:
    """The service's own loop: the handoff's requests, the listener, the connections."""
    conns: dict[int, Conn] = {}
    accepting = True
    while True:
        poller = select.poll()
        for fd in [incumbent.fileno(), *conns, *([listener.fileno()] if accepting else [])]:
            poller.register(fd, select.POLLIN)
        ready = {fd for fd, _ in poller.poll()}
        for fd in ready & conns.keys():
            if not conns[fd].serve(log):
                conns.pop(fd).sock.close()
        if listener.fileno() in ready:  # poll, then accept: the shared O_NONBLOCK may be either
            with contextlib.suppress(OSError):  # a client gone, no descriptors (kv.py backs off)
                conn, _ = listener.accept()
                conn.setblocking(False)
                conns[conn.fileno()] = Conn(conn)
        if incumbent.fileno() not in ready or (request := incumbent.take_request()) is None:
            continue
        if request.kind is RequestKind.ENDED:  # committed (the successor serves) or superseded
            return 1 if request.outcome is ServeOutcome.STOPPED else 0
        with request:  # completes it; an exception fails it
            if request.kind is RequestKind.DRAIN:  # stop accepting; close (all sent is answered)
                accepting = False
                for each in conns.values():
                    each.sock.close()
                conns.clear()
            elif request.kind is RequestKind.SEAL:  # every record is synced already
                os.close(log.fd)
                log.fd = -1
            else:  # RESUME: rolled back, the library holds the lock again
                if log.fd < 0:
                    log.open()
                accepting = True


def main() -> int:
    if len(sys.argv) != 3:
        sys.exit("usage: minimal.py DATA_DIR CONTROL_SOCKET")
    data_dir, control = sys.argv[1], sys.argv[2]
    try:
        with libhandoff.detect() as inherited:  # early: before other threads read the environment
            successor = inherited.successor() if inherited.is_successor else None
            if successor is not None:  # HANDOFF_ROLE=successor
                successor.handshake(b"minimal-py")
                successor.start_heartbeats()  # Begin to Ready: a slow start is not a dead one
                successor.wait_for_begin(60)  # the incumbent drains and seals: touch nothing
                listener = successor.take_listener("counter")
            else:
                listener = inherited.take_listener("counter")
        with libhandoff.Lock.acquire(data_dir, timeout=5) as lock:
            log = CounterLog(data_dir)
            if successor is None:
                incumbent = libhandoff.Incumbent.bind(control, lock)
            else:
                incumbent = successor.announce_ready(control, lock)
                successor.close()
        with incumbent, listener:  # the log was closed by the seal
            incumbent.start_loop()
            return serve(incumbent, listener, log)
    except (libhandoff.HandoffError, OSError) as e:  # before Ready: rolled back; after: restarted
        sys.exit(f"minimal.py[{os.getpid()}]: {e}")


if __name__ == "__main__":
    sys.exit(main())
