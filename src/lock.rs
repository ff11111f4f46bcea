//! The data-dir lock (DESIGN §4): at most one process holds a data
//! directory at a time (invariant 1), and each tenure gets a fencing token.
//!
//! `<data_dir>/.handoff.lock` is held with `flock(LOCK_EX | LOCK_NB)` and is
//! never unlinked: unlinking would let a newcomer lock a fresh inode while the
//! old holder still holds the old one. The holder's pid is in
//! `.handoff.pidfile` (for diagnostics and for `probe`),
//! `.handoff.generation` counts the tenures, and `.handoff.reserved` holds
//! the next tenure's generation when the holder reserved it ahead
//! (reservation.rs). The kernel drops a flock when its holder dies, so a
//! stale pidfile never blocks anyone.
//!
//! Taking the lock needs no new disk space once its three files exist (the
//! reservation is an optimisation, skipped when it cannot be written): an
//! incumbent whose handoff rolls back must retake its lock on a full disk
//! (issue 14). So, unlike the "temporary file, fsync, rename" of DESIGN §4,
//! both files are rewritten in place, in the block they already have:
//! the generation as a fixed-width record (20 digits and a newline, within
//! the first sector, which a device writes whole) with pwrite + fdatasync;
//! the pidfile without fsync (a flock does not outlive a reboot), and on
//! release it is emptied to a bare newline rather than removed. They are
//! opened with O_NOFOLLOW: a symlink planted there is refused, not followed.
//! A reader racing an acquire may see the pidfile half rewritten for an
//! instant; it names a holder only for diagnostics and retries an unknown one.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::log::event;
use crate::sys;

mod reservation;
pub(crate) use reservation::read_boot_id_ahead;
use reservation::Found;
pub use reservation::RESERVATION_FILE;

pub const LOCK_FILE: &str = ".handoff.lock";
pub const PIDFILE: &str = ".handoff.pidfile";
pub const GENERATION_FILE: &str = ".handoff.generation";

/// How often `acquire_with_retry` tries again.
const RETRY_INTERVAL: Duration = Duration::from_millis(20);
/// How long a held lock whose holder is unknown (no pidfile yet, or one
/// naming a dead pid) is given to become known or free: a holder writes its
/// pidfile right after taking the flock, and `probe` holds it for microseconds.
const UNKNOWN_HOLDER_GRACE: Duration = Duration::from_millis(100);
const UNKNOWN_HOLDER_POLL: Duration = Duration::from_millis(5);

/// Who holds a data-dir lock, as seen from outside ([`DataDirLock::probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    Free,
    /// Held; `pid` is the live process named by the pidfile, or None when no
    /// live process is named (a holder that did not record itself, such as
    /// a forked child that outlived the process that took the lock).
    Held {
        pid: Option<u32>,
    },
}

impl LockState {
    pub fn is_held(self) -> bool {
        matches!(self, LockState::Held { .. })
    }
}

/// An exclusive hold on a data directory. Released by [`release`]
/// (reporting errors) or, best effort, when dropped.
///
/// [`release`]: DataDirLock::release
#[derive(Debug)]
pub struct DataDirLock {
    dir: PathBuf,
    /// The lock's open files; None once released.
    files: Option<LockFiles>,
    generation: u64,
    /// The tenure this one reserved for its successor, if any.
    reserved: Option<u64>,
    /// The count was stored by a claim, without an fsync (reservation.rs).
    count_unsynced: bool,
}

/// The descriptors of a tenure: the locked open file description, the
/// pidfile naming us (kept open to clear it at release) and the generation
/// file (kept open so that a retake can count up without opening it).
#[derive(Debug)]
struct LockFiles {
    lock: File,
    pidfile: Option<File>,
    generation: File,
}

/// A lock an incumbent let go for a handoff, its files kept open (flock
/// dropped) so that taking it back after an abort needs no new descriptor:
/// a service at its descriptor limit must still be able to resume (issue
/// 14). Dropping it closes them and writes nothing: the pidfile and the
/// generation belong to whoever holds the lock now.
#[derive(Debug)]
pub struct ReleasedLock {
    dir: PathBuf,
    files: Option<LockFiles>,
    /// What the tenure reserved: counting up starts above it even when the
    /// reservation file cannot be opened (at the descriptor limit).
    reserved: Option<u64>,
}

