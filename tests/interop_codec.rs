//! Property-based interoperability with the reference peer, `beyond-handoff`
//! 0.1.4 (renamed `beyond` in Cargo.toml): for arbitrary messages of all 14
//! v1 kinds and arbitrary journals of all 6 phases, our bytes and theirs are
//! identical, each side decodes the other's bytes to the same fields, and the
//! C ABI (called from Rust) builds, reads, encodes and decodes the same bytes.
//! The reference speaks v1 only: the 5 kinds of v2 are checked between our
//! codec and the C ABI.
//!
//! The reference types have no `PartialEq`, so a decoded reference value is
//! compared by converting it field by field into ours ([`from_theirs`]), the
//! inverse of [`to_theirs`]; both are exhaustive matches, so a new field or
//! variant on either side fails to compile here rather than going unchecked.

use std::ffi::{CStr, CString};
use std::ptr;

use beyond::protocol as theirs;
use beyond::state as their_state;
use handoff::ffi::*;
use handoff::{
    decode_frame, encode_frame, encode_frame_into, Capabilities, Frame, HandoffId, ItemKind,
    Journal, Message, MessageKind, Phase, Side,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Integers biased towards the values where an encoding goes wrong: zero,
/// the varint byte boundaries and the type's extremes, plus uniform ones.
fn u64s() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => prop::sample::select(vec![
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            1 << 32,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ]),
        1 => 0..1u64 << 21,
        3 => any::<u64>(),
    ]
}

fn u32s() -> impl Strategy<Value = u32> {
    prop_oneof![
        2 => prop::sample::select(vec![0, 1, 127, 128, 16_383, 16_384, 1 << 31, u32::MAX - 1, u32::MAX]),
        1 => 0..1u32 << 21,
        3 => any::<u32>(),
    ]
}

fn u16s() -> impl Strategy<Value = u16> {
    prop_oneof![
        2 => prop::sample::select(vec![0, 1, 2, 127, 128, 16_383, 16_384, u16::MAX - 1, u16::MAX]),
        3 => any::<u16>(),
    ]
}

fn ids() -> impl Strategy<Value = HandoffId> {
    prop_oneof![
        1 => Just(HandoffId::from_bytes([0; 16])),
        1 => Just(HandoffId::from_bytes([0xff; 16])),
        8 => any::<[u8; 16]>().prop_map(HandoffId::from_bytes),
    ]
}

/// Byte strings, mostly short, sometimes past the one-byte length prefix.
fn byte_strings() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..24),
        1 => vec(any::<u8>(), 100..400),
    ]
}

/// Arbitrary Unicode (any scalar value, NUL included), mostly short,
/// sometimes long enough for a two-byte length prefix.
fn strings() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "(?s).{0,12}",
        1 => "(?s).{40,90}",
    ]
}

fn u64_lists() -> impl Strategy<Value = Vec<u64>> {
    prop_oneof![
        1 => Just(Vec::new()),
        6 => vec(u64s(), 0..12),
        1 => vec(u64s(), 126..160),
    ]
}

fn string_lists() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        1 => Just(Vec::new()),
        4 => vec(strings(), 0..5),
        1 => vec("[a-z:/0-9.]{0,8}", 127..140),
    ]
}

fn sides() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Incumbent), Just(Side::Successor)]
}

/// Any message of any of the 14 kinds (each kind equally likely).
fn messages() -> impl Strategy<Value = Message> {
    prop_oneof![
        (sides(), u32s(), byte_strings(), u16s(), u16s(), u64s()).prop_map(
            |(role, pid, build_id, proto_min, proto_max, reserved)| Message::Hello {
                role,
                pid,
                build_id,
                proto_min,
                proto_max,
                capabilities: Capabilities { reserved },
            }
        ),
        (u16s(), ids()).prop_map(|(proto_version_chosen, handoff_id)| Message::HelloAck {
            proto_version_chosen,
            handoff_id,
        }),
        (ids(), u32s(), u64s(), u64s()).prop_map(
            |(handoff_id, successor_pid, deadline_ms, drain_grace_ms)| {
                Message::PrepareHandoff {
                    handoff_id,
                    successor_pid,
                    deadline_ms,
                    drain_grace_ms,
                }
            }
        ),
        (u32s(), any::<bool>()).prop_map(|(open_conns_remaining, accept_closed)| {
            Message::Drained {
                open_conns_remaining,
                accept_closed,
            }
        }),
        ids().prop_map(|handoff_id| Message::SealRequest { handoff_id }),
        (u32s(), u32s(), u64s()).prop_map(|(shards_sealed, shards_total, last_revision)| {
            Message::SealProgress {
                shards_sealed,
                shards_total,
                last_revision,
            }
        }),
        (ids(), u64_lists(), any::<[u8; 32]>()).prop_map(
            |(handoff_id, last_revision_per_shard, data_dir_fingerprint)| Message::SealComplete {
                handoff_id,
                last_revision_per_shard,
                data_dir_fingerprint,
            }
        ),
        (ids(), strings(), strings()).prop_map(|(handoff_id, error, partial_state)| {
            Message::SealFailed {
                handoff_id,
                error,
                partial_state,
            }
        }),
        ids().prop_map(|handoff_id| Message::Begin { handoff_id }),
        (ids(), string_lists(), any::<bool>(), u64_lists()).prop_map(
            |(handoff_id, listening_on, healthz_ok, advertised_revision_per_shard)| {
                Message::Ready {
                    handoff_id,
                    listening_on,
                    healthz_ok,
                    advertised_revision_per_shard,
                }
            }
        ),
        ids().prop_map(|handoff_id| Message::Commit { handoff_id }),
        (ids(), strings()).prop_map(|(handoff_id, reason)| Message::Abort { handoff_id, reason }),
        ids().prop_map(|handoff_id| Message::ResumeAfterAbort { handoff_id }),
        u64s().prop_map(|ts_ms| Message::Heartbeat { ts_ms }),
    ]
}

