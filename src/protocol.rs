//! Protocol messages: v1 (DESIGN §2) and the v2 messages that move
//! descriptors (DESIGN §8, docs/protocol.md).
//!
//! postcard encodes an enum variant as its index, so the order of
//! [`Message`]'s variants and of each variant's fields *is* the wire format.
//! Never reorder them; a new message or field means a new protocol version.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Lowest protocol version this build speaks.
pub const PROTO_MIN: u16 = 1;
/// Highest protocol version this build speaks. The supervisor offers it;
/// an incumbent or successor offers v2 only when its service moves or
/// adopts descriptors (docs/protocol.md, "Negotiation").
pub const PROTO_MAX: u16 = 2;
/// The version that adds the messages moving descriptors.
pub const PROTO_MOVES: u16 = 2;
/// Most descriptors one `sendmsg` may carry (the kernel's SCM_MAX_FD).
pub const MAX_ITEMS_PER_BATCH: usize = 253;
/// Longest Item name, in bytes of UTF-8.
pub const MAX_ITEM_NAME: usize = 255;
/// Most bytes an Item's name, unread, unwritten and state hold together
/// (so that its frame stays under the 1 MiB limit).
pub const MAX_ITEM_BYTES: usize = 1_048_000;

/// Whether an item's parts fit the limits of docs/protocol.md; the reason
/// when they do not.
pub fn check_item(name: &str, unread: &[u8], unwritten: &[u8], state: &[u8]) -> Result<(), String> {
    if name.len() > MAX_ITEM_NAME {
        return Err(format!(
            "an item's name is {} bytes, more than {MAX_ITEM_NAME}",
            name.len()
        ));
    }
    let total = name.len() + unread.len() + unwritten.len() + state.len();
    if total > MAX_ITEM_BYTES {
        return Err(format!(
            "item {name:?} holds {total} bytes (name, unread, unwritten, state), more than {MAX_ITEM_BYTES}"
        ));
    }
    Ok(())
}

/// Which side of a handoff a peer announces in `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Side {
    Incumbent,
    Successor,
}

impl Side {
    pub fn from_index(index: u32) -> Option<Side> {
        match index {
            0 => Some(Side::Incumbent),
            1 => Some(Side::Successor),
            _ => None,
        }
    }

    pub fn index(self) -> u32 {
        self as u32
    }
}

/// The id the supervisor gives a handoff in `HelloAck`: a random (v4) uuid,
/// on the wire as a 16-byte postcard byte string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct HandoffId(pub Uuid);

