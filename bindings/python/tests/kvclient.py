"""Clients of the example key-value service, and a load that records every
acknowledged write and every failure a client could see."""

from __future__ import annotations

import socket
import threading
import time


def _read_line(sock: socket.socket) -> bytes:
    """One answer line; b"" if the peer closed before any byte of it."""
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            if data:
                raise ConnectionError(f"connection closed in the middle of an answer: {data!r}")
            return b""
        data += chunk
    return bytes(data[:-1])


def request(port: int, line: str, timeout: float = 10.0) -> str:
    """One request on a fresh connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(line.encode() + b"\n")
        answer = _read_line(sock)
        if not answer:
            raise ConnectionError(f"closed without an answer to {line!r}")
        return answer.decode()


def pipeline(port: int, lines: list[str], timeout: float = 30.0) -> list[str]:
    """Many requests on one connection, sent at once."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall("".join(f"{line}\n" for line in lines).encode())
        reader = sock.makefile("rb")
        answers = [reader.readline().rstrip(b"\n").decode() for _ in lines]
        reader.close()
        return answers


class Load:
    """Clients writing keys of their own while handoffs happen.

    ``fresh`` clients open a connection per request; ``persistent`` ones keep
    theirs and, when it is closed before any byte of an answer arrives
    (a drain), reconnect and resend. Every acknowledged SET goes into
    ``acked``; anything else a client should never see goes into
    ``failures`` (a refused or reset connection, a wrong answer)."""

    def __init__(self, port: int, fresh: int = 3, persistent: int = 3, pause: float = 0.003):
        self.port = port
        self.pause = pause
        self.acked: dict[str, str] = {}
        self.failures: list[str] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._fresh, args=(i,), daemon=True) for i in range(fresh)
        ] + [
            threading.Thread(target=self._persistent, args=(i,), daemon=True)
            for i in range(persistent)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_acked(self, n: int, timeout: float = 30.0) -> None:
        """Until ``n`` more writes are acknowledged than when called (so a
        phase of a test is known to have served some, whatever the time)."""
        with self._lock:
            target = len(self.acked) + n
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self.acked) >= target or self.failures:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {n} writes acknowledged in {timeout} s")
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _fail(self, what: str) -> None:
        with self._lock:
            self.failures.append(what)

    def _ack(self, key: str, value: str) -> None:
        with self._lock:
            self.acked[key] = value
            self.requests += 1

    def _fresh(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            key, value = f"f{worker}-{n}", f"v{n}"
            try:
                answer = request(self.port, f"SET {key} {value}")
            except OSError as e:
                self._fail(f"fresh SET {key}: {e!r}")
                return
            if not answer.startswith("OK "):
                self._fail(f"fresh SET {key}: {answer!r}")
                return
            self._ack(key, value)
            n += 1
            time.sleep(self.pause)

    def _persistent(self, worker: int) -> None:
        sock: socket.socket | None = None

        def ask(line: str) -> str:
            nonlocal sock
            for _attempt in range(20):
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                try:
                    sock.sendall(line.encode() + b"\n")
                    answer = _read_line(sock)
                except (BrokenPipeError, ConnectionResetError):
                    answer = b""
                if answer:
                    return answer.decode()
                # Closed between requests (a drain): reconnect and resend.
                sock.close()
                sock = None
            raise ConnectionError(f"no answer to {line!r} after 20 connections")

        n = 0
        try:
            while not self._stop.is_set():
                key, value = f"p{worker}-{n}", f"v{n}"
                answer = ask(f"SET {key} {value}")
                if not answer.startswith("OK "):
                    self._fail(f"persistent SET {key}: {answer!r}")
                    return
                self._ack(key, value)
                answer = ask(f"GET {key}")
                if answer != f"VALUE {value}":
                    self._fail(f"persistent GET {key} right after its SET: {answer!r}")
                    return
                n += 1
                time.sleep(self.pause)
        except OSError as e:
            self._fail(f"persistent worker {worker}: {e!r}")
        finally:
            if sock is not None:
                sock.close()

    def unreadable(self) -> list[str]:
        """Acknowledged writes that a GET does not return now."""
        keys = sorted(self.acked)
        answers = pipeline(self.port, [f"GET {key}" for key in keys])
        return [
            f"{key}: expected VALUE {self.acked[key]}, got {answer!r}"
            for key, answer in zip(keys, answers, strict=True)
            if answer != f"VALUE {self.acked[key]}"
        ]


class Kept:
    """A client connection kept across handoffs: an end of file or a reset
    fails the test, and nothing is ever resent."""

    def __init__(self, port: int, rcvbuf: int | None = None, timeout: float = 20.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connecting, so that the window stays this small.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)  # a bound on a wait, never an assertion
        self.sock.connect(("127.0.0.1", port))
        self.reader = self.sock.makefile("rb")

    def send(self, data: str) -> None:
        self.sock.sendall(data.encode())

    def line(self) -> str:
        answer = self.reader.readline()
        if not answer.endswith(b"\n"):
            raise ConnectionError(f"the connection was closed (EOF) after {answer!r}")
        return answer[:-1].decode()

    def ask(self, line: str) -> str:
        self.send(line + "\n")
        return self.line()

    def pid(self) -> int:
        """Who answers PING on this connection."""
        words = self.ask("PING").split()
        assert words[0] == "PONG", words
        return int(words[1])

    def at_eof(self) -> bool:
        """Whether the server closed the connection (cleanly: a reset raises)."""
        return self.reader.read(1) == b""

    def close(self) -> None:
        self.reader.close()
        self.sock.close()