/// The frame's `proto_version`: mostly 1, sometimes anything.
/// Any message of the 5 kinds protocol v2 adds.
fn v2_messages() -> impl Strategy<Value = Message> {
    let item_kinds = prop_oneof![Just(ItemKind::Connection), Just(ItemKind::Descriptor)];
    prop_oneof![
        u32s().prop_map(|descriptors| Message::Capacity { descriptors }),
        (ids(), u32s()).prop_map(|(handoff_id, items_max)| Message::Transfer {
            handoff_id,
            items_max
        }),
        (ids(), u32s()).prop_map(|(handoff_id, items)| Message::Moving { handoff_id, items }),
        (
            u32s(),
            item_kinds,
            strings(),
            byte_strings(),
            byte_strings(),
            byte_strings()
        )
            .prop_map(
                |(seq, kind, name, unread, unwritten, state)| Message::Item {
                    seq,
                    kind,
                    name,
                    unread,
                    unwritten,
                    state,
                }
            ),
        (ids(), u32s()).prop_map(|(handoff_id, items)| Message::Adopted { handoff_id, items }),
    ]
}

fn versions() -> impl Strategy<Value = u16> {
    prop_oneof![3 => Just(1u16), 1 => u16s()]
}

fn journals() -> impl Strategy<Value = Journal> {
    (
        ids(),
        prop::sample::select(Phase::ALL.to_vec()),
        u32s(),
        prop::option::of(u32s()),
        u64s(),
    )
        .prop_map(
            |(handoff_id, phase, incumbent_pid, successor_pid, started_at_unix_ms)| Journal {
                handoff_id,
                phase,
                incumbent_pid,
                successor_pid,
                started_at_unix_ms,
            },
        )
}

// ---------------------------------------------------------------------------
// Conversions between our types and the reference's
// ---------------------------------------------------------------------------

fn id_to_theirs(id: HandoffId) -> theirs::HandoffId {
    theirs::HandoffId(id.0)
}

fn id_from_theirs(id: theirs::HandoffId) -> HandoffId {
    HandoffId(id.0)
}

fn side_to_theirs(side: Side) -> theirs::Side {
    match side {
        Side::Incumbent => theirs::Side::Incumbent,
        Side::Successor => theirs::Side::Successor,
    }
}

fn side_from_theirs(side: theirs::Side) -> Side {
    match side {
        theirs::Side::Incumbent => Side::Incumbent,
        theirs::Side::Successor => Side::Successor,
    }
}

/// Our message as the reference's, field by field.
fn to_theirs(message: &Message) -> theirs::Message {
    use theirs::Message as T;
    match message.clone() {
        Message::Capacity { .. }
        | Message::Transfer { .. }
        | Message::Moving { .. }
        | Message::Item { .. }
        | Message::Adopted { .. } => {
            unreachable!(
                "{:?} is a v2 message; the reference speaks v1",
                message.kind()
            )
        }
        Message::Hello {
            role,
            pid,
            build_id,
            proto_min,
            proto_max,
            capabilities,
        } => T::Hello {
            role: side_to_theirs(role),
            pid,
            build_id,
            proto_min,
            proto_max,
            capabilities: theirs::Capabilities {
                reserved: capabilities.reserved,
            },
        },
        Message::HelloAck {
            proto_version_chosen,
            handoff_id,
        } => T::HelloAck {
            proto_version_chosen,
            handoff_id: id_to_theirs(handoff_id),
        },
        Message::PrepareHandoff {
            handoff_id,
            successor_pid,
            deadline_ms,
            drain_grace_ms,
        } => T::PrepareHandoff {
            handoff_id: id_to_theirs(handoff_id),
            successor_pid,
            deadline_ms,
            drain_grace_ms,
        },
        Message::Drained {
            open_conns_remaining,
            accept_closed,
        } => T::Drained {
            open_conns_remaining,
            accept_closed,
        },
        Message::SealRequest { handoff_id } => T::SealRequest {
            handoff_id: id_to_theirs(handoff_id),
        },
        Message::SealProgress {
            shards_sealed,
            shards_total,
            last_revision,
        } => T::SealProgress {
            shards_sealed,
            shards_total,
            last_revision,
        },
        Message::SealComplete {
            handoff_id,
            last_revision_per_shard,
            data_dir_fingerprint,
        } => T::SealComplete {
            handoff_id: id_to_theirs(handoff_id),
            last_revision_per_shard,
            data_dir_fingerprint,
        },
        Message::SealFailed {
            handoff_id,
            error,
            partial_state,
        } => T::SealFailed {
            handoff_id: id_to_theirs(handoff_id),
            error,
            partial_state,
        },
        Message::Begin { handoff_id } => T::Begin {
            handoff_id: id_to_theirs(handoff_id),
        },
        Message::Ready {
            handoff_id,
            listening_on,
            healthz_ok,
            advertised_revision_per_shard,
        } => T::Ready {
            handoff_id: id_to_theirs(handoff_id),
            listening_on,
            healthz_ok,
            advertised_revision_per_shard,
        },
        Message::Commit { handoff_id } => T::Commit {
            handoff_id: id_to_theirs(handoff_id),
        },
        Message::Abort { handoff_id, reason } => T::Abort {
            handoff_id: id_to_theirs(handoff_id),
            reason,
        },
        Message::ResumeAfterAbort { handoff_id } => T::ResumeAfterAbort {
            handoff_id: id_to_theirs(handoff_id),
        },
        Message::Heartbeat { ts_ms } => T::Heartbeat { ts_ms },
    }
}

