"""The successor's side of a handoff: handshake, wait for Begin, take the
listeners, announce Ready and become the incumbent.

A typical successor::

    inherited = libhandoff.detect()
    with inherited.successor() as succ:
        inherited.close()
        succ.set_adopts_descriptors(True)  # optional: connections move (v2)
        succ.handshake(b"my-build")
        succ.start_heartbeats()          # from Begin to Ready
        succ.wait_for_begin(60)          # AbortedError/PeerClosedError: exit
                                         # (in asyncio: await succ.wait_for_begin_async(60))
        listener = succ.take_listener("web")
        lock = libhandoff.Lock.acquire(data_dir, timeout=5)
        ...                              # open the sealed state
        moved = succ.adopt(lock)         # AdoptedItems; served after Ready
        incumbent = succ.announce_ready(control_path, lock,
                                        listening_on=["tcp://127.0.0.1:8080"])
    incumbent.start_loop()

Nothing may be written to the data directory before Begin has come and the
lock is held. A service that waits for Begin in a loop of its own (to be
able to stop waiting) watches :meth:`Successor.fileno` and calls
:meth:`Successor.poll_begin` when it is readable.
"""

from __future__ import annotations

import ctypes
import math
import select
import socket
import time
import uuid
from collections.abc import Iterable
from ctypes import byref, c_bool, c_int

from . import _aio, _lib
from ._managed import Managed, PathLike, encode_path, encode_str, to_ms
from ._sockets import ListenerKind, socket_from_fd
from .errors import NullPointerError, TimedOutError, WrongStateError, check
from .incumbent import Incumbent
from .lock import Lock
from .messages import MessageHandle, Ready
from .moves import AdoptedItem, take_items

__all__ = ["Successor"]


