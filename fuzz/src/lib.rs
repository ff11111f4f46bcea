//! What each fuzz target checks, on arbitrary bytes. Shared with the corpus
//! replay of the test suite (tests/fuzz_regressions.rs includes this file as
//! a module), so an input the fuzzer once crashed on is replayed through the
//! very same code by `cargo test`.
//!
//! Beyond "no panic, no crash, no leak" (libFuzzer runs the targets under
//! AddressSanitizer and LeakSanitizer), every target checks properties:
//! decoded values re-encode canonically and decode to themselves, sizes
//! reported by errors are consistent, a frame reader gives the same results
//! whatever way the stream is cut, and the C ABI agrees with the Rust core.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::ptr::null_mut;

use handoff::ffi::*;
use handoff::frame::{decode_frame, encode_frame, FrameReader, LEN_PREFIX, MAX_FRAME_BYTES};
use handoff::{Error, Frame, Journal, Phase};

/// `decode_frame` on arbitrary bytes.
pub fn message_decode(data: &[u8]) {
    match decode_frame(data) {
        Ok((frame, consumed)) => {
            let prefix = u32::from_le_bytes(data[..LEN_PREFIX].try_into().unwrap());
            assert_eq!(consumed, LEN_PREFIX + prefix as usize);
            assert!(consumed <= data.len());
            assert_reencodes(&frame, consumed);
        }
        Err(Error::Incomplete { needed, available }) => {
            assert_eq!(available, data.len());
            assert!(needed > data.len(), "needed {needed} of {}", data.len());
            assert!(needed <= LEN_PREFIX + MAX_FRAME_BYTES as usize);
        }
        Err(
            Error::FrameMalformed(_)
            | Error::FrameTooLarge { .. }
            | Error::UnknownMessage { .. }
            | Error::Decode(_),
        ) => {}
        Err(other) => panic!("decode_frame answered an unexpected error: {other:?}"),
    }
}

/// A decoded frame encodes canonically (never longer than the `size` bytes
/// it was decoded from) and decodes back to itself.
fn assert_reencodes(frame: &Frame, size: usize) {
    let encoded = encode_frame(frame.version, &frame.message).expect("a decoded frame encodes");
    assert!(encoded.len() <= size, "{} > {size}", encoded.len());
    let (again, n) = decode_frame(&encoded).expect("a re-encoded frame decodes");
    assert_eq!(n, encoded.len());
    assert_eq!(&again, frame);
}

/// What a reader gave for one frame: the frame, or the error's text.
type Outcome = Result<Frame, String>;

/// Chunk sizes (1..=32, or all 1 when `seed` is 0) cutting `len` bytes.
fn chunk_sizes(seed: u8, len: usize) -> Vec<usize> {
    let mut state = u32::from(seed) | 0x5a00;
    let mut sizes = Vec::new();
    let mut left = len;
    while left > 0 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = if seed == 0 {
            1
        } else {
            1 + state as usize % 32
        };
        let size = size.min(left);
        sizes.push(size);
        left -= size;
    }
    sizes
}

/// Feed `stream` cut into `sizes`, taking every outcome after each feed,
/// until the stream is used up or a bad length poisons the reader.
fn drain(
    stream: &[u8],
    sizes: &[usize],
    mut feed: impl FnMut(&[u8]),
    mut next: impl FnMut() -> Option<Outcome>,
    mut buffered: impl FnMut() -> usize,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut at = 0;
    for &size in sizes {
        feed(&stream[at..at + size]);
        at += size;
        loop {
            let before = buffered();
            let Some(outcome) = next() else {
                assert_eq!(buffered(), before, "a reader that needs more dropped bytes");
                break;
            };
            let poisoned = is_length_error(&outcome);
            if !poisoned {
                // A whole frame (or a bad payload) was consumed from the buffer.
                assert!(buffered() + LEN_PREFIX + 2 <= before);
            }
            outcomes.push(outcome);
            if poisoned {
                // The error sticks, whatever comes next.
                feed(&[0, 0, 0, 0, 1, 0, 13, 0]);
                let again = next().expect("a poisoned reader keeps failing");
                assert_eq!(&again, outcomes.last().unwrap());
                return outcomes;
            }
        }
    }
    outcomes
}

fn is_length_error(outcome: &Outcome) -> bool {
    outcome
        .as_ref()
        .is_err_and(|e| e.starts_with("malformed frame") || e.starts_with("frame too large"))
}

fn rust_reader(stream: &[u8], sizes: &[usize]) -> Vec<Outcome> {
    let reader = std::cell::RefCell::new(FrameReader::new());
    drain(
        stream,
        sizes,
        |bytes| reader.borrow_mut().feed(bytes),
        || match reader.borrow_mut().next_frame() {
            Ok(None) => None,
            Ok(Some(frame)) => Some(Ok(frame)),
            Err(e) => Some(Err(e.to_string())),
        },
        || reader.borrow().buffered(),
    )
}

