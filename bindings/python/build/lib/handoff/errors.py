"""The ``HandoffError`` family: one exception class per ``handoff_status``.

Every failure the library reports becomes an instance of the subclass for
its status, carrying the library's message (``str(e)``, ``e.message``) and
the status (``e.status``, ``e.status_name``). The error object the library
allocated is always freed before the exception is raised.
"""

from __future__ import annotations

import ctypes
from typing import Any, NoReturn

from . import _lib

__all__ = [
    "STATUS_CLASSES",
    "AbortedError",
    "BufferTooSmallError",
    "DecodeError",
    "EncodeError",
    "EnvironmentVariableError",
    "FrameMalformedError",
    "FrameTooLargeError",
    "HandoffError",
    "HandoffInProgressError",
    "HookFailedError",
    "IncompleteError",
    "InvalidArgumentError",
    "InvalidUtf8Error",
    "IoError",
    "JournalCorruptError",
    "ListenerError",
    "LockHeldError",
    "NoSuchFieldError",
    "NullPointerError",
    "OutOfRangeError",
    "PanicError",
    "PeerClosedError",
    "PeerIdentityError",
    "PermissionDeniedError",
    "ProtocolError",
    "TimedOutError",
    "UnknownMessageError",
    "UnknownStatusError",
    "VersionMismatchError",
    "WrongFieldTypeError",
    "WrongStateError",
    "error_for",
]


class HandoffError(Exception):
    """A failure reported by libhandoff (or by the binding on its behalf).

    ``status`` is the ``handoff_status`` value, ``status_name`` its constant's
    name (``"HANDOFF_ERR_IO"``) and ``message`` the library's description.
    Subclasses fix ``STATUS``; :func:`error_for` picks the subclass.
    """

    STATUS: int = -1
    STATUS_NAME: str = "?"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = self.STATUS if status is None else status

    @property
    def status_name(self) -> str:
        """The status constant's name, e.g. ``"HANDOFF_ERR_LOCK_HELD"``."""
        if self.STATUS_NAME != "?":
            return self.STATUS_NAME
        return f"HANDOFF_ERR_{self.status}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class UnknownStatusError(HandoffError):
    """A status value this binding does not know (a newer library)."""


class InvalidArgumentError(HandoffError):
    """An argument is out of its documented domain."""

    STATUS = 1
    STATUS_NAME = "HANDOFF_ERR_INVALID_ARGUMENT"


class NullPointerError(HandoffError):
    """A pointer that must not be NULL was NULL."""

    STATUS = 2
    STATUS_NAME = "HANDOFF_ERR_NULL_POINTER"


class PanicError(HandoffError):
    """The library hit an internal bug; nothing was changed."""

    STATUS = 3
    STATUS_NAME = "HANDOFF_ERR_PANIC"


class InvalidUtf8Error(HandoffError):
    """A string argument is not valid UTF-8."""

    STATUS = 4
    STATUS_NAME = "HANDOFF_ERR_INVALID_UTF8"


class IncompleteError(HandoffError):
    """The buffer holds only part of a frame; ``needed`` is the bytes needed in all."""

    STATUS = 5
    STATUS_NAME = "HANDOFF_ERR_INCOMPLETE"

    needed: int | None = None


class BufferTooSmallError(HandoffError):
    """The output buffer is too small."""

    STATUS = 6
    STATUS_NAME = "HANDOFF_ERR_BUFFER_TOO_SMALL"


class FrameMalformedError(HandoffError):
    """A frame length below 2."""

    STATUS = 7
    STATUS_NAME = "HANDOFF_ERR_FRAME_MALFORMED"


class FrameTooLargeError(HandoffError):
    """A frame length above 1 MiB."""

    STATUS = 8
    STATUS_NAME = "HANDOFF_ERR_FRAME_TOO_LARGE"


class UnknownMessageError(HandoffError):
    """A message index protocol v1 does not have."""

    STATUS = 9
    STATUS_NAME = "HANDOFF_ERR_UNKNOWN_MESSAGE"


class DecodeError(HandoffError):
    """A message body that does not decode."""

    STATUS = 10
    STATUS_NAME = "HANDOFF_ERR_DECODE"


class EncodeError(HandoffError):
    """A message that cannot be encoded."""

    STATUS = 11
    STATUS_NAME = "HANDOFF_ERR_ENCODE"


class VersionMismatchError(HandoffError):
    """The peers' protocol version ranges do not overlap."""

    STATUS = 12
    STATUS_NAME = "HANDOFF_ERR_VERSION_MISMATCH"


class NoSuchFieldError(HandoffError):
    """The message kind has no such field."""

    STATUS = 13
    STATUS_NAME = "HANDOFF_ERR_NO_SUCH_FIELD"


class WrongFieldTypeError(HandoffError):
    """The field has another type than the accessor's."""

    STATUS = 14
    STATUS_NAME = "HANDOFF_ERR_WRONG_FIELD_TYPE"