impl HandoffId {
    /// A fresh random id.
    pub fn random() -> Self {
        HandoffId(Uuid::new_v4())
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        HandoffId(Uuid::from_bytes(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl std::fmt::Display for HandoffId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Reserved for future feature negotiation; always zero in v1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capabilities {
    pub reserved: u64,
}

/// What a moved descriptor is (v2 `Item`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ItemKind {
    /// A client connection, with its carried input and output.
    Connection,
    /// Any other descriptor the service names (a memfd, a UDP socket, a file).
    Descriptor,
}

impl ItemKind {
    pub fn from_index(index: u32) -> Option<ItemKind> {
        match index {
            0 => Some(ItemKind::Connection),
            1 => Some(ItemKind::Descriptor),
            _ => None,
        }
    }

    pub fn index(self) -> u32 {
        self as u32
    }
}

/// One protocol message. The comment on each variant names its direction;
/// those after `Heartbeat` exist from v2 on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// O → S, N → S: identity and supported version range.
    Hello {
        role: Side,
        pid: u32,
        build_id: Vec<u8>,
        proto_min: u16,
        proto_max: u16,
        capabilities: Capabilities,
    },
    /// S → O, S → N: the chosen version and the handoff id.
    HelloAck {
        proto_version_chosen: u16,
        handoff_id: HandoffId,
    },
    /// S → O: start draining; `deadline_ms` is the time left for the handoff.
    PrepareHandoff {
        handoff_id: HandoffId,
        successor_pid: u32,
        deadline_ms: u64,
        drain_grace_ms: u64,
    },
    /// O → S: drained; in-flight work finished or handed back.
    Drained {
        open_conns_remaining: u32,
        accept_closed: bool,
    },
    /// S → O: seal the state and release the lock.
    SealRequest { handoff_id: HandoffId },
    /// O → S (optional): progress of a long seal.
    SealProgress {
        shards_sealed: u32,
        shards_total: u32,
        last_revision: u64,
    },
    /// O → S: sealed, lock released.
    SealComplete {
        handoff_id: HandoffId,
        last_revision_per_shard: Vec<u64>,
        data_dir_fingerprint: [u8; 32],
    },
    /// O → S: sealing failed; O still holds the lock and resumed.
    SealFailed {
        handoff_id: HandoffId,
        error: String,
        partial_state: String,
    },
    /// S → N: take the lock and start serving.
    Begin { handoff_id: HandoffId },
    /// N → S: serving; from here on N is authoritative.
    Ready {
        handoff_id: HandoffId,
        listening_on: Vec<String>,
        healthz_ok: bool,
        advertised_revision_per_shard: Vec<u64>,
    },
    /// S → O: exit after finishing the remaining reads.
    Commit { handoff_id: HandoffId },
    /// S → O or N: roll back.
    Abort {
        handoff_id: HandoffId,
        reason: String,
    },
    /// S → O: re-acquire the lock and resume after a post-seal abort.
    ResumeAfterAbort { handoff_id: HandoffId },
    /// Any direction: liveness; O echoes one it receives.
    Heartbeat { ts_ms: u64 },
    /// v2, N → S right after HelloAck: how many descriptors N can take in.
    Capacity { descriptors: u32 },
    /// v2, S → O just before PrepareHandoff: this handoff moves descriptors,
    /// at most `items_max` of them (N's capacity). Without it the drain
    /// closes connections as in v1.
    Transfer {
        handoff_id: HandoffId,
        items_max: u32,
    },
    /// v2, O → S and S → N: exactly `items` Item frames follow.
    Moving { handoff_id: HandoffId, items: u32 },
    /// v2, O → S and S → N: one descriptor, in the same `sendmsg`
    /// (SCM_RIGHTS), with what its new owner must know.
    Item {
        seq: u32,
        kind: ItemKind,
        name: String,
        /// Bytes read from a connection, not yet processed.
        unread: Vec<u8>,
        /// Bytes produced for a connection, not yet written.
        unwritten: Vec<u8>,
        /// The service's own state for the item.
        state: Vec<u8>,
    },
    /// v2, N → S just before Ready: how many items N adopted.
    Adopted { handoff_id: HandoffId, items: u32 },
}

/// The wire index of each message, as C and the bindings see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MessageKind {
    Hello = 0,
    HelloAck = 1,
    PrepareHandoff = 2,
    Drained = 3,
    SealRequest = 4,
    SealProgress = 5,
    SealComplete = 6,
    SealFailed = 7,
    Begin = 8,
    Ready = 9,
    Commit = 10,
    Abort = 11,
    ResumeAfterAbort = 12,
    Heartbeat = 13,
    Capacity = 14,
    Transfer = 15,
    Moving = 16,
    Item = 17,
    Adopted = 18,
}

impl MessageKind {
    pub const ALL: [MessageKind; 19] = [
        MessageKind::Hello,
        MessageKind::HelloAck,
        MessageKind::PrepareHandoff,
        MessageKind::Drained,
        MessageKind::SealRequest,
        MessageKind::SealProgress,
        MessageKind::SealComplete,
        MessageKind::SealFailed,
        MessageKind::Begin,
        MessageKind::Ready,
        MessageKind::Commit,
        MessageKind::Abort,
        MessageKind::ResumeAfterAbort,
        MessageKind::Heartbeat,
        MessageKind::Capacity,
        MessageKind::Transfer,
        MessageKind::Moving,
        MessageKind::Item,
        MessageKind::Adopted,
    ];

    /// The first protocol version that has this message.
    pub fn since_version(self) -> u16 {
        if self.index() > MessageKind::Heartbeat.index() {
            PROTO_MOVES
        } else {
            1
        }
    }

    pub fn from_index(index: u32) -> Option<MessageKind> {
        Self::ALL.get(index as usize).copied()
    }

