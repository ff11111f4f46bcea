//! The next tenure's generation, made durable ahead by the holder: a
//! successor that finds it takes the lock without an fdatasync, which
//! would otherwise sit in the handoff's blackout (the lock changing hands).
//!
//! `<data_dir>/.handoff.reserved` holds one fixed-width record (60 bytes,
//! within a sector, rewritten in place): the reserved generation (20
//! digits), the boot id of the boot that wrote it, and `P` (pending), `R`
//! (reserved) or `C` (claimed). The holder reserves when a supervisor
//! answers its Hello: the record as `P` (pending) with pwrite + fdatasync (and the
//! directory's fsync unless an `R` or `C` record was there), then flipped
//! to `R` in place: a reservation is claimable only once its generation
//! and its directory entry are durable.
//! The generation file is not touched.
//!
//! - **Claiming.** An acquirer, under the flock, takes a reservation of
//!   this boot that is still `R` and above the generation file's count: it
//!   marks it `C` and stores the count in place, both without an fsync, and
//!   holds that generation. Within a boot every later holder sees the mark
//!   (the page cache), so a reservation is claimed once at most.
//! - **Counting up** (anyone else, and whenever the reservation cannot be
//!   read or claimed) starts above both the count and the reserved
//!   generation, which is durable whatever the boot: a generation used by a
//!   claim is never given again, even if the count stored with the claim
//!   was lost to a power cut. After a reboot a reservation is never
//!   claimed (its `C` mark may have been lost).
//! - The count a successor's claim stored is made durable later, off the
//!   blackout, when its incumbent's loop starts
//!   ([`DataDirLock::make_generation_durable`](super::DataDirLock)), for a
//!   reader that knows only the generation file; a retake's, at once.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;

use crate::error::{Error, Result};

pub const RESERVATION_FILE: &str = ".handoff.reserved";

const BOOT_ID_LEN: usize = 36;

/// A reservation's state: only `Reserved` is claimable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Written, not yet known durable.
    Pending,
    Reserved,
    /// Claimed.
    Claimed,
}

/// A reservation record, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reservation {
    pub generation: u64,
    boot: String,
    mark: Mark,
}

impl Reservation {
    /// Reserved by this boot and not yet claimed.
    pub(super) fn is_open(&self) -> bool {
        self.mark == Mark::Reserved && boot_id() == Some(self.boot.as_str())
    }

    fn record(generation: u64, boot: &str, mark: Mark) -> String {
        let mark = match mark {
            Mark::Pending => 'P',
            Mark::Reserved => 'R',
            Mark::Claimed => 'C',
        };
        format!("{generation:020} {boot} {mark}\n")
    }

    fn parse(bytes: &[u8]) -> Option<Reservation> {
        let text = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
        let mut fields = text.split(' ');
        let (digits, boot, mark) = (fields.next()?, fields.next()?, fields.next()?);
        if fields.next().is_some()
            || digits.len() != 20
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || boot.len() != BOOT_ID_LEN
        {
            return None;
        }
        let mark = match mark {
            "P" => Mark::Pending,
            "R" => Mark::Reserved,
            "C" => Mark::Claimed,
            _ => return None,
        };
        Some(Reservation {
            generation: digits.parse().ok()?,
            boot: boot.to_owned(),
            mark,
        })
    }
}

/// Read this boot's id now rather than in the blackout (a successor's
/// acquire claims with it): a successor calls it during its handshake.
pub(crate) fn read_boot_id_ahead() {
    boot_id();
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), kept once read;
/// None while it cannot be read (EMFILE: tried again next time), and then
/// nothing is reserved or claimed.
fn boot_id() -> Option<&'static str> {
    static BOOT: OnceLock<String> = OnceLock::new();
    if let Some(id) = BOOT.get() {
        return Some(id);
    }
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = text.trim();
    if id.len() != BOOT_ID_LEN || id.contains(' ') {
        return None;
    }
    Some(BOOT.get_or_init(|| id.to_owned()))
}