class Successor(Managed):
    """A successor's side of one handoff.

    Created by :meth:`Inherited.successor` from what :func:`~libhandoff.detect`
    found. Closing it closes the control socket and every listener not
    taken. Not synchronised: one thread at a time.
    """

    _FREE = "handoff_successor_free"
    _WHAT = "successor"

    def set_adopts_descriptors(self, adopts: bool) -> None:
        """Whether the service adopts the descriptors an incumbent moves
        (its client connections and named descriptors: protocol v2,
        docs/protocol.md); the handshake then offers v2, and :meth:`adopt`
        gives what moved. Default False. Before :meth:`handshake`."""
        check(_lib.lib().handoff_successor_set_adopts_descriptors, self._handle, bool(adopts))

    def handshake(self, build_id: bytes = b"") -> uuid.UUID:
        """Send Hello (announcing ``build_id``) and wait up to 5 s for
        HelloAck; the handoff's id."""
        build_id = bytes(build_id)
        raw = ctypes.create_string_buffer(16)
        check(
            _lib.lib().handoff_successor_handshake,
            self._handle,
            build_id,
            len(build_id),
            raw,
        )
        return uuid.UUID(bytes=raw.raw)

    def fileno(self) -> int:
        """The control connection's descriptor: readable when the supervisor
        has said something; then call :meth:`poll_begin`. For
        ``selectors``, ``select.poll`` or ``loop.add_reader`` (never read,
        write or close it). Until Ready."""
        fd = int(_lib.lib().handoff_successor_control_fd(self._handle))
        if fd < 0:
            raise WrongStateError("a successor has no control descriptor after Ready")
        return fd

    def poll_begin(self) -> bool:
        """Read what the supervisor sent, without waiting: True once Begin
        has come (and from then on). :class:`AbortedError` or
        :class:`PeerClosedError` mean the handoff is over: exit without
        touching the data directory."""
        begun = c_bool()
        check(_lib.lib().handoff_successor_poll_begin, self._handle, byref(begun))
        return bool(begun.value)

    def wait_for_begin(self, timeout: float | None = 60.0) -> None:
        """Wait up to ``timeout`` seconds (None: no limit) for Begin (the
        incumbent sealed and released the lock); :class:`TimedOutError`
        after that. :class:`AbortedError` or :class:`PeerClosedError` mean
        the handoff is over: exit without touching the data directory.
        Python signal handlers run meanwhile (one that raises ends the
        wait); the GIL is released."""
        deadline = _deadline(timeout)
        watch = select.poll()
        watch.register(self.fileno(), select.POLLIN)
        while not self.poll_begin():
            left = _left(deadline, timeout)
            watch.poll(None if left is None else math.ceil(left * 1000))

    async def wait_for_begin_async(self, timeout: float | None = 60.0) -> None:
        """:meth:`wait_for_begin` for asyncio, without a thread: cancelling
        the task ends the wait (and nothing else: the successor may still
        be closed, which the supervisor sees as the successor giving up)."""
        deadline = _deadline(timeout)
        while not self.poll_begin():
            await _aio.readable(self.fileno(), _left(deadline, timeout))

    def start_heartbeats(self) -> None:
        """Send heartbeats every 2 s from Begin until Ready, so that a slow
        start-up is not taken for a dead successor. Call it before
        wait_for_begin: its thread is then not started in the blackout."""
        check(_lib.lib().handoff_successor_start_heartbeats, self._handle)

    def take_listener(self, name: str, kind: ListenerKind = ListenerKind.TCP) -> socket.socket:
        """After Begin, take listener ``name`` as a socket of ``kind`` (see
        :meth:`Inherited.take_listener`). Before Begin it raises
        :class:`WrongStateError`: the listeners still serve the incumbent."""
        fd = c_int(-1)
        check(
            _lib.lib().handoff_successor_take_listener,
            self._handle,
            encode_str(name, "a listener name"),
            int(kind),
            byref(fd),
        )
        return socket_from_fd(fd.value)

    def adopt(self, lock: Lock, *, blocking: bool = False) -> list[AdoptedItem]:
        """What the incumbent moved, in its order (empty when nothing
        moved): after Begin, holding the data-dir ``lock`` (nothing moved
        is read or written before), once per handoff and before
        :meth:`announce_ready`, which refuses to announce Ready unless
        every item moved was adopted.

        Each connection comes as a :class:`socket.socket`
        (:attr:`AdoptedItem.socket`), non-blocking unless ``blocking``;
        any other descriptor stays in its item until taken with
        :meth:`AdoptedItem.open` or :meth:`AdoptedItem.detach`. For each
        connection, write its ``unwritten`` bytes first, then process its
        ``unread`` ones, then read it, and only once Ready is announced.
        If this raises, every descriptor that moved is closed."""
        if lock is None:
            raise NullPointerError("adopting needs the held data-dir lock, not None")
        items = ctypes.POINTER(_lib.handoff_items)()
        check(_lib.lib().handoff_successor_adopt, self._handle, lock._handle, byref(items))
        try:
            return take_items(items, blocking)
        finally:
            _lib.lib().handoff_items_free(items)

    def announce_ready(
        self,
        control_path: PathLike,
        lock: Lock,
        *,
        listening_on: Iterable[str] = (),
        healthz_ok: bool = True,
        advertised_revision_per_shard: Iterable[int] = (),
    ) -> Incumbent:
        """Announce Ready, then bind the control socket at ``control_path``
        as the new incumbent (replacing the old one's atomically), holding
        ``lock``, which moves into the returned incumbent (``lock`` stays,
        empty). Start it with :meth:`Incumbent.start_loop` (or
        :meth:`Incumbent.start`). The successor is spent
        whether this succeeds or not."""
        ready = Ready(
            listening_on=tuple(listening_on),
            healthz_ok=healthz_ok,
            advertised_revision_per_shard=tuple(advertised_revision_per_shard),
        )
        out = ctypes.POINTER(_lib.handoff_incumbent)()
        handle: MessageHandle
        with ready.to_handle() as handle:
            check(
                _lib.lib().handoff_successor_announce_ready,
                self._handle,
                handle._handle,
                encode_path(control_path),
                lock._handle,
                byref(out),
            )
        return Incumbent(out)


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    to_ms(timeout, "timeout")  # the same checks as everywhere else
    return time.monotonic() + timeout


def _left(deadline: float | None, timeout: float | None) -> float | None:
    """Seconds left before ``deadline``; past it, Begin did not come in time."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimedOutError(f"no Begin within {timeout:g} s")
    return left