/// The reference's message as ours, field by field (the inverse of
/// [`to_theirs`]), so decoded values can be compared with `==`.
fn from_theirs(message: theirs::Message) -> Message {
    use theirs::Message as T;
    match message {
        T::Hello {
            role,
            pid,
            build_id,
            proto_min,
            proto_max,
            capabilities,
        } => Message::Hello {
            role: side_from_theirs(role),
            pid,
            build_id,
            proto_min,
            proto_max,
            capabilities: Capabilities {
                reserved: capabilities.reserved,
            },
        },
        T::HelloAck {
            proto_version_chosen,
            handoff_id,
        } => Message::HelloAck {
            proto_version_chosen,
            handoff_id: id_from_theirs(handoff_id),
        },
        T::PrepareHandoff {
            handoff_id,
            successor_pid,
            deadline_ms,
            drain_grace_ms,
        } => Message::PrepareHandoff {
            handoff_id: id_from_theirs(handoff_id),
            successor_pid,
            deadline_ms,
            drain_grace_ms,
        },
        T::Drained {
            open_conns_remaining,
            accept_closed,
        } => Message::Drained {
            open_conns_remaining,
            accept_closed,
        },
        T::SealRequest { handoff_id } => Message::SealRequest {
            handoff_id: id_from_theirs(handoff_id),
        },
        T::SealProgress {
            shards_sealed,
            shards_total,
            last_revision,
        } => Message::SealProgress {
            shards_sealed,
            shards_total,
            last_revision,
        },
        T::SealComplete {
            handoff_id,
            last_revision_per_shard,
            data_dir_fingerprint,
        } => Message::SealComplete {
            handoff_id: id_from_theirs(handoff_id),
            last_revision_per_shard,
            data_dir_fingerprint,
        },
        T::SealFailed {
            handoff_id,
            error,
            partial_state,
        } => Message::SealFailed {
            handoff_id: id_from_theirs(handoff_id),
            error,
            partial_state,
        },
        T::Begin { handoff_id } => Message::Begin {
            handoff_id: id_from_theirs(handoff_id),
        },
        T::Ready {
            handoff_id,
            listening_on,
            healthz_ok,
            advertised_revision_per_shard,
        } => Message::Ready {
            handoff_id: id_from_theirs(handoff_id),
            listening_on,
            healthz_ok,
            advertised_revision_per_shard,
        },
        T::Commit { handoff_id } => Message::Commit {
            handoff_id: id_from_theirs(handoff_id),
        },
        T::Abort { handoff_id, reason } => Message::Abort {
            handoff_id: id_from_theirs(handoff_id),
            reason,
        },
        T::ResumeAfterAbort { handoff_id } => Message::ResumeAfterAbort {
            handoff_id: id_from_theirs(handoff_id),
        },
        T::Heartbeat { ts_ms } => Message::Heartbeat { ts_ms },
    }
}

fn phase_to_theirs(phase: Phase) -> their_state::Phase {
    use their_state::Phase as T;
    match phase {
        Phase::Negotiating => T::Negotiating,
        Phase::Draining => T::Draining,
        Phase::Sealing => T::Sealing,
        Phase::AwaitingReady => T::AwaitingReady,
        Phase::Committed => T::Committed,
        Phase::ResumingAfterAbort => T::ResumingAfterAbort,
    }
}

fn phase_from_theirs(phase: their_state::Phase) -> Phase {
    use their_state::Phase as T;
    match phase {
        T::Negotiating => Phase::Negotiating,
        T::Draining => Phase::Draining,
        T::Sealing => Phase::Sealing,
        T::AwaitingReady => Phase::AwaitingReady,
        T::Committed => Phase::Committed,
        T::ResumingAfterAbort => Phase::ResumingAfterAbort,
    }
}

fn journal_to_theirs(j: &Journal) -> their_state::StateJournal {
    their_state::StateJournal {
        handoff_id: id_to_theirs(j.handoff_id),
        phase: phase_to_theirs(j.phase),
        incumbent_pid: j.incumbent_pid,
        successor_pid: j.successor_pid,
        started_at_unix_ms: j.started_at_unix_ms,
    }
}

fn journal_from_theirs(j: their_state::StateJournal) -> Journal {
    Journal {
        handoff_id: id_from_theirs(j.handoff_id),
        phase: phase_from_theirs(j.phase),
        incumbent_pid: j.incumbent_pid,
        successor_pid: j.successor_pid,
        started_at_unix_ms: j.started_at_unix_ms,
    }
}

// ---------------------------------------------------------------------------
// The reference's frame codec
// ---------------------------------------------------------------------------