    pub fn index(self) -> u32 {
        self as u32
    }

    /// The name, NUL-terminated for C (the one table of names).
    pub fn c_name(self) -> &'static std::ffi::CStr {
        match self {
            MessageKind::Hello => c"Hello",
            MessageKind::HelloAck => c"HelloAck",
            MessageKind::PrepareHandoff => c"PrepareHandoff",
            MessageKind::Drained => c"Drained",
            MessageKind::SealRequest => c"SealRequest",
            MessageKind::SealProgress => c"SealProgress",
            MessageKind::SealComplete => c"SealComplete",
            MessageKind::SealFailed => c"SealFailed",
            MessageKind::Begin => c"Begin",
            MessageKind::Ready => c"Ready",
            MessageKind::Commit => c"Commit",
            MessageKind::Abort => c"Abort",
            MessageKind::ResumeAfterAbort => c"ResumeAfterAbort",
            MessageKind::Heartbeat => c"Heartbeat",
            MessageKind::Capacity => c"Capacity",
            MessageKind::Transfer => c"Transfer",
            MessageKind::Moving => c"Moving",
            MessageKind::Item => c"Item",
            MessageKind::Adopted => c"Adopted",
        }
    }

    pub fn name(self) -> &'static str {
        self.c_name().to_str().expect("ASCII names")
    }

    /// The message of this kind with every field zero or empty, except the
    /// versions: a `Hello` announces 1..=1, a `HelloAck` chooses 1.
    pub fn default_message(self) -> Message {
        let id = HandoffId::default();
        match self {
            MessageKind::Hello => Message::Hello {
                role: Side::Incumbent,
                pid: 0,
                build_id: Vec::new(),
                proto_min: PROTO_MIN,
                proto_max: PROTO_MIN,
                capabilities: Capabilities::default(),
            },
            MessageKind::HelloAck => Message::HelloAck {
                proto_version_chosen: PROTO_MIN,
                handoff_id: id,
            },
            MessageKind::PrepareHandoff => Message::PrepareHandoff {
                handoff_id: id,
                successor_pid: 0,
                deadline_ms: 0,
                drain_grace_ms: 0,
            },
            MessageKind::Drained => Message::Drained {
                open_conns_remaining: 0,
                accept_closed: false,
            },
            MessageKind::SealRequest => Message::SealRequest { handoff_id: id },
            MessageKind::SealProgress => Message::SealProgress {
                shards_sealed: 0,
                shards_total: 0,
                last_revision: 0,
            },
            MessageKind::SealComplete => Message::SealComplete {
                handoff_id: id,
                last_revision_per_shard: Vec::new(),
                data_dir_fingerprint: [0; 32],
            },
            MessageKind::SealFailed => Message::SealFailed {
                handoff_id: id,
                error: String::new(),
                partial_state: String::new(),
            },
            MessageKind::Begin => Message::Begin { handoff_id: id },
            MessageKind::Ready => Message::Ready {
                handoff_id: id,
                listening_on: Vec::new(),
                healthz_ok: false,
                advertised_revision_per_shard: Vec::new(),
            },
            MessageKind::Commit => Message::Commit { handoff_id: id },
            MessageKind::Abort => Message::Abort {
                handoff_id: id,
                reason: String::new(),
            },
            MessageKind::ResumeAfterAbort => Message::ResumeAfterAbort { handoff_id: id },
            MessageKind::Heartbeat => Message::Heartbeat { ts_ms: 0 },
            MessageKind::Capacity => Message::Capacity { descriptors: 0 },
            MessageKind::Transfer => Message::Transfer {
                handoff_id: id,
                items_max: 0,
            },
            MessageKind::Moving => Message::Moving {
                handoff_id: id,
                items: 0,
            },
            MessageKind::Item => Message::Item {
                seq: 0,
                kind: ItemKind::Connection,
                name: String::new(),
                unread: Vec::new(),
                unwritten: Vec::new(),
                state: Vec::new(),
            },
            MessageKind::Adopted => Message::Adopted {
                handoff_id: id,
                items: 0,
            },
        }
    }
}