impl DataDirLock {
    /// Take the lock on `data_dir` (created if missing), write our pid to
    /// the pidfile and bump the generation. Fails with [`Error::LockHeld`]
    /// when a live process holds it (this one included: flock belongs to
    /// the open file description, so a second acquire in one process fails).
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock> {
        fsutil::create_dirs(data_dir)
            .map_err(|e| Error::io("cannot create data directory", data_dir, e))?;
        // Absolute, so that messages name it whatever the working directory.
        let dir = fs::canonicalize(data_dir)
            .map_err(|e| Error::io("cannot resolve data directory", data_dir, e))?;
        fsutil::check_private_dir(&dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let grace = Instant::now() + UNKNOWN_HOLDER_GRACE;
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                // Only the owner may flock it: anyone able to open it could
                // otherwise keep the service from ever starting.
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&lock_path)
                .map_err(|e| Error::io("cannot open lock file", &lock_path, e))?;
            let taken = sys::try_flock(file.as_raw_fd(), true)
                .map_err(|e| Error::io("cannot flock", &lock_path, e))?;
            if !taken {
                let holder = live_holder(&dir);
                if holder.is_none() && Instant::now() < grace {
                    sleep(UNKNOWN_HOLDER_POLL);
                    continue;
                }
                return Err(Error::LockHeld { dir, holder });
            }
            // Someone removed or replaced the lock file between our open and
            // our flock: the lock on an orphaned inode protects nothing.
            if !is_current_inode(&file, &lock_path)? {
                continue;
            }
            if let Some(stale) = read_pidfile(&dir) {
                if stale != std::process::id() {
                    event!(
                        Debug,
                        "data-dir lock {}: pid {stale} in the pidfile is gone; taking over",
                        dir.display()
                    );
                }
            }
            // Until `lock` is built, dropping `file` releases the flock.
            let pidfile = write_pidfile(&dir)?;
            let (counted, generation_file) = match count_up(&dir) {
                Ok(counted) => counted,
                Err(e) => {
                    // Not ours after all: the pidfile must not name us.
                    if let Some(pidfile) = &pidfile {
                        let _ = rewrite_in_place(pidfile, NOBODY);
                    }
                    return Err(e);
                }
            };
            let lock = DataDirLock {
                dir,
                files: Some(LockFiles {
                    lock: file,
                    pidfile,
                    generation: generation_file,
                }),
                generation: counted.generation,
                reserved: None,
                count_unsynced: counted.count_unsynced,
            };
            // Only the successor has it in its environment (the test gives
            // N points to the supervisor, which never takes the lock).
            crash_point!("N_AFTER_LOCK");
            return Ok(lock);
        }
    }

    /// [`acquire`](DataDirLock::acquire), retrying every ~20 ms for up to
    /// `timeout` while the lock is held (a dying process may still hold it).
    /// Other errors are answered at once.
    pub fn acquire_with_retry(data_dir: &Path, timeout: Duration) -> Result<DataDirLock> {
        let deadline = Instant::now() + timeout;
        loop {
            match DataDirLock::acquire(data_dir) {
                Err(Error::LockHeld { .. }) if Instant::now() < deadline => {
                    sleep(RETRY_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
                }
                other => return other,
            }
        }
    }

    /// Who holds the lock on `data_dir` right now, without taking it for
    /// more than an instant (a shared flock on a fresh open file description,
    /// dropped at once). A missing directory or lock file is `Free`.
    pub fn probe(data_dir: &Path) -> Result<LockState> {
        let lock_path = data_dir.join(LOCK_FILE);
        let file = match File::open(&lock_path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(LockState::Free),
            Err(e) => return Err(Error::io("cannot open lock file", &lock_path, e)),
        };
        let grace = Instant::now() + UNKNOWN_HOLDER_GRACE;
        loop {
            let free = sys::try_flock(file.as_raw_fd(), false)
                .map_err(|e| Error::io("cannot flock", &lock_path, e))?;
            if free {
                sys::unlock_flock(file.as_raw_fd())
                    .map_err(|e| Error::io("cannot unlock", &lock_path, e))?;
                return Ok(LockState::Free);
            }
            if let Some(pid) = live_holder(data_dir) {
                return Ok(LockState::Held { pid: Some(pid) });
            }
            if Instant::now() >= grace {
                return Ok(LockState::Held { pid: None });
            }
            sleep(UNKNOWN_HOLDER_POLL);
        }
    }

    /// The fencing token of this tenure: 1 for the first acquire ever of
    /// this data directory, above every earlier tenure's on every acquire
    /// since (one more in the usual flows), durable across restarts. Stamp
    /// it on writes so that a process that lost the lock can be told apart
    /// from the one that holds it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The locked data directory (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Make the next tenure's generation durable now (reservation.rs), so
    /// that the successor of a handoff takes the lock without an fsync in
    /// the blackout. The incumbent's library calls it when a supervisor
    /// answers its Hello; calling it again while the reservation is open
    /// does nothing. On an error nothing is reserved, and the successor
    /// counts up as without it.
    pub fn reserve_next(&mut self) -> Result<u64> {
        let files = self
            .files
            .as_ref()
            .ok_or_else(|| Error::WrongState("the lock is released".into()))?;
        let (count, _) = read_generation_in(&files.generation, &self.dir.join(GENERATION_FILE))?;
        let next = reservation::reserve(&self.dir, count, self.reserved)?;
        self.reserved = Some(next);
        Ok(next)
    }

    /// Make the count a claim stored durable (off the blackout: for a
    /// reader of the generation file alone, such as an older libhandoff
    /// after a power cut). Nothing to do otherwise.
    pub fn make_generation_durable(&mut self) -> Result<()> {
        if !self.count_unsynced {
            return Ok(());
        }
        if let Some(files) = &self.files {
            files.generation.sync_data().map_err(|e| {
                Error::io(
                    "cannot fsync generation file",
                    self.dir.join(GENERATION_FILE),
                    e,
                )
            })?;
        }
        self.count_unsynced = false;
        Ok(())
    }

    /// Clear the pidfile, then drop the flock. The lock is released even
    /// when clearing the pidfile fails: a stale pidfile is harmless, a lock
    /// nobody owns is not. For the same reason the pidfile is not fsynced:
    /// this is on the handoff's critical path (before SealComplete).
    pub fn release(mut self) -> Result<()> {
        match self.files.take() {
            Some(files) => files.unlock(&self.dir),
            None => Ok(()),
        }
    }

    /// [`release`](DataDirLock::release), keeping the files open for a
    /// [`ReleasedLock::retake`]. The lock is released whatever the result.
    pub fn release_keeping_files(mut self) -> (ReleasedLock, Result<()>) {
        let files = self.files.take();
        let released = files.as_ref().map_or(Ok(()), |f| f.unlock(&self.dir));
        let dir = std::mem::take(&mut self.dir);
        let reserved = self.reserved;
        (
            ReleasedLock {
                dir,
                files,
                reserved,
            },
            released,
        )
    }
}