fn their_encode(version: u16, message: &theirs::Message) -> Vec<u8> {
    let mut out = Vec::new();
    beyond::frame::write_message(&mut out, version, message).expect("the reference encodes");
    out
}

fn their_decode(bytes: &[u8]) -> (u16, theirs::Message) {
    let mut reader = bytes;
    let decoded =
        beyond::frame::read_message(&mut reader).expect("the reference decodes our frame");
    assert!(
        reader.is_empty(),
        "the reference left {} bytes of our frame unread",
        reader.len()
    );
    decoded
}

// ---------------------------------------------------------------------------
// The C ABI, called from Rust
// ---------------------------------------------------------------------------

/// A message owned through the C ABI, freed on drop.
struct CMessage(*mut handoff_message);

impl Drop for CMessage {
    fn drop(&mut self) {
        // SAFETY: the pointer came from handoff_message_new/decode and is
        // freed only here.
        unsafe { handoff_message_free(self.0) }
    }
}

/// Panic with the library's message unless `status` is `HANDOFF_OK`.
fn ok(what: &str, status: handoff_status, err: *mut handoff_error) {
    if status == handoff_status::HANDOFF_OK {
        assert!(err.is_null(), "{what}: an error object on success");
        return;
    }
    let message = if err.is_null() {
        String::from("(no error object)")
    } else {
        // SAFETY: a live error from the library; freed right after reading.
        unsafe {
            let text = CStr::from_ptr(handoff_error_message(err))
                .to_string_lossy()
                .into_owned();
            assert_eq!(handoff_error_status(err), status);
            handoff_error_free(err);
            text
        }
    };
    panic!("{what} failed with {status:?}: {message}");
}

/// Call a fallible C-ABI function with an error out-parameter and check it.
macro_rules! c_call {
    ($name:ident($($arg:expr),* $(,)?)) => {{
        let mut err: *mut handoff_error = ptr::null_mut();
        // SAFETY: the arguments follow the header's contract (valid message
        // pointers, buffers of the length passed, writable out-parameters).
        let status = unsafe { $name($($arg,)* &mut err) };
        ok(stringify!($name), status, err);
    }};
}

fn c_decode(bytes: &[u8]) -> (CMessage, usize) {
    let mut out: *mut handoff_message = ptr::null_mut();
    let mut consumed = 0usize;
    c_call!(handoff_message_decode(
        bytes.as_ptr(),
        bytes.len(),
        &mut out,
        &mut consumed
    ));
    assert!(!out.is_null());
    (CMessage(out), consumed)
}

fn c_encode(msg: &CMessage) -> Vec<u8> {
    // Ask for the size first (NULL buffer, capacity 0), then encode exactly.
    let mut needed = 0usize;
    let mut err: *mut handoff_error = ptr::null_mut();
    // SAFETY: a live message; NULL buffer with capacity 0 is a size query.
    let status =
        unsafe { handoff_message_encode(msg.0, ptr::null_mut(), 0, &mut needed, &mut err) };
    assert_eq!(status, handoff_status::HANDOFF_ERR_BUFFER_TOO_SMALL);
    // SAFETY: the error object of the failed call, ours to free.
    unsafe { handoff_error_free(err) };
    let mut buf = vec![0xeeu8; needed];
    let mut written = 0usize;
    c_call!(handoff_message_encode(
        msg.0,
        buf.as_mut_ptr(),
        buf.len(),
        &mut written
    ));
    assert_eq!(
        written, needed,
        "encode wrote other than the size it asked for"
    );
    buf
}

fn c_set_uint(msg: &CMessage, field: u32, value: u64) {
    c_call!(handoff_message_set_uint(msg.0, field, value));
}

fn c_set_bytes(msg: &CMessage, field: u32, bytes: &[u8]) {
    c_call!(handoff_message_set_bytes(
        msg.0,
        field,
        bytes.as_ptr(),
        bytes.len()
    ));
}

fn c_set_bool(msg: &CMessage, field: u32, value: bool) {
    c_call!(handoff_message_set_bool(msg.0, field, value));
}

fn c_set_id(msg: &CMessage, id: HandoffId) {
    c_set_bytes(msg, HANDOFF_FIELD_HANDOFF_ID, id.as_bytes());
}

fn c_push_uints(msg: &CMessage, field: u32, values: &[u64]) {
    for &value in values {
        c_call!(handoff_message_push_uint(msg.0, field, value));
    }
}

fn c_push_strings(msg: &CMessage, field: u32, values: &[String]) {
    for value in values {
        c_call!(handoff_message_push_bytes(
            msg.0,
            field,
            value.as_ptr(),
            value.len()
        ));
    }
}

