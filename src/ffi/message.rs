//! `handoff_message`: build, encode, decode and read protocol messages.

use super::args::{arg_bytes, arg_mut, arg_ref, Out};
use super::fields::{slot, slot_mut, wrong_type, SlotMut, SlotRef};
use super::{boundary, handoff_error, handoff_status, Failure, HANDOFF_MSG_INVALID};
use crate::frame::{decode_frame, encode_frame_into, Frame};
use crate::protocol::{HandoffId, ItemKind, MessageKind, Side, PROTO_MIN};
use crate::Error;

/// One protocol message and the protocol version of its frame. Created by
/// `handoff_message_new` or `handoff_message_decode`, owned by the caller,
/// freed with `handoff_message_free`. Not synchronised: use one message from
/// one thread at a time (reading it from several at once is fine).
pub struct handoff_message {
    pub(crate) frame: Frame,
}

impl handoff_message {
    pub(crate) fn boxed(frame: Frame) -> *mut handoff_message {
        Box::into_raw(Box::new(handoff_message { frame }))
    }
}

/// A new message of `kind` (`HANDOFF_MSG_*`) with every field zero or empty,
/// except the versions: a Hello announces 1..=1 and a HelloAck chooses 1.
/// Frames are encoded with protocol version 1, or 2 for a kind that exists
/// only from v2 on (a v2 message is never encoded in a v1 frame: see
/// `handoff_message_set_proto_version`). Unknown kinds answer
/// `HANDOFF_ERR_INVALID_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn handoff_message_new(
    kind: u32,
    out: *mut *mut handoff_message,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        let out = Out::new(out, "out")?;
        let kind = MessageKind::from_index(kind)
            .ok_or_else(|| Failure::invalid(format!("unknown message kind {kind} (0..=18)")))?;
        out.write(handoff_message::boxed(Frame {
            version: PROTO_MIN.max(kind.since_version()),
            message: kind.default_message(),
        }));
        Ok(())
    })
}

/// Decode the frame at the start of `buf` (`len` bytes) into a new message
/// and set `*consumed` to the frame's size; bytes after it are left alone.
/// An incomplete frame answers `HANDOFF_ERR_INCOMPLETE` and sets
/// `*consumed` to the number of bytes needed in all. The message belongs to
/// the caller (`handoff_message_free`).
#[no_mangle]
pub unsafe extern "C" fn handoff_message_decode(
    buf: *const u8,
    len: usize,
    out: *mut *mut handoff_message,
    consumed: *mut usize,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        let out = Out::new(out, "out")?;
        let consumed = Out::new(consumed, "consumed")?;
        // SAFETY: `buf` points to `len` readable bytes (header contract).
        let bytes = unsafe { arg_bytes(buf, len, "buf") }?;
        match decode_frame(bytes) {
            Ok((frame, size)) => {
                out.write(handoff_message::boxed(frame));
                consumed.write(size);
                Ok(())
            }
            Err(e @ Error::Incomplete { needed, .. }) => {
                consumed.write(needed);
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// Encode `msg` as a whole frame into `buf` (`cap` bytes) and set `*needed`
/// to the bytes written. If `cap` is too small (NULL `buf` with `cap` 0 is a
/// size query) it answers `HANDOFF_ERR_BUFFER_TOO_SMALL` and sets `*needed`
/// to the size required.
#[no_mangle]
pub unsafe extern "C" fn handoff_message_encode(
    msg: *const handoff_message,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live message from this library (header contract).
        let msg = unsafe { arg_ref(msg, "msg") }?;
        let needed = Out::new(needed, "needed")?;
        let buf: &mut [u8] = if buf.is_null() {
            if cap != 0 {
                return Err(Failure::new(
                    handoff_status::HANDOFF_ERR_NULL_POINTER,
                    "buf must not be NULL when cap is not 0",
                ));
            }
            &mut []
        } else {
            // SAFETY: `buf` points to `cap` writable bytes (header contract).
            unsafe { std::slice::from_raw_parts_mut(buf, cap) }
        };
        match encode_frame_into(msg.frame.version, &msg.frame.message, buf) {
            Ok(written) => {
                needed.write(written);
                Ok(())
            }
            Err(e @ Error::BufferTooSmall { needed: size, .. }) => {
                needed.write(size);
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// The message's kind, its wire index (`HANDOFF_MSG_*`: 0..13 in v1, 14..18 in v2);
/// `HANDOFF_MSG_INVALID` for NULL.
#[no_mangle]
pub unsafe extern "C" fn handoff_message_kind(msg: *const handoff_message) -> u32 {
    // SAFETY: NULL or a live message from this library.
    unsafe { msg.as_ref() }.map_or(HANDOFF_MSG_INVALID, |m| m.frame.message.kind().index())
}

/// The name of a message kind (`"SealComplete"`), NULL for an unknown kind.
/// Static; never free it.
#[no_mangle]
pub extern "C" fn handoff_message_kind_name(kind: u32) -> *const std::ffi::c_char {
    MessageKind::from_index(kind).map_or(std::ptr::null(), |k| k.c_name().as_ptr())
}

/// The protocol version of the message's frame (decoded, or the one it will
/// be encoded with); 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn handoff_message_proto_version(msg: *const handoff_message) -> u16 {
    // SAFETY: NULL or a live message from this library.
    unsafe { msg.as_ref() }.map_or(0, |m| m.frame.version)
}

/// Set the protocol version the message will be encoded with. Encoding a
/// protocol-v2 kind with version 1 fails (`HANDOFF_ERR_ENCODE`).
#[no_mangle]
pub unsafe extern "C" fn handoff_message_set_proto_version(
    msg: *mut handoff_message,
    version: u16,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live message from this library, not used elsewhere now.
        unsafe { arg_mut(msg, "msg") }?.frame.version = version;
        Ok(())
    })
}

/// Free a message. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn handoff_message_free(msg: *mut handoff_message) {
    if !msg.is_null() {
        // SAFETY: `msg` came from `Box::into_raw` in this library and the
        // caller gives up its only reference.
        drop(unsafe { Box::from_raw(msg) });
    }
}

/// Run `read` on field `field` of `msg`.
unsafe fn read_field(
    msg: *const handoff_message,
    field: u32,
    err: *mut *mut handoff_error,
    read: impl FnOnce(SlotRef<'_>) -> Result<(), Failure>,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live message from this library (header contract).
        let msg = unsafe { arg_ref(msg, "msg") }?;
        read(slot(&msg.frame.message, field)?)
    })
}

/// Run `write` on field `field` of `msg`.
unsafe fn write_field(
    msg: *mut handoff_message,
    field: u32,
    err: *mut *mut handoff_error,
    write: impl FnOnce(SlotMut<'_>) -> Result<(), Failure>,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live message from this library, not used elsewhere now.
        let msg = unsafe { arg_mut(msg, "msg") }?;
        write(slot_mut(&mut msg.frame.message, field)?)
    })
}

