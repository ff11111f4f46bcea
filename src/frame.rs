//! Framing (DESIGN §2): `u32 LE frame_len | u16 LE proto_version | postcard
//! message`, where `frame_len` counts everything after itself.

use std::io::{ErrorKind, Read};

use crate::error::{Error, Result};
use crate::protocol::{Message, MessageKind};

/// Largest accepted `frame_len`, on read and on write.
pub const MAX_FRAME_BYTES: u32 = 1 << 20;
/// Bytes of the `frame_len` prefix.
pub const LEN_PREFIX: usize = 4;
/// Bytes of the `proto_version` field, the smallest valid `frame_len`.
pub const VERSION_FIELD: usize = 2;
const HEADER: usize = LEN_PREFIX + VERSION_FIELD;

/// One decoded frame: the message and the version its sender stamped on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub version: u16,
    pub message: Message,
}

/// Encode a whole frame into a new buffer.
pub fn encode_frame(version: u16, message: &Message) -> Result<Vec<u8>> {
    check_version(version, message)?;
    let payload = postcard::to_allocvec(message).map_err(|e| Error::Encode(e.to_string()))?;
    let frame_len = check_frame_len(VERSION_FIELD + payload.len())?;
    let mut out = Vec::with_capacity(LEN_PREFIX + frame_len as usize);
    out.extend_from_slice(&frame_len.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Encode a whole frame into `buf` without allocating, returning its length.
/// A buffer that is too small answers [`Error::BufferTooSmall`] with the size
/// needed.
pub fn encode_frame_into(version: u16, message: &Message, buf: &mut [u8]) -> Result<usize> {
    check_version(version, message)?;
    // Measure first, so a refused buffer is left untouched.
    let payload_len =
        postcard::serialize_with_flavor(message, postcard::ser_flavors::Size::default())
            .map_err(|e| Error::Encode(e.to_string()))?;
    let frame_len = check_frame_len(VERSION_FIELD + payload_len)?;
    let total = LEN_PREFIX + frame_len as usize;
    if buf.len() < total {
        return Err(Error::BufferTooSmall {
            needed: total,
            capacity: buf.len(),
        });
    }
    postcard::to_slice(message, &mut buf[HEADER..total])
        .map_err(|e| Error::Encode(e.to_string()))?;
    buf[..LEN_PREFIX].copy_from_slice(&frame_len.to_le_bytes());
    buf[LEN_PREFIX..HEADER].copy_from_slice(&version.to_le_bytes());
    Ok(total)
}

/// Whether a frame stamped `version` may carry `kind`. v1 messages go in a
/// frame of any version (as beyond-handoff allows, version 0 included);
/// later ones only in frames of their version or newer.
fn version_has(version: u16, kind: MessageKind) -> bool {
    let since = kind.since_version();
    since <= 1 || since <= version
}

/// A message never goes out in a frame of a version that lacks it: that is
/// how a v1 peer never sees a v2 message.
fn check_version(version: u16, message: &Message) -> Result<()> {
    let since = message.kind().since_version();
    if !version_has(version, message.kind()) {
        return Err(Error::Encode(format!(
            "{} is a protocol v{since} message, the frame is v{version}",
            message.kind().name()
        )));
    }
    Ok(())
}

fn too_large(len: u64) -> Error {
    Error::FrameTooLarge {
        len,
        limit: MAX_FRAME_BYTES,
    }
}

fn check_frame_len(len: usize) -> Result<u32> {
    if len > MAX_FRAME_BYTES as usize {
        return Err(too_large(len as u64));
    }
    Ok(len as u32)
}

/// Decode the frame at the start of `buf` and say how many bytes it took.
/// Bytes after the frame are left alone (they belong to the next one); an
/// incomplete frame answers [`Error::Incomplete`] with the total needed.
pub fn decode_frame(buf: &[u8]) -> Result<(Frame, usize)> {
    let total = frame_size(buf)?;
    if buf.len() < total {
        return Err(Error::Incomplete {
            needed: total,
            available: buf.len(),
        });
    }
    let version = u16::from_le_bytes([buf[LEN_PREFIX], buf[LEN_PREFIX + 1]]);
    let message = decode_payload(&buf[HEADER..total], version)?;
    Ok((Frame { version, message }, total))
}

/// The size of the whole frame that starts `buf`, checked against the
/// limits, as soon as its length prefix has arrived.
fn frame_size(buf: &[u8]) -> Result<usize> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Err(Error::Incomplete {
            needed: LEN_PREFIX,
            available: buf.len(),
        });
    };
    let frame_len = u32::from_le_bytes(prefix.try_into().expect("4-byte slice"));
    if frame_len < VERSION_FIELD as u32 {
        return Err(Error::FrameMalformed(frame_len));
    }
    if frame_len > MAX_FRAME_BYTES {
        return Err(too_large(frame_len.into()));
    }
    Ok(LEN_PREFIX + frame_len as usize)
}