/// Build `message` the way a C program does: `handoff_message_new` and one
/// setter per field.
fn c_build(version: u16, message: &Message) -> CMessage {
    let mut out: *mut handoff_message = ptr::null_mut();
    c_call!(handoff_message_new(message.kind().index(), &mut out));
    let msg = CMessage(out);
    c_call!(handoff_message_set_proto_version(msg.0, version));
    match message {
        Message::Hello {
            role,
            pid,
            build_id,
            proto_min,
            proto_max,
            capabilities,
        } => {
            c_set_uint(&msg, HANDOFF_FIELD_ROLE, role.index().into());
            c_set_uint(&msg, HANDOFF_FIELD_PID, (*pid).into());
            c_set_bytes(&msg, HANDOFF_FIELD_BUILD_ID, build_id);
            c_set_uint(&msg, HANDOFF_FIELD_PROTO_MIN, (*proto_min).into());
            c_set_uint(&msg, HANDOFF_FIELD_PROTO_MAX, (*proto_max).into());
            c_set_uint(
                &msg,
                HANDOFF_FIELD_CAPABILITIES_RESERVED,
                capabilities.reserved,
            );
        }
        Message::HelloAck {
            proto_version_chosen,
            handoff_id,
        } => {
            c_set_uint(
                &msg,
                HANDOFF_FIELD_PROTO_VERSION_CHOSEN,
                (*proto_version_chosen).into(),
            );
            c_set_id(&msg, *handoff_id);
        }
        Message::PrepareHandoff {
            handoff_id,
            successor_pid,
            deadline_ms,
            drain_grace_ms,
        } => {
            c_set_id(&msg, *handoff_id);
            c_set_uint(&msg, HANDOFF_FIELD_SUCCESSOR_PID, (*successor_pid).into());
            c_set_uint(&msg, HANDOFF_FIELD_DEADLINE_MS, *deadline_ms);
            c_set_uint(&msg, HANDOFF_FIELD_DRAIN_GRACE_MS, *drain_grace_ms);
        }
        Message::Drained {
            open_conns_remaining,
            accept_closed,
        } => {
            c_set_uint(
                &msg,
                HANDOFF_FIELD_OPEN_CONNS_REMAINING,
                (*open_conns_remaining).into(),
            );
            c_set_bool(&msg, HANDOFF_FIELD_ACCEPT_CLOSED, *accept_closed);
        }
        Message::SealProgress {
            shards_sealed,
            shards_total,
            last_revision,
        } => {
            c_set_uint(&msg, HANDOFF_FIELD_SHARDS_SEALED, (*shards_sealed).into());
            c_set_uint(&msg, HANDOFF_FIELD_SHARDS_TOTAL, (*shards_total).into());
            c_set_uint(&msg, HANDOFF_FIELD_LAST_REVISION, *last_revision);
        }
        Message::SealComplete {
            handoff_id,
            last_revision_per_shard,
            data_dir_fingerprint,
        } => {
            c_set_id(&msg, *handoff_id);
            c_push_uints(
                &msg,
                HANDOFF_FIELD_LAST_REVISION_PER_SHARD,
                last_revision_per_shard,
            );
            c_set_bytes(
                &msg,
                HANDOFF_FIELD_DATA_DIR_FINGERPRINT,
                data_dir_fingerprint,
            );
        }
        Message::SealFailed {
            handoff_id,
            error,
            partial_state,
        } => {
            c_set_id(&msg, *handoff_id);
            c_set_bytes(&msg, HANDOFF_FIELD_ERROR, error.as_bytes());
            c_set_bytes(&msg, HANDOFF_FIELD_PARTIAL_STATE, partial_state.as_bytes());
        }
        Message::Ready {
            handoff_id,
            listening_on,
            healthz_ok,
            advertised_revision_per_shard,
        } => {
            c_set_id(&msg, *handoff_id);
            c_push_strings(&msg, HANDOFF_FIELD_LISTENING_ON, listening_on);
            c_set_bool(&msg, HANDOFF_FIELD_HEALTHZ_OK, *healthz_ok);
            c_push_uints(
                &msg,
                HANDOFF_FIELD_ADVERTISED_REVISION_PER_SHARD,
                advertised_revision_per_shard,
            );
        }
        Message::Abort { handoff_id, reason } => {
            c_set_id(&msg, *handoff_id);
            c_set_bytes(&msg, HANDOFF_FIELD_REASON, reason.as_bytes());
        }
        Message::SealRequest { handoff_id }
        | Message::Begin { handoff_id }
        | Message::Commit { handoff_id }
        | Message::ResumeAfterAbort { handoff_id } => c_set_id(&msg, *handoff_id),
        Message::Heartbeat { ts_ms } => c_set_uint(&msg, HANDOFF_FIELD_TS_MS, *ts_ms),
        Message::Capacity { descriptors } => {
            c_set_uint(&msg, HANDOFF_FIELD_DESCRIPTORS, (*descriptors).into())
        }
        Message::Transfer {
            handoff_id,
            items_max,
        } => {
            c_set_id(&msg, *handoff_id);
            c_set_uint(&msg, HANDOFF_FIELD_ITEMS_MAX, (*items_max).into());
        }
        Message::Moving { handoff_id, items } | Message::Adopted { handoff_id, items } => {
            c_set_id(&msg, *handoff_id);
            c_set_uint(&msg, HANDOFF_FIELD_ITEMS, (*items).into());
        }
        Message::Item {
            seq,
            kind,
            name,
            unread,
            unwritten,
            state,
        } => {
            c_set_uint(&msg, HANDOFF_FIELD_SEQ, (*seq).into());
            c_set_uint(&msg, HANDOFF_FIELD_ITEM_KIND, kind.index().into());
            c_set_bytes(&msg, HANDOFF_FIELD_NAME, name.as_bytes());
            c_set_bytes(&msg, HANDOFF_FIELD_UNREAD, unread);
            c_set_bytes(&msg, HANDOFF_FIELD_UNWRITTEN, unwritten);
            c_set_bytes(&msg, HANDOFF_FIELD_STATE, state);
        }
    }
    msg
}

