"""Protocol v2 (docs/protocol.md): descriptors that move from the incumbent
to its successor with their state, so that client connections survive the
handoff.

The incumbent's service asks for it before starting
(:meth:`Incumbent.set_moves_descriptors <handoff.Incumbent.set_moves_descriptors>`);
in a drain whose :attr:`~handoff.HookContext.move_limit` is above 0 it
hands each kept connection (and any other descriptor it names, such as a
memfd) to the successor with :meth:`~handoff.HookContext.move`. The
successor's service asks for it before its handshake
(:meth:`Successor.set_adopts_descriptors
<handoff.Successor.set_adopts_descriptors>`) and, after Begin and holding
the data-dir lock, takes what moved with :meth:`Successor.adopt
<handoff.Successor.adopt>`: a list of :class:`AdoptedItem`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
from ctypes import byref, c_size_t, c_void_p
from typing import IO, Any, Protocol

from . import _lib
from .errors import InvalidArgumentError, ProtocolError, WrongStateError
from .messages import ItemKind

__all__ = ["AdoptedItem", "Descriptor", "ItemKind", "descriptor_of", "take_items"]


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


#: What :meth:`HookContext.move <handoff.HookContext.move>` takes: a socket
#: (or anything with ``fileno()``), or a descriptor number.
Descriptor = int | _HasFileno

# handoff_items_bytes' parts (HANDOFF_ITEM_PART_*).
_PART_NAME, _PART_UNREAD, _PART_UNWRITTEN, _PART_STATE = 0, 1, 2, 3


def descriptor_of(descriptor: Descriptor) -> int:
    """The descriptor number of ``descriptor``; a closed socket (whose
    ``fileno()`` is -1) or a negative number raises
    :class:`InvalidArgumentError`, anything else :class:`TypeError`."""
    if isinstance(descriptor, bool):  # an int, but never meant as one
        raise TypeError("a descriptor is an int or has fileno(), not a bool")
    if isinstance(descriptor, int):
        fd = descriptor
    elif callable(getattr(descriptor, "fileno", None)):
        fd = descriptor.fileno()
    else:
        raise TypeError(f"a descriptor is an int or has fileno(), not {type(descriptor).__name__}")
    if fd < 0:
        raise InvalidArgumentError(f"descriptor {fd} cannot move (is it closed?)")
    return fd


class AdoptedItem:
    """One descriptor that moved to this successor, with what came with it.

    ``kind`` is an :class:`ItemKind`; ``name`` is the incumbent's name for
    it; ``unread`` (bytes it read and did not process), ``unwritten`` (bytes
    it produced and did not write) and ``state`` (its own state for the
    item) are ``bytes``. For a connection, write ``unwritten`` first, then
    process ``unread``, then read the socket, and only after announcing
    Ready: before it, a rollback gives the connection back to the incumbent.

    The item owns its descriptor, close-on-exec: a connection's is
    :attr:`socket`; any other descriptor's is taken with :meth:`open` (a
    file object) or :meth:`detach` (the number). :meth:`close` (or ``with``)
    closes what the item still owns; a descriptor never taken is closed when
    the item is collected. Close, never ``shutdown``: a shutdown would end
    the connection for the incumbent too if the handoff rolled back.
    """

    _fd: int = -1  # a class attribute, so that __del__ works on a half-built item
    _socket: socket.socket | None = None

    def __init__(
        self,
        kind: ItemKind,
        name: str,
        fd: int,
        *,
        unread: bytes = b"",
        unwritten: bytes = b"",
        state: bytes = b"",
        blocking: bool = False,
    ) -> None:
        """Take ownership of ``fd`` (closed here if it cannot be wrapped):
        a connection's becomes a socket, blocking or not as asked."""
        self.kind = kind
        self.name = name
        self.unread = unread
        self.unwritten = unwritten
        self.state = state
        if kind is ItemKind.CONNECTION:
            self._socket = _connection_socket(fd, name, blocking)
        else:
            self._fd = fd

    @property
    def socket(self) -> socket.socket:
        """A connection's socket (its family and type those of the
        descriptor): the caller's to serve and close. Stays usable once the
        item is gone."""
        if self._socket is None:
            raise WrongStateError(
                f"item {self.name!r} is {self._what()}: take it with open() or detach()"
            )
        return self._socket

    def open(self, mode: str = "rb", buffering: int = -1) -> IO[Any]:
        """A descriptor (not a connection) as a file object (``os.fdopen``),
        which owns it from then on. The offset is shared with the
        incumbent's copy (one open file description): seek before reading."""
        fd = self.detach()
        try:
            return os.fdopen(fd, mode, buffering)
        except BaseException:
            os.close(fd)
            raise

    def detach(self) -> int:
        """A descriptor (not a connection) as its number, which the caller
        owns from then on (close it with ``os.close``)."""
        if self._socket is not None:
            raise WrongStateError(f"item {self.name!r} is a connection: take it as .socket")
        fd, self._fd = self._fd, -1
        if fd < 0:
            raise WrongStateError(f"item {self.name!r}'s descriptor was taken or closed")
        return fd

    def close(self) -> None:
        """Close what the item still owns (its socket, or its descriptor if
        not taken). Idempotent."""
        if self._socket is not None:
            self._socket.close()
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> AdoptedItem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A socket closes itself when collected; a bare number does not.
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _what(self) -> str:
        return "a connection" if self.kind is ItemKind.CONNECTION else "a descriptor"

    def __repr__(self) -> str:
        return f"<AdoptedItem {self.kind.name} {self.name!r}>"