class OutOfRangeError(HandoffError):
    """A list index past the end of the list."""

    STATUS = 15
    STATUS_NAME = "HANDOFF_ERR_OUT_OF_RANGE"


class IoError(HandoffError):
    """An operating-system error; the message names the file and the cause."""

    STATUS = 16
    STATUS_NAME = "HANDOFF_ERR_IO"


class JournalCorruptError(HandoffError):
    """A journal file that does not decode."""

    STATUS = 17
    STATUS_NAME = "HANDOFF_ERR_JOURNAL_CORRUPT"


class PeerClosedError(HandoffError):
    """The peer closed the connection."""

    STATUS = 18
    STATUS_NAME = "HANDOFF_ERR_PEER_CLOSED"


class TimedOutError(HandoffError):
    """A wait ran past its deadline."""

    STATUS = 19
    STATUS_NAME = "HANDOFF_ERR_TIMEOUT"


class LockHeldError(HandoffError):
    """The data-dir lock is held by another live process."""

    STATUS = 20
    STATUS_NAME = "HANDOFF_ERR_LOCK_HELD"


class ListenerError(HandoffError):
    """An inherited listener is missing, of another family, or not listening."""

    STATUS = 21
    STATUS_NAME = "HANDOFF_ERR_LISTENER"


class EnvironmentVariableError(HandoffError):
    """A successor variable (HANDOFF_SOCK_FD, LISTEN_FDS, ...) is malformed."""

    STATUS = 22
    STATUS_NAME = "HANDOFF_ERR_ENVIRONMENT"


class ProtocolError(HandoffError):
    """The peer broke the protocol."""

    STATUS = 23
    STATUS_NAME = "HANDOFF_ERR_PROTOCOL"


class HandoffInProgressError(HandoffError):
    """A handoff is already running; this one was refused."""

    STATUS = 24
    STATUS_NAME = "HANDOFF_ERR_HANDOFF_IN_PROGRESS"


class AbortedError(HandoffError):
    """The handoff was aborted and rolled back."""

    STATUS = 25
    STATUS_NAME = "HANDOFF_ERR_ABORTED"


class PermissionDeniedError(HandoffError):
    """A peer of another uid tried to use a control socket."""

    STATUS = 26
    STATUS_NAME = "HANDOFF_ERR_PERMISSION_DENIED"


class PeerIdentityError(HandoffError):
    """The peer is not the process it claims to be (SO_PEERCRED)."""

    STATUS = 27
    STATUS_NAME = "HANDOFF_ERR_PEER_IDENTITY"


class HookFailedError(HandoffError):
    """A service callback (drain, seal, resume) reported failure.

    A service callback may raise it on purpose to fail with a reason and
    without a logged traceback.
    """

    STATUS = 28
    STATUS_NAME = "HANDOFF_ERR_HOOK_FAILED"


class WrongStateError(HandoffError):
    """The object is closed or used out of order."""

    STATUS = 29
    STATUS_NAME = "HANDOFF_ERR_WRONG_STATE"


#: Every status the binding knows, value to class.
STATUS_CLASSES: dict[int, type[HandoffError]] = {
    cls.STATUS: cls
    for cls in (
        InvalidArgumentError,
        NullPointerError,
        PanicError,
        InvalidUtf8Error,
        IncompleteError,
        BufferTooSmallError,
        FrameMalformedError,
        FrameTooLargeError,
        UnknownMessageError,
        DecodeError,
        EncodeError,
        VersionMismatchError,
        NoSuchFieldError,
        WrongFieldTypeError,
        OutOfRangeError,
        IoError,
        JournalCorruptError,
        PeerClosedError,
        TimedOutError,
        LockHeldError,
        ListenerError,
        EnvironmentVariableError,
        ProtocolError,
        HandoffInProgressError,
        AbortedError,
        PermissionDeniedError,
        PeerIdentityError,
        HookFailedError,
        WrongStateError,
    )
}


def error_for(status: int, message: str) -> HandoffError:
    """The exception for a failed status with the library's message."""
    cls = STATUS_CLASSES.get(status, UnknownStatusError)
    return cls(message, status)


def raise_status(status: int, err: Any) -> NoReturn:
    """Raise the exception for ``status``, reading and freeing ``err``
    (a ``POINTER(handoff_error)``, possibly NULL)."""
    lib = _lib.lib()
    if err:
        raw = lib.handoff_error_message(err) or b""
        lib.handoff_error_free(err)
        message = raw.decode("utf-8", "replace")
    else:
        name = lib.handoff_status_name(status)
        message = name.decode() if name else f"status {status}"
    raise error_for(status, message)


def check(fn: Any, *args: Any) -> None:
    """Call a fallible C function with ``args`` plus a fresh ``err``; raise
    on failure."""
    err = ctypes.POINTER(_lib.handoff_error)()
    status = fn(*args, ctypes.byref(err))
    if status != 0:
        raise_status(status, err)


def closed_error(what: str) -> WrongStateError:
    """The error for using ``what`` after ``close()``."""
    return WrongStateError(f"this {what} is closed")