/// Decode one message that must fill `payload` exactly.
fn decode_payload(payload: &[u8], version: u16) -> Result<Message> {
    // Name an unknown index plainly rather than as a generic postcard error;
    // a v2 message in a v1 frame is unknown to that version.
    if let Some(index) = leading_varint(payload) {
        let known = MessageKind::from_index(u32::try_from(index).unwrap_or(u32::MAX))
            .is_some_and(|kind| version_has(version, kind));
        if !known {
            return Err(Error::UnknownMessage { index, version });
        }
    }
    let (message, rest) =
        postcard::take_from_bytes::<Message>(payload).map_err(|e| Error::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::Decode(format!(
            "{} trailing bytes after the {} message",
            rest.len(),
            message.kind().name()
        )));
    }
    Ok(message)
}

/// The LEB128 varint at the start of `bytes`, if it is complete and fits.
fn leading_varint(bytes: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// An incremental frame reader: feed it bytes as they arrive, take whole
/// frames out. A partial frame stays buffered across reads and timeouts, so
/// the stream never loses its place.
///
/// A bad length prefix leaves the stream with no known frame boundary: the
/// reader then answers the same error for good and the connection should be
/// closed. A payload that fails to decode is consumed, so the next frame can
/// still be read.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    poisoned: Option<u32>,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append bytes received from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        // A poisoned stream has no frames left to find: keep nothing.
        if self.poisoned.is_some() {
            return;
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet taken as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        if let Some(frame_len) = self.poisoned {
            return Err(length_error(frame_len));
        }
        let pending = &self.buf[self.start..];
        let total = match frame_size(pending) {
            Ok(total) => total,
            Err(Error::Incomplete { .. }) => return Ok(None),
            Err(e) => {
                self.poisoned = Some(u32::from_le_bytes(
                    pending[..LEN_PREFIX].try_into().expect("4-byte slice"),
                ));
                return Err(e);
            }
        };
        if pending.len() < total {
            return Ok(None);
        }
        let decoded = decode_frame(&pending[..total]);
        self.start += total;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        decoded.map(|(frame, _)| Some(frame))
    }

    /// Read from `stream` until a whole frame is buffered. A read timeout
    /// (`WouldBlock`/`TimedOut`) answers [`Error::Timeout`] and keeps what
    /// arrived; EOF answers [`Error::PeerClosed`].
    pub fn read_frame<R: Read>(&mut self, stream: &mut R) -> Result<Frame> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(frame) = self.next_frame()? {
                return Ok(frame);
            }
            match stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(Error::PeerClosed {
                        mid_frame: self.buffered() > 0,
                    })
                }
                Ok(n) => self.feed(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(Error::Timeout)
                }
                Err(e) => return Err(Error::Stream(e)),
            }
        }
    }
}

