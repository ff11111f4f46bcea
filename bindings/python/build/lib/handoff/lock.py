"""The data-dir lock (DESIGN §4): ``<data_dir>/.handoff.lock`` under an
exclusive flock, the holder's pid in ``<data_dir>/.handoff.pidfile``, and a
generation that goes up on every acquire (a fencing token)."""

from __future__ import annotations

import ctypes
from ctypes import byref, c_bool, c_uint32
from types import TracebackType
from typing import NamedTuple

from . import _lib
from ._managed import Managed, PathLike, encode_path, to_ms
from .errors import check

__all__ = ["Lock", "LockHolder", "lock_holder"]


class LockHolder(NamedTuple):
    """Who holds a data-dir lock: ``pid`` is 0 when it is free, or held by a
    process that did not record itself."""

    held: bool
    pid: int


class Lock(Managed):
    """A held data-dir lock.

    Take it with :meth:`acquire`; give it back with :meth:`release` (which
    reports errors), ``close()``, a ``with`` block or garbage collection
    (best effort). A process that exits loses the lock. When the lock moves
    into an :class:`~handoff.Incumbent` this object stays, empty
    (``held`` false, ``generation`` 0): the incumbent owns the lock then.
    """

    _FREE = "handoff_lock_free"
    _WHAT = "lock"

    @classmethod
    def acquire(cls, data_dir: PathLike, *, timeout: float | None = None) -> Lock:
        """Take the lock on ``data_dir`` (created if missing).

        Without ``timeout`` it does not wait: a live holder (this process
        included) raises :class:`LockHeldError` naming the holder's pid.
        With ``timeout`` (seconds) it tries again every ~20 ms for that long
        (for a dying process that may still hold it), blocking the thread.
        """
        out = ctypes.POINTER(_lib.handoff_lock)()
        lib = _lib.lib()
        path = encode_path(data_dir)
        if timeout is None:
            check(lib.handoff_lock_acquire, path, byref(out))
        else:
            ms = to_ms(timeout, "timeout")
            check(lib.handoff_lock_acquire_with_retry, path, ms, byref(out))
        return cls(out)

    @property
    def generation(self) -> int:
        """This tenure's generation: 1 on the first acquire ever of the
        directory, one more on every acquire since; 0 once the lock moved
        into an incumbent (ask the incumbent then)."""
        return int(_lib.lib().handoff_lock_generation(self._handle))

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return not self.closed and self.generation != 0

    def release(self) -> None:
        """Release the lock (clear the pidfile in place, drop the flock)
        and close this object, even when an error is raised."""
        ptr, self._ptr = self._handle, None
        check(_lib.lib().handoff_lock_release, ptr)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Report release errors, unless another exception is on its way.
        if exc_type is None and self.held:
            self.release()
        else:
            self.close()


def lock_holder(data_dir: PathLike) -> LockHolder:
    """Who holds the lock on ``data_dir`` now, without taking it and
    without creating anything (a missing directory is free)."""
    held, pid = c_bool(), c_uint32()
    check(_lib.lib().handoff_lock_holder, encode_path(data_dir), byref(held), byref(pid))
    return LockHolder(bool(held.value), int(pid.value))