impl LockFiles {
    fn unlock(&self, dir: &Path) -> Result<()> {
        let cleared = match &self.pidfile {
            Some(pidfile) => rewrite_in_place(pidfile, NOBODY)
                .map_err(|e| Error::io("cannot clear pidfile", dir.join(PIDFILE), e)),
            None => Ok(()),
        };
        // Explicit unlock: a forked child's copy of the descriptor would
        // otherwise keep the open file description, and the lock, alive.
        let unlocked = sys::unlock_flock(self.lock.as_raw_fd())
            .map_err(|e| Error::io("cannot unlock", dir.join(LOCK_FILE), e));
        cleared.and(unlocked)
    }

    /// Whether the files are still the ones at their paths (nobody removed
    /// or replaced them since they were opened).
    fn still_current(&self, dir: &Path) -> Result<bool> {
        Ok(is_current_inode(&self.lock, &dir.join(LOCK_FILE))?
            && is_current_inode(&self.generation, &dir.join(GENERATION_FILE))?)
    }
}

impl ReleasedLock {
    /// A lock on `dir` whose files are not open: [`retake`] acquires it.
    ///
    /// [`retake`]: ReleasedLock::retake
    pub fn closed(dir: &Path) -> ReleasedLock {
        ReleasedLock {
            dir: dir.to_owned(),
            files: None,
            reserved: None,
        }
    }