fn length_error(frame_len: u32) -> Error {
    if frame_len < VERSION_FIELD as u32 {
        Error::FrameMalformed(frame_len)
    } else {
        too_large(frame_len.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::HandoffId;

    fn ready() -> Message {
        Message::Ready {
            handoff_id: HandoffId::random(),
            listening_on: vec!["tcp://127.0.0.1:1".into()],
            healthz_ok: true,
            advertised_revision_per_shard: vec![1, 2, 3],
        }
    }

    #[test]
    fn a_frame_split_byte_by_byte_survives_timeouts() {
        let message = ready();
        let bytes = encode_frame(1, &message).unwrap();
        let mut reader = FrameReader::new();
        for byte in &bytes[..bytes.len() - 1] {
            reader.feed(std::slice::from_ref(byte));
            assert!(reader.next_frame().unwrap().is_none());
        }
        reader.feed(&bytes[bytes.len() - 1..]);
        assert_eq!(reader.next_frame().unwrap().unwrap().message, message);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn two_frames_in_one_read_come_out_in_order() {
        let mut bytes = encode_frame(1, &Message::Heartbeat { ts_ms: 1 }).unwrap();
        bytes.extend(encode_frame(1, &Message::Heartbeat { ts_ms: 2 }).unwrap());
        let mut reader = FrameReader::new();
        reader.feed(&bytes);
        assert_eq!(
            reader.next_frame().unwrap().unwrap().message,
            Message::Heartbeat { ts_ms: 1 }
        );
        assert_eq!(
            reader.next_frame().unwrap().unwrap().message,
            Message::Heartbeat { ts_ms: 2 }
        );
        assert!(reader.next_frame().unwrap().is_none());
    }

    #[test]
    fn an_oversize_length_poisons_the_reader() {
        let mut reader = FrameReader::new();
        reader.feed(&(MAX_FRAME_BYTES + 1).to_le_bytes());
        assert!(matches!(
            reader.next_frame(),
            Err(Error::FrameTooLarge { .. })
        ));
        reader.feed(&encode_frame(1, &Message::Heartbeat { ts_ms: 1 }).unwrap());
        assert!(matches!(
            reader.next_frame(),
            Err(Error::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn a_bad_payload_is_skipped_and_the_stream_stays_in_sync() {
        let mut bytes = vec![3, 0, 0, 0, 1, 0, 99];
        bytes.extend(encode_frame(1, &Message::Heartbeat { ts_ms: 7 }).unwrap());
        let mut reader = FrameReader::new();
        reader.feed(&bytes);
        assert!(matches!(
            reader.next_frame(),
            Err(Error::UnknownMessage { index: 99, .. })
        ));
        assert_eq!(
            reader.next_frame().unwrap().unwrap().message,
            Message::Heartbeat { ts_ms: 7 }
        );
    }

    #[test]
    fn encoding_refuses_a_frame_over_the_limit() {
        let message = Message::Hello {
            role: crate::Side::Successor,
            pid: 1,
            build_id: vec![0; MAX_FRAME_BYTES as usize],
            proto_min: 1,
            proto_max: 1,
            capabilities: Default::default(),
        };
        assert!(matches!(
            encode_frame(1, &message),
            Err(Error::FrameTooLarge { .. })
        ));
        let mut buf = vec![0; 2 << 20];
        assert!(matches!(
            encode_frame_into(1, &message, &mut buf),
            Err(Error::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn encode_into_reports_the_size_it_needs() {
        let message = ready();
        let expected = encode_frame(1, &message).unwrap();
        let mut small = [0u8; 10];
        match encode_frame_into(1, &message, &mut small) {
            Err(Error::BufferTooSmall {
                needed,
                capacity: 10,
            }) => assert_eq!(needed, expected.len()),
            other => panic!("{other:?}"),
        }
        let mut buf = vec![0u8; expected.len()];
        assert_eq!(
            encode_frame_into(1, &message, &mut buf).unwrap(),
            expected.len()
        );
        assert_eq!(buf, expected);
    }
}