impl Message {
    /// A Heartbeat stamped with the wall clock now: what every role sends
    /// to show it is alive (one way to build it, for the three senders).
    pub fn heartbeat_now() -> Message {
        Message::Heartbeat {
            ts_ms: now_unix_ms(),
        }
    }

    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Hello { .. } => MessageKind::Hello,
            Message::HelloAck { .. } => MessageKind::HelloAck,
            Message::PrepareHandoff { .. } => MessageKind::PrepareHandoff,
            Message::Drained { .. } => MessageKind::Drained,
            Message::SealRequest { .. } => MessageKind::SealRequest,
            Message::SealProgress { .. } => MessageKind::SealProgress,
            Message::SealComplete { .. } => MessageKind::SealComplete,
            Message::SealFailed { .. } => MessageKind::SealFailed,
            Message::Begin { .. } => MessageKind::Begin,
            Message::Ready { .. } => MessageKind::Ready,
            Message::Commit { .. } => MessageKind::Commit,
            Message::Abort { .. } => MessageKind::Abort,
            Message::ResumeAfterAbort { .. } => MessageKind::ResumeAfterAbort,
            Message::Heartbeat { .. } => MessageKind::Heartbeat,
            Message::Capacity { .. } => MessageKind::Capacity,
            Message::Transfer { .. } => MessageKind::Transfer,
            Message::Moving { .. } => MessageKind::Moving,
            Message::Item { .. } => MessageKind::Item,
            Message::Adopted { .. } => MessageKind::Adopted,
        }
    }

    /// The handoff id the message carries, if its kind has one.
    pub fn handoff_id(&self) -> Option<HandoffId> {
        match self {
            Message::HelloAck { handoff_id, .. }
            | Message::PrepareHandoff { handoff_id, .. }
            | Message::SealRequest { handoff_id }
            | Message::SealComplete { handoff_id, .. }
            | Message::SealFailed { handoff_id, .. }
            | Message::Begin { handoff_id }
            | Message::Ready { handoff_id, .. }
            | Message::Commit { handoff_id }
            | Message::Abort { handoff_id, .. }
            | Message::ResumeAfterAbort { handoff_id }
            | Message::Transfer { handoff_id, .. }
            | Message::Moving { handoff_id, .. }
            | Message::Adopted { handoff_id, .. } => Some(*handoff_id),
            Message::Hello { .. }
            | Message::Drained { .. }
            | Message::SealProgress { .. }
            | Message::Heartbeat { .. }
            | Message::Capacity { .. }
            | Message::Item { .. } => None,
        }
    }
}

/// The highest version in both `min..=max` ranges, or a mismatch error.
pub fn negotiate_version(our: (u16, u16), theirs: (u16, u16)) -> Result<u16> {
    let low = our.0.max(theirs.0);
    let high = our.1.min(theirs.1);
    if low > high {
        return Err(Error::VersionMismatch {
            our_min: our.0,
            our_max: our.1,
            their_min: theirs.0,
            their_max: theirs.1,
        });
    }
    Ok(high)
}

/// A message's name, and its handoff id when it has one (for logs and
/// errors).
pub fn describe(message: &Message) -> String {
    match message.handoff_id() {
        Some(id) => format!("{} for handoff {id}", message.kind().name()),
        None => message.kind().name().to_string(),
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(negotiate_version((1, 3), (2, 5)).unwrap(), 3);
        assert_eq!(negotiate_version((1, 1), (1, 1)).unwrap(), 1);
        assert_eq!(negotiate_version((2, 9), (1, 4)).unwrap(), 4);
    }

    #[test]
    fn disjoint_ranges_are_a_version_mismatch() {
        let err = negotiate_version((1, 1), (2, 3)).unwrap_err();
        assert!(
            matches!(err, Error::VersionMismatch { their_min: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn kind_indices_follow_the_wire_order() {
        for (index, kind) in MessageKind::ALL.iter().enumerate() {
            assert_eq!(kind.index() as usize, index);
            assert_eq!(kind.default_message().kind(), *kind);
            let bytes = postcard::to_allocvec(&kind.default_message()).unwrap();
            assert_eq!(bytes[0] as usize, index, "{}", kind.name());
        }
    }
}
