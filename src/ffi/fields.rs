//! Field-level access to messages, so C, ctypes and cgo can build any
//! message and read any field through a dozen generic functions instead of
//! one function per field.

use super::{handoff_status, Failure};
use crate::protocol::{Capabilities, HandoffId, ItemKind, Message, MessageKind, Side};

// Message kinds: the wire index.
pub const HANDOFF_MSG_HELLO: u32 = 0;
pub const HANDOFF_MSG_HELLO_ACK: u32 = 1;
pub const HANDOFF_MSG_PREPARE_HANDOFF: u32 = 2;
pub const HANDOFF_MSG_DRAINED: u32 = 3;
pub const HANDOFF_MSG_SEAL_REQUEST: u32 = 4;
pub const HANDOFF_MSG_SEAL_PROGRESS: u32 = 5;
pub const HANDOFF_MSG_SEAL_COMPLETE: u32 = 6;
pub const HANDOFF_MSG_SEAL_FAILED: u32 = 7;
pub const HANDOFF_MSG_BEGIN: u32 = 8;
pub const HANDOFF_MSG_READY: u32 = 9;
pub const HANDOFF_MSG_COMMIT: u32 = 10;
pub const HANDOFF_MSG_ABORT: u32 = 11;
pub const HANDOFF_MSG_RESUME_AFTER_ABORT: u32 = 12;
pub const HANDOFF_MSG_HEARTBEAT: u32 = 13;
/// Protocol v2 (docs/protocol.md): N → S, the descriptors N can take in.
pub const HANDOFF_MSG_CAPACITY: u32 = 14;
/// Protocol v2: S → O, this handoff moves descriptors.
pub const HANDOFF_MSG_TRANSFER: u32 = 15;
/// Protocol v2: O → S → N, how many Item frames follow.
pub const HANDOFF_MSG_MOVING: u32 = 16;
/// Protocol v2: O → S → N, one moved descriptor's description.
pub const HANDOFF_MSG_ITEM: u32 = 17;
/// Protocol v2: N → S, how many items N adopted.
pub const HANDOFF_MSG_ADOPTED: u32 = 18;
/// What `handoff_message_kind(NULL)` answers.
pub const HANDOFF_MSG_INVALID: u32 = u32::MAX;

// `Hello.role`.
pub const HANDOFF_SIDE_INCUMBENT: u32 = 0;
pub const HANDOFF_SIDE_SUCCESSOR: u32 = 1;

// `Item.kind`.
pub const HANDOFF_ITEM_CONNECTION: u32 = 0;
pub const HANDOFF_ITEM_DESCRIPTOR: u32 = 1;