/// Read an integer field (`role`, pids, versions, counters, times).
#[no_mangle]
pub unsafe extern "C" fn handoff_message_get_uint(
    msg: *const handoff_message,
    field: u32,
    out: *mut u64,
    err: *mut *mut handoff_error,
) -> handoff_status {
    // SAFETY: forwarded header contract.
    unsafe {
        read_field(msg, field, err, |slot| {
            let out = Out::new(out, "out")?;
            out.write(match slot {
                SlotRef::Side(side) => side.index().into(),
                SlotRef::ItemKind(kind) => kind.index().into(),
                SlotRef::U16(v) => (*v).into(),
                SlotRef::U32(v) => (*v).into(),
                SlotRef::U64(v) => *v,
                _ => return Err(wrong_type(field, "handoff_message_get_uint")),
            });
            Ok(())
        })
    }
}

/// Write an integer field. A value too large for the field (a u16 version,
/// a u32 pid) or a role other than `HANDOFF_SIDE_*` answers
/// `HANDOFF_ERR_INVALID_ARGUMENT` and leaves the field as it was.
#[no_mangle]
pub unsafe extern "C" fn handoff_message_set_uint(
    msg: *mut handoff_message,
    field: u32,
    value: u64,
    err: *mut *mut handoff_error,
) -> handoff_status {
    let too_big =
        |max: u64| Failure::invalid(format!("{value} does not fit the field (at most {max})"));
    // SAFETY: forwarded header contract.
    unsafe {
        write_field(msg, field, err, |slot| {
            match slot {
                SlotMut::Side(side) => {
                    *side = u32::try_from(value)
                        .ok()
                        .and_then(Side::from_index)
                        .ok_or_else(|| Failure::invalid(format!("unknown role {value} (0 or 1)")))?
                }
                SlotMut::ItemKind(kind) => {
                    *kind = u32::try_from(value)
                        .ok()
                        .and_then(ItemKind::from_index)
                        .ok_or_else(|| {
                            Failure::invalid(format!("unknown item kind {value} (0 or 1)"))
                        })?
                }
                SlotMut::U16(v) => {
                    *v = u16::try_from(value).map_err(|_| too_big(u16::MAX.into()))?
                }
                SlotMut::U32(v) => {
                    *v = u32::try_from(value).map_err(|_| too_big(u32::MAX.into()))?
                }
                SlotMut::U64(v) => *v = value,
                _ => return Err(wrong_type(field, "handoff_message_set_uint")),
            }
            Ok(())
        })
    }
}

