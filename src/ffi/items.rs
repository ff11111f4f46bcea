//! The descriptors a successor adopts (protocol v2), as C sees them: one
//! `handoff_items` owning every item, read by index, each descriptor taken
//! out once.

use std::ffi::c_int;
use std::os::fd::{IntoRawFd, OwnedFd};

use crate::protocol::ItemKind;
use crate::successor::AdoptedItem;

/// One adopted item; its descriptor until the caller takes it.
pub(super) struct Item {
    kind: ItemKind,
    name: String,
    fd: Option<OwnedFd>,
    unread: Vec<u8>,
    unwritten: Vec<u8>,
    state: Vec<u8>,
}

impl From<AdoptedItem> for Item {
    fn from(item: AdoptedItem) -> Item {
        Item {
            kind: item.kind,
            name: item.name,
            fd: Some(item.fd),
            unread: item.unread,
            unwritten: item.unwritten,
            state: item.state,
        }
    }
}

/// What moved to this successor, from `handoff_successor_adopt`; freed with
/// `handoff_items_free`, which closes every descriptor not taken. Not
/// synchronised: one thread at a time.
pub struct handoff_items {
    pub(super) items: Vec<Item>,
}

/// The item at `index` of a live collection, if there is one.
///
/// # Safety
/// `items` is NULL or a live `handoff_items`.
unsafe fn item<'a>(items: *const handoff_items, index: usize) -> Option<&'a Item> {
    // SAFETY: NULL or live (the caller's contract).
    unsafe { items.as_ref() }?.items.get(index)
}

/// How many items moved (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn handoff_items_count(items: *const handoff_items) -> usize {
    // SAFETY: NULL or a live collection (header contract).
    unsafe { items.as_ref() }.map_or(0, |i| i.items.len())
}

/// Item `index`'s kind (`HANDOFF_ITEM_*`); `UINT32_MAX` for NULL or an index
/// out of range.
#[no_mangle]
pub unsafe extern "C" fn handoff_items_kind(items: *const handoff_items, index: usize) -> u32 {
    // SAFETY: as the header says.
    unsafe { item(items, index) }.map_or(u32::MAX, |i| i.kind.index())
}

/// Item `index`'s descriptor, handed to the caller (who closes it: never
/// `shutdown`, which would end the connection for the incumbent too if the
/// handoff rolled back). Close-on-exec. -1 for NULL, an index out of range
/// or a descriptor already taken.
#[no_mangle]
pub unsafe extern "C" fn handoff_items_take_fd(items: *mut handoff_items, index: usize) -> c_int {
    // SAFETY: NULL or a live collection (header contract).
    let Some(items) = (unsafe { items.as_mut() }) else {
        return -1;
    };
    items
        .items
        .get_mut(index)
        .and_then(|item| item.fd.take())
        .map_or(-1, IntoRawFd::into_raw_fd)
}

// Which part of an item `handoff_items_bytes` reads.
pub const HANDOFF_ITEM_PART_NAME: u32 = 0;
pub const HANDOFF_ITEM_PART_UNREAD: u32 = 1;
pub const HANDOFF_ITEM_PART_UNWRITTEN: u32 = 2;
pub const HANDOFF_ITEM_PART_STATE: u32 = 3;

/// One part of item `index` (`HANDOFF_ITEM_PART_NAME`, `_UNREAD`,
/// `_UNWRITTEN`, `_STATE`): `*data` points into the collection (valid until it is
/// freed; not NUL-terminated), `*len` its length. False (and nothing
/// written) for NULL, an index out of range or an unknown part.
#[no_mangle]
pub unsafe extern "C" fn handoff_items_bytes(
    items: *const handoff_items,
    index: usize,
    part: u32,
    data: *mut *const u8,
    len: *mut usize,
) -> bool {
    // SAFETY: as the header says.
    let Some(item) = (unsafe { item(items, index) }) else {
        return false;
    };
    let bytes: &[u8] = match part {
        HANDOFF_ITEM_PART_NAME => item.name.as_bytes(),
        HANDOFF_ITEM_PART_UNREAD => &item.unread,
        HANDOFF_ITEM_PART_UNWRITTEN => &item.unwritten,
        HANDOFF_ITEM_PART_STATE => &item.state,
        _ => return false,
    };
    if data.is_null() || len.is_null() {
        return false;
    }
    // SAFETY: both out-pointers are non-NULL and writable (header contract).
    unsafe {
        *data = bytes.as_ptr();
        *len = bytes.len();
    }
    true
}

/// Free the collection, closing every descriptor not taken. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn handoff_items_free(items: *mut handoff_items) {
    if !items.is_null() {
        // SAFETY: from Box::into_raw in this library; the caller gives it up.
        drop(unsafe { Box::from_raw(items) });
    }
}