/// The reservation file if it is there (a regular file: the lock's files'
/// rules, `open_in_place`), and its record if it parses.
fn open_existing(dir: &Path) -> std::io::Result<Option<(File, Option<Reservation>)>> {
    match super::open_in_place(&dir.join(RESERVATION_FILE), 0o644, false) {
        Ok(file) => {
            let record = read_record(&file)?;
            Ok(Some((file, record)))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_record(file: &File) -> std::io::Result<Option<Reservation>> {
    let mut bytes = [0u8; 64];
    let len = file.read_at(&mut bytes, 0)?;
    Ok(Reservation::parse(&bytes[..len]))
}

/// What an acquire found: a reservation it claimed, or the generation to
/// count above (None: no record).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Found {
    Claimed(u64),
    CountAbove(Option<u64>),
}

/// Claim the open reservation above `count`, marked claimed. Else (none,
/// not claimable, or the mark cannot be written) the generation to count
/// above. An unreadable file is an error: counting up starts above the
/// reserved generation whatever the boot and the mark, and the caller
/// cannot tell how far a claim went. One open of the file.
pub(super) fn claim(dir: &Path, count: u64) -> std::io::Result<Found> {
    let Some((file, record)) = open_existing(dir)? else {
        return Ok(Found::CountAbove(None));
    };
    let Some(record) = record else {
        return Ok(Found::CountAbove(None));
    };
    if record.is_open() && record.generation > count {
        let claimed = Reservation::record(record.generation, &record.boot, Mark::Claimed);
        if file.write_all_at(claimed.as_bytes(), 0).is_ok() {
            return Ok(Found::Claimed(record.generation));
        }
    }
    Ok(Found::CountAbove(Some(record.generation)))
}

/// Reserve the generation above `count` and any reservation's, made
/// durable as pending, then claimable; or keep `ours`, the one this tenure
/// reserved, while it is still open (a stray client answering the Hello
/// costs one fsync at most). One open of the file. On an error nothing is
/// claimable: a pending record never is (it is counted above all the same).
pub(super) fn reserve(dir: &Path, count: u64, ours: Option<u64>) -> Result<u64> {
    let path = dir.join(RESERVATION_FILE);
    let io = |e| Error::io("cannot reserve the next generation", &path, e);
    let boot = boot_id().ok_or_else(|| {
        io(std::io::Error::new(
            ErrorKind::Unsupported,
            "the boot id cannot be read",
        ))
    })?;
    let file = super::open_in_place(&path, 0o644, true).map_err(io)?;
    let record = read_record(&file).map_err(io)?;
    if let Some(record) = &record {
        if ours == Some(record.generation) && record.is_open() {
            return Ok(record.generation);
        }
    }
    let above = count.max(record.as_ref().map_or(0, |r| r.generation));
    let next = super::next_after(above, &dir.join(super::GENERATION_FILE))?;
    let pending = Reservation::record(next, boot, Mark::Pending);
    super::rewrite_in_place(&file, pending.as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)?;
    // A claimable or claimed record was written only once its directory
    // entry was durable; with none (a new file, or one whose first reserve
    // stopped short) the entry is made durable here, before any is.
    if record.is_none_or(|r| r.mark == Mark::Pending) {
        crate::fsutil::sync_dir(dir)?;
    }
    let reserved = Reservation::record(next, boot, Mark::Reserved);
    file.write_all_at(reserved.as_bytes(), 0).map_err(io)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_fixed_width_and_parses_back() {
        let boot = "0123456789abcdef0123456789abcdef0123";
        let record = Reservation::record(42, boot, Mark::Reserved);
        assert_eq!(record.len(), 60);
        let parsed = Reservation::parse(record.as_bytes()).unwrap();
        assert_eq!((parsed.generation, parsed.mark), (42, Mark::Reserved));
        for mark in [Mark::Pending, Mark::Claimed] {
            let other = Reservation::record(42, boot, mark);
            assert_eq!(Reservation::parse(other.as_bytes()).unwrap().mark, mark);
        }
        for bad in ["", "42 x R\n", &record[..59], &record.replace('R', "X")] {
            assert_eq!(Reservation::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    fn read(dir: &Path) -> Option<Reservation> {
        open_existing(dir).unwrap().and_then(|(_, record)| record)
    }

    #[test]
    fn a_reservation_is_claimed_once_and_only_above_the_count_of_this_boot() {
        let dir = tempfile::tempdir().unwrap();
        let claim = |count| claim(dir.path(), count).unwrap();
        let is_open = || read(dir.path()).is_some_and(|r| r.is_open());
        assert_eq!(read(dir.path()), None);
        assert_eq!(claim(4), Found::CountAbove(None), "nothing reserved");
        assert_eq!(reserve(dir.path(), 4, None).unwrap(), 5);
        assert_eq!(
            reserve(dir.path(), 4, Some(5)).unwrap(),
            5,
            "ours, open: kept"
        );
        assert!(is_open());
        assert_eq!(claim(5), Found::CountAbove(Some(5)), "not above the count");
        assert_eq!(claim(4), Found::Claimed(5));
        assert_eq!(claim(4), Found::CountAbove(Some(5)), "claimed already");
        assert!(!is_open());

        // Claimed: the next one is above it.
        assert_eq!(reserve(dir.path(), 4, Some(5)).unwrap(), 6);
        assert_eq!(claim(4), Found::Claimed(6));

        // Another boot's: counted above, never claimed.
        let path = dir.path().join(RESERVATION_FILE);
        let other = Reservation::record(6, "ffffffff-ffff-ffff-ffff-ffffffffffff", Mark::Reserved);
        std::fs::write(&path, other).unwrap();
        assert_eq!(claim(5), Found::CountAbove(Some(6)));

        // Pending (its fsync not known done: a holder killed in between):
        // counted above, never claimed.
        let pending = Reservation::record(7, boot_id().unwrap(), Mark::Pending);
        std::fs::write(&path, pending).unwrap();
        assert_eq!(claim(5), Found::CountAbove(Some(7)));
    }
}
