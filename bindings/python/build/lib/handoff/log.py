"""Routing the library's events to Python.

By default the library writes its warnings and errors to stderr.
:func:`forward_to_logging` sends every event to a :mod:`logging` logger
instead (``handoff.library`` unless told otherwise); :func:`set_log_callback`
takes any callable; ``set_log_callback(None)`` restores the default.

The callback may run on any of the library's threads, concurrently. An
exception it raises is printed (``sys.unraisablehook``), never passed to
the library.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import threading
from collections.abc import Callable
from enum import IntEnum

from . import _lib
from .errors import check

__all__ = ["LogLevel", "forward_to_logging", "set_log_callback"]


class LogLevel(IntEnum):
    """An event's level (``HANDOFF_LOG_*``)."""

    ERROR = 1
    WARN = 2
    INFO = 3
    DEBUG = 4


_TO_LOGGING = {
    LogLevel.ERROR: logging.ERROR,
    LogLevel.WARN: logging.WARNING,
    LogLevel.INFO: logging.INFO,
    LogLevel.DEBUG: logging.DEBUG,
}

LogCallback = Callable[[LogLevel, str], None]

_callback: LogCallback | None = None
_lock = threading.Lock()


class _Unraisable:
    """What sys.unraisablehook is given (its documented attributes)."""

    def __init__(self, exc: BaseException, what: str) -> None:
        self.exc_type = type(exc)
        self.exc_value = exc
        self.exc_traceback = exc.__traceback__
        self.err_msg = what
        self.object = None


def _on_event(_userdata: int | None, level: int, message: bytes | None) -> None:
    try:
        callback = _callback
        if callback is None:
            return
        try:
            lvl = LogLevel(level)
        except ValueError:
            lvl = LogLevel.ERROR
        callback(lvl, (message or b"").decode("utf-8", "replace"))
    except BaseException as exc:  # never unwind into the library
        with contextlib.suppress(BaseException):
            report = _Unraisable(exc, "Exception in the handoff log callback")
            sys.unraisablehook(report)  # type: ignore[arg-type]


# The one trampoline, alive as long as the module.
_TRAMPOLINE = _lib.handoff_log_fn(_on_event)


def set_log_callback(callback: LogCallback | None) -> None:
    """Send every library event to ``callback(level, message)``; None
    restores the library's default (warnings and errors on stderr)."""
    global _callback
    with _lock:
        if callback is None:
            check(_lib.lib().handoff_set_log_callback, _lib.handoff_log_fn(), None)
            _callback = None
            return
        _callback = callback
        check(_lib.lib().handoff_set_log_callback, _TRAMPOLINE, None)


def forward_to_logging(logger: logging.Logger | None = None) -> None:
    """Send every library event to ``logger`` (default ``handoff.library``)
    at the matching level; filter with the logger's level as usual."""
    target = logger if logger is not None else logging.getLogger("handoff.library")

    def emit(level: LogLevel, message: str) -> None:
        target.log(_TO_LOGGING[level], "%s", message)

    set_log_callback(emit)


@atexit.register
def _restore_default() -> None:
    # The library's threads must not call into a finalised interpreter.
    if _callback is not None:
        with contextlib.suppress(Exception):
            set_log_callback(None)