fn c_get_uint(msg: &CMessage, field: u32) -> u64 {
    let mut out = 0u64;
    c_call!(handoff_message_get_uint(msg.0, field, &mut out));
    out
}

fn c_get_u32(msg: &CMessage, field: u32) -> u32 {
    u32::try_from(c_get_uint(msg, field)).expect("a u32 field read back as a u32")
}

fn c_get_u16(msg: &CMessage, field: u32) -> u16 {
    u16::try_from(c_get_uint(msg, field)).expect("a u16 field read back as a u16")
}

fn c_get_bool(msg: &CMessage, field: u32) -> bool {
    let mut out = false;
    c_call!(handoff_message_get_bool(msg.0, field, &mut out));
    out
}

fn c_get_bytes(msg: &CMessage, field: u32) -> Vec<u8> {
    let (mut data, mut len) = (ptr::null::<u8>(), 0usize);
    c_call!(handoff_message_get_bytes(msg.0, field, &mut data, &mut len));
    if len == 0 {
        return Vec::new();
    }
    // SAFETY: the library lends `len` bytes at `data` while `msg` lives.
    unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
}

fn c_get_string(msg: &CMessage, field: u32) -> String {
    String::from_utf8(c_get_bytes(msg, field)).expect("a string field is UTF-8")
}

fn c_get_id(msg: &CMessage) -> HandoffId {
    let bytes = c_get_bytes(msg, HANDOFF_FIELD_HANDOFF_ID);
    HandoffId::from_bytes(bytes.try_into().expect("an id is 16 bytes"))
}

fn c_list_len(msg: &CMessage, field: u32) -> usize {
    let mut len = 0usize;
    c_call!(handoff_message_get_list_len(msg.0, field, &mut len));
    len
}

fn c_get_uints(msg: &CMessage, field: u32) -> Vec<u64> {
    (0..c_list_len(msg, field))
        .map(|i| {
            let mut out = 0u64;
            c_call!(handoff_message_get_list_uint(msg.0, field, i, &mut out));
            out
        })
        .collect()
}

fn c_get_strings(msg: &CMessage, field: u32) -> Vec<String> {
    (0..c_list_len(msg, field))
        .map(|i| {
            let (mut data, mut len) = (ptr::null::<u8>(), 0usize);
            c_call!(handoff_message_get_list_bytes(
                msg.0, field, i, &mut data, &mut len
            ));
            let bytes = if len == 0 {
                Vec::new()
            } else {
                // SAFETY: the library lends `len` bytes at `data` while `msg` lives.
                unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
            };
            String::from_utf8(bytes).expect("a list item is UTF-8")
        })
        .collect()
}