def _connection_socket(fd: int, name: str, blocking: bool) -> socket.socket:
    """A moved connection's descriptor as a socket (family, type and protocol
    read from it), closing the descriptor if it is not a socket. Its file
    status flags are shared with the incumbent's copy; the library restores
    the incumbent's on a rollback, so they are the successor's to set."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        os.close(fd)
        raise ProtocolError(
            f"moved item {name!r} is a connection, but its descriptor is not a socket: {e}"
        ) from e
    try:
        sock.setblocking(blocking)
    except BaseException:
        sock.close()
        raise
    return sock


def take_items(items: Any, blocking: bool) -> list[AdoptedItem]:
    """Every item of a ``handoff_items`` (which the caller frees), each
    descriptor taken exactly once. On any failure the items already made
    are closed (the collection closes the rest when freed)."""
    adopted: list[AdoptedItem] = []
    try:
        for index in range(_lib.lib().handoff_items_count(items)):
            adopted.append(_take_item(items, index, blocking))
    except BaseException:
        for item in adopted:
            item.close()
        raise
    return adopted


def _take_item(items: Any, index: int, blocking: bool) -> AdoptedItem:
    # Everything that can fail comes before the descriptor is taken out, so
    # that until then the collection still owns it.
    lib = _lib.lib()
    raw_kind = int(lib.handoff_items_kind(items, index))
    try:
        kind = ItemKind(raw_kind)
    except ValueError:
        raise ProtocolError(f"moved item {index} is of an unknown kind {raw_kind}") from None
    name = _item_bytes(items, index, _PART_NAME).decode("utf-8", "replace")
    unread = _item_bytes(items, index, _PART_UNREAD)
    unwritten = _item_bytes(items, index, _PART_UNWRITTEN)
    state = _item_bytes(items, index, _PART_STATE)
    fd = int(lib.handoff_items_take_fd(items, index))
    if fd < 0:
        raise WrongStateError(f"moved item {index}'s descriptor was taken already")
    return AdoptedItem(
        kind, name, fd, unread=unread, unwritten=unwritten, state=state, blocking=blocking
    )


def _item_bytes(items: Any, index: int, part: int) -> bytes:
    """A copy of one part of item ``index`` (it points into the collection)."""
    data, length = c_void_p(), c_size_t()
    if not _lib.lib().handoff_items_bytes(items, index, part, byref(data), byref(length)):
        raise ProtocolError(f"moved item {index} has no part {part}")
    if length.value == 0:
        return b""
    return ctypes.string_at(data.value, length.value)  # type: ignore[arg-type]
