"""Waiting for one of the library's descriptors in asyncio, without a thread:
the running loop's own reader callback, removed again however the wait ends
(readable, timed out or cancelled)."""

from __future__ import annotations

import asyncio

__all__ = ["readable"]


def _settle(ready: asyncio.Future[bool], value: bool) -> None:
    if not ready.done():
        ready.set_result(value)


async def readable(fd: int, timeout: float | None = None) -> bool:
    """Wait until ``fd`` is readable (True) or ``timeout`` seconds pass
    (False). The loop must not have another reader on ``fd`` meanwhile
    (asyncio keeps one per descriptor)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[bool] = loop.create_future()
    loop.add_reader(fd, _settle, ready, True)
    timer = None if timeout is None else loop.call_later(timeout, _settle, ready, False)
    try:
        return await ready
    finally:
        loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()