/// Read every field of `msg` the way a C program does, into our type.
fn c_read(msg: &CMessage) -> Frame {
    // SAFETY: a live message.
    let (kind, version) = unsafe {
        (
            handoff_message_kind(msg.0),
            handoff_message_proto_version(msg.0),
        )
    };
    let kind = MessageKind::from_index(kind).expect("a known kind");
    let message = match kind {
        MessageKind::Hello => Message::Hello {
            role: Side::from_index(c_get_u32(msg, HANDOFF_FIELD_ROLE)).expect("a known side"),
            pid: c_get_u32(msg, HANDOFF_FIELD_PID),
            build_id: c_get_bytes(msg, HANDOFF_FIELD_BUILD_ID),
            proto_min: c_get_u16(msg, HANDOFF_FIELD_PROTO_MIN),
            proto_max: c_get_u16(msg, HANDOFF_FIELD_PROTO_MAX),
            capabilities: Capabilities {
                reserved: c_get_uint(msg, HANDOFF_FIELD_CAPABILITIES_RESERVED),
            },
        },
        MessageKind::HelloAck => Message::HelloAck {
            proto_version_chosen: c_get_u16(msg, HANDOFF_FIELD_PROTO_VERSION_CHOSEN),
            handoff_id: c_get_id(msg),
        },
        MessageKind::PrepareHandoff => Message::PrepareHandoff {
            handoff_id: c_get_id(msg),
            successor_pid: c_get_u32(msg, HANDOFF_FIELD_SUCCESSOR_PID),
            deadline_ms: c_get_uint(msg, HANDOFF_FIELD_DEADLINE_MS),
            drain_grace_ms: c_get_uint(msg, HANDOFF_FIELD_DRAIN_GRACE_MS),
        },
        MessageKind::Drained => Message::Drained {
            open_conns_remaining: c_get_u32(msg, HANDOFF_FIELD_OPEN_CONNS_REMAINING),
            accept_closed: c_get_bool(msg, HANDOFF_FIELD_ACCEPT_CLOSED),
        },
        MessageKind::SealRequest => Message::SealRequest {
            handoff_id: c_get_id(msg),
        },
        MessageKind::SealProgress => Message::SealProgress {
            shards_sealed: c_get_u32(msg, HANDOFF_FIELD_SHARDS_SEALED),
            shards_total: c_get_u32(msg, HANDOFF_FIELD_SHARDS_TOTAL),
            last_revision: c_get_uint(msg, HANDOFF_FIELD_LAST_REVISION),
        },
        MessageKind::SealComplete => Message::SealComplete {
            handoff_id: c_get_id(msg),
            last_revision_per_shard: c_get_uints(msg, HANDOFF_FIELD_LAST_REVISION_PER_SHARD),
            data_dir_fingerprint: c_get_bytes(msg, HANDOFF_FIELD_DATA_DIR_FINGERPRINT)
                .try_into()
                .expect("a fingerprint is 32 bytes"),
        },
        MessageKind::SealFailed => Message::SealFailed {
            handoff_id: c_get_id(msg),
            error: c_get_string(msg, HANDOFF_FIELD_ERROR),
            partial_state: c_get_string(msg, HANDOFF_FIELD_PARTIAL_STATE),
        },
        MessageKind::Begin => Message::Begin {
            handoff_id: c_get_id(msg),
        },
        MessageKind::Ready => Message::Ready {
            handoff_id: c_get_id(msg),
            listening_on: c_get_strings(msg, HANDOFF_FIELD_LISTENING_ON),
            healthz_ok: c_get_bool(msg, HANDOFF_FIELD_HEALTHZ_OK),
            advertised_revision_per_shard: c_get_uints(
                msg,
                HANDOFF_FIELD_ADVERTISED_REVISION_PER_SHARD,
            ),
        },
        MessageKind::Commit => Message::Commit {
            handoff_id: c_get_id(msg),
        },
        MessageKind::Abort => Message::Abort {
            handoff_id: c_get_id(msg),
            reason: c_get_string(msg, HANDOFF_FIELD_REASON),
        },
        MessageKind::ResumeAfterAbort => Message::ResumeAfterAbort {
            handoff_id: c_get_id(msg),
        },
        MessageKind::Heartbeat => Message::Heartbeat {
            ts_ms: c_get_uint(msg, HANDOFF_FIELD_TS_MS),
        },
        MessageKind::Capacity => Message::Capacity {
            descriptors: c_get_u32(msg, HANDOFF_FIELD_DESCRIPTORS),
        },
        MessageKind::Transfer => Message::Transfer {
            handoff_id: c_get_id(msg),
            items_max: c_get_u32(msg, HANDOFF_FIELD_ITEMS_MAX),
        },
        MessageKind::Moving => Message::Moving {
            handoff_id: c_get_id(msg),
            items: c_get_u32(msg, HANDOFF_FIELD_ITEMS),
        },
        MessageKind::Item => Message::Item {
            seq: c_get_u32(msg, HANDOFF_FIELD_SEQ),
            kind: ItemKind::from_index(c_get_u32(msg, HANDOFF_FIELD_ITEM_KIND))
                .expect("a known item kind"),
            name: c_get_string(msg, HANDOFF_FIELD_NAME),
            unread: c_get_bytes(msg, HANDOFF_FIELD_UNREAD),
            unwritten: c_get_bytes(msg, HANDOFF_FIELD_UNWRITTEN),
            state: c_get_bytes(msg, HANDOFF_FIELD_STATE),
        },
        MessageKind::Adopted => Message::Adopted {
            handoff_id: c_get_id(msg),
            items: c_get_u32(msg, HANDOFF_FIELD_ITEMS),
        },
    };
    Frame { version, message }
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Keep failures in the output rather than in files next to the test.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(10_000))]

    /// Frames: byte-identical encodings, cross decoding, and the C ABI.
    #[test]
    fn frames_interoperate_with_the_reference(version in versions(), message in messages()) {
        let frame = Frame { version, message: message.clone() };
        let their_message = to_theirs(&message);

        // Encode: ours (both entry points) and theirs give the same bytes.
        let ours = encode_frame(version, &message).expect("we encode");
        let their_bytes = their_encode(version, &their_message);
        prop_assert_eq!(&ours, &their_bytes, "{:?}", message);
        let mut buf = vec![0u8; ours.len()];
        let written = encode_frame_into(version, &message, &mut buf).expect("we encode in place");
        prop_assert_eq!(&buf[..written], &ours[..]);

        // Decode each side's bytes with the other.
        let (their_version, decoded_by_them) = their_decode(&ours);
        prop_assert_eq!(their_version, version);
        prop_assert_eq!(from_theirs(decoded_by_them), message.clone());
        let (decoded_by_us, consumed) = decode_frame(&their_bytes).expect("we decode their frame");
        prop_assert_eq!(consumed, their_bytes.len());
        prop_assert_eq!(&decoded_by_us, &frame);

        // C ABI: decode their bytes, read every field back, re-encode.
        let (c_msg, c_consumed) = c_decode(&their_bytes);
        prop_assert_eq!(c_consumed, their_bytes.len());
        // SAFETY: a live message.
        prop_assert_eq!(unsafe { handoff_message_kind(c_msg.0) }, message.kind().index());
        prop_assert_eq!(&c_read(&c_msg), &frame);
        prop_assert_eq!(&c_encode(&c_msg), &their_bytes);

        // C ABI: build the message field by field, as C does, and encode.
        let built = c_build(version, &message);
        prop_assert_eq!(&c_read(&built), &frame);
        prop_assert_eq!(&c_encode(&built), &their_bytes);
    }

    /// v2 frames: the C ABI decodes, reads, builds and encodes the bytes our
    /// codec gives; in a v1 frame the same message is refused both ways.
    #[test]
    fn v2_frames_agree_with_the_c_abi(version in 2u16..=u16::MAX, message in v2_messages()) {
        let frame = Frame { version, message: message.clone() };
        let ours = encode_frame(version, &message).expect("we encode");
        let (decoded, consumed) = decode_frame(&ours).expect("we decode");
        prop_assert_eq!(consumed, ours.len());
        prop_assert_eq!(&decoded, &frame);

        let (c_msg, c_consumed) = c_decode(&ours);
        prop_assert_eq!(c_consumed, ours.len());
        prop_assert_eq!(&c_read(&c_msg), &frame);
        prop_assert_eq!(&c_encode(&c_msg), &ours);
        let built = c_build(version, &message);
        prop_assert_eq!(&c_read(&built), &frame);
        prop_assert_eq!(&c_encode(&built), &ours);

        prop_assert!(encode_frame(1, &message).is_err());
        let mut v1 = ours.clone();
        v1[4..6].copy_from_slice(&1u16.to_le_bytes());
        prop_assert!(
            matches!(decode_frame(&v1), Err(handoff::Error::UnknownMessage { version: 1, .. })),
            "{:?}", decode_frame(&v1)
        );
    }

    /// Journals: byte-identical records and cross decoding.
    #[test]
    fn journals_interoperate_with_the_reference(journal in journals()) {
        let ours = journal.to_bytes();
        let their_journal = journal_to_theirs(&journal);
        let their_bytes = postcard::to_allocvec(&their_journal).expect("the reference encodes");
        prop_assert_eq!(&ours, &their_bytes, "{:?}", journal);

        prop_assert_eq!(Journal::from_bytes(&their_bytes).expect("we decode theirs"), journal.clone());
        let (decoded_by_them, rest) = postcard::take_from_bytes::<their_state::StateJournal>(&ours)
            .expect("the reference decodes ours");
        prop_assert!(rest.is_empty(), "{} bytes left over", rest.len());
        prop_assert_eq!(journal_from_theirs(decoded_by_them), journal.clone());

        // The C struct round-trips the record.
        let c_record = handoff_journal::from(&journal);
        prop_assert_eq!(c_record.phase, journal.phase.index());
        prop_assert_eq!(c_record.has_successor_pid, journal.successor_pid.is_some());
    }
}

