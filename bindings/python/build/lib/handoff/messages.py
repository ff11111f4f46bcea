"""The 14 protocol-v1 messages as typed classes, with frame encode/decode.

Each message is a frozen dataclass (keyword-only fields, in wire order)
whose bytes are produced and parsed by the library: :meth:`Message.encode`
builds a library message field by field and has the library encode the
whole frame; :func:`decode` has the library decode a frame and reads every
field back. Python holds no knowledge of the wire format.

Field types: integers are ``int``, the handoff id is a :class:`uuid.UUID`
(16 bytes on the wire), ``build_id`` and the 32-byte fingerprint are
``bytes``, the protocol's strings are ``str`` and lists are tuples.

:class:`MessageHandle` is the library's message object itself, for code
that wants the field-level C API; :class:`FrameReader` is the library's
non-blocking frame reader, for services with their own event loop.
"""

from __future__ import annotations

import ctypes
import uuid
from collections.abc import Iterator, Sequence
from ctypes import byref, c_bool, c_size_t, c_uint64, c_void_p
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, TypeVar

from . import _lib
from ._managed import Managed
from .errors import IncompleteError, check, raise_status

__all__ = [
    "FRAME_VERSION",
    "Abort",
    "Begin",
    "Commit",
    "Drained",
    "Field",
    "FrameReader",
    "Heartbeat",
    "Hello",
    "HelloAck",
    "Message",
    "MessageHandle",
    "MessageKind",
    "PrepareHandoff",
    "Ready",
    "ResumeAfterAbort",
    "SealComplete",
    "SealFailed",
    "SealProgress",
    "SealRequest",
    "Side",
    "decode",
    "decode_frame",
    "kind_name",
]

#: The protocol version frames are encoded with (the only one there is).
FRAME_VERSION = 1


class MessageKind(IntEnum):
    """The wire index of each message (``HANDOFF_MSG_*``)."""

    HELLO = 0
    HELLO_ACK = 1
    PREPARE_HANDOFF = 2
    DRAINED = 3
    SEAL_REQUEST = 4
    SEAL_PROGRESS = 5
    SEAL_COMPLETE = 6
    SEAL_FAILED = 7
    BEGIN = 8
    READY = 9
    COMMIT = 10
    ABORT = 11
    RESUME_AFTER_ABORT = 12
    HEARTBEAT = 13
    # Protocol v2 (docs/protocol.md): the messages that move descriptors.
    CAPACITY = 14
    TRANSFER = 15
    MOVING = 16
    ITEM = 17
    ADOPTED = 18


class ItemKind(IntEnum):
    """``Item.kind`` (``HANDOFF_ITEM_*``): what a moved descriptor is."""

    CONNECTION = 0
    DESCRIPTOR = 1


class Side(IntEnum):
    """``Hello.role`` (``HANDOFF_SIDE_*``)."""

    INCUMBENT = 0
    SUCCESSOR = 1


class Field(IntEnum):
    """The field numbers of the C accessors (``HANDOFF_FIELD_*``)."""

    HANDOFF_ID = 1
    ROLE = 2
    PID = 3
    BUILD_ID = 4
    PROTO_MIN = 5
    PROTO_MAX = 6
    CAPABILITIES_RESERVED = 7
    PROTO_VERSION_CHOSEN = 8
    SUCCESSOR_PID = 9
    DEADLINE_MS = 10
    DRAIN_GRACE_MS = 11
    OPEN_CONNS_REMAINING = 12
    ACCEPT_CLOSED = 13
    SHARDS_SEALED = 14
    SHARDS_TOTAL = 15
    LAST_REVISION = 16
    LAST_REVISION_PER_SHARD = 17
    DATA_DIR_FINGERPRINT = 18
    ERROR = 19
    PARTIAL_STATE = 20
    LISTENING_ON = 21
    HEALTHZ_OK = 22
    ADVERTISED_REVISION_PER_SHARD = 23
    REASON = 24
    TS_MS = 25
    DESCRIPTORS = 26
    ITEMS_MAX = 27
    ITEMS = 28
    SEQ = 29
    ITEM_KIND = 30
    NAME = 31
    UNREAD = 32
    UNWRITTEN = 33
    STATE = 34


