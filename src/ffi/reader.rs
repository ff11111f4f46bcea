//! A non-blocking frame reader for services with their own event loop: feed
//! the bytes read from the control socket, take whole messages out.

use super::args::{arg_bytes, arg_mut, Out};
use super::{boundary, handoff_error, handoff_message, handoff_status};
use crate::frame::FrameReader;

/// Buffers a partial frame between reads. Owned by the caller, freed with
/// `handoff_frame_reader_free`; use it from one thread at a time.
pub struct handoff_frame_reader {
    inner: FrameReader,
}

/// A new, empty reader.
#[no_mangle]
pub unsafe extern "C" fn handoff_frame_reader_new(
    out: *mut *mut handoff_frame_reader,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        let out = Out::new(out, "out")?;
        out.write(Box::into_raw(Box::new(handoff_frame_reader {
            inner: FrameReader::new(),
        })));
        Ok(())
    })
}

/// Append `len` bytes at `data` (copied) to the reader's buffer.
#[no_mangle]
pub unsafe extern "C" fn handoff_frame_reader_feed(
    reader: *mut handoff_frame_reader,
    data: *const u8,
    len: usize,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live reader and `len` readable bytes (header contract).
        let (reader, bytes) =
            unsafe { (arg_mut(reader, "reader")?, arg_bytes(data, len, "data")?) };
        reader.inner.feed(bytes);
        Ok(())
    })
}

/// Take the next whole message: `*got` true and `*out` a new message the
/// caller frees, or `*got` false when more bytes are needed. A frame whose
/// body does not decode is dropped and reported (the next one can still be
/// read); a bad length prefix is reported on every later call, since the
/// stream has lost its frame boundaries: close the connection.
#[no_mangle]
pub unsafe extern "C" fn handoff_frame_reader_next(
    reader: *mut handoff_frame_reader,
    out: *mut *mut handoff_message,
    got: *mut bool,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live reader, not used elsewhere now (header contract).
        let reader = unsafe { arg_mut(reader, "reader") }?;
        let (out, got) = (Out::new(out, "out")?, Out::new(got, "got")?);
        match reader.inner.next_frame()? {
            Some(frame) => {
                out.write(handoff_message::boxed(frame));
                got.write(true);
            }
            None => got.write(false),
        }
        Ok(())
    })
}

/// Bytes fed but not yet taken as messages; 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn handoff_frame_reader_buffered(
    reader: *const handoff_frame_reader,
) -> usize {
    // SAFETY: NULL or a live reader from this library.
    unsafe { reader.as_ref() }.map_or(0, |r| r.inner.buffered())
}

/// Free a reader. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn handoff_frame_reader_free(reader: *mut handoff_frame_reader) {
    if !reader.is_null() {
        // SAFETY: from `Box::into_raw` in `handoff_frame_reader_new`; the
        // caller gives up its only reference.
        drop(unsafe { Box::from_raw(reader) });
    }
}
