"""The incumbent: the process serving the control socket, whose service the
library drains, seals and resumes through three callbacks.

The service is any object with these methods (see :class:`Service`)::

    def drain(self, ctx: HookContext) -> None: ...   # stop accepting, finish work
    def seal(self, ctx: HookContext) -> None: ...    # flush, close writers
    def resume_after_abort(self) -> None: ...        # the handoff rolled back

They run one at a time on the library's serve thread, not on the thread
that called :meth:`Incumbent.start`: hand the work to the serving loop and
wait for it there (a queue and an event, ``loop.call_soon_threadsafe``...).

**Exceptions in callbacks.** A callback that raises fails its step: the
library sees a failed status, with ``"<ExceptionType>: <message>"`` as the
reason (sent to the supervisor in SealFailed for ``seal``). A failed drain
or seal rolls the handoff back, and the incumbent keeps serving. The
exception is never swallowed silently: it is logged on the ``handoff``
logger (with its traceback; :class:`HookFailedError`, the way to fail on
purpose, without one), and kept in :attr:`Incumbent.callback_errors`.
``KeyboardInterrupt``, ``SystemExit`` and other non-``Exception`` errors
are also re-raised by the next :meth:`Incumbent.wait` in the serving
thread, where they belong.

**Lifetime.** The library holds the service until it calls its ``destroy``
hook (when serving ends), so the service object stays alive that long even
if Python drops every other reference; the library only ever sees an integer
key into a table here, never a Python object pointer. At interpreter exit
every incumbent still serving is stopped (rolling back a handoff in
progress) before Python tears down what the callbacks need.
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import logging
import threading
import weakref
from ctypes import byref, c_uint32
from enum import IntEnum
from typing import Any, Protocol, runtime_checkable

from . import _lib
from ._managed import Managed, PathLike, encode_path, to_ms
from .errors import HookFailedError, TimedOutError, WrongStateError, check, raise_status
from .lock import Lock

__all__ = ["HookContext", "Incumbent", "ServeOutcome", "Service"]

logger = logging.getLogger("handoff")


class ServeOutcome(IntEnum):
    """How serving ended (``HANDOFF_SERVE_*``)."""

    #: A successor took over: finish the remaining reads and exit 0.
    COMMITTED = 1
    #: Another process holds the lock: exit without writing.
    SUPERSEDED = 2
    #: Stopped by :meth:`Incumbent.stop` or ``close()``.
    STOPPED = 3


class HookContext:
    """A callback's view of the handoff, valid only during that callback
    (afterwards every method raises :class:`WrongStateError`)."""

    def __init__(self, ptr: Any) -> None:
        self._ptr = ptr

    def _live(self) -> Any:
        if self._ptr is None:
            raise WrongStateError("a hook context is valid only during its callback")
        return self._ptr

    @property
    def time_left_ms(self) -> int:
        """Milliseconds left before the step's deadline (0 when past it)."""
        return int(_lib.lib().handoff_hook_time_left_ms(self._live()))

    @property
    def time_left(self) -> float:
        """Seconds left before the step's deadline (0 when past it)."""
        return self.time_left_ms / 1000.0

    def set_drained(self, open_conns_remaining: int = 0, accept_closed: bool = True) -> None:
        """From ``drain``: what is left open and whether accepting stopped
        (the defaults when not called: 0 and True)."""
        check(
            _lib.lib().handoff_hook_set_drained,
            self._live(),
            open_conns_remaining,
            accept_closed,
        )

    def push_revision(self, revision: int) -> None:
        """From ``seal``: append the last revision of the next shard."""
        check(_lib.lib().handoff_hook_push_revision, self._live(), revision)

    def set_fingerprint(self, fingerprint: bytes) -> None:
        """From ``seal``: the 32-byte fingerprint of the sealed data dir."""
        fingerprint = bytes(fingerprint)
        check(
            _lib.lib().handoff_hook_set_fingerprint,
            self._live(),
            fingerprint,
            len(fingerprint),
        )

    def seal_progress(self, shards_sealed: int, shards_total: int, last_revision: int) -> None:
        """From ``seal``: report progress of a long seal to the supervisor."""
        check(
            _lib.lib().handoff_hook_seal_progress,
            self._live(),
            shards_sealed,
            shards_total,
            last_revision,
        )


@runtime_checkable
class Service(Protocol):
    """What :meth:`Incumbent.start` takes: raise to fail a step."""

    def drain(self, ctx: HookContext) -> None:
        """Stop accepting, answer or hand back in-flight work, fsync."""

    def seal(self, ctx: HookContext) -> None:
        """Flush and close the writers, fsync; push the revisions."""

    def resume_after_abort(self) -> None:
        """Reopen what seal closed and accept again."""


# ---- the callback table: userdata is a key into it ---------------------------