def kind_name(kind: int) -> str | None:
    """The library's name of a message kind (``"SealComplete"``), or None."""
    name = _lib.lib().handoff_message_kind_name(kind)
    return name.decode() if name is not None else None


# ---- the library's message object -------------------------------------------


class MessageHandle(Managed):
    """A ``handoff_message`` owned by Python: the field-level C API.

    Not synchronised (as in C): use one handle from one thread at a time.
    """

    _FREE = "handoff_message_free"
    _WHAT = "message"

    @classmethod
    def new(cls, kind: int) -> MessageHandle:
        """A new message of ``kind`` with every field zero or empty (a Hello
        announces versions 1..=1, a HelloAck chooses 1)."""
        out = ctypes.POINTER(_lib.handoff_message)()
        check(_lib.lib().handoff_message_new, kind, byref(out))
        return cls(out)

    @classmethod
    def decode(cls, buf: bytes) -> tuple[MessageHandle, int]:
        """Decode the frame at the start of ``buf``: the message and the
        frame's size. An incomplete frame raises :class:`IncompleteError`
        whose ``needed`` is the number of bytes needed in all."""
        data = bytes(buf)
        out = ctypes.POINTER(_lib.handoff_message)()
        consumed = c_size_t()
        err = ctypes.POINTER(_lib.handoff_error)()
        status = _lib.lib().handoff_message_decode(
            data, len(data), byref(out), byref(consumed), byref(err)
        )
        if status == IncompleteError.STATUS:
            try:
                raise_status(status, err)
            except IncompleteError as e:
                e.needed = consumed.value
                raise
        if status != 0:
            raise_status(status, err)
        return cls(out), consumed.value

    def encode(self) -> bytes:
        """The whole frame (length prefix, version, body)."""
        lib = _lib.lib()
        needed = c_size_t()
        # Size query: NULL buffer, capacity 0 (BUFFER_TOO_SMALL sets *needed).
        status = lib.handoff_message_encode(self._handle, None, 0, byref(needed), None)
        if status not in (0, 6):
            check(lib.handoff_message_encode, self._handle, None, 0, byref(needed))
        buf = ctypes.create_string_buffer(needed.value)
        written = c_size_t()
        check(lib.handoff_message_encode, self._handle, buf, needed.value, byref(written))
        return buf.raw[: written.value]

    @property
    def kind(self) -> MessageKind:
        """The message's kind."""
        return MessageKind(_lib.lib().handoff_message_kind(self._handle))

    @property
    def proto_version(self) -> int:
        """The protocol version of the frame (decoded, or to encode with)."""
        return int(_lib.lib().handoff_message_proto_version(self._handle))

    @proto_version.setter
    def proto_version(self, version: int) -> None:
        check(_lib.lib().handoff_message_set_proto_version, self._handle, version)

    def get_uint(self, fld: int) -> int:
        """Read an integer field."""
        out = c_uint64()
        check(_lib.lib().handoff_message_get_uint, self._handle, fld, byref(out))
        return out.value

    def set_uint(self, fld: int, value: int) -> None:
        """Write an integer field (range-checked by the library)."""
        if not 0 <= value < 2**64:
            raise OverflowError(f"{value} does not fit a u64 field")
        check(_lib.lib().handoff_message_set_uint, self._handle, fld, value)

    def get_bool(self, fld: int) -> bool:
        """Read a boolean field."""
        out = c_bool()
        check(_lib.lib().handoff_message_get_bool, self._handle, fld, byref(out))
        return bool(out.value)

    def set_bool(self, fld: int, value: bool) -> None:
        """Write a boolean field."""
        check(_lib.lib().handoff_message_set_bool, self._handle, fld, bool(value))

    def get_bytes(self, fld: int) -> bytes:
        """Read a byte or string field (copied out of the message)."""
        data, size = c_void_p(), c_size_t()
        check(_lib.lib().handoff_message_get_bytes, self._handle, fld, byref(data), byref(size))
        return _copy(data, size)

    def set_bytes(self, fld: int, value: bytes) -> None:
        """Write a byte or string field (copied)."""
        value = bytes(value)
        check(_lib.lib().handoff_message_set_bytes, self._handle, fld, value, len(value))

    def list_len(self, fld: int) -> int:
        """The number of items in a list field."""
        out = c_size_t()
        check(_lib.lib().handoff_message_get_list_len, self._handle, fld, byref(out))
        return out.value

    def get_list_uint(self, fld: int, index: int) -> int:
        """Item ``index`` of a list of integers."""
        out = c_uint64()
        check(_lib.lib().handoff_message_get_list_uint, self._handle, fld, index, byref(out))
        return out.value

    def get_list_bytes(self, fld: int, index: int) -> bytes:
        """Item ``index`` of a list of strings, as bytes."""
        data, size = c_void_p(), c_size_t()
        check(
            _lib.lib().handoff_message_get_list_bytes,
            self._handle,
            fld,
            index,
            byref(data),
            byref(size),
        )
        return _copy(data, size)

    def push_uint(self, fld: int, value: int) -> None:
        """Append to a list of integers."""
        if not 0 <= value < 2**64:
            raise OverflowError(f"{value} does not fit a u64 list item")
        check(_lib.lib().handoff_message_push_uint, self._handle, fld, value)

    def push_bytes(self, fld: int, value: bytes) -> None:
        """Append a UTF-8 string (given as bytes) to a list of strings."""
        value = bytes(value)
        check(_lib.lib().handoff_message_push_bytes, self._handle, fld, value, len(value))

    def clear_list(self, fld: int) -> None:
        """Empty a list field."""
        check(_lib.lib().handoff_message_clear_list, self._handle, fld)

    def to_message(self) -> Message:
        """The typed message holding this handle's fields."""
        return Message.from_handle(self)


