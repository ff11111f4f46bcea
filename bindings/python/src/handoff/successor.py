"""The successor's side of a handoff: handshake, wait for Begin, take the
listeners, announce Ready and become the incumbent.

A typical successor::

    inherited = handoff.detect()
    with inherited.successor() as succ:
        inherited.close()
        succ.handshake(b"my-build")
        succ.wait_for_begin(60)          # AbortedError/PeerClosedError: exit
        succ.start_heartbeats()
        listener = succ.take_listener("web")
        lock = handoff.Lock.acquire(data_dir, timeout=5)
        ...                              # open the sealed state
        incumbent = succ.announce_ready(control_path, lock,
                                        listening_on=["tcp://127.0.0.1:8080"])
    incumbent.start(service)

Nothing may be written to the data directory before :meth:`wait_for_begin`
returns and the lock is held.
"""

from __future__ import annotations

import ctypes
import socket
import uuid
from collections.abc import Iterable
from ctypes import byref, c_int
from typing import TYPE_CHECKING

from . import _lib
from ._managed import Managed, PathLike, encode_path, encode_str, to_ms
from .errors import check
from .listeners import Inherited, ListenerKind, socket_from_fd
from .messages import MessageHandle, Ready

if TYPE_CHECKING:
    from .incumbent import Incumbent
    from .lock import Lock

__all__ = ["Successor"]


class Successor(Managed):
    """A successor's side of one handoff.

    Created from what :func:`~handoff.detect` found (the control socket and
    the listeners move in here; ``inherited`` keeps only their names and
    must still be closed). Closing it closes the control socket and every
    listener not taken. Not synchronised: one thread at a time.
    """

    _FREE = "handoff_successor_free"
    _WHAT = "successor"

    def __init__(self, inherited: Inherited) -> None:
        out = ctypes.POINTER(_lib.handoff_successor)()
        check(_lib.lib().handoff_successor_new, inherited._handle, byref(out))
        super().__init__(out)

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

    def wait_for_begin(self, timeout: float = 60.0) -> None:
        """Wait up to ``timeout`` seconds for Begin (the incumbent sealed and
        released the lock). :class:`AbortedError` or :class:`PeerClosedError`
        mean the handoff is over: exit without touching the data directory.
        The GIL is released while waiting."""
        ms = to_ms(timeout, "timeout")
        check(_lib.lib().handoff_successor_wait_for_begin, self._handle, ms)

    def start_heartbeats(self) -> None:
        """Send heartbeats every 2 s until Ready, so that a slow start-up is
        not taken for a dead successor."""
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
        empty). Start it with :meth:`Incumbent.start`. The successor is spent
        whether this succeeds or not."""
        from .incumbent import Incumbent

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
