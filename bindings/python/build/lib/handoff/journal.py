"""The supervisor's crash-recovery journal (DESIGN §5), read and written by
the library: durable replacement (temporary file, fsync, rename, fsync of
the directory), a missing journal is "no journal", a corrupt one raises
:class:`JournalCorruptError` naming the file."""

from __future__ import annotations

import uuid
from ctypes import byref, c_bool
from dataclasses import dataclass
from enum import IntEnum

from . import _lib
from ._managed import PathLike, encode_path
from .errors import check

__all__ = ["Journal", "Phase", "delete_journal", "read_journal", "write_journal"]


class Phase(IntEnum):
    """How far a handoff got (``HANDOFF_PHASE_*``)."""

    NEGOTIATING = 0
    DRAINING = 1
    SEALING = 2
    AWAITING_READY = 3
    COMMITTED = 4
    RESUMING_AFTER_ABORT = 5


@dataclass(frozen=True)
class Journal:
    """One journal record. ``successor_pid`` is None when there is none."""

    handoff_id: uuid.UUID
    phase: Phase
    incumbent_pid: int
    successor_pid: int | None
    started_at_unix_ms: int

    def __post_init__(self) -> None:
        if not isinstance(self.handoff_id, uuid.UUID):
            object.__setattr__(self, "handoff_id", uuid.UUID(bytes=bytes(self.handoff_id)))

    def to_c(self) -> _lib.handoff_journal:
        """The C struct (``phase`` is validated by the library)."""
        raw = _lib.handoff_journal()
        raw.handoff_id[:] = list(self.handoff_id.bytes)
        raw.phase = int(self.phase)
        raw.incumbent_pid = self.incumbent_pid
        raw.has_successor_pid = self.successor_pid is not None
        raw.successor_pid = self.successor_pid or 0
        raw.started_at_unix_ms = self.started_at_unix_ms
        return raw

    @classmethod
    def from_c(cls, raw: _lib.handoff_journal) -> Journal:
        """The record a C struct holds."""
        return cls(
            handoff_id=uuid.UUID(bytes=bytes(raw.handoff_id)),
            phase=Phase(raw.phase),
            incumbent_pid=raw.incumbent_pid,
            successor_pid=raw.successor_pid if raw.has_successor_pid else None,
            started_at_unix_ms=raw.started_at_unix_ms,
        )

    def write(self, path: PathLike) -> None:
        """Replace the journal at ``path`` durably (see :func:`write_journal`)."""
        write_journal(path, self)

    @classmethod
    def read(cls, path: PathLike) -> Journal | None:
        """The journal at ``path``, or None (see :func:`read_journal`)."""
        return read_journal(path)


def write_journal(path: PathLike, journal: Journal) -> None:
    """Replace the journal at ``path`` durably (its directory is created if
    missing). On failure the previous journal is intact."""
    raw = journal.to_c()
    check(_lib.lib().handoff_journal_write, encode_path(path), byref(raw))


def read_journal(path: PathLike) -> Journal | None:
    """The journal at ``path``, or None when there is none. A corrupt file
    raises :class:`JournalCorruptError`."""
    raw = _lib.handoff_journal()
    found = c_bool()
    check(_lib.lib().handoff_journal_read, encode_path(path), byref(raw), byref(found))
    return Journal.from_c(raw) if found.value else None


def delete_journal(path: PathLike) -> None:
    """Remove the journal at ``path``; a missing journal is not an error."""
    check(_lib.lib().handoff_journal_delete, encode_path(path))