def _copy(data: c_void_p, size: c_size_t) -> bytes:
    if size.value == 0 or not data.value:
        return b""
    return ctypes.string_at(data.value, size.value)


# ---- typed messages -------------------------------------------------------------

# How each dataclass field maps onto a library field: (field number, type).
_ID, _UINT, _SIDE, _BOOL, _BYTES, _STR, _FPR, _UINTS, _STRS = range(9)


def _set(handle: MessageHandle, fld: int, how: int, value: Any) -> None:
    if how in (_UINT, _SIDE):
        handle.set_uint(fld, int(value))
    elif how == _BOOL:
        handle.set_bool(fld, value)
    elif how == _ID:
        handle.set_bytes(fld, value.bytes)
    elif how in (_BYTES, _FPR):
        handle.set_bytes(fld, value)
    elif how == _STR:
        handle.set_bytes(fld, value.encode("utf-8"))
    elif how == _UINTS:
        handle.clear_list(fld)
        for item in value:
            handle.push_uint(fld, item)
    else:  # _STRS
        handle.clear_list(fld)
        for item in value:
            handle.push_bytes(fld, item.encode("utf-8"))


def _get(handle: MessageHandle, fld: int, how: int) -> Any:
    if how == _UINT:
        return handle.get_uint(fld)
    if how == _SIDE:
        return Side(handle.get_uint(fld))
    if how == _BOOL:
        return handle.get_bool(fld)
    if how == _ID:
        return uuid.UUID(bytes=handle.get_bytes(fld))
    if how in (_BYTES, _FPR):
        return handle.get_bytes(fld)
    if how == _STR:
        return handle.get_bytes(fld).decode("utf-8")
    count = handle.list_len(fld)
    if how == _UINTS:
        return tuple(handle.get_list_uint(fld, i) for i in range(count))
    return tuple(handle.get_list_bytes(fld, i).decode("utf-8") for i in range(count))


_T = TypeVar("_T", bound="Message")


