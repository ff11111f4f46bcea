//! The golden bytes of tests/vectors/ (v1: produced by beyond-handoff
//! 0.1.4; v2: written by hand from docs/protocol.md): every message and
//! journal phase decodes to the values the vectors' README gives and
//! encodes back byte for byte.

use std::path::PathBuf;

use handoff::{
    decode_frame, encode_frame, Capabilities, Error, HandoffId, ItemKind, Journal, Message, Phase,
    Side,
};

fn vector(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn id() -> HandoffId {
    HandoffId::from_bytes([
        0x5a, 0x1e, 0x00, 0xff, 0x10, 0x20, 0x40, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0,
        0x01,
    ])
}

fn expected_frames() -> Vec<(&'static str, Message)> {
    let handoff_id = id();
    vec![
        (
            "00_hello.bin",
            Message::Hello {
                role: Side::Successor,
                pid: 4242,
                build_id: b"build-7f3a".to_vec(),
                proto_min: 1,
                proto_max: 1,
                capabilities: Capabilities { reserved: 0 },
            },
        ),
        (
            "01_hello_ack.bin",
            Message::HelloAck {
                proto_version_chosen: 1,
                handoff_id,
            },
        ),
        (
            "02_prepare_handoff.bin",
            Message::PrepareHandoff {
                handoff_id,
                successor_pid: 70000,
                deadline_ms: 300_000,
                drain_grace_ms: 60_000,
            },
        ),
        (
            "03_drained.bin",
            Message::Drained {
                open_conns_remaining: 3,
                accept_closed: true,
            },
        ),
        ("04_seal_request.bin", Message::SealRequest { handoff_id }),
        (
            "05_seal_progress.bin",
            Message::SealProgress {
                shards_sealed: 2,
                shards_total: 8,
                last_revision: 1 << 40,
            },
        ),
        (
            "06_seal_complete.bin",
            Message::SealComplete {
                handoff_id,
                last_revision_per_shard: vec![0, 1, 300, u64::MAX],
                data_dir_fingerprint: [0xab; 32],
            },
        ),
        (
            "07_seal_failed.bin",
            Message::SealFailed {
                handoff_id,
                error: "disk full: écrit".into(),
                partial_state: String::new(),
            },
        ),
        ("08_begin.bin", Message::Begin { handoff_id }),
        (
            "09_ready.bin",
            Message::Ready {
                handoff_id,
                listening_on: vec!["tcp://127.0.0.1:8080".into(), "unix:/run/x.sock".into()],
                healthz_ok: true,
                advertised_revision_per_shard: vec![7, 8],
            },
        ),
        ("10_commit.bin", Message::Commit { handoff_id }),
        (
            "11_abort.bin",
            Message::Abort {
                handoff_id,
                reason: "successor timed out".into(),
            },
        ),
        (
            "12_resume_after_abort.bin",
            Message::ResumeAfterAbort { handoff_id },
        ),
        (
            "13_heartbeat.bin",
            Message::Heartbeat {
                ts_ms: 1_764_000_000_123,
            },
        ),
    ]
}

#[test]
fn every_message_vector_decodes_and_reencodes_byte_for_byte() {
    let frames = expected_frames();
    assert_eq!(frames.len(), 14);
    for (index, (file, expected)) in frames.into_iter().enumerate() {
        let bytes = vector(&format!("frames/{file}"));
        let (frame, consumed) = decode_frame(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(consumed, bytes.len(), "{file}");
        assert_eq!(frame.version, 1, "{file}");
        assert_eq!(frame.message.kind().index() as usize, index, "{file}");
        assert_eq!(frame.message, expected, "{file}");
        assert_eq!(encode_frame(1, &expected).unwrap(), bytes, "{file}");
    }
}

fn expected_v2_frames() -> Vec<(&'static str, Message)> {
    let handoff_id = id();
    vec![
        (
            "14_capacity.bin",
            Message::Capacity {
                descriptors: 10_000,
            },
        ),
        (
            "15_transfer.bin",
            Message::Transfer {
                handoff_id,
                items_max: 65_535,
            },
        ),
        (
            "16_moving.bin",
            Message::Moving {
                handoff_id,
                items: 300,
            },
        ),
        (
            "17_item_connection.bin",
            Message::Item {
                seq: 7,
                kind: ItemKind::Connection,
                name: "kv".into(),
                unread: b"GET k".to_vec(),
                unwritten: b"VALUE v\n".to_vec(),
                state: vec![1, 0, 0xff],
            },
        ),
        (
            "17_item_descriptor.bin",
            Message::Item {
                seq: 0,
                kind: ItemKind::Descriptor,
                name: "snapshot".into(),
                unread: Vec::new(),
                unwritten: Vec::new(),
                state: b"memfd:table".to_vec(),
            },
        ),
        (
            "18_adopted.bin",
            Message::Adopted {
                handoff_id,
                items: 300,
            },
        ),
    ]
}

#[test]
fn every_v2_message_vector_decodes_and_reencodes_byte_for_byte() {
    for (file, expected) in expected_v2_frames() {
        let bytes = vector(&format!("v2/{file}"));
        let (frame, consumed) = decode_frame(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(consumed, bytes.len(), "{file}");
        assert_eq!(frame.version, 2, "{file}");
        let index: usize = file[..2].parse().unwrap();
        assert_eq!(frame.message.kind().index() as usize, index, "{file}");
        assert_eq!(frame.message, expected, "{file}");
        assert_eq!(encode_frame(2, &expected).unwrap(), bytes, "{file}");
    }
}

/// A v1 party never sees a v2 message: none is encoded in a v1 frame, and a
/// v1 frame that carries one is an unknown message, not a decoded one.
#[test]
fn a_v2_message_does_not_exist_in_a_v1_frame() {
    for (file, message) in expected_v2_frames() {
        let err = encode_frame(1, &message).unwrap_err();
        assert!(matches!(err, Error::Encode(_)), "{file}: {err}");
        let mut bytes = vector(&format!("v2/{file}"));
        bytes[4] = 1; // the frame's proto_version, little-endian
        let err = decode_frame(&bytes).unwrap_err();
        assert!(
            matches!(err, Error::UnknownMessage { version: 1, .. }),
            "{file}: {err}"
        );
    }
}

#[test]
fn every_journal_phase_vector_decodes_and_reencodes_byte_for_byte() {
    let files = [
        "0_negotiating.bin",
        "1_draining.bin",
        "2_sealing.bin",
        "3_awaiting_ready.bin",
        "4_committed.bin",
        "5_resuming_after_abort.bin",
    ];
    for (n, (file, phase)) in files.iter().zip(Phase::ALL).enumerate() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors/journal")
            .join(file);
        let expected = Journal {
            handoff_id: id(),
            phase,
            incumbent_pid: 1234 + n as u32,
            successor_pid: (n % 2 == 0).then_some(5678),
            started_at_unix_ms: 1_700_000_000_000,
        };
        assert_eq!(
            Journal::read(&path).unwrap(),
            Some(expected.clone()),
            "{file}"
        );
        assert_eq!(
            expected.to_bytes(),
            vector(&format!("journal/{file}")),
            "{file}"
        );
    }
}