    /// Take the lock back with the files kept open: no descriptor and no
    /// disk block needed. [`Error::LockHeld`] while another process holds
    /// it (call again to retry). Files someone replaced since the release
    /// are closed and the lock is taken afresh, as [`DataDirLock::acquire`].
    pub fn retake(&mut self) -> Result<DataDirLock> {
        let Some(files) = self.files.take() else {
            return DataDirLock::acquire(&self.dir);
        };
        let lock_path = self.dir.join(LOCK_FILE);
        let taken = sys::try_flock(files.lock.as_raw_fd(), true)
            .map_err(|e| Error::io("cannot flock", &lock_path, e))?;
        if !taken {
            let holder = files
                .pidfile
                .as_ref()
                .and_then(pid_in)
                .filter(|pid| sys::process_exists(*pid));
            self.files = Some(files);
            return Err(Error::LockHeld {
                dir: self.dir.clone(),
                holder,
            });
        }
        if !files.still_current(&self.dir)? {
            event!(
                Warn,
                "data-dir lock {}: its files were replaced during the handoff; taking it afresh",
                self.dir.display()
            );
            drop(files);
            return DataDirLock::acquire(&self.dir);
        }
        // From here on, dropping `lock` releases it (and clears the pidfile).
        let mut lock = DataDirLock {
            dir: self.dir.clone(),
            files: Some(files),
            generation: 0,
            reserved: None,
            count_unsynced: false,
        };
        let files = lock.files.as_mut().expect("just set");
        match &files.pidfile {
            Some(pidfile) => rewrite_in_place(pidfile, own_pid().as_bytes())
                .map_err(|e| Error::io("cannot write pidfile", lock.dir.join(PIDFILE), e))?,
            None => files.pidfile = write_pidfile(&lock.dir)?,
        }
        let counted = count_up_in(
            &files.generation,
            &lock.dir.join(GENERATION_FILE),
            &lock.dir,
            Some(self.reserved.unwrap_or(0)),
        )?;
        (lock.generation, lock.count_unsynced) = (counted.generation, counted.count_unsynced);
        Ok(lock)
    }
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        if let Some(files) = self.files.take() {
            if let Err(e) = files.unlock(&self.dir) {
                event!(Warn, "releasing the data-dir lock: {e}");
            }
        }
    }
}

fn own_pid() -> String {
    format!("{}\n", std::process::id())
}