/// Read a boolean field (`accept_closed`, `healthz_ok`).
#[no_mangle]
pub unsafe extern "C" fn handoff_message_get_bool(
    msg: *const handoff_message,
    field: u32,
    out: *mut bool,
    err: *mut *mut handoff_error,
) -> handoff_status {
    // SAFETY: forwarded header contract.
    unsafe {
        read_field(msg, field, err, |slot| {
            let out = Out::new(out, "out")?;
            let SlotRef::Bool(v) = slot else {
                return Err(wrong_type(field, "handoff_message_get_bool"));
            };
            out.write(*v);
            Ok(())
        })
    }
}

/// Write a boolean field.
#[no_mangle]
pub unsafe extern "C" fn handoff_message_set_bool(
    msg: *mut handoff_message,
    field: u32,
    value: bool,
    err: *mut *mut handoff_error,
) -> handoff_status {
    // SAFETY: forwarded header contract.
    unsafe {
        write_field(msg, field, err, |slot| {
            let SlotMut::Bool(v) = slot else {
                return Err(wrong_type(field, "handoff_message_set_bool"));
            };
            *v = value;
            Ok(())
        })
    }
}

fn bytes_of<'a>(slot: &SlotRef<'a>) -> Option<&'a [u8]> {
    match *slot {
        SlotRef::Id(id) => Some(id.as_bytes()),
        SlotRef::Fingerprint(fp) => Some(fp),
        SlotRef::Bytes(bytes) => Some(bytes),
        SlotRef::Str(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// Read a byte or string field (`handoff_id`, `build_id`,
/// `data_dir_fingerprint`, `error`, `partial_state`, `reason`): `*data`
/// points into the message (no NUL terminator; valid until the message is
/// changed or freed), `*len` is its length.
#[no_mangle]
pub unsafe extern "C" fn handoff_message_get_bytes(
    msg: *const handoff_message,
    field: u32,
    data: *mut *const u8,
    len: *mut usize,
    err: *mut *mut handoff_error,
) -> handoff_status {
    // SAFETY: forwarded header contract.
    unsafe {
        read_field(msg, field, err, |slot| {
            let (data, len) = (Out::new(data, "data")?, Out::new(len, "len")?);
            let bytes =
                bytes_of(&slot).ok_or_else(|| wrong_type(field, "handoff_message_get_bytes"))?;
            data.write(bytes.as_ptr());
            len.write(bytes.len());
            Ok(())
        })
    }
}

fn utf8(bytes: &[u8]) -> Result<String, Failure> {
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        Failure::new(
            handoff_status::HANDOFF_ERR_INVALID_UTF8,
            format!("string is not valid UTF-8 ({e})"),
        )
    })
}

fn exact<const N: usize>(bytes: &[u8], field: u32) -> Result<[u8; N], Failure> {
    bytes.try_into().map_err(|_| {
        let name = if field == super::HANDOFF_FIELD_HANDOFF_ID {
            "a handoff id"
        } else {
            "the field"
        };
        Failure::invalid(format!(
            "{name} takes exactly {N} bytes, not {}",
            bytes.len()
        ))
    })
}

/// Write a byte or string field from `len` bytes at `data` (copied; NULL is
/// allowed with `len` 0). A handoff id takes exactly 16 bytes, a fingerprint
/// exactly 32; strings must be UTF-8 (`HANDOFF_ERR_INVALID_UTF8`).
#[no_mangle]
pub unsafe extern "C" fn handoff_message_set_bytes(
    msg: *mut handoff_message,
    field: u32,
    data: *const u8,
    len: usize,
    err: *mut *mut handoff_error,
) -> handoff_status {
    // SAFETY: forwarded header contract; `data` holds `len` readable bytes.
    unsafe {
        write_field(msg, field, err, |slot| {
            let bytes = arg_bytes(data, len, "data")?;
            match slot {
                SlotMut::Id(id) => *id = HandoffId::from_bytes(exact(bytes, field)?),
                SlotMut::Fingerprint(fp) => *fp = exact(bytes, field)?,
                SlotMut::Bytes(v) => *v = bytes.to_vec(),
                SlotMut::Str(s) => *s = utf8(bytes)?,
                _ => return Err(wrong_type(field, "handoff_message_set_bytes")),
            }
            Ok(())
        })
    }
}

