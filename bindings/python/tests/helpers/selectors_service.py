"""A test service driven by a ``selectors`` loop on its main thread, with
no thread of its own: the incumbent and the successor are registered with
the selector like any socket (loopsvc.py has the protocol and the events).

Waiting for Begin, the loop also watches SIGTERM (through a wakeup socket):
a stop ends the wait, and the process exits 3 without touching the data
directory. Serving, a drain is held until ``--hold-drain-until`` exists,
across as many loop iterations as that takes.

Exit status: 0 after the end of serving (committed) or SIGTERM while
serving, 3 when the wait for Begin was stopped, 1 on a failure.
"""

from __future__ import annotations

import selectors
import signal
import socket
import sys

import loopsvc

import libhandoff
from libhandoff import RequestKind


class StopWatch:
    """SIGTERM as something a selector can watch."""

    def __init__(self) -> None:
        self.read, self.write = socket.socketpair()
        self.read.setblocking(False)
        self.write.setblocking(False)
        signal.set_wakeup_fd(self.write.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, lambda _sig, _frame: None)


def wait_for_begin(successor: libhandoff.Successor, stop: StopWatch) -> bool:
    """True once Begin came, False when SIGTERM stopped the wait."""
    with selectors.DefaultSelector() as sel:
        sel.register(successor, selectors.EVENT_READ)
        sel.register(stop.read, selectors.EVENT_READ)
        while not successor.poll_begin():
            ready = {key.fileobj for key, _ in sel.select()}
            if stop.read in ready:
                return False
    return True


class Server:
    def __init__(
        self,
        options: loopsvc.Options,
        listener: socket.socket,
        incumbent: libhandoff.Incumbent,
        stop: StopWatch,
    ) -> None:
        self.options = options
        self.listener = listener
        self.incumbent = incumbent
        self.stop = stop
        self.sel = selectors.DefaultSelector()
        self.draining: libhandoff.Request | None = None
        self.drain_iterations = 0
        self.conns: dict[socket.socket, bytearray] = {}

    def accept(self, on: bool) -> None:
        if on:
            self.sel.register(self.listener, selectors.EVENT_READ)
        else:
            self.sel.unregister(self.listener)

    def serve(self) -> int:
        self.sel.register(self.stop.read, selectors.EVENT_READ)
        self.sel.register(self.incumbent, selectors.EVENT_READ)
        self.accept(True)
        while True:
            for key, _ in self.sel.select(loopsvc.TICK):
                if key.fileobj is self.stop.read:
                    loopsvc.report(self.options, "stopped")
                    self.incumbent.stop()
                    return 0
                if key.fileobj is self.incumbent:
                    request = self.incumbent.take_request()
                    if request is not None and not self.carry_out(request):
                        return 0
                elif key.fileobj is self.listener:
                    self.take_connection()
                else:
                    self.read(key.fileobj)  # type: ignore[arg-type]
            self.drain_step()

    def carry_out(self, request: libhandoff.Request) -> bool:
        """False once serving has ended."""
        loopsvc.report(
            self.options,
            request.kind.name.lower(),
            outcome=request.outcome and request.outcome.name,
        )
        if request.kind is RequestKind.DRAIN:
            self.accept(False)
            self.draining, self.drain_iterations = request, 0
        elif request.kind is RequestKind.SEAL:
            with request:
                request.push_revision(self.incumbent.generation)
        elif request.kind is RequestKind.RESUME:
            with request:
                self.accept(True)
        else:
            return False
        return True

    def drain_step(self) -> None:
        """One loop iteration of a held drain."""
        if self.draining is None:
            return
        self.drain_iterations += 1
        if not loopsvc.drain_released(self.options):
            return
        request, self.draining = self.draining, None
        loopsvc.report(self.options, "drained", iterations=self.drain_iterations)
        request.set_drained(open_conns_remaining=len(self.conns), accept_closed=True)
        request.complete()

    def take_connection(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return  # another generation's listener flag: nothing after all
        conn.setblocking(False)
        self.conns[conn] = bytearray()
        self.sel.register(conn, selectors.EVENT_READ)

    def read(self, conn: socket.socket) -> None:
        """Answer the connection's first line, then close it."""
        buffered = self.conns[conn]
        try:
            data = conn.recv(4096)
            buffered += data
            if data and b"\n" not in buffered:
                return
            if data:
                conn.setblocking(True)
                conn.sendall(loopsvc.answer(bytes(buffered.split(b"\n")[0]), self.incumbent))
        except OSError:
            pass  # the client went away: nothing to answer
        self.sel.unregister(conn)
        del self.conns[conn]
        conn.close()


def main() -> int:
    options = loopsvc.parse_args()
    inherited = libhandoff.detect()
    stop = StopWatch()
    if inherited.is_successor:
        successor = loopsvc.handshake(options, inherited)
        if not wait_for_begin(successor, stop):
            loopsvc.report(options, "begin-wait-cancelled")
            successor.close()
            return 3
        listener, incumbent = loopsvc.take_over(options, successor)
    else:
        listener, incumbent = loopsvc.cold_start(options, inherited)
    with incumbent, listener:
        incumbent.start_loop()
        return Server(options, listener, incumbent, stop).serve()


if __name__ == "__main__":
    sys.exit(main())