proptest! {
    // Each case fsyncs four times: a sample, not a sweep.
    #![proptest_config(config(48))]

    /// Journal files: the C ABI writes what the reference reads, and reads
    /// what the reference writes.
    #[test]
    fn journal_files_interoperate_through_the_c_abi(journal in journals()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ours_path = dir.path().join("ours/state.bin");
        let theirs_path = dir.path().join("theirs/state.bin");
        let c_ours = CString::new(ours_path.to_str().expect("UTF-8 path")).expect("no NUL");
        let c_theirs = CString::new(theirs_path.to_str().expect("UTF-8 path")).expect("no NUL");

        let record = handoff_journal::from(&journal);
        c_call!(handoff_journal_write(c_ours.as_ptr(), &record));
        let read_by_them = their_state::StateJournal::read(&ours_path)
            .expect("the reference reads our file")
            .expect("the file is there");
        prop_assert_eq!(journal_from_theirs(read_by_them), journal.clone());

        journal_to_theirs(&journal).write_atomic(&theirs_path).expect("the reference writes");
        prop_assert_eq!(
            std::fs::read(&theirs_path).expect("their file"),
            std::fs::read(&ours_path).expect("our file")
        );
        let mut read_by_us = handoff_journal {
            handoff_id: [0; 16],
            phase: u32::MAX,
            incumbent_pid: 0,
            has_successor_pid: false,
            successor_pid: 0,
            started_at_unix_ms: 0,
        };
        let mut found = false;
        c_call!(handoff_journal_read(c_theirs.as_ptr(), &mut read_by_us, &mut found));
        prop_assert!(found);
        prop_assert_eq!(read_by_us.handoff_id, *journal.handoff_id.as_bytes());
        prop_assert_eq!(read_by_us.phase, journal.phase.index());
        prop_assert_eq!(read_by_us.incumbent_pid, journal.incumbent_pid);
        prop_assert_eq!(
            read_by_us.has_successor_pid.then_some(read_by_us.successor_pid),
            journal.successor_pid
        );
        prop_assert_eq!(read_by_us.started_at_unix_ms, journal.started_at_unix_ms);
    }
}

/// The strategies reach every message kind, every phase and both successor
/// states (a guard against a strategy silently narrowing).
#[test]
fn strategies_cover_every_kind_and_phase() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut kinds = [0u32; 19];
    for _ in 0..2_000 {
        let message = messages().new_tree(&mut runner).expect("a value").current();
        kinds[message.kind().index() as usize] += 1;
        let message = v2_messages()
            .new_tree(&mut runner)
            .expect("a value")
            .current();
        kinds[message.kind().index() as usize] += 1;
    }
    assert!(kinds.iter().all(|&n| n > 0), "kinds reached: {kinds:?}");

    let mut phases = [0u32; 6];
    let (mut with, mut without) = (0, 0);
    for _ in 0..1_000 {
        let journal = journals().new_tree(&mut runner).expect("a value").current();
        phases[journal.phase.index() as usize] += 1;
        if journal.successor_pid.is_some() {
            with += 1;
        } else {
            without += 1;
        }
    }
    assert!(phases.iter().all(|&n| n > 0), "phases reached: {phases:?}");
    assert!(
        with > 0 && without > 0,
        "successor Some {with}, None {without}"
    );
}
