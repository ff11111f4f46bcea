"""Closed-loop load for the key-value example services (examples/README.md).

Clients of two kinds run until stopped:

* fresh: a new TCP connection per request; a refused or reset connection,
  or no answer within the timeout, is a failure;
* persistent: one connection kept open; when the server closes it between
  requests (a drain does), the client reconnects and resends the request,
  as HTTP clients do, which is not a failure.

Every connection a persistent client opens is recorded (`KeptConnection`),
with when the server closed or reset it (end of file, ECONNRESET, EPIPE: on a
request, or found by a last look when the load stops), so that a report can
say how many stayed open across the handoffs, how many the handoffs closed,
and how many times the clients reconnected (the benchmark's loadgen.rs counts
the same). Every acknowledged SET is remembered, so that `verify()` can read
each one back afterwards. Standard library only.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

TIMEOUT_SECS = 5.0


@dataclass
class Sample:
    """One request: when it started (monotonic seconds), its latency, and
    the failure kind, or None when it succeeded."""

    start: float
    latency: float
    failure: str | None


@dataclass
class KeptConnection:
    """One connection of a persistent client: when it was opened, how many
    answers came on it, and when (monotonic seconds) and how the server
    closed or reset it (None: the client still had it open at the stop, or
    gave up on it itself, `given_up`)."""

    client: int
    opened: float
    answered: int = 0
    closed: float | None = None
    how: str = ""
    given_up: str = ""


@dataclass
class Results:
    samples: list[Sample] = field(default_factory=list)
    acknowledged: dict[str, str] = field(default_factory=dict)
    resent: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    kept: list[KeptConnection] = field(default_factory=list)

    def closed_by_server(self) -> list[KeptConnection]:
        return [c for c in self.kept if c.closed is not None]

    def reconnects(self) -> int:
        """Connections the persistent clients opened after their first."""
        return len(self.kept) - len({c.client for c in self.kept})

    def fail(self, kind: str, detail: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1
        if len(self.examples) < 10:
            self.examples.append(f"{kind}: {detail}")


class ServerClosed(Exception):
    """The server closed a kept connection between requests."""


def _read_line(sock: socket.socket, buffer: bytearray) -> str:
    while b"\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            raise ServerClosed()
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode("ascii", "replace")


def _classify(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, (ConnectionResetError, BrokenPipeError, ServerClosed)):
        return "reset"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timeout"
    return "error"


class LoadGenerator:
    def __init__(self, address: tuple[str, int], fresh: int = 4, persistent: int = 4) -> None:
        self.address = address
        self.results = Results()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._fresh_client, args=(i,), daemon=True) for i in range(fresh)] + [
            threading.Thread(target=self._persistent_client, args=(i,), daemon=True) for i in range(persistent)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wait_acknowledged(self, n: int, timeout: float = 30.0) -> None:
        """Until ``n`` more writes are acknowledged than when called."""
        with self._lock:
            target = len(self.results.acknowledged) + n
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self.results.acknowledged) >= target:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {n} writes acknowledged in {timeout} s")
            time.sleep(0.005)

    def stop(self) -> Results:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.results

    def _record(self, start: float, failure: str | None, detail: str = "") -> None:
        with self._lock:
            self.results.samples.append(Sample(start, time.monotonic() - start, failure))
            if failure:
                self.results.fail(failure, detail)

    def _check(self, request: str, answer: str, expected: dict[str, str]) -> str | None:
        """The failure kind of a wrong answer, or None; remembers acks."""
        verb, key, *rest = request.split(" ")
        if verb == "SET":
            if not answer.startswith("OK "):
                return "wrong-answer"
            with self._lock:
                self.results.acknowledged[key] = rest[0]
            expected[key] = rest[0]
            return None
        want = expected.get(key)
        if want is None:
            return None if answer in ("NOTFOUND",) or answer.startswith("VALUE ") else "wrong-answer"
        return None if answer == f"VALUE {want}" else "wrong-answer"

    def _requests(self, prefix: str) -> Iterator[str]:
        n = 0
        while not self._stop.is_set():
            n += 1
            key = f"{prefix}-{n}"
            yield f"SET {key} v{n}-{int(time.time() * 1000) % 100000}"
            yield f"GET {key}"

    def _fresh_client(self, index: int) -> None:
        expected: dict[str, str] = {}
        for request in self._requests(f"fresh{index}"):
            start = time.monotonic()
            try:
                with socket.create_connection(self.address, timeout=TIMEOUT_SECS) as sock:
                    sock.sendall(request.encode() + b"\n")
                    answer = _read_line(sock, bytearray())
            except (OSError, ServerClosed) as error:
                self._record(start, _classify(error), f"{request}: {error!r}")
                continue
            failure = self._check(request, answer, expected)
            self._record(start, failure, f"{request} -> {answer}")

    def _persistent_client(self, index: int) -> None:
        expected: dict[str, str] = {}
        sock: socket.socket | None = None
        kept: KeptConnection | None = None
        buffer = bytearray()
        for request in self._requests(f"kept{index}"):
            start = time.monotonic()
            answer = None
            for attempt in range(2):
                fresh = sock is None
                try:
                    if sock is None:
                        sock = socket.create_connection(self.address, timeout=TIMEOUT_SECS)
                        buffer.clear()
                        kept = KeptConnection(index, time.monotonic())
                        with self._lock:
                            self.results.kept.append(kept)
                    sock.sendall(request.encode() + b"\n")
                    answer = _read_line(sock, buffer)
                    if kept is not None:
                        kept.answered += 1
                    break
                except (OSError, ServerClosed) as error:
                    if sock is not None:
                        sock.close()
                    sock = None
                    kind = _classify(error)
                    if kept is not None:
                        if kind == "reset":
                            kept.closed, kept.how = time.monotonic(), f"{request}: {error!r}"
                        else:
                            kept.given_up = f"{kind}: {request}: {error!r}"
                    kept = None
                    # A kept connection closed between requests: reconnect
                    # and resend once. Anything on a new one is a failure.
                    if not fresh and attempt == 0 and kind == "reset":
                        with self._lock:
                            self.results.resent += 1
                        continue
                    self._record(start, kind, f"{request}: {error!r}")
                    break
            if answer is not None:
                failure = self._check(request, answer, expected)
                self._record(start, failure, f"{request} -> {answer}")
        if sock is not None:
            # A close since the last answer has not been seen yet: look.
            how = _closed_by_peer(sock)
            if how is not None and kept is not None:
                kept.closed, kept.how = time.monotonic(), f"at the stop: {how}"
            sock.close()


def _closed_by_peer(sock: socket.socket) -> str | None:
    """How the server closed or reset ``sock`` (no request outstanding), or
    None while it is open."""
    try:
        sock.setblocking(False)
        if sock.recv(1, socket.MSG_PEEK) == b"":
            return "end of file"
        return None  # bytes nobody asked for: open, if not quiet
    except BlockingIOError:
        return None
    except OSError as error:
        return repr(error)


def verify(address: tuple[str, int], acknowledged: dict[str, str]) -> list[str]:
    """Read every acknowledged write back; the keys that are lost or wrong."""
    lost = []
    with socket.create_connection(address, timeout=TIMEOUT_SECS) as sock:
        buffer = bytearray()
        for key, value in acknowledged.items():
            sock.sendall(f"GET {key}\n".encode())
            if _read_line(sock, buffer) != f"VALUE {value}":
                lost.append(key)
    return lost