/// `FrameReader` on an arbitrary stream: the first byte picks how the rest
/// is cut into reads. Every cut gives the outcomes of the whole stream fed
/// at once (a partial frame is never lost nor misread), and every frame
/// re-encodes.
pub fn frame_reader(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let at_once: &[usize] = if stream.is_empty() {
        &[]
    } else {
        &[stream.len()]
    };
    let whole = rust_reader(stream, at_once);
    let cut = rust_reader(stream, &chunk_sizes(seed, stream.len()));
    assert_eq!(whole, cut, "cutting the stream changed what was read");
    for frame in whole.iter().flatten() {
        assert_reencodes(frame, MAX_FRAME_BYTES as usize + LEN_PREFIX);
    }
}

/// `Journal::from_bytes` on arbitrary bytes (what a corrupt journal file
/// holds): an error, or a record that re-encodes canonically.
pub fn journal_read(data: &[u8]) {
    match Journal::from_bytes(data) {
        Ok(journal) => {
            assert_eq!(
                Phase::from_index(journal.phase.index()),
                Some(journal.phase)
            );
            let bytes = journal.to_bytes();
            assert!(bytes.len() <= data.len());
            assert_eq!(Journal::from_bytes(&bytes).as_ref(), Ok(&journal));
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
}

// ---- the C ABI ---------------------------------------------------------

/// Field numbers to try, past both ends of `HANDOFF_FIELD_*`.
const FIELDS: std::ops::RangeInclusive<u32> = 0..=HANDOFF_FIELD_STATE + 1;

/// The message and error of one failed call, checked and freed.
fn take_error(status: handoff_status, err: *mut handoff_error) -> String {
    assert_ne!(status, handoff_status::HANDOFF_OK);
    assert_ne!(
        status,
        handoff_status::HANDOFF_ERR_PANIC,
        "a panic reached the boundary"
    );
    assert!(!err.is_null(), "a failure without an error object");
    // SAFETY: `err` is a live error object from the library, freed once here.
    unsafe {
        assert_eq!(handoff_error_status(err), status);
        let text = CStr::from_ptr(handoff_error_message(err))
            .to_str()
            .expect("error messages are UTF-8")
            .to_owned();
        handoff_error_free(err);
        text
    }
}

/// Run `call` with an error out-parameter: Ok, or the failure's status and text.
fn call(
    f: impl FnOnce(*mut *mut handoff_error) -> handoff_status,
) -> Result<(), (handoff_status, String)> {
    let mut err = null_mut();
    match f(&mut err) {
        handoff_status::HANDOFF_OK => {
            assert!(err.is_null(), "an error object on success");
            Ok(())
        }
        status => Err((status, take_error(status, err))),
    }
}

/// A C message owned by the check, freed on drop.
struct CMessage(*mut handoff_message);

impl Drop for CMessage {
    fn drop(&mut self) {
        // SAFETY: from the library, freed once.
        unsafe { handoff_message_free(self.0) }
    }
}

/// One field's value as read through the accessors.
#[derive(Debug)]
enum Value {
    Uint(u64),
    Bool(bool),
    Bytes(Vec<u8>),
    Uints(Vec<u64>),
    Strings(Vec<Vec<u8>>),
}

fn absent(status: handoff_status) -> bool {
    matches!(
        status,
        handoff_status::HANDOFF_ERR_NO_SUCH_FIELD | handoff_status::HANDOFF_ERR_WRONG_FIELD_TYPE
    )
}

/// Read `field` of `msg` with every accessor: at most one family answers.
fn read_field(msg: *const handoff_message, field: u32) -> Option<Value> {
    let mut values = Vec::new();
    let mut uint = 0u64;
    // SAFETY (every block below): `msg` is a live message; out-parameters
    // point to locals.
    match call(|e| unsafe { handoff_message_get_uint(msg, field, &mut uint, e) }) {
        Ok(()) => values.push(Value::Uint(uint)),
        Err((status, _)) => assert!(absent(status), "get_uint: {status:?}"),
    }
    let mut flag = false;
    match call(|e| unsafe { handoff_message_get_bool(msg, field, &mut flag, e) }) {
        Ok(()) => values.push(Value::Bool(flag)),
        Err((status, _)) => assert!(absent(status), "get_bool: {status:?}"),
    }
    let (mut data, mut len) = (std::ptr::null(), 0usize);
    match call(|e| unsafe { handoff_message_get_bytes(msg, field, &mut data, &mut len, e) }) {
        // SAFETY: the library lends `len` bytes at `data` while `msg` lives.
        Ok(()) => values.push(Value::Bytes(unsafe { borrowed(data, len) })),
        Err((status, _)) => assert!(absent(status), "get_bytes: {status:?}"),
    }
    let mut count = 0usize;
    match call(|e| unsafe { handoff_message_get_list_len(msg, field, &mut count, e) }) {
        Ok(()) => values.push(read_list(msg, field, count)),
        Err((status, _)) => assert!(absent(status), "get_list_len: {status:?}"),
    }
    assert!(
        values.len() <= 1,
        "field {field} answers several accessors: {values:?}"
    );
    values.pop()
}

/// # Safety
/// `data` points to `len` readable bytes (or is anything when `len` is 0).
unsafe fn borrowed(data: *const u8, len: usize) -> Vec<u8> {
    if len == 0 {
        return Vec::new();
    }
    assert!(!data.is_null());
    // SAFETY: per the contract above.
    unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
}

/// The `count` items of a list field, and the refusal of the next index
/// (which also tells an empty list's type).
fn read_list(msg: *const handoff_message, field: u32, count: usize) -> Value {
    let mut uints = Vec::new();
    let mut strings = Vec::new();
    let wrong = handoff_status::HANDOFF_ERR_WRONG_FIELD_TYPE;
    let past = handoff_status::HANDOFF_ERR_OUT_OF_RANGE;
    for index in 0..=count {
        let mut uint = 0u64;
        let (mut data, mut len) = (std::ptr::null(), 0usize);
        // SAFETY: as in `read_field`.
        let as_uint =
            call(|e| unsafe { handoff_message_get_list_uint(msg, field, index, &mut uint, e) });
        // SAFETY: as in `read_field`.
        let as_bytes = call(|e| unsafe {
            handoff_message_get_list_bytes(msg, field, index, &mut data, &mut len, e)
        });
        let statuses = (
            as_uint.map_err(|(s, _)| s),
            as_bytes.map_err(|(s, _)| s),
            index < count,
        );
        match statuses {
            (Ok(()), Err(s), true) if s == wrong => uints.push(uint),
            // SAFETY: lent by the library as in `read_field`.
            (Err(s), Ok(()), true) if s == wrong => strings.push(unsafe { borrowed(data, len) }),
            (Err(a), Err(b), false) if a == past && b == wrong => {
                assert!(strings.is_empty());
                return Value::Uints(uints);
            }
            (Err(a), Err(b), false) if a == wrong && b == past => {
                assert!(uints.is_empty());
                return Value::Strings(strings);
            }
            other => panic!("list field {field}, item {index} of {count}: {other:?}"),
        }
    }
    unreachable!("the loop returns at index == count")
}

/// Write `value` into `field` of `msg` through the setters.
fn write_field(msg: *mut handoff_message, field: u32, value: &Value) {
    // SAFETY (every call): `msg` is a live message, the data slices live
    // across the call.
    let set = match value {
        Value::Uint(v) => call(|e| unsafe { handoff_message_set_uint(msg, field, *v, e) }),
        Value::Bool(v) => call(|e| unsafe { handoff_message_set_bool(msg, field, *v, e) }),
        Value::Bytes(v) => {
            call(|e| unsafe { handoff_message_set_bytes(msg, field, v.as_ptr(), v.len(), e) })
        }
        Value::Uints(items) => call(|e| unsafe { handoff_message_clear_list(msg, field, e) })
            .and_then(|()| {
                items.iter().try_for_each(|v| {
                    call(|e| unsafe { handoff_message_push_uint(msg, field, *v, e) })
                })
            }),
        Value::Strings(items) => call(|e| unsafe { handoff_message_clear_list(msg, field, e) })
            .and_then(|()| {
                items.iter().try_for_each(|v| {
                    call(|e| unsafe {
                        handoff_message_push_bytes(msg, field, v.as_ptr(), v.len(), e)
                    })
                })
            }),
    };
    set.unwrap_or_else(|e| panic!("writing back field {field} = {value:?}: {e:?}"));
}

/// Encode through the C ABI: the size query, a buffer one byte short, then
/// the right size.
fn c_encode(msg: *const handoff_message) -> Vec<u8> {
    let mut needed = 0usize;
    // SAFETY: a live message; NULL with capacity 0 is the documented size query.
    let query = call(|e| unsafe { handoff_message_encode(msg, null_mut(), 0, &mut needed, e) });
    assert_eq!(
        query.map_err(|(s, _)| s),
        Err(handoff_status::HANDOFF_ERR_BUFFER_TOO_SMALL)
    );
    assert!(needed >= LEN_PREFIX + 2);
    let mut buf = vec![0u8; needed];
    let mut written = 0usize;
    // SAFETY: `buf` has `needed - 1` writable bytes.
    let short = call(|e| unsafe {
        handoff_message_encode(msg, buf.as_mut_ptr(), needed - 1, &mut written, e)
    });
    assert_eq!(
        short.map_err(|(s, _)| s),
        Err(handoff_status::HANDOFF_ERR_BUFFER_TOO_SMALL)
    );
    assert!(
        buf.iter().all(|&b| b == 0),
        "a refused buffer was written to"
    );
    // SAFETY: `buf` has `needed` writable bytes.
    call(|e| unsafe { handoff_message_encode(msg, buf.as_mut_ptr(), needed, &mut written, e) })
        .expect("encode into a big enough buffer");
    assert_eq!(written, needed);
    buf
}

/// Every field of a decoded C message, read, written into a fresh message
/// of the same kind, and encoded: the same bytes as the Rust encoder's.
fn check_c_message(msg: *mut handoff_message, frame: &Frame) {
    // SAFETY: a live message.
    let (kind, version) = unsafe {
        (
            handoff_message_kind(msg),
            handoff_message_proto_version(msg),
        )
    };
    assert_eq!(kind, frame.message.kind().index());
    assert_eq!(version, frame.version);
    let expected = encode_frame(frame.version, &frame.message).expect("a decoded frame encodes");
    assert_eq!(c_encode(msg), expected);

    let mut copy = CMessage(null_mut());
    // SAFETY: out-parameter to a local.
    call(|e| unsafe { handoff_message_new(kind, &mut copy.0, e) }).expect("new of a known kind");
    // SAFETY: a live message.
    call(|e| unsafe { handoff_message_set_proto_version(copy.0, version, e) }).unwrap();
    for field in FIELDS {
        if let Some(value) = read_field(msg, field) {
            write_field(copy.0, field, &value);
        }
    }
    assert_eq!(
        c_encode(copy.0),
        expected,
        "a message rebuilt field by field differs"
    );
}

/// The C frame reader, as a stream of outcomes (each frame re-encoded by C
/// and decoded by Rust, so it can be compared).
fn c_reader(stream: &[u8], sizes: &[usize]) -> Vec<Outcome> {
    let mut reader = null_mut();
    // SAFETY: out-parameter to a local.
    call(|e| unsafe { handoff_frame_reader_new(&mut reader, e) }).expect("reader");
    let outcomes = drain(
        stream,
        sizes,
        // SAFETY: a live reader and a live slice.
        |bytes| {
            call(|e| unsafe { handoff_frame_reader_feed(reader, bytes.as_ptr(), bytes.len(), e) })
                .expect("feed")
        },
        || {
            let mut msg = CMessage(null_mut());
            let mut got = false;
            // SAFETY: a live reader, out-parameters to locals.
            match call(|e| unsafe { handoff_frame_reader_next(reader, &mut msg.0, &mut got, e) }) {
                Ok(()) if !got => {
                    assert!(msg.0.is_null());
                    None
                }
                Ok(()) => {
                    let bytes = c_encode(msg.0);
                    let (frame, _) = decode_frame(&bytes).expect("C encodes what Rust decodes");
                    check_c_message(msg.0, &frame);
                    Some(Ok(frame))
                }
                Err((_, text)) => Some(Err(text)),
            }
        },
        // SAFETY: a live reader.
        || unsafe { handoff_frame_reader_buffered(reader) },
    );
    // SAFETY: from handoff_frame_reader_new, freed once.
    unsafe { handoff_frame_reader_free(reader) };
    outcomes
}

/// The C ABI's decoder and frame reader on arbitrary bytes: the same answers
/// as the Rust core's, every field readable and writable back, no leak.
pub fn ffi_decode(data: &[u8]) {
    let mut msg = CMessage(null_mut());
    let mut consumed = usize::MAX;
    // SAFETY: `data` is a live slice, out-parameters point to locals.
    let decoded = call(|e| unsafe {
        handoff_message_decode(data.as_ptr(), data.len(), &mut msg.0, &mut consumed, e)
    });
    match (decoded, decode_frame(data)) {
        (Ok(()), Ok((frame, size))) => {
            assert_eq!(consumed, size);
            check_c_message(msg.0, &frame);
        }
        (Err((status, text)), Err(error)) => {
            assert!(msg.0.is_null(), "out-parameter written on failure");
            assert_eq!(text, error.to_string());
            match error {
                Error::Incomplete { needed, .. } => {
                    assert_eq!(status, handoff_status::HANDOFF_ERR_INCOMPLETE);
                    assert_eq!(consumed, needed);
                }
                _ => assert_eq!(consumed, usize::MAX, "consumed written on failure"),
            }
        }
        (c, rust) => panic!("C and Rust disagree: {c:?} vs {rust:?}"),
    }

    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let sizes = chunk_sizes(seed, stream.len());
    assert_eq!(c_reader(stream, &sizes), rust_reader(stream, &sizes));
}
