"""minimal.py DATA_DIR CONTROL_SOCKET: the smallest real service on the Python binding, to copy
as a start; run by a supervisor that passes the TCP listener "counter". A durable counter: "INCR"
appends the new value as a line to DATA_DIR/counter.log and fdatasyncs before answering it; "GET"
answers the value (the log's whole lines); "PING" answers "PONG <pid> python"."""

from __future__ import annotations

import os
import select
import socket
import sys
import time

import libhandoff
from libhandoff import RequestKind, ServeOutcome

MAX_LINE = 64


class CounterLog:
    """The log: one line per INCR, each fdatasynced before it is answered."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir, self.fd, self.value = data_dir, -1, 0

    def open(self) -> None:
        """Cold start, successor, resume: open it and count its whole lines."""
        path = os.path.join(self.data_dir, "counter.log")
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        directory = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        os.fsync(directory)  # a new file's name is durable too
        os.close(directory)
        self.value = 0
        while chunk := os.read(self.fd, 65536):
            self.value += chunk.count(b"\n")

    def incr(self) -> bytes:
        record = b"%d\n" % (self.value + 1)  # the record is the answer
        try:
            if os.write(self.fd, record) != len(record):
                return b"ERR write failed\n"  # a torn record has no newline: it never counts
        except OSError:
            return b"ERR write failed\n"
        os.fdatasync(self.fd)  # raises: what reached the disk is unknown, never answer
        self.value += 1
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
        self.sock, self.pending, self.skipping = sock, bytearray(), False

    def serve(self, log: CounterLog) -> bool:
        """Answer every whole line the client has sent; False: close it."""
        try:
            data = self.sock.recv(MAX_LINE - len(self.pending))
        except BlockingIOError:
            return True
        except OSError:
            return False
        self.pending += data
        while (nl := self.pending.find(b"\n")) >= 0:
            line = bytes(self.pending[:nl]).removesuffix(b"\r")
            del self.pending[: nl + 1]
            out = b"ERR line too long\n" if self.skipping else answer(log, line)
            self.skipping = False
            try:  # non-blocking: a client that lets its answers pile up unread is dropped
                self.sock.sendall(out)
            except OSError:
                return False
        if len(self.pending) == MAX_LINE:  # too long: skip to its newline, answered then
            self.pending, self.skipping = bytearray(), True
        return len(data) > 0


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
            try:
                conn, _ = listener.accept()
                conn.setblocking(False)
                conns[conn.fileno()] = Conn(conn)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                pass
            except OSError:  # out of descriptors: let one free up rather than spin
                time.sleep(0.1)
        if incumbent.fileno() not in ready or (request := incumbent.take_request()) is None:
            continue
        if request.kind is RequestKind.ENDED:  # committed (the successor serves) or superseded
            return 1 if request.outcome is ServeOutcome.STOPPED else 0
        with request:  # completes it; an exception fails it
            if request.kind is RequestKind.DRAIN:  # stop accepting; answer, close
                accepting = False
                for each in conns.values():
                    each.serve(log)
                    each.sock.close()
                conns.clear()
            elif request.kind is RequestKind.SEAL:  # every record is synced already
                os.close(log.fd)
                log.fd = -1
                request.push_revision(log.value)
            else:  # RESUME: rolled back, the library holds the lock again
                if log.fd < 0:
                    log.open()
                accepting = True


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: minimal.py DATA_DIR CONTROL_SOCKET", file=sys.stderr)
        return 2
    data_dir, control = sys.argv[1], sys.argv[2]
    log = CounterLog(data_dir)
    try:
        inherited = libhandoff.detect()  # early: before other threads read the environment
        successor = inherited.successor() if inherited.is_successor else None
        if successor is not None:  # HANDOFF_ROLE=successor
            successor.handshake(b"minimal-py")
            # The incumbent drains and seals meanwhile; until Begin, touch nothing.
            successor.wait_for_begin(60)
            successor.start_heartbeats()  # a slow start is not a dead one
            listener = successor.take_listener("counter")
        else:
            listener = inherited.take_listener("counter")
        inherited.close()  # closes the listeners not taken
        with libhandoff.Lock.acquire(data_dir, timeout=5) as lock:
            log.open()
            if successor is None:
                incumbent = libhandoff.Incumbent.bind(control, lock)
            else:
                incumbent = successor.announce_ready(control, lock)
                successor.close()
        with incumbent, listener:  # the log was closed by the seal
            incumbent.start_loop()
            return serve(incumbent, listener, log)
    except (libhandoff.HandoffError, OSError) as e:  # before Ready the supervisor rolls back
        print(f"minimal.py[{os.getpid()}]: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
