"""The 14 messages of v1 and the 5 of v2 against the golden vectors
(tests/vectors/README.md), and the message, frame and reader APIs."""

from __future__ import annotations

import struct
import uuid

import pytest
from conftest import VECTORS

import libhandoff
from libhandoff.messages import (
    Abort,
    Adopted,
    Begin,
    Capacity,
    Commit,
    Drained,
    Field,
    FrameReader,
    Heartbeat,
    Hello,
    HelloAck,
    Item,
    ItemKind,
    Message,
    MessageHandle,
    MessageKind,
    Moving,
    PrepareHandoff,
    Ready,
    ResumeAfterAbort,
    SealComplete,
    SealFailed,
    SealProgress,
    SealRequest,
    Side,
    Transfer,
    decode,
    decode_frame,
    kind_name,
)

ID = uuid.UUID("5a1e00ff-1020-4080-90a0-b0c0d0e0f001")

# Field values from tests/vectors/README.md.
GOLDEN: dict[str, Message] = {
    "00_hello.bin": Hello(
        role=Side.SUCCESSOR,
        pid=4242,
        build_id=b"build-7f3a",
        proto_min=1,
        proto_max=1,
        capabilities_reserved=0,
    ),
    "01_hello_ack.bin": HelloAck(proto_version_chosen=1, handoff_id=ID),
    "02_prepare_handoff.bin": PrepareHandoff(
        handoff_id=ID, successor_pid=70000, deadline_ms=300000, drain_grace_ms=60000
    ),
    "03_drained.bin": Drained(open_conns_remaining=3, accept_closed=True),
    "04_seal_request.bin": SealRequest(handoff_id=ID),
    "05_seal_progress.bin": SealProgress(shards_sealed=2, shards_total=8, last_revision=2**40),
    "06_seal_complete.bin": SealComplete(
        handoff_id=ID,
        last_revision_per_shard=(0, 1, 300, 2**64 - 1),
        data_dir_fingerprint=b"\xab" * 32,
    ),
    "07_seal_failed.bin": SealFailed(handoff_id=ID, error="disk full: écrit", partial_state=""),
    "08_begin.bin": Begin(handoff_id=ID),
    "09_ready.bin": Ready(
        handoff_id=ID,
        listening_on=("tcp://127.0.0.1:8080", "unix:/run/x.sock"),
        healthz_ok=True,
        advertised_revision_per_shard=(7, 8),
    ),
    "10_commit.bin": Commit(handoff_id=ID),
    "11_abort.bin": Abort(handoff_id=ID, reason="successor timed out"),
    "12_resume_after_abort.bin": ResumeAfterAbort(handoff_id=ID),
    "13_heartbeat.bin": Heartbeat(ts_ms=1764000000123),
}


# Protocol v2's, from the same README ("Protocol v2").
GOLDEN_V2: dict[str, Message] = {
    "14_capacity.bin": Capacity(descriptors=10000),
    "15_transfer.bin": Transfer(handoff_id=ID, items_max=65535),
    "16_moving.bin": Moving(handoff_id=ID, items=300),
    "17_item_connection.bin": Item(
        seq=7,
        item_kind=ItemKind.CONNECTION,
        name="kv",
        unread=b"GET k",
        unwritten=b"VALUE v\n",
        state=b"\x01\x00\xff",
    ),
    "17_item_descriptor.bin": Item(
        seq=0, item_kind=ItemKind.DESCRIPTOR, name="snapshot", state=b"memfd:table"
    ),
    "18_adopted.bin": Adopted(handoff_id=ID, items=300),
}


def test_every_kind_has_a_golden_vector() -> None:
    kinds = {m.KIND for m in [*GOLDEN.values(), *GOLDEN_V2.values()]}
    assert sorted(kinds) == list(MessageKind)
    assert sorted(p.name for p in (VECTORS / "frames").glob("*.bin")) == sorted(GOLDEN)
    assert sorted(p.name for p in (VECTORS / "v2").glob("*.bin")) == sorted(GOLDEN_V2)


