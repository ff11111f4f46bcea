"""The incumbent: the process serving the control socket, whose service the
library drains, seals and resumes (DESIGN §9: the service's loop drives
the handoff).

A service with an event loop starts it with :meth:`Incumbent.start_loop`,
watches :meth:`Incumbent.fileno` for reading with the rest of its
descriptors, and takes each request as it comes::

    incumbent.start_loop()
    sel.register(incumbent, selectors.EVENT_READ)
    ...                                  # when select() says it is readable:
    request = incumbent.take_request()   # a Request, or None
    if request is not None and request.kind is RequestKind.SEAL:
        with request:                    # completes it; fails it on an exception
            request.push_revision(log.close())

A drain may be held across as many loop iterations as it needs: the
library keeps the heartbeats going. In asyncio, ``async for request in
incumbent.requests()`` does the same without a thread.

A service without a loop passes callbacks to :meth:`Incumbent.start`
instead (see :mod:`handoff.callbacks`): the same requests, taken by a
thread of the library's.

At interpreter exit every incumbent still serving is stopped (rolling back
a handoff in progress) before Python tears down what the callbacks need.
"""

from __future__ import annotations

import atexit
import ctypes
import threading
import weakref
from collections.abc import AsyncIterator
from ctypes import byref, c_uint32
from typing import Any

from . import _aio, _lib, callbacks
from ._managed import Managed, PathLike, encode_path, to_ms
from .errors import TimedOutError, WrongStateError, check, raise_status
from .lock import Lock
from .request import HookContext, Request, RequestKind, ServeOutcome

__all__ = ["HookContext", "Incumbent", "Request", "RequestKind", "ServeOutcome"]

_live: weakref.WeakSet[Incumbent] = weakref.WeakSet()