class _Registration:
    """One started incumbent's service, kept alive until ``destroy``."""

    def __init__(self, service: Service) -> None:
        self.service: Service | None = service  # None once destroyed
        self.errors: list[BaseException] = []
        self.pending: list[BaseException] = []  # BaseExceptions for wait()
        self.lock = threading.Lock()

    def record(self, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(exc)
            if not isinstance(exc, Exception):
                self.pending.append(exc)


_registry: dict[int, _Registration] = {}
_registry_lock = threading.Lock()
_keys = itertools.count(1)
_in_hook = threading.local()


def _reason(exc: BaseException) -> bytes:
    text = str(exc) if isinstance(exc, HookFailedError) else f"{type(exc).__name__}: {exc}"
    return text.replace("\0", "\\0").encode("utf-8", "replace")


def _run_hook(name: str, userdata: int | None, ctx_ptr: Any) -> int:
    failed = HookFailedError.STATUS
    try:
        with _registry_lock:
            registration = _registry.get(userdata or 0)
        if registration is None or registration.service is None:
            logger.error("libhandoff called %s for an unknown service (key %s)", name, userdata)
            return failed
        ctx = HookContext(ctx_ptr) if ctx_ptr else None
        _in_hook.key = userdata
        try:
            method = getattr(registration.service, name)
            if name == "resume_after_abort":
                method()
            else:
                method(ctx)
            return 0
        except BaseException as exc:  # every failure, so none reads as success
            if isinstance(exc, HookFailedError):
                logger.warning("%s callback failed: %s", name, exc)
            else:
                logger.error("%s callback raised %s", name, type(exc).__name__, exc_info=exc)
            registration.record(exc)
            if ctx_ptr:
                _lib.lib().handoff_hook_fail(ctx_ptr, _reason(exc), None)
            return failed
        finally:
            _in_hook.key = None
            if ctx is not None:
                ctx._ptr = None
    except BaseException:  # never let anything unwind into the library
        return failed


def _on_destroy(userdata: int | None) -> None:
    try:
        with _registry_lock:
            registration = _registry.pop(userdata or 0, None)
        if registration is not None:
            registration.service = None  # the library is done with it
    except BaseException:  # nothing may unwind into the library
        pass


# One trampoline per callback type, alive as long as the module.
_DRAIN = _lib.handoff_hook_fn(lambda u, c: _run_hook("drain", u, c))
_SEAL = _lib.handoff_hook_fn(lambda u, c: _run_hook("seal", u, c))
_RESUME = _lib.handoff_hook_fn(lambda u, c: _run_hook("resume_after_abort", u, c))
_DESTROY = _lib.handoff_destroy_fn(_on_destroy)


# ---- the incumbent -----------------------------------------------------------------

_live: weakref.WeakSet[Incumbent] = weakref.WeakSet()


class Incumbent(Managed):
    """A process serving its control socket as the incumbent.

    Created by :meth:`bind` (cold start) or
    :meth:`Successor.announce_ready`. :meth:`start` serves the control
    socket on a library thread; :meth:`wait` tells when serving ended.
    ``close()`` (or ``with``, or garbage collection) stops serving, rolling
    back a handoff in progress, and closes the control socket. The methods
    may be called from any thread, one at a time, but not from the service's
    own callbacks.
    """

    _FREE = "handoff_incumbent_free"
    _WHAT = "incumbent"
    _key: int | None = None
    _registration: _Registration | None = None

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
        """The build id announced in Hello. Before :meth:`start`."""
        build_id = bytes(build_id)
        check(_lib.lib().handoff_incumbent_set_build_id, self._handle, build_id, len(build_id))

    def set_liveness_timeout(self, timeout: float) -> None:
        """How long (seconds) the supervisor may stay silent before the
        incumbent treats it as dead and rolls back (default 10). Before
        :meth:`start`."""
        ms = to_ms(timeout, "timeout", minimum=1)
        check(_lib.lib().handoff_incumbent_set_liveness_timeout, self._handle, ms)

    @property
    def generation(self) -> int:
        """The lock generation of the current tenure: a fencing token to
        stamp writes with (it changes when the lock is re-taken after an
        aborted handoff). Safe from any thread, callbacks included."""
        return int(_lib.lib().handoff_incumbent_generation(self._handle))

    def start(self, service: Service) -> None:
        """Start serving the control socket on a library thread, calling
        ``service.drain``, ``seal`` and ``resume_after_abort`` there."""
        for name in ("drain", "seal", "resume_after_abort"):
            if not callable(getattr(service, name, None)):
                raise TypeError(f"the service has no callable {name}() method")
        handle = self._handle
        registration = _Registration(service)
        with _registry_lock:
            key = next(_keys)
            _registry[key] = registration
        callbacks = _lib.handoff_service_callbacks(_DRAIN, _SEAL, _RESUME, _DESTROY)
        try:
            check(_lib.lib().handoff_incumbent_start, handle, byref(callbacks), key)
        except BaseException:
            # On failure the library does not call destroy: forget it here.
            with _registry_lock:
                _registry.pop(key, None)
            raise
        self._key, self._registration = key, registration

    def wait(self, timeout: float | None = None) -> ServeOutcome | None:
        """Wait up to ``timeout`` seconds (None: until it ends) for serving
        to end: how it ended, or None if it is still serving. A failure of
        the serve thread raises; so does a non-``Exception`` error (e.g.
        ``KeyboardInterrupt``) raised in a callback. Waits in slices, so
        signals are handled meanwhile; the GIL is released."""
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
        if registration is not None and registration.pending:
            with registration.lock:
                exc = registration.pending.pop(0)
            raise exc

    @property
    def callback_errors(self) -> tuple[BaseException, ...]:
        """Every exception the service's callbacks raised, oldest first."""
        registration = self._registration
        if registration is None:
            return ()
        with registration.lock:
            return tuple(registration.errors)

    def stop(self) -> None:
        """Stop serving (rolling back a handoff in progress) and wait for
        the serve thread to end."""
        self._not_from_hook("stop")
        check(_lib.lib().handoff_incumbent_stop, self._handle)

    def _not_from_hook(self, what: str) -> None:
        if self._key is not None and getattr(_in_hook, "key", None) == self._key:
            raise WrongStateError(f"an incumbent cannot {what} itself from its own callback")

    def close(self) -> None:
        """Stop serving if needed (rolling back a handoff in progress), close
        the control socket and free. It waits for a callback in progress to
        return: do not close from a thread that callback is waiting for."""
        if self._ptr:
            self._not_from_hook("close")
        super().close()

    def __del__(self) -> None:
        if self._ptr and self._key is not None and getattr(_in_hook, "key", None) == self._key:
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