@pytest.mark.parametrize("name", sorted(GOLDEN_V2))
def test_v2_vectors_both_ways(name: str) -> None:
    frame = (VECTORS / "v2" / name).read_bytes()
    assert GOLDEN_V2[name].encode() == frame
    message, consumed = decode_frame(frame)
    assert consumed == len(frame)
    assert message == GOLDEN_V2[name]
    assert message.proto_version == 2
    # A v2 message does not exist in a v1 frame.
    with pytest.raises(libhandoff.UnknownMessageError):
        decode(frame[:4] + b"\x01\x00" + frame[6:])


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_encode_matches_the_golden_frame(name: str) -> None:
    assert GOLDEN[name].encode() == (VECTORS / "frames" / name).read_bytes()


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_decode_reads_every_field_of_the_golden_frame(name: str) -> None:
    frame = (VECTORS / "frames" / name).read_bytes()
    message, consumed = decode_frame(frame + b"trailing bytes are left alone")
    assert consumed == len(frame)
    assert message == GOLDEN[name]
    assert type(message) is type(GOLDEN[name])
    assert message.proto_version == 1
    # Every field, compared one by one, with its Python type.
    for field_name in message._FIELDS:
        assert getattr(message, field_name) == getattr(GOLDEN[name], field_name), field_name


def test_typed_fields() -> None:
    ready = decode((VECTORS / "frames" / "09_ready.bin").read_bytes())
    assert isinstance(ready, Ready)
    assert ready.kind is MessageKind.READY
    assert ready.handoff_id == ID
    assert ready.listening_on == ("tcp://127.0.0.1:8080", "unix:/run/x.sock")
    assert ready.advertised_revision_per_shard == (7, 8)
    hello = Hello.decode((VECTORS / "frames" / "00_hello.bin").read_bytes())
    assert hello.role is Side.SUCCESSOR
    assert isinstance(hello.build_id, bytes)
    with pytest.raises(TypeError, match="expected Begin"):
        Begin.decode(hello.encode())


def test_natural_spellings_are_accepted() -> None:
    assert Begin(handoff_id=ID.bytes) == Begin(handoff_id=ID)
    assert Ready(handoff_id=ID, listening_on=["a"]) == Ready(handoff_id=ID, listening_on=("a",))
    assert Hello(role=1).role is Side.SUCCESSOR


def test_round_trip_of_unusual_values() -> None:
    messages = [
        Hello(pid=2**32 - 1, build_id=bytes(range(256)), capabilities_reserved=2**64 - 1),
        SealFailed(handoff_id=ID, error="", partial_state="ünïcode ✓" * 50),
        Ready(handoff_id=uuid.uuid4(), listening_on=(), healthz_ok=False),
        SealComplete(handoff_id=ID, last_revision_per_shard=range(1000)),
    ]
    for message in messages:
        assert decode(message.encode()) == message


def test_incomplete_frames_say_what_they_need() -> None:
    frame = (VECTORS / "frames" / "06_seal_complete.bin").read_bytes()
    for cut in (0, 3, 4, len(frame) - 1):
        with pytest.raises(libhandoff.IncompleteError) as info:
            decode(frame[:cut])
        assert info.value.needed == (4 if cut < 4 else len(frame))
        assert info.value.status_name == "HANDOFF_ERR_INCOMPLETE"


def test_malformed_frames_raise_their_status() -> None:
    with pytest.raises(libhandoff.FrameMalformedError):
        decode(struct.pack("<I", 1) + b"\x01")
    with pytest.raises(libhandoff.FrameTooLargeError):
        decode(struct.pack("<I", 2**20 + 1) + b"\x01\x00")
    with pytest.raises(libhandoff.UnknownMessageError):
        decode(struct.pack("<IHB", 3, 1, 14))
    with pytest.raises(libhandoff.DecodeError):
        decode(struct.pack("<IHB", 3, 1, 1))  # HelloAck without its fields


