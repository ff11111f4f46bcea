"""libhandoff for Python: zero-downtime handoff of stateful services.

A thin ctypes binding of ``libhandoff.so``'s C ABI (``include/handoff.h``):
every protocol step runs in the library; this package gives it Python types,
exceptions, context managers, descriptors for event loops, and callbacks.

- :func:`detect` tells a process whether it is a cold start or a successor
  and gives it its inherited listeners as :class:`socket.socket` objects.
- :class:`Lock` is the data-dir lock with its generation.
- :class:`Incumbent` serves the control socket and hands the service its
  :class:`Request` s (drain, seal, resume, ended) through a descriptor its
  own loop watches (``selectors``, asyncio), or calls a service's
  ``drain``, ``seal`` and ``resume_after_abort`` (:mod:`handoff.callbacks`).
- :class:`Successor` is the successor's side of a handoff.
- :mod:`handoff.moves`: with protocol v2 the incumbent's client connections
  (and other descriptors) move to the successor with their state
  (:meth:`HookContext.move`, :meth:`Successor.adopt`, :class:`AdoptedItem`).
- :class:`Supervisor` owns the listeners and performs handoffs.
- :mod:`handoff.messages` and :mod:`handoff.journal` are the protocol's
  messages and the supervisor's journal, encoded by the library.
- :mod:`handoff.log` routes the library's events to :mod:`logging`.

Failures raise a subclass of :class:`HandoffError`, one per status. The
library is found through ``$HANDOFF_LIBRARY``, a copy inside this package,
or the system's library path (see :mod:`handoff._lib`).
"""

from __future__ import annotations

from . import callbacks, errors, journal, log, messages, moves
from ._lib import LibraryNotFoundError, library_path
from ._lib import lib as _load
from .callbacks import Service
from .errors import (
    AbortedError,
    BufferTooSmallError,
    DecodeError,
    EncodeError,
    EnvironmentVariableError,
    FrameMalformedError,
    FrameTooLargeError,
    HandoffError,
    HandoffInProgressError,
    HookFailedError,
    IncompleteError,
    InvalidArgumentError,
    InvalidUtf8Error,
    IoError,
    JournalCorruptError,
    ListenerError,
    LockHeldError,
    NoSuchFieldError,
    NullPointerError,
    OutOfRangeError,
    PanicError,
    PeerClosedError,
    PeerIdentityError,
    PermissionDeniedError,
    ProtocolError,
    TimedOutError,
    UnknownMessageError,
    UnknownStatusError,
    VersionMismatchError,
    WrongFieldTypeError,
    WrongStateError,
)
from .incumbent import Incumbent
from .journal import Journal, Phase, delete_journal, read_journal, write_journal
from .listeners import Inherited, ListenerKind, detect
from .lock import Lock, LockHolder, lock_holder
from .log import LogLevel, forward_to_logging, set_log_callback
from .messages import FrameReader, ItemKind, Message, MessageHandle, MessageKind, Side
from .moves import AdoptedItem, Descriptor
from .request import HookContext, Request, RequestKind, ServeOutcome
from .successor import Successor
from .supervisor import (
    Cause,
    Outcome,
    Party,
    PhaseTimings,
    Recovery,
    SpawnSpec,
    Step,
    Supervisor,
)

__version__ = "0.1.0"


def library_version() -> str:
    """The loaded library's version, e.g. ``"0.1.0"``."""
    version: bytes = _load().handoff_version()
    return version.decode()


def status_name(status: int) -> str | None:
    """The library's name of a status value (``"HANDOFF_ERR_IO"``), or None."""
    name = _load().handoff_status_name(status)
    return name.decode() if name is not None else None


__all__ = [
    "AbortedError",
    "AdoptedItem",
    "BufferTooSmallError",
    "Cause",
    "DecodeError",
    "Descriptor",
    "EncodeError",
    "EnvironmentVariableError",
    "FrameMalformedError",
    "FrameReader",
    "FrameTooLargeError",
    "HandoffError",
    "HandoffInProgressError",
    "HookContext",
    "HookFailedError",
    "IncompleteError",
    "Incumbent",
    "Inherited",
    "InvalidArgumentError",
    "InvalidUtf8Error",
    "IoError",
    "ItemKind",
    "Journal",
    "JournalCorruptError",
    "LibraryNotFoundError",
    "ListenerError",
    "ListenerKind",
    "Lock",
    "LockHeldError",
    "LockHolder",
    "LogLevel",
    "Message",
    "MessageHandle",
    "MessageKind",
    "NoSuchFieldError",
    "NullPointerError",
    "OutOfRangeError",
    "Outcome",
    "PanicError",
    "Party",
    "PeerClosedError",
    "PeerIdentityError",
    "PermissionDeniedError",
    "Phase",
    "PhaseTimings",
    "ProtocolError",
    "Recovery",
    "Request",
    "RequestKind",
    "ServeOutcome",
    "Service",
    "Side",
    "SpawnSpec",
    "Step",
    "Successor",
    "Supervisor",
    "TimedOutError",
    "UnknownMessageError",
    "UnknownStatusError",
    "VersionMismatchError",
    "WrongFieldTypeError",
    "WrongStateError",
    "callbacks",
    "delete_journal",
    "detect",
    "errors",
    "forward_to_logging",
    "journal",
    "library_path",
    "library_version",
    "lock_holder",
    "log",
    "messages",
    "moves",
    "read_journal",
    "set_log_callback",
    "status_name",
    "write_journal",
]
