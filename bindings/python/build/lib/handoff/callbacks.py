"""The callback form of serving (:meth:`Incumbent.start
<handoff.Incumbent.start>`), for services without an event loop of their
own. In the library it is a thread that takes the same requests a loop
would and calls the service; this module is the ctypes side of it.

The service is any object with these methods (see :class:`Service`)::

    def drain(self, ctx: HookContext) -> None: ...   # stop accepting, finish work
    def seal(self, ctx: HookContext) -> None: ...    # flush, close writers
    def resume_after_abort(self) -> None: ...        # the handoff rolled back

They run one at a time on the library's thread, not on the thread that
called :meth:`Incumbent.start <handoff.Incumbent.start>`. A service with a
loop of its own does better with :meth:`Incumbent.start_loop
<handoff.Incumbent.start_loop>`: no thread to hand work across.

**Exceptions in callbacks.** A callback that raises fails its step: the
library sees a failed status, with ``"<ExceptionType>: <message>"`` as the
reason (sent to the supervisor in SealFailed for ``seal``). A failed drain
or seal rolls the handoff back, and the incumbent keeps serving. The
exception is never swallowed silently: it is logged on the ``handoff``
logger (with its traceback; :class:`HookFailedError`, the way to fail on
purpose, without one), and kept in :attr:`Incumbent.callback_errors
<handoff.Incumbent.callback_errors>`. ``KeyboardInterrupt``, ``SystemExit``
and other non-``Exception`` errors are also re-raised by the next
:meth:`Incumbent.wait <handoff.Incumbent.wait>` in the serving thread.

**Lifetime.** The library holds the service until it calls its ``destroy``
hook (when serving ends), so the service object stays alive that long even
if Python drops every other reference; the library only ever sees an
integer key into a table here, never a Python object pointer.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Any, Protocol, runtime_checkable

from . import _lib
from .errors import HookFailedError
from .request import HookContext, failure_reason

__all__ = ["Registration", "Service", "forget", "on_hook_thread_of", "register"]

logger = logging.getLogger("handoff")


@runtime_checkable
class Service(Protocol):
    """What :meth:`Incumbent.start <handoff.Incumbent.start>` takes: raise
    to fail a step."""

    def drain(self, ctx: HookContext) -> None:
        """Stop accepting, answer or hand back in-flight work, fsync."""

    def seal(self, ctx: HookContext) -> None:
        """Flush and close the writers, fsync; push the revisions."""

    def resume_after_abort(self) -> None:
        """Reopen what seal closed and accept again."""


class Registration:
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

    def take_pending(self) -> BaseException | None:
        with self.lock:
            return self.pending.pop(0) if self.pending else None


# userdata is a key into this table.
_registry: dict[int, Registration] = {}
_registry_lock = threading.Lock()
_keys = itertools.count(1)
_in_hook = threading.local()


def register(service: Service) -> tuple[int, Registration, Any]:
    """Enter ``service`` in the table: its key (the userdata), its
    registration, and the callbacks struct to start the incumbent with."""
    for name in ("drain", "seal", "resume_after_abort"):
        if not callable(getattr(service, name, None)):
            raise TypeError(f"the service has no callable {name}() method")
    registration = Registration(service)
    with _registry_lock:
        key = next(_keys)
        _registry[key] = registration
    return key, registration, _lib.handoff_service_callbacks(_DRAIN, _SEAL, _RESUME, _DESTROY)


def forget(key: int) -> None:
    """Drop a registration the library never took (a failed start: it does
    not call destroy then)."""
    with _registry_lock:
        _registry.pop(key, None)


def on_hook_thread_of(key: int | None) -> bool:
    """Whether this thread is inside a callback of registration ``key``."""
    return key is not None and getattr(_in_hook, "key", None) == key


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
                reason = failure_reason(exc).replace("\0", "\\0")
                _lib.lib().handoff_hook_fail(ctx_ptr, reason.encode("utf-8", "replace"), None)
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
