"""A test service driven by asyncio alone, no thread of its own: the
incumbent's requests come from ``async for request in
incumbent.requests()``, and a successor awaits Begin with
``wait_for_begin_async`` (loopsvc.py has the protocol and the events).

SIGTERM while waiting for Begin cancels the wait: the process exits 3
without touching the data directory. Serving, a drain is held until
``--hold-drain-until`` exists, one ``await`` per loop iteration.

Exit status: 0 after the end of serving (committed) or SIGTERM while
serving, 3 when the wait for Begin was cancelled, 1 on a failure.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

import loopsvc

import libhandoff
from libhandoff import RequestKind


async def wait_for_begin(successor: libhandoff.Successor) -> bool:
    """True once Begin came, False when SIGTERM cancelled the wait."""
    loop = asyncio.get_running_loop()
    waiting = asyncio.ensure_future(successor.wait_for_begin_async(30))
    loop.add_signal_handler(signal.SIGTERM, waiting.cancel)
    try:
        await waiting
    except asyncio.CancelledError:
        return False
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
    return True


class Server:
    def __init__(
        self, options: loopsvc.Options, listener: socket.socket, incumbent: libhandoff.Incumbent
    ) -> None:
        self.options = options
        self.listener = listener
        self.incumbent = incumbent
        self.accepting: asyncio.Server | None = None

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            if line:
                writer.write(loopsvc.answer(line, self.incumbent))
                await writer.drain()
        except OSError:
            pass  # the client went away: nothing to answer
        finally:
            writer.close()

    async def accept(self, on: bool) -> None:
        if on:
            # A server closes its socket when it stops: give it a duplicate.
            self.accepting = await asyncio.start_server(self.answer, sock=self.listener.dup())
        elif self.accepting is not None:
            self.accepting.close()
            self.accepting = None

    async def serve(self) -> None:
        await self.accept(True)
        async for request in self.incumbent.requests():
            outcome = request.outcome and request.outcome.name
            loopsvc.report(self.options, request.kind.name.lower(), outcome=outcome)
            with request:  # completed when the block ends; failed if it raises
                if request.kind is RequestKind.DRAIN:
                    await self.accept(False)
                    await self.hold(request)
                elif request.kind is RequestKind.SEAL:
                    request.push_revision(self.incumbent.generation)
                elif request.kind is RequestKind.RESUME:
                    await self.accept(True)

    async def hold(self, drain: libhandoff.Request) -> None:
        iterations = 0
        while not loopsvc.drain_released(self.options):
            iterations += 1
            await asyncio.sleep(loopsvc.TICK)
        loopsvc.report(self.options, "drained", iterations=iterations)
        drain.set_drained(open_conns_remaining=0, accept_closed=True)


async def main() -> int:
    options = loopsvc.parse_args()
    inherited = libhandoff.detect()
    if inherited.is_successor:
        successor = loopsvc.handshake(options, inherited)
        if not await wait_for_begin(successor):
            loopsvc.report(options, "begin-wait-cancelled")
            successor.close()
            return 3
        listener, incumbent = loopsvc.take_over(options, successor)
    else:
        listener, incumbent = loopsvc.cold_start(options, inherited)
    with incumbent, listener:
        incumbent.start_loop()
        serving = asyncio.ensure_future(Server(options, listener, incumbent).serve())
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, serving.cancel)
        try:
            await serving
        except asyncio.CancelledError:
            loopsvc.report(options, "stopped")
            incumbent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