fn list_len(slot: &SlotRef<'_>) -> Option<usize> {
    match slot {
        SlotRef::U64List(list) => Some(list.len()),
        SlotRef::StrList(list) => Some(list.len()),
        _ => None,
    }
}

fn out_of_range(index: usize, len: usize) -> Failure {
    Failure::new(
        handoff_status::HANDOFF_ERR_OUT_OF_RANGE,
        format!("index {index} is past the end of a list of {len}"),
    )
}

/// The number of items in a list field (`last_revision_per_shard`,
/// `advertised_revision_per_shard`, `listening_on`).
#[no_mangle]
pub unsafe extern "C" fn handoff_message_get_list_len(
    msg: *const handoff_message,
    field: u32,
    len: *mut usize,
    err: *mut *mut handoff_error,
) -> handoff_status {
    // SAFETY: forwarded header contract.
    unsafe {
        read_field(msg, field, err, |slot| {
            let len = Out::new(len, "len")?;
            len.write(
                list_len(&slot).ok_or_else(|| wrong_type(field, "handoff_message_get_list_len"))?,
            );
            Ok(())
        })
    }
}

/// Item `index` of a list of integers.
#[no_mangle]
pub unsafe extern "C" fn handoff_message_get_list_uint(
    msg: *const handoff_message,
    field: u32,
    index: usize,
    out: *mut u64,
    err: *mut *mut handoff_error,
) -> handoff_status {
    // SAFETY: forwarded header contract.
    unsafe {
        read_field(msg, field, err, |slot| {
            let out = Out::new(out, "out")?;
            let SlotRef::U64List(list) = slot else {
                return Err(wrong_type(field, "handoff_message_get_list_uint"));
            };
            out.write(
                *list
                    .get(index)
                    .ok_or_else(|| out_of_range(index, list.len()))?,
            );
            Ok(())
        })
    }
}

/// Item `index` of a list of strings, borrowed as in
/// `handoff_message_get_bytes`.
#[no_mangle]
pub unsafe extern "C" fn handoff_message_get_list_bytes(
    msg: *const handoff_message,
    field: u32,
    index: usize,
    data: *mut *const u8,
    len: *mut usize,
    err: *mut *mut handoff_error,
) -> handoff_status {
    // SAFETY: forwarded header contract.
    unsafe {
        read_field(msg, field, err, |slot| {
            let (data, len) = (Out::new(data, "data")?, Out::new(len, "len")?);
            let SlotRef::StrList(list) = slot else {
                return Err(wrong_type(field, "handoff_message_get_list_bytes"));
            };
            let item = list
                .get(index)
                .ok_or_else(|| out_of_range(index, list.len()))?;
            data.write(item.as_ptr());
            len.write(item.len());
            Ok(())
        })
    }
}

/// Append an integer to a list of integers.
#[no_mangle]
pub unsafe extern "C" fn handoff_message_push_uint(
    msg: *mut handoff_message,
    field: u32,
    value: u64,
    err: *mut *mut handoff_error,
) -> handoff_status {
    // SAFETY: forwarded header contract.
    unsafe {
        write_field(msg, field, err, |slot| {
            let SlotMut::U64List(list) = slot else {
                return Err(wrong_type(field, "handoff_message_push_uint"));
            };
            list.push(value);
            Ok(())
        })
    }
}

/// Append a UTF-8 string of `len` bytes at `data` (copied) to a list of
/// strings.
#[no_mangle]
pub unsafe extern "C" fn handoff_message_push_bytes(
    msg: *mut handoff_message,
    field: u32,
    data: *const u8,
    len: usize,
    err: *mut *mut handoff_error,
) -> handoff_status {
    // SAFETY: forwarded header contract; `data` holds `len` readable bytes.
    unsafe {
        write_field(msg, field, err, |slot| {
            let SlotMut::StrList(list) = slot else {
                return Err(wrong_type(field, "handoff_message_push_bytes"));
            };
            list.push(utf8(arg_bytes(data, len, "data")?)?);
            Ok(())
        })
    }
}

/// Empty a list field.
#[no_mangle]
pub unsafe extern "C" fn handoff_message_clear_list(
    msg: *mut handoff_message,
    field: u32,
    err: *mut *mut handoff_error,
) -> handoff_status {
    // SAFETY: forwarded header contract.
    unsafe {
        write_field(msg, field, err, |slot| {
            match slot {
                SlotMut::U64List(list) => list.clear(),
                SlotMut::StrList(list) => list.clear(),
                _ => return Err(wrong_type(field, "handoff_message_clear_list")),
            }
            Ok(())
        })
    }
}