@dataclass(frozen=True, kw_only=True)
class Message:
    """A protocol message. Subclasses are the 14 kinds of v1 and the 5 that
    protocol v2 adds.

    ``proto_version`` is the version of the frame the message came in (or
    will be encoded with); it is not part of the message itself.
    """

    KIND: ClassVar[MessageKind]
    _FIELDS: ClassVar[dict[str, tuple[Field, int]]] = {}
    _BY_KIND: ClassVar[dict[MessageKind, type[Message]]] = {}

    proto_version: int = field(default=FRAME_VERSION, compare=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "KIND" in cls.__dict__:
            Message._BY_KIND[cls.KIND] = cls

    def __post_init__(self) -> None:
        # Accept the natural spellings and store one canonical type.
        for name, (_, how) in self._FIELDS.items():
            value = getattr(self, name)
            if how == _ID and not isinstance(value, uuid.UUID):
                value = uuid.UUID(bytes=bytes(value))
            elif how in (_UINTS, _STRS):
                value = tuple(value)
            elif how == _SIDE:
                value = Side(value)
            elif how in (_BYTES, _FPR):
                value = bytes(value)
            object.__setattr__(self, name, value)

    @property
    def kind(self) -> MessageKind:
        """The message's wire index."""
        return self.KIND

    def to_handle(self) -> MessageHandle:
        """A library message with these fields (the caller closes it)."""
        handle = MessageHandle.new(self.KIND)
        try:
            if self.proto_version != FRAME_VERSION:
                handle.proto_version = self.proto_version
            for name, (fld, how) in self._FIELDS.items():
                _set(handle, fld, how, getattr(self, name))
        except BaseException:
            handle.close()
            raise
        return handle

    def encode(self) -> bytes:
        """The message as a whole frame, encoded by the library."""
        with self.to_handle() as handle:
            return handle.encode()

    @staticmethod
    def from_handle(handle: MessageHandle) -> Message:
        """The typed message with a library message's fields."""
        cls = Message._BY_KIND[handle.kind]
        values = {name: _get(handle, fld, how) for name, (fld, how) in cls._FIELDS.items()}
        return cls(proto_version=handle.proto_version, **values)

    @classmethod
    def decode(cls: type[_T], buf: bytes) -> _T:
        """Decode the frame at the start of ``buf`` (see :func:`decode`);
        on a subclass, raise :class:`TypeError` for another kind."""
        message = decode(buf)
        if not isinstance(message, cls):
            raise TypeError(f"expected {cls.__name__}, decoded {type(message).__name__}")
        return message


def _fields(**spec: tuple[Field, int]) -> dict[str, tuple[Field, int]]:
    return spec


_NIL = uuid.UUID(int=0)


@dataclass(frozen=True, kw_only=True)
class Hello(Message):
    """0: O → S and N → S, first frame on a connection."""

    KIND = MessageKind.HELLO
    _FIELDS = _fields(
        role=(Field.ROLE, _SIDE),
        pid=(Field.PID, _UINT),
        build_id=(Field.BUILD_ID, _BYTES),
        proto_min=(Field.PROTO_MIN, _UINT),
        proto_max=(Field.PROTO_MAX, _UINT),
        capabilities_reserved=(Field.CAPABILITIES_RESERVED, _UINT),
    )
    role: Side = Side.INCUMBENT
    pid: int = 0
    build_id: bytes = b""
    proto_min: int = FRAME_VERSION
    proto_max: int = FRAME_VERSION
    capabilities_reserved: int = 0


@dataclass(frozen=True, kw_only=True)
class HelloAck(Message):
    """1: S → O, S → N: the chosen version and the handoff id."""

    KIND = MessageKind.HELLO_ACK
    _FIELDS = _fields(
        proto_version_chosen=(Field.PROTO_VERSION_CHOSEN, _UINT),
        handoff_id=(Field.HANDOFF_ID, _ID),
    )
    proto_version_chosen: int = FRAME_VERSION
    handoff_id: uuid.UUID


@dataclass(frozen=True, kw_only=True)
class PrepareHandoff(Message):
    """2: S → O: drain; ``deadline_ms`` is the time left."""

    KIND = MessageKind.PREPARE_HANDOFF
    _FIELDS = _fields(
        handoff_id=(Field.HANDOFF_ID, _ID),
        successor_pid=(Field.SUCCESSOR_PID, _UINT),
        deadline_ms=(Field.DEADLINE_MS, _UINT),
        drain_grace_ms=(Field.DRAIN_GRACE_MS, _UINT),
    )
    handoff_id: uuid.UUID
    successor_pid: int = 0
    deadline_ms: int = 0
    drain_grace_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class Drained(Message):
    """3: O → S: draining finished."""

    KIND = MessageKind.DRAINED
    _FIELDS = _fields(
        open_conns_remaining=(Field.OPEN_CONNS_REMAINING, _UINT),
        accept_closed=(Field.ACCEPT_CLOSED, _BOOL),
    )
    open_conns_remaining: int = 0
    accept_closed: bool = False


@dataclass(frozen=True, kw_only=True)
class SealRequest(Message):
    """4: S → O: seal the state and release the lock."""

    KIND = MessageKind.SEAL_REQUEST
    _FIELDS = _fields(handoff_id=(Field.HANDOFF_ID, _ID))
    handoff_id: uuid.UUID


@dataclass(frozen=True, kw_only=True)
class SealProgress(Message):
    """5: O → S (optional): progress of a long seal."""

    KIND = MessageKind.SEAL_PROGRESS
    _FIELDS = _fields(
        shards_sealed=(Field.SHARDS_SEALED, _UINT),
        shards_total=(Field.SHARDS_TOTAL, _UINT),
        last_revision=(Field.LAST_REVISION, _UINT),
    )
    shards_sealed: int = 0
    shards_total: int = 0
    last_revision: int = 0


@dataclass(frozen=True, kw_only=True)
class SealComplete(Message):
    """6: O → S: sealed, lock released."""

    KIND = MessageKind.SEAL_COMPLETE
    _FIELDS = _fields(
        handoff_id=(Field.HANDOFF_ID, _ID),
        last_revision_per_shard=(Field.LAST_REVISION_PER_SHARD, _UINTS),
        data_dir_fingerprint=(Field.DATA_DIR_FINGERPRINT, _FPR),
    )
    handoff_id: uuid.UUID
    last_revision_per_shard: Sequence[int] = ()
    data_dir_fingerprint: bytes = bytes(32)


@dataclass(frozen=True, kw_only=True)
class SealFailed(Message):
    """7: O → S: the seal failed; O kept its lock and resumed."""

    KIND = MessageKind.SEAL_FAILED
    _FIELDS = _fields(
        handoff_id=(Field.HANDOFF_ID, _ID),
        error=(Field.ERROR, _STR),
        partial_state=(Field.PARTIAL_STATE, _STR),
    )
    handoff_id: uuid.UUID
    error: str = ""
    partial_state: str = ""


@dataclass(frozen=True, kw_only=True)
class Begin(Message):
    """8: S → N: take the listeners and the lock."""

    KIND = MessageKind.BEGIN
    _FIELDS = _fields(handoff_id=(Field.HANDOFF_ID, _ID))
    handoff_id: uuid.UUID


@dataclass(frozen=True, kw_only=True)
class Ready(Message):
    """9: N → S: serving; from here on N is authoritative."""

    KIND = MessageKind.READY
    _FIELDS = _fields(
        handoff_id=(Field.HANDOFF_ID, _ID),
        listening_on=(Field.LISTENING_ON, _STRS),
        healthz_ok=(Field.HEALTHZ_OK, _BOOL),
        advertised_revision_per_shard=(Field.ADVERTISED_REVISION_PER_SHARD, _UINTS),
    )
    handoff_id: uuid.UUID = _NIL
    listening_on: Sequence[str] = ()
    healthz_ok: bool = False
    advertised_revision_per_shard: Sequence[int] = ()


@dataclass(frozen=True, kw_only=True)
class Commit(Message):
    """10: S → O: the successor took over; exit."""

    KIND = MessageKind.COMMIT
    _FIELDS = _fields(handoff_id=(Field.HANDOFF_ID, _ID))
    handoff_id: uuid.UUID


@dataclass(frozen=True, kw_only=True)
class Abort(Message):
    """11: S → O or N: the handoff is rolled back."""

    KIND = MessageKind.ABORT
    _FIELDS = _fields(handoff_id=(Field.HANDOFF_ID, _ID), reason=(Field.REASON, _STR))
    handoff_id: uuid.UUID
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ResumeAfterAbort(Message):
    """12: S → O: resume serving as before the handoff."""

    KIND = MessageKind.RESUME_AFTER_ABORT
    _FIELDS = _fields(handoff_id=(Field.HANDOFF_ID, _ID))
    handoff_id: uuid.UUID


@dataclass(frozen=True, kw_only=True)
class Heartbeat(Message):
    """13: any side; O echoes one it receives."""

    KIND = MessageKind.HEARTBEAT
    _FIELDS = _fields(ts_ms=(Field.TS_MS, _UINT))
    ts_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class Capacity(Message):
    """14 (v2): N → S: how many descriptors N can take in."""

    KIND = MessageKind.CAPACITY
    _FIELDS = _fields(descriptors=(Field.DESCRIPTORS, _UINT))
    descriptors: int = 0


@dataclass(frozen=True, kw_only=True)
class Transfer(Message):
    """15 (v2): S → O: this handoff moves descriptors, at most ``items_max``."""

    KIND = MessageKind.TRANSFER
    _FIELDS = _fields(handoff_id=(Field.HANDOFF_ID, _ID), items_max=(Field.ITEMS_MAX, _UINT))
    handoff_id: uuid.UUID
    items_max: int = 0


@dataclass(frozen=True, kw_only=True)
class Moving(Message):
    """16 (v2): O → S → N: this many Item frames follow."""

    KIND = MessageKind.MOVING
    _FIELDS = _fields(handoff_id=(Field.HANDOFF_ID, _ID), items=(Field.ITEMS, _UINT))
    handoff_id: uuid.UUID
    items: int = 0


@dataclass(frozen=True, kw_only=True)
class Item(Message):
    """17 (v2): O → S → N: one moved descriptor's description (the
    descriptor itself travels beside the frame, SCM_RIGHTS)."""

    KIND = MessageKind.ITEM
    _FIELDS = _fields(
        seq=(Field.SEQ, _UINT),
        item_kind=(Field.ITEM_KIND, _UINT),
        name=(Field.NAME, _STR),
        unread=(Field.UNREAD, _BYTES),
        unwritten=(Field.UNWRITTEN, _BYTES),
        state=(Field.STATE, _BYTES),
    )
    seq: int = 0
    item_kind: int = ItemKind.CONNECTION
    name: str = ""
    unread: bytes = b""
    unwritten: bytes = b""
    state: bytes = b""


@dataclass(frozen=True, kw_only=True)
class Adopted(Message):
    """18 (v2): N → S: how many moved items N adopted."""

    KIND = MessageKind.ADOPTED
    _FIELDS = _fields(handoff_id=(Field.HANDOFF_ID, _ID), items=(Field.ITEMS, _UINT))
    handoff_id: uuid.UUID
    items: int = 0


def decode_frame(buf: bytes) -> tuple[Message, int]:
    """Decode the frame at the start of ``buf``: the message and the number
    of bytes the frame took (bytes after it are left alone). Raises
    :class:`IncompleteError` (with ``needed``) for a partial frame and the
    matching :class:`HandoffError` for a malformed one."""
    handle, consumed = MessageHandle.decode(buf)
    with handle:
        return Message.from_handle(handle), consumed


def decode(buf: bytes) -> Message:
    """Decode the frame at the start of ``buf`` (see :func:`decode_frame`)."""
    return decode_frame(buf)[0]


class FrameReader(Managed):
    """The library's non-blocking frame reader: feed bytes as they arrive,
    take whole messages out. Keeps a partial frame across reads.

    Not synchronised: use it from one thread at a time.
    """

    _FREE = "handoff_frame_reader_free"
    _WHAT = "frame reader"

    def __init__(self) -> None:
        out = ctypes.POINTER(_lib.handoff_frame_reader)()
        check(_lib.lib().handoff_frame_reader_new, byref(out))
        super().__init__(out)

    def feed(self, data: bytes) -> None:
        """Append ``data`` (copied) to the buffer."""
        data = bytes(data)
        check(_lib.lib().handoff_frame_reader_feed, self._handle, data, len(data))

    def next(self) -> Message | None:
        """The next whole message, or None when more bytes are needed.

        A frame whose body does not decode is dropped and raised (the next
        one can still be read); a bad length prefix is raised on every later
        call: the stream has lost its frame boundaries, close it."""
        out = ctypes.POINTER(_lib.handoff_message)()
        got = c_bool()
        check(_lib.lib().handoff_frame_reader_next, self._handle, byref(out), byref(got))
        if not got.value:
            return None
        with MessageHandle(out) as handle:
            return Message.from_handle(handle)

    def __iter__(self) -> Iterator[Message]:
        """Every whole message buffered now."""
        while (message := self.next()) is not None:
            yield message

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet taken as messages."""
        return int(_lib.lib().handoff_frame_reader_buffered(self._handle))


# Every kind has its class.
assert sorted(Message._BY_KIND) == list(MessageKind), Message._BY_KIND