// Fields. The comment gives the accessor family and the kinds that have it.
/// bytes (exactly 16): every message but Hello, Drained, SealProgress, Heartbeat.
pub const HANDOFF_FIELD_HANDOFF_ID: u32 = 1;
/// uint (HANDOFF_SIDE_*): Hello.
pub const HANDOFF_FIELD_ROLE: u32 = 2;
/// uint (u32): Hello.
pub const HANDOFF_FIELD_PID: u32 = 3;
/// bytes: Hello.
pub const HANDOFF_FIELD_BUILD_ID: u32 = 4;
/// uint (u16): Hello.
pub const HANDOFF_FIELD_PROTO_MIN: u32 = 5;
/// uint (u16): Hello.
pub const HANDOFF_FIELD_PROTO_MAX: u32 = 6;
/// uint (u64): Hello.
pub const HANDOFF_FIELD_CAPABILITIES_RESERVED: u32 = 7;
/// uint (u16): HelloAck.
pub const HANDOFF_FIELD_PROTO_VERSION_CHOSEN: u32 = 8;
/// uint (u32): PrepareHandoff.
pub const HANDOFF_FIELD_SUCCESSOR_PID: u32 = 9;
/// uint (u64): PrepareHandoff.
pub const HANDOFF_FIELD_DEADLINE_MS: u32 = 10;
/// uint (u64): PrepareHandoff.
pub const HANDOFF_FIELD_DRAIN_GRACE_MS: u32 = 11;
/// uint (u32): Drained.
pub const HANDOFF_FIELD_OPEN_CONNS_REMAINING: u32 = 12;
/// bool: Drained.
pub const HANDOFF_FIELD_ACCEPT_CLOSED: u32 = 13;
/// uint (u32): SealProgress.
pub const HANDOFF_FIELD_SHARDS_SEALED: u32 = 14;
/// uint (u32): SealProgress.
pub const HANDOFF_FIELD_SHARDS_TOTAL: u32 = 15;
/// uint (u64): SealProgress.
pub const HANDOFF_FIELD_LAST_REVISION: u32 = 16;
/// list of uint (u64): SealComplete.
pub const HANDOFF_FIELD_LAST_REVISION_PER_SHARD: u32 = 17;
/// bytes (exactly 32): SealComplete.
pub const HANDOFF_FIELD_DATA_DIR_FINGERPRINT: u32 = 18;
/// bytes (UTF-8): SealFailed.
pub const HANDOFF_FIELD_ERROR: u32 = 19;
/// bytes (UTF-8): SealFailed.
pub const HANDOFF_FIELD_PARTIAL_STATE: u32 = 20;
/// list of bytes (UTF-8): Ready.
pub const HANDOFF_FIELD_LISTENING_ON: u32 = 21;
/// bool: Ready.
pub const HANDOFF_FIELD_HEALTHZ_OK: u32 = 22;
/// list of uint (u64): Ready.
pub const HANDOFF_FIELD_ADVERTISED_REVISION_PER_SHARD: u32 = 23;
/// bytes (UTF-8): Abort.
pub const HANDOFF_FIELD_REASON: u32 = 24;
/// uint (u64): Heartbeat.
pub const HANDOFF_FIELD_TS_MS: u32 = 25;
/// uint (u32): Capacity.
pub const HANDOFF_FIELD_DESCRIPTORS: u32 = 26;
/// uint (u32): Transfer.
pub const HANDOFF_FIELD_ITEMS_MAX: u32 = 27;
/// uint (u32): Moving, Adopted.
pub const HANDOFF_FIELD_ITEMS: u32 = 28;
/// uint (u32): Item.
pub const HANDOFF_FIELD_SEQ: u32 = 29;
/// uint (HANDOFF_ITEM_*): Item.
pub const HANDOFF_FIELD_ITEM_KIND: u32 = 30;
/// bytes (UTF-8): Item.
pub const HANDOFF_FIELD_NAME: u32 = 31;
/// bytes: Item.
pub const HANDOFF_FIELD_UNREAD: u32 = 32;
/// bytes: Item.
pub const HANDOFF_FIELD_UNWRITTEN: u32 = 33;
/// bytes: Item.
pub const HANDOFF_FIELD_STATE: u32 = 34;

/// Names of the fields, indexed by their constant.
const FIELD_NAMES: [&str; 35] = [
    "",
    "handoff_id",
    "role",
    "pid",
    "build_id",
    "proto_min",
    "proto_max",
    "capabilities.reserved",
    "proto_version_chosen",
    "successor_pid",
    "deadline_ms",
    "drain_grace_ms",
    "open_conns_remaining",
    "accept_closed",
    "shards_sealed",
    "shards_total",
    "last_revision",
    "last_revision_per_shard",
    "data_dir_fingerprint",
    "error",
    "partial_state",
    "listening_on",
    "healthz_ok",
    "advertised_revision_per_shard",
    "reason",
    "ts_ms",
    "descriptors",
    "items_max",
    "items",
    "seq",
    "kind",
    "name",
    "unread",
    "unwritten",
    "state",
];