/// Write our pid to the pidfile, in place. A full disk that leaves no
/// room to create it (the lock's first acquire here since an older
/// version removed it) costs only the diagnostic, not the lock.
fn write_pidfile(dir: &Path) -> Result<Option<File>> {
    let path = dir.join(PIDFILE);
    let written = open_in_place(&path, 0o644, true).and_then(|file| {
        rewrite_in_place(&file, own_pid().as_bytes())?;
        Ok(file)
    });
    match written {
        Ok(file) => Ok(Some(file)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => {
            event!(Warn, "data-dir lock {}: no pidfile: {e}", dir.display());
            Ok(None)
        }
        Err(e) => Err(Error::io("cannot write pidfile", path, e)),
    }
}

/// The pid in the pidfile, if it names a live process.
fn live_holder(dir: &Path) -> Option<u32> {
    read_pidfile(dir).filter(|pid| sys::process_exists(*pid))
}

fn read_pidfile(dir: &Path) -> Option<u32> {
    pid_in(&fsutil::open_regular(&dir.join(PIDFILE)).ok()?)
}

/// The pid a pidfile names, read from its start (an open file's offset is
/// not ours to move).
fn pid_in(file: &File) -> Option<u32> {
    let mut bytes = [0u8; 24];
    let len = file.read_at(&mut bytes, 0).ok()?;
    std::str::from_utf8(&bytes[..len]).ok()?.trim().parse().ok()
}

fn is_current_inode(file: &File, path: &Path) -> Result<bool> {
    let ours = file
        .metadata()
        .map_err(|e| Error::io("cannot stat lock file", path, e))?;
    match fs::metadata(path) {
        Ok(now) => Ok(now.dev() == ours.dev() && now.ino() == ours.ino()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("cannot stat lock file", path, e)),
    }
}

/// A released pidfile: one byte, so that its block stays allocated.
const NOBODY: &[u8] = b"\n";

/// Open one of the lock's files, creating it if missing when `create`,
/// never truncating it, never following a symlink (ELOOP) nor blocking on
/// a FIFO.
fn open_in_place(path: &Path, mode: u32, create: bool) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Overwrite the file's content with `bytes` from offset 0, then cut what
/// is left of a longer old content (never to zero: the block stays ours).
fn rewrite_in_place(file: &File, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all_at(bytes, 0)?;
    file.set_len(bytes.len() as u64)
}

/// Take the tenure's generation (count_up_in) from the generation file,
/// created if missing, and give it with the file kept open. Called only
/// while holding the flock.
fn count_up(dir: &Path) -> Result<(Counted, File)> {
    let path = dir.join(GENERATION_FILE);
    let file = open_in_place(&path, 0o644, true)
        .map_err(|e| Error::io("cannot open generation file", &path, e))?;
    let created = file
        .metadata()
        .map_err(|e| Error::io("cannot stat generation file", &path, e))?
        .len()
        == 0;
    let next = count_up_in(&file, &path, dir, None)?;
    if created {
        // Just created: its directory entry must survive a power cut too.
        fsutil::sync_dir(dir)?;
    }
    Ok((next, file))
}

/// A tenure's generation, and whether its count was stored without an
/// fsync (a successor's claim: `DataDirLock::make_generation_durable`).
struct Counted {
    generation: u64,
    count_unsynced: bool,
}

/// The generation for a tenure taking the lock: the reservation above the
/// count if one is open (reservation.rs), else the one above both the count
/// and any reservation, stored in place, durably. A fresh acquire stores a
/// claimed one without an fsync (a successor's is in the blackout); a
/// retake, after an abort, durably.
///
/// A reservation file that cannot be read fails a fresh acquire (it may
/// come after a reboot that lost a claim's count). A retake (`retaking`:
/// what its tenure reserved, if anything) counts above it and the count:
/// in the boot of its own release, every claim since stored its count
/// before its tenure began, in the page cache the retake reads; at the
/// descriptor limit the file cannot be opened.
fn count_up_in(file: &File, path: &Path, dir: &Path, retaking: Option<u64>) -> Result<Counted> {
    let (current, stored_len) = read_generation_in(file, path)?;
    let same_width = stored_len == generation_record(0).len();
    let reserved = match reservation::claim(dir, current) {
        Ok(Found::Claimed(claimed)) => {
            let durably = retaking.is_some();
            store_generation(file, path, claimed, same_width, durably)?;
            return Ok(Counted {
                generation: claimed,
                count_unsynced: !durably,
            });
        }
        Ok(Found::CountAbove(reserved)) => reserved,
        Err(_) if retaking.is_some() => retaking,
        Err(e) => {
            return Err(Error::io(
                "cannot read the reservation file",
                dir.join(RESERVATION_FILE),
                e,
            ))
        }
    };
    let next = next_after(current.max(reserved.unwrap_or(0)), path)?;
    store_generation(file, path, next, same_width, true)?;
    Ok(Counted {
        generation: next,
        count_unsynced: false,
    })
}

/// The generation after `generation`; a wrapped fencing token would let a
/// stale holder pass as current.
fn next_after(generation: u64, path: &Path) -> Result<u64> {
    generation.checked_add(1).ok_or_else(|| {
        Error::io(
            "generation file",
            path,
            std::io::Error::new(ErrorKind::InvalidData, "the generation is at u64::MAX"),
        )
    })
}

/// The count in the generation file (0 when empty: a first acquire that
/// never completed), and the length stored.
fn read_generation_in(file: &File, path: &Path) -> Result<(u64, usize)> {
    let io = |action, e| Error::io(action, path, e);
    // From offset 0 whatever the file's offset (a retake reads it again).
    // A record is 21 bytes; whatever is longer than the buffer is corrupt
    // and fails to parse from its first 64 bytes already.
    let mut bytes = [0u8; 64];
    let mut len = 0;
    while len < bytes.len() {
        match file.read_at(&mut bytes[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io("cannot read generation file", e)),
        }
    }
    let bytes = &bytes[..len];
    let text = String::from_utf8_lossy(bytes);
    if text.is_empty() {
        return Ok((0, 0));
    }
    let generation = parse_generation(&text).map_err(|reason| {
        io(
            "corrupt generation file",
            std::io::Error::new(ErrorKind::InvalidData, reason),
        )
    })?;
    Ok((generation, len))
}

/// Store `generation` as the count, in place; `durably`: fdatasync too.
/// Fixed width: once the file holds one record (`same_width`), an
/// overwrite is all it takes (no ftruncate, no metadata change to commit
/// in the blackout).
fn store_generation(
    file: &File,
    path: &Path,
    generation: u64,
    same_width: bool,
    durably: bool,
) -> Result<()> {
    let record = generation_record(generation);
    let written = if same_width {
        file.write_all_at(record.as_bytes(), 0)
    } else {
        rewrite_in_place(file, record.as_bytes())
    };
    written
        .and_then(|()| if durably { file.sync_data() } else { Ok(()) })
        .map_err(|e| Error::io("cannot write generation file", path, e))
}

/// The generation file's content: always the same width, so that an
/// overwrite never needs a block the file does not have.
fn generation_record(generation: u64) -> String {
    format!("{generation:020}\n")
}

fn parse_generation(text: &str) -> std::result::Result<u64, String> {
    let digits = text.trim_end_matches('\n');
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a decimal number, found {text:?}"));
    }
    digits
        .parse()
        .map_err(|_| format!("{digits} does not fit in 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &Path, name: &str) -> Option<String> {
        fs::read_to_string(dir.join(name)).ok()
    }

    #[test]
    fn acquire_creates_the_dir_and_writes_pid_and_generation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let lock = DataDirLock::acquire(&dir).unwrap();
        assert_eq!(lock.generation(), 1);
        assert_eq!(lock.data_dir(), fs::canonicalize(&dir).unwrap());
        assert_eq!(
            read(&dir, PIDFILE),
            Some(format!("{}\n", std::process::id()))
        );
        assert_eq!(
            read(&dir, GENERATION_FILE).as_deref(),
            Some("00000000000000000001\n")
        );
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [GENERATION_FILE, LOCK_FILE, PIDFILE],
            "no temporary left"
        );
    }

    #[test]
    fn a_second_acquire_in_the_same_process_fails_naming_us() {
        let tmp = tempfile::tempdir().unwrap();
        let _held = DataDirLock::acquire(tmp.path()).unwrap();
        let started = Instant::now();
        match DataDirLock::acquire(tmp.path()) {
            Err(Error::LockHeld { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("expected LockHeld, got {other:?}"),
        }
        // A live holder is answered at once, without the unknown-holder grace.
        assert!(started.elapsed() < UNKNOWN_HOLDER_GRACE);
        assert_eq!(
            DataDirLock::probe(tmp.path()).unwrap(),
            LockState::Held {
                pid: Some(std::process::id())
            }
        );
    }

    #[test]
    fn release_and_drop_free_the_lock_and_clear_the_pidfile_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        DataDirLock::acquire(dir).unwrap().release().unwrap();
        // Kept, so that the next holder needs no new block, but naming nobody.
        assert_eq!(read(dir, PIDFILE).as_deref(), Some("\n"));
        assert!(dir.join(LOCK_FILE).exists());
        assert_eq!(DataDirLock::probe(dir).unwrap(), LockState::Free);

        drop(DataDirLock::acquire(dir).unwrap());
        assert_eq!(read(dir, PIDFILE).as_deref(), Some("\n"));
        assert_eq!(DataDirLock::acquire(dir).unwrap().generation(), 3);
    }

    #[test]
    fn a_released_lock_is_taken_back_through_its_kept_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (mut released, result) = DataDirLock::acquire(dir).unwrap().release_keeping_files();
        result.unwrap();
        assert_eq!(DataDirLock::probe(dir).unwrap(), LockState::Free);
        assert_eq!(read(dir, PIDFILE).as_deref(), Some("\n"));

        // A successor holds it: the retake says who, and can be tried again.
        let successor = DataDirLock::acquire(dir).unwrap();
        assert_eq!(successor.generation(), 2);
        match released.retake() {
            Err(Error::LockHeld { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("expected LockHeld, got {other:?}"),
        }
        successor.release().unwrap();

        let ino = |name| fs::metadata(dir.join(name)).unwrap().ino();
        let inodes = [ino(LOCK_FILE), ino(PIDFILE), ino(GENERATION_FILE)];
        let retaken = released.retake().unwrap();
        assert_eq!(retaken.generation(), 3, "counted past the successor's");
        assert_eq!(
            read(dir, GENERATION_FILE).as_deref(),
            Some("00000000000000000003\n")
        );
        assert_eq!(
            read(dir, PIDFILE),
            Some(format!("{}\n", std::process::id()))
        );
        assert_eq!(
            [ino(LOCK_FILE), ino(PIDFILE), ino(GENERATION_FILE)],
            inodes,
            "the same files, rewritten in place"
        );
        assert!(DataDirLock::probe(dir).unwrap().is_held());
        drop(retaken);
        assert_eq!(DataDirLock::probe(dir).unwrap(), LockState::Free);
    }

    #[test]
    fn a_released_lock_whose_files_were_replaced_is_taken_afresh() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (mut released, result) = DataDirLock::acquire(dir).unwrap().release_keeping_files();
        result.unwrap();
        // Someone replaced the lock file: a flock on the old inode would
        // protect nothing.
        fs::remove_file(dir.join(LOCK_FILE)).unwrap();
        let retaken = released.retake().unwrap();
        assert_eq!(retaken.generation(), 2);
        assert!(DataDirLock::probe(dir).unwrap().is_held());
        // The new lock file is the one locked: a second taker is refused.
        assert!(matches!(
            DataDirLock::acquire(dir),
            Err(Error::LockHeld { .. })
        ));
    }

    #[test]
    fn probe_of_a_missing_dir_is_free_and_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nope");
        assert_eq!(DataDirLock::probe(&dir).unwrap(), LockState::Free);
        assert!(!dir.exists());
    }

    #[test]
    fn a_held_lock_with_no_live_pid_is_held_by_an_unknown_process() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let lock = DataDirLock::acquire(dir).unwrap();
        // As if the holder were a process that never wrote its pid.
        fs::remove_file(dir.join(PIDFILE)).unwrap();
        assert_eq!(
            DataDirLock::probe(dir).unwrap(),
            LockState::Held { pid: None }
        );
        match DataDirLock::acquire(dir) {
            Err(Error::LockHeld { holder: None, .. }) => {}
            other => panic!("expected LockHeld by nobody known, got {other:?}"),
        }
        lock.release().unwrap();
    }

    #[test]
    fn a_corrupt_generation_file_is_an_error_naming_it_not_a_reset() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join(GENERATION_FILE), "seven\n").unwrap();
        let err = DataDirLock::acquire(dir).unwrap_err();
        assert!(err.to_string().contains(GENERATION_FILE), "{err}");
        // The failed acquire let go of the lock and cleared its pidfile.
        assert_eq!(DataDirLock::probe(dir).unwrap(), LockState::Free);
        assert_eq!(read(dir, PIDFILE).as_deref(), Some("\n"));

        fs::write(dir.join(GENERATION_FILE), "41\n").unwrap();
        assert_eq!(DataDirLock::acquire(dir).unwrap().generation(), 42);
    }

    #[test]
    fn an_empty_generation_file_counts_from_zero_and_an_old_one_goes_on() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // What a first acquire cut short between create and write leaves.
        fs::write(dir.join(GENERATION_FILE), "").unwrap();
        assert_eq!(DataDirLock::acquire(dir).unwrap().generation(), 1);
        // The short form earlier versions wrote by rename.
        fs::write(dir.join(GENERATION_FILE), "9\n").unwrap();
        assert_eq!(DataDirLock::acquire(dir).unwrap().generation(), 10);
        assert_eq!(
            read(dir, GENERATION_FILE).as_deref(),
            Some("00000000000000000010\n")
        );
    }

    #[test]
    fn parse_generation_accepts_only_plain_decimals() {
        assert_eq!(parse_generation("7\n"), Ok(7));
        assert_eq!(parse_generation("7"), Ok(7));
        for bad in [
            "",
            "\n",
            "+7",
            "-1",
            " 7",
            "7 \n",
            "0x10",
            "99999999999999999999",
        ] {
            assert!(parse_generation(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn acquire_with_retry_gives_up_after_the_timeout_with_lock_held() {
        let tmp = tempfile::tempdir().unwrap();
        let _held = DataDirLock::acquire(tmp.path()).unwrap();
        let started = Instant::now();
        let err =
            DataDirLock::acquire_with_retry(tmp.path(), Duration::from_millis(120)).unwrap_err();
        assert!(matches!(err, Error::LockHeld { .. }), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(120));
    }

    #[test]
    fn acquire_with_retry_succeeds_once_the_holder_lets_go() {
        let tmp = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(tmp.path()).unwrap();
        let releaser = std::thread::spawn(move || {
            sleep(Duration::from_millis(100));
            held.release().unwrap();
        });
        let lock = DataDirLock::acquire_with_retry(tmp.path(), Duration::from_secs(5)).unwrap();
        assert_eq!(lock.generation(), 2);
        releaser.join().unwrap();
    }

    /// A tenure at `generation` that reserved the next one and let go of
    /// the lock for a handoff.
    fn reserve_and_release(dir: &Path, generation: u64) -> ReleasedLock {
        let mut holder = DataDirLock::acquire(dir).unwrap();
        assert_eq!(holder.generation(), generation);
        assert_eq!(holder.reserve_next().unwrap(), generation + 1);
        let (released, result) = holder.release_keeping_files();
        result.unwrap();
        released
    }

    /// The successor of a handoff takes the generation its incumbent
    /// reserved (the count stored as it is claimed); a retake after an abort
    /// takes it too when nobody claimed it, and counts above it otherwise.
    #[test]
    fn a_reserved_generation_goes_to_the_next_tenure_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut holder = DataDirLock::acquire(dir).unwrap();
        assert_eq!(holder.reserve_next().unwrap(), 2);
        assert_eq!(holder.reserve_next().unwrap(), 2, "open: reserved already");
        assert_eq!(
            read(dir, GENERATION_FILE).unwrap().trim(),
            "00000000000000000001"
        );
        let (mut released, result) = holder.release_keeping_files();
        result.unwrap();
        let mut successor = DataDirLock::acquire(dir).unwrap();
        assert_eq!(successor.generation(), 2);
        assert!(successor.count_unsynced);
        successor.make_generation_durable().unwrap();
        assert!(!successor.count_unsynced);
        assert_eq!(
            read(dir, GENERATION_FILE).unwrap().trim(),
            "00000000000000000002"
        );
        drop(successor);
        assert_eq!(
            released.retake().unwrap().generation(),
            3,
            "claimed: counted above"
        );

        // Unclaimed: the retake takes it, its count stored durably (after
        // an abort: nothing else would make it so).
        let mut released = reserve_and_release(dir, 4);
        let retaken = released.retake().unwrap();
        assert_eq!(retaken.generation(), 5);
        assert!(!retaken.count_unsynced);
    }

    /// A reservation the retake cannot read (here a directory in its place;
    /// at the descriptor limit, EMFILE) is counted above from what the
    /// tenure reserved; a fresh acquire refuses the unreadable file.
    #[test]
    fn an_unreadable_reservation_is_counted_above() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut released = reserve_and_release(dir, 1);
        let successor = DataDirLock::acquire(dir).unwrap();
        assert_eq!(successor.generation(), 2);
        drop(successor);
        fs::remove_file(dir.join(RESERVATION_FILE)).unwrap();
        fs::create_dir(dir.join(RESERVATION_FILE)).unwrap();
        // The count (2, stored by the claim) and what this tenure reserved.
        assert_eq!(released.retake().unwrap().generation(), 3);
        let err = DataDirLock::acquire(dir).unwrap_err().to_string();
        assert!(err.contains(RESERVATION_FILE), "{err}");
    }
}
