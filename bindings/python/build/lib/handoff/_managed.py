"""The base of every wrapper that owns a library object (the wasmtime-py
``Managed`` pattern): ``close()``, ``with`` and garbage collection all free
it, exactly once; using it afterwards raises :class:`WrongStateError`."""

from __future__ import annotations

import contextlib
import math
import os
from types import TracebackType
from typing import Any, ClassVar, TypeVar, Union

from . import _lib
from .errors import closed_error

__all__ = ["Managed", "PathLike", "encode_path", "encode_str", "to_ms"]

#: What the API takes as a path.
PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


def encode_path(path: PathLike) -> bytes:
    """A path as the NUL-terminated bytes the library takes."""
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise ValueError(f"a path cannot contain NUL: {raw!r}")
    return raw


def encode_str(value: str | bytes, what: str = "a string") -> bytes:
    """A string as NUL-terminated UTF-8 for the library (no NUL inside)."""
    raw = value if isinstance(value, bytes) else value.encode("utf-8")
    if b"\0" in raw:
        raise ValueError(f"{what} cannot contain NUL: {raw!r}")
    return raw


def to_ms(seconds: float, what: str, *, limit: int = 2**32 - 1, minimum: int = 0) -> int:
    """Seconds (the Python convention) as the library's milliseconds,
    rounded up so that a short timeout never becomes 0."""
    if seconds < 0 or math.isnan(seconds):
        raise ValueError(f"{what} must not be negative, not {seconds}")
    ms = max(math.ceil(seconds * 1000), minimum)
    if ms > limit:
        raise ValueError(f"{what} of {seconds} s is too long (at most {limit} ms)")
    return ms


_M = TypeVar("_M", bound="Managed")


class Managed:
    """Owns one C handle; subclasses name the C function that frees it."""

    _FREE: ClassVar[str] = ""
    _WHAT: ClassVar[str] = "object"
    # A class attribute, so that __del__ works on a half-built instance.
    _ptr: Any = None

    def __init__(self, ptr: Any) -> None:
        if not ptr:
            raise ValueError(f"a {self._WHAT} needs a non-NULL handle")
        self._ptr = ptr

    @property
    def _handle(self) -> Any:
        """The live handle; raises :class:`WrongStateError` once closed."""
        ptr = self._ptr
        if not ptr:
            raise closed_error(self._WHAT)
        return ptr

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (or the handle was given up)."""
        return not self._ptr

    def close(self) -> None:
        """Free the library object. Idempotent."""
        ptr, self._ptr = self._ptr, None
        if ptr:
            self._free(ptr)

    def _free(self, ptr: Any) -> None:
        getattr(_lib.lib(), self._FREE)(ptr)

    def __enter__(self: _M) -> _M:
        self._handle  # noqa: B018 (a closed object cannot be entered)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Nothing to report to at collection time.
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{type(self).__name__} {state}>"