/// A field of one message, borrowed for reading.
pub(super) enum SlotRef<'a> {
    Side(&'a Side),
    ItemKind(&'a ItemKind),
    U16(&'a u16),
    U32(&'a u32),
    U64(&'a u64),
    Bool(&'a bool),
    Id(&'a HandoffId),
    Fingerprint(&'a [u8; 32]),
    Bytes(&'a Vec<u8>),
    Str(&'a String),
    U64List(&'a Vec<u64>),
    StrList(&'a Vec<String>),
}

/// A field of one message, borrowed for writing.
pub(super) enum SlotMut<'a> {
    Side(&'a mut Side),
    ItemKind(&'a mut ItemKind),
    U16(&'a mut u16),
    U32(&'a mut u32),
    U64(&'a mut u64),
    Bool(&'a mut bool),
    Id(&'a mut HandoffId),
    Fingerprint(&'a mut [u8; 32]),
    Bytes(&'a mut Vec<u8>),
    Str(&'a mut String),
    U64List(&'a mut Vec<u64>),
    StrList(&'a mut Vec<String>),
}

/// The one table of which message has which field; expanded for shared and
/// for exclusive borrows alike.
macro_rules! select_field {
    ($message:expr, $field:expr, $Slot:ident) => {{
        use Message as M;
        match ($message, $field) {
            (M::Hello { role, .. }, HANDOFF_FIELD_ROLE) => Some($Slot::Side(role)),
            (M::Hello { pid, .. }, HANDOFF_FIELD_PID) => Some($Slot::U32(pid)),
            (M::Hello { build_id, .. }, HANDOFF_FIELD_BUILD_ID) => Some($Slot::Bytes(build_id)),
            (M::Hello { proto_min, .. }, HANDOFF_FIELD_PROTO_MIN) => Some($Slot::U16(proto_min)),
            (M::Hello { proto_max, .. }, HANDOFF_FIELD_PROTO_MAX) => Some($Slot::U16(proto_max)),
            (
                M::Hello {
                    capabilities: Capabilities { reserved },
                    ..
                },
                HANDOFF_FIELD_CAPABILITIES_RESERVED,
            ) => Some($Slot::U64(reserved)),
            (
                M::HelloAck {
                    proto_version_chosen,
                    ..
                },
                HANDOFF_FIELD_PROTO_VERSION_CHOSEN,
            ) => Some($Slot::U16(proto_version_chosen)),
            (M::PrepareHandoff { successor_pid, .. }, HANDOFF_FIELD_SUCCESSOR_PID) => {
                Some($Slot::U32(successor_pid))
            }
            (M::PrepareHandoff { deadline_ms, .. }, HANDOFF_FIELD_DEADLINE_MS) => {
                Some($Slot::U64(deadline_ms))
            }
            (M::PrepareHandoff { drain_grace_ms, .. }, HANDOFF_FIELD_DRAIN_GRACE_MS) => {
                Some($Slot::U64(drain_grace_ms))
            }
            (
                M::Drained {
                    open_conns_remaining,
                    ..
                },
                HANDOFF_FIELD_OPEN_CONNS_REMAINING,
            ) => Some($Slot::U32(open_conns_remaining)),
            (M::Drained { accept_closed, .. }, HANDOFF_FIELD_ACCEPT_CLOSED) => {
                Some($Slot::Bool(accept_closed))
            }
            (M::SealProgress { shards_sealed, .. }, HANDOFF_FIELD_SHARDS_SEALED) => {
                Some($Slot::U32(shards_sealed))
            }
            (M::SealProgress { shards_total, .. }, HANDOFF_FIELD_SHARDS_TOTAL) => {
                Some($Slot::U32(shards_total))
            }
            (M::SealProgress { last_revision, .. }, HANDOFF_FIELD_LAST_REVISION) => {
                Some($Slot::U64(last_revision))
            }
            (
                M::SealComplete {
                    last_revision_per_shard,
                    ..
                },
                HANDOFF_FIELD_LAST_REVISION_PER_SHARD,
            ) => Some($Slot::U64List(last_revision_per_shard)),
            (
                M::SealComplete {
                    data_dir_fingerprint,
                    ..
                },
                HANDOFF_FIELD_DATA_DIR_FINGERPRINT,
            ) => Some($Slot::Fingerprint(data_dir_fingerprint)),
            (M::SealFailed { error, .. }, HANDOFF_FIELD_ERROR) => Some($Slot::Str(error)),
            (M::SealFailed { partial_state, .. }, HANDOFF_FIELD_PARTIAL_STATE) => {
                Some($Slot::Str(partial_state))
            }
            (M::Ready { listening_on, .. }, HANDOFF_FIELD_LISTENING_ON) => {
                Some($Slot::StrList(listening_on))
            }
            (M::Ready { healthz_ok, .. }, HANDOFF_FIELD_HEALTHZ_OK) => {
                Some($Slot::Bool(healthz_ok))
            }
            (
                M::Ready {
                    advertised_revision_per_shard,
                    ..
                },
                HANDOFF_FIELD_ADVERTISED_REVISION_PER_SHARD,
            ) => Some($Slot::U64List(advertised_revision_per_shard)),
            (M::Abort { reason, .. }, HANDOFF_FIELD_REASON) => Some($Slot::Str(reason)),
            (M::Heartbeat { ts_ms }, HANDOFF_FIELD_TS_MS) => Some($Slot::U64(ts_ms)),
            (M::Capacity { descriptors }, HANDOFF_FIELD_DESCRIPTORS) => {
                Some($Slot::U32(descriptors))
            }
            (M::Transfer { items_max, .. }, HANDOFF_FIELD_ITEMS_MAX) => Some($Slot::U32(items_max)),
            (M::Moving { items, .. } | M::Adopted { items, .. }, HANDOFF_FIELD_ITEMS) => {
                Some($Slot::U32(items))
            }
            (M::Item { seq, .. }, HANDOFF_FIELD_SEQ) => Some($Slot::U32(seq)),
            (M::Item { kind, .. }, HANDOFF_FIELD_ITEM_KIND) => Some($Slot::ItemKind(kind)),
            (M::Item { name, .. }, HANDOFF_FIELD_NAME) => Some($Slot::Str(name)),
            (M::Item { unread, .. }, HANDOFF_FIELD_UNREAD) => Some($Slot::Bytes(unread)),
            (M::Item { unwritten, .. }, HANDOFF_FIELD_UNWRITTEN) => Some($Slot::Bytes(unwritten)),
            (M::Item { state, .. }, HANDOFF_FIELD_STATE) => Some($Slot::Bytes(state)),
            (
                M::HelloAck { handoff_id, .. }
                | M::PrepareHandoff { handoff_id, .. }
                | M::SealRequest { handoff_id }
                | M::SealComplete { handoff_id, .. }
                | M::SealFailed { handoff_id, .. }
                | M::Begin { handoff_id }
                | M::Ready { handoff_id, .. }
                | M::Commit { handoff_id }
                | M::Abort { handoff_id, .. }
                | M::ResumeAfterAbort { handoff_id }
                | M::Transfer { handoff_id, .. }
                | M::Moving { handoff_id, .. }
                | M::Adopted { handoff_id, .. },
                HANDOFF_FIELD_HANDOFF_ID,
            ) => Some($Slot::Id(handoff_id)),
            _ => None,
        }
    }};
}

fn no_such_field(kind: MessageKind, field: u32) -> Failure {
    let what = match FIELD_NAMES.get(field as usize) {
        Some(name) if field != 0 => format!("no field {name}"),
        _ => format!("no field with number {field}"),
    };
    Failure::new(
        handoff_status::HANDOFF_ERR_NO_SUCH_FIELD,
        format!("a {} message has {what}", kind.name()),
    )
}

pub(super) fn slot(message: &Message, field: u32) -> Result<SlotRef<'_>, Failure> {
    select_field!(message, field, SlotRef).ok_or_else(|| no_such_field(message.kind(), field))
}

pub(super) fn slot_mut(message: &mut Message, field: u32) -> Result<SlotMut<'_>, Failure> {
    let kind = message.kind();
    select_field!(message, field, SlotMut).ok_or_else(|| no_such_field(kind, field))
}

/// The error for an accessor used on a field of another type.
pub(super) fn wrong_type(field: u32, accessor: &str) -> Failure {
    let name = FIELD_NAMES.get(field as usize).copied().unwrap_or("?");
    Failure::new(
        handoff_status::HANDOFF_ERR_WRONG_FIELD_TYPE,
        format!("field {name} is not read or written with {accessor}"),
    )
}