class Incumbent(Managed):
    """A process serving its control socket as the incumbent.

    Created by :meth:`bind` (cold start) or
    :meth:`Successor.announce_ready`. :meth:`start_loop` (or :meth:`start`
    with callbacks) serves the control socket on a library thread;
    :meth:`wait` tells when serving ended. ``close()`` (or ``with``, or
    garbage collection) stops serving, rolling back a handoff in progress,
    and closes the control socket. The methods may be called from any
    thread, one at a time, but not from the service's own callbacks.
    """

    _FREE = "handoff_incumbent_free"
    _WHAT = "incumbent"
    _key: int | None = None
    _registration: callbacks.Registration | None = None

    def __init__(self, ptr: Any) -> None:
        super().__init__(ptr)
        _live.add(self)

    @classmethod
    def bind(cls, control_path: PathLike, lock: Lock) -> Incumbent:
        """Cold start: bind the control socket at ``control_path`` (mode
        0600, replacing a stale one) for the holder of ``lock``. On success
        the lock moves into the incumbent (``lock`` stays, empty); on
        failure the caller keeps it."""
        out = ctypes.POINTER(_lib.handoff_incumbent)()
        path = encode_path(control_path)
        check(_lib.lib().handoff_incumbent_bind, path, lock._handle, byref(out))
        return cls(out)

    def set_build_id(self, build_id: bytes) -> None:
        """The build id announced in Hello. Before starting."""
        build_id = bytes(build_id)
        check(_lib.lib().handoff_incumbent_set_build_id, self._handle, build_id, len(build_id))

    def set_liveness_timeout(self, timeout: float) -> None:
        """How long (seconds) the supervisor may stay silent before the
        incumbent treats it as dead and rolls back (default 10). Before
        starting."""
        ms = to_ms(timeout, "timeout", minimum=1)
        check(_lib.lib().handoff_incumbent_set_liveness_timeout, self._handle, ms)

    def set_moves_descriptors(self, moves: bool) -> None:
        """Whether the service hands its connections (and other
        descriptors) to its successor when the handoff allows it (protocol
        v2, docs/protocol.md): the incumbent then offers v2, and a drain's
        :attr:`Request.move_limit <handoff.HookContext.move_limit>` says
        how many may move (see :meth:`Request.move
        <handoff.HookContext.move>`). Default False. Before
        :meth:`start_loop` or :meth:`start`."""
        check(_lib.lib().handoff_incumbent_set_moves_descriptors, self._handle, bool(moves))

    @property
    def generation(self) -> int:
        """The lock generation of the current tenure: a fencing token to
        stamp writes with (it changes when the lock is re-taken after an
        aborted handoff). Safe from any thread, callbacks included."""
        return int(_lib.lib().handoff_incumbent_generation(self._handle))

    # ---- the service's loop drives the handoff ----------------------------------

    def start_loop(self) -> None:
        """Start serving the control socket on a library thread, handing
        each request to this process's own loop: watch :meth:`fileno`, then
        :meth:`take_request`."""
        check(_lib.lib().handoff_incumbent_start_loop, self._handle)

    def fileno(self) -> int:
        """The descriptor that is readable while a request waits (level-
        triggered; never read or close it), so the incumbent itself can be
        registered with ``selectors``, ``select.poll`` or
        ``loop.add_reader``. After :meth:`start_loop` only."""
        fd = int(_lib.lib().handoff_incumbent_request_fd(self._handle))
        if fd < 0:
            raise WrongStateError("an incumbent has a request descriptor after start_loop()")
        return fd

    def take_request(self) -> Request | None:
        """The next request, without waiting; None when nothing waits.

        DRAIN, SEAL and RESUME are to be completed once (see
        :class:`Request`). ENDED means serving is over, and its ``outcome``
        says how; when serving failed instead, this raises that failure.
        After ENDED there are no more requests."""
        ctx = ctypes.POINTER(_lib.handoff_hook_context)()
        kind = c_uint32()
        check(_lib.lib().handoff_incumbent_take_request, self._handle, byref(ctx), byref(kind))
        if kind.value == 0:  # HANDOFF_REQUEST_NONE
            return None
        request_kind = RequestKind(kind.value)
        if request_kind is RequestKind.ENDED:
            # The outcome is known before ENDED is sent: this does not wait.
            return Request(self, None, request_kind, self._wait_ms(0))
        return Request(self, ctx, request_kind)

    async def requests(self) -> AsyncIterator[Request]:
        """Every request as it comes, in asyncio (``async for``), the last
        one ENDED; no thread involved. Complete each one (a drain may take
        as many awaits as it needs) before the next can come."""
        while True:
            request = self.take_request()
            if request is None:
                await _aio.readable(self.fileno())
                continue
            yield request
            if request.kind is RequestKind.ENDED:
                return

    # ---- or callbacks on the library's thread -----------------------------------

    def start(self, service: callbacks.Service) -> None:
        """Start serving the control socket on a library thread, calling
        ``service.drain``, ``seal`` and ``resume_after_abort`` there (see
        :mod:`handoff.callbacks`)."""
        handle = self._handle
        key, registration, hooks = callbacks.register(service)
        try:
            check(_lib.lib().handoff_incumbent_start, handle, byref(hooks), key)
        except BaseException:
            callbacks.forget(key)
            raise
        self._key, self._registration = key, registration

    @property
    def callback_errors(self) -> tuple[BaseException, ...]:
        """Every exception the service's callbacks raised, oldest first."""
        registration = self._registration
        if registration is None:
            return ()
        with registration.lock:
            return tuple(registration.errors)

    # ---- the end of serving -------------------------------------------------------

    def wait(self, timeout: float | None = None) -> ServeOutcome | None:
        """Wait up to ``timeout`` seconds (None: until it ends) for serving
        to end: how it ended, or None if it is still serving. A failure of
        the serve thread raises; so does a non-``Exception`` error (e.g.
        ``KeyboardInterrupt``) raised in a callback. Waits in slices, so
        signals are handled meanwhile; the GIL is released. With a request
        taken and not completed, only ``wait(0)`` is allowed (serving
        cannot end before it is completed)."""
        self._raise_pending()
        if timeout is not None:
            return self._wait_ms(to_ms(timeout, "timeout", limit=2**31 - 1))
        while True:
            outcome = self._wait_ms(200)
            self._raise_pending()
            if outcome is not None:
                return outcome

    def _wait_ms(self, ms: int) -> ServeOutcome | None:
        code = c_uint32()
        err = ctypes.POINTER(_lib.handoff_error)()
        status = _lib.lib().handoff_incumbent_wait(self._handle, ms, byref(code), byref(err))
        if status == TimedOutError.STATUS:
            _lib.lib().handoff_error_free(err)
            return None
        if status != 0:
            raise_status(status, err)
        return ServeOutcome(code.value)

    def _raise_pending(self) -> None:
        registration = self._registration
        if registration is not None and (exc := registration.take_pending()) is not None:
            raise exc

    def stop(self) -> None:
        """Stop serving (rolling back a handoff in progress) and wait for
        the serve thread to end. A request the loop holds fails (no RESUME
        follows: the process is on its way out)."""
        self._not_from_hook("stop")
        check(_lib.lib().handoff_incumbent_stop, self._handle)

    def _not_from_hook(self, what: str) -> None:
        if callbacks.on_hook_thread_of(self._key):
            raise WrongStateError(f"an incumbent cannot {what} itself from its own callback")

    def close(self) -> None:
        """Stop serving if needed (rolling back a handoff in progress), close
        the control socket and free (every request taken from it is spent).
        It waits for a callback in progress to return: do not close from a
        thread that callback is waiting for."""
        if self._ptr:
            self._not_from_hook("close")
        super().close()

    def __del__(self) -> None:
        if self._ptr and callbacks.on_hook_thread_of(self._key):
            # Collected on its own serve thread (from inside a callback):
            # freeing joins that thread, so free it from another one.
            ptr, self._ptr = self._ptr, None
            threading.Thread(target=self._free, args=(ptr,), daemon=True).start()
            return
        super().__del__()


@atexit.register
def _stop_all() -> None:
    """Stop every incumbent still serving before the interpreter goes away
    (the library's thread must not call into a finalised Python)."""
    for incumbent in list(_live):
        try:
            incumbent.close()
        except Exception:
            continue