def test_values_out_of_range_are_refused() -> None:
    with pytest.raises(libhandoff.InvalidArgumentError):
        Hello(pid=2**32).encode()
    with pytest.raises(libhandoff.InvalidArgumentError):
        HelloAck(handoff_id=ID, proto_version_chosen=2**16).encode()
    with pytest.raises(libhandoff.InvalidArgumentError):
        SealComplete(handoff_id=ID, data_dir_fingerprint=b"short").encode()
    with pytest.raises(OverflowError):
        Heartbeat(ts_ms=2**64).encode()
    with pytest.raises(ValueError, match="Side"):
        Hello(role=7)


def test_message_handle_field_api() -> None:
    with MessageHandle.new(MessageKind.SEAL_FAILED) as handle:
        assert handle.kind is MessageKind.SEAL_FAILED
        assert kind_name(handle.kind) == "SealFailed"
        handle.set_bytes(Field.HANDOFF_ID, ID.bytes)
        handle.set_bytes(Field.ERROR, "disk full: écrit".encode())
        assert handle.get_bytes(Field.ERROR) == "disk full: écrit".encode()
        assert handle.encode() == (VECTORS / "frames" / "07_seal_failed.bin").read_bytes()
        with pytest.raises(libhandoff.NoSuchFieldError, match="SealFailed"):
            handle.get_uint(Field.PID)
        with pytest.raises(libhandoff.WrongFieldTypeError):
            handle.get_uint(Field.ERROR)
        with pytest.raises(libhandoff.InvalidUtf8Error):
            handle.set_bytes(Field.ERROR, b"\xff\xfe")
        with pytest.raises(libhandoff.InvalidArgumentError):
            handle.set_bytes(Field.HANDOFF_ID, b"15 bytes only..")
    with MessageHandle.new(MessageKind.READY) as handle:
        handle.push_bytes(Field.LISTENING_ON, b"tcp://[::1]:1")
        handle.push_uint(Field.ADVERTISED_REVISION_PER_SHARD, 5)
        assert handle.list_len(Field.LISTENING_ON) == 1
        assert handle.get_list_bytes(Field.LISTENING_ON, 0) == b"tcp://[::1]:1"
        assert handle.get_list_uint(Field.ADVERTISED_REVISION_PER_SHARD, 0) == 5
        with pytest.raises(libhandoff.OutOfRangeError):
            handle.get_list_uint(Field.ADVERTISED_REVISION_PER_SHARD, 1)
        handle.clear_list(Field.LISTENING_ON)
        assert handle.to_message() == Ready(advertised_revision_per_shard=(5,))
    with pytest.raises(libhandoff.InvalidArgumentError):
        MessageHandle.new(19)
    assert kind_name(19) is None


def test_proto_version_is_carried() -> None:
    with Heartbeat(ts_ms=1).to_handle() as handle:
        assert handle.proto_version == 1
        handle.proto_version = 3
        frame = handle.encode()
    assert frame[4:6] == b"\x03\x00"
    assert decode(frame).proto_version == 3
    assert Heartbeat(ts_ms=1, proto_version=3).encode() == frame


def test_frame_reader_keeps_partial_frames() -> None:
    frames = [(VECTORS / "frames" / name).read_bytes() for name in sorted(GOLDEN)]
    stream = b"".join(frames)
    with FrameReader() as reader:
        got: list[Message] = []
        for i in range(0, len(stream), 7):  # odd-sized pieces
            reader.feed(stream[i : i + 7])
            got.extend(reader)
        assert got == [GOLDEN[name] for name in sorted(GOLDEN)]
        assert reader.buffered == 0
        assert reader.next() is None
        reader.feed(frames[0][:5])
        assert reader.next() is None
        assert reader.buffered == 5


def test_frame_reader_reports_a_bad_body_and_goes_on() -> None:
    with FrameReader() as reader:
        reader.feed(struct.pack("<IHB", 3, 1, 1))  # a HelloAck without fields
        reader.feed(Begin(handoff_id=ID).encode())
        with pytest.raises(libhandoff.DecodeError):
            reader.next()
        assert reader.next() == Begin(handoff_id=ID)
