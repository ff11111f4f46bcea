//! The supervisor's crash-recovery journal (DESIGN §5): one postcard record,
//! replaced atomically after each acknowledged protocol step.

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
pub use crate::fsutil::Durability;
use crate::protocol::HandoffId;

/// The last acknowledged step of a handoff, in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Hello/HelloAck exchanged with both peers.
    Negotiating,
    /// O answered Drained.
    Draining,
    /// O answered SealComplete and released the lock.
    Sealing,
    /// Begin sent to N; waiting for Ready.
    AwaitingReady,
    /// Commit sent to O.
    Committed,
    /// ResumeAfterAbort sent to O.
    ResumingAfterAbort,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Negotiating,
        Phase::Draining,
        Phase::Sealing,
        Phase::AwaitingReady,
        Phase::Committed,
        Phase::ResumingAfterAbort,
    ];

    pub fn from_index(index: u32) -> Option<Phase> {
        Self::ALL.get(index as usize).copied()
    }

    pub fn index(self) -> u32 {
        self as u32
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Negotiating => "negotiating",
            Phase::Draining => "draining",
            Phase::Sealing => "sealing",
            Phase::AwaitingReady => "awaiting-ready",
            Phase::Committed => "committed",
            Phase::ResumingAfterAbort => "resuming-after-abort",
        }
    }
}

/// The journal record. Field order is the on-disk format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub handoff_id: HandoffId,
    pub phase: Phase,
    /// The incumbent's real pid (not one it announced).
    pub incumbent_pid: u32,
    pub successor_pid: Option<u32>,
    pub started_at_unix_ms: u64,
}

impl Journal {
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a journal always encodes")
    }

    /// Decode a journal, refusing truncated records and trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Journal, String> {
        let (journal, rest) =
            postcard::take_from_bytes::<Journal>(bytes).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err(format!("{} trailing bytes after the record", rest.len()));
        }
        Ok(journal)
    }

    /// Replace the journal at `path` durably: write a fresh temporary file
    /// next to it, fsync it, rename it over `path`, fsync the directory
    /// (created if missing). On failure the previous journal is left as it was.
    pub fn write(&self, path: &Path) -> Result<()> {
        self.write_with(path, Durability::Durable)
    }

    /// [`write`](Journal::write), reaching only as far as `durability`
    /// says (DESIGN §5 asks for `Durable`; the supervisor writes the steps
    /// inside the blackout `Visible`, see `supervisor::run`).
    pub fn write_with(&self, path: &Path, durability: Durability) -> Result<()> {
        let bytes = self.to_bytes();
        // Create the directory only when it is missing: a mkdir on every
        // write costs a syscall on the supervisor's hot path.
        match fsutil::replace(path, &bytes, 0o644, durability) {
            Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                let dir = fsutil::parent_dir(path);
                fsutil::create_dirs(dir)
                    .map_err(|e| Error::io("cannot create journal directory", dir, e))?;
                fsutil::replace(path, &bytes, 0o644, durability)
            }
            other => other,
        }
    }

    /// Read the journal at `path`; `Ok(None)` when there is none. Anything
    /// but a regular file there (a FIFO, a symlink) is an error naming it.
    pub fn read(path: &Path) -> Result<Option<Journal>> {
        let read = fsutil::open_regular(path).and_then(|mut file| {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map(|_| bytes)
        });
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("cannot read journal", path, e)),
        };
        Journal::from_bytes(&bytes)
            .map(Some)
            .map_err(|reason| Error::JournalCorrupt {
                path: path.to_owned(),
                reason,
            })
    }

    /// Remove the journal; removing a missing one succeeds.
    pub fn delete(path: &Path) -> Result<()> {
        // No directory fsync: a journal that a power cut brings back names
        // processes that died with the machine, and recovery signals only
        // processes older than the journal, so it clears it and goes on.
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("cannot delete journal", path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(phase: Phase) -> Journal {
        Journal {
            handoff_id: HandoffId::random(),
            phase,
            incumbent_pid: 42,
            successor_pid: Some(43),
            started_at_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn write_then_read_gives_back_the_record_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/state.bin");
        let journal = sample(Phase::Sealing);
        journal.write(&path).unwrap();
        assert_eq!(Journal::read(&path).unwrap(), Some(journal));
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.bin"], "no temporary left");
    }

    #[test]
    fn missing_is_none_and_delete_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.bin");
        assert_eq!(Journal::read(&path).unwrap(), None);
        Journal::delete(&path).unwrap();
        sample(Phase::Committed).write(&path).unwrap();
        Journal::delete(&path).unwrap();
        Journal::delete(&path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_truncated_or_padded_journal_is_corrupt_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.bin");
        let bytes = sample(Phase::Draining).to_bytes();
        for bad in [
            &bytes[..bytes.len() - 1],
            &[bytes.as_slice(), &[0]].concat()[..],
            &[][..],
        ] {
            fs::write(&path, bad).unwrap();
            let err = Journal::read(&path).unwrap_err();
            assert!(matches!(err, Error::JournalCorrupt { .. }));
            assert!(err.to_string().contains("state.bin"), "{err}");
        }
    }

    /// Invariant 9: a symlink planted at the temporary name the journal
    /// used (`<path>.tmp`) is not followed: its target is untouched.
    #[test]
    fn write_never_follows_a_symlink_planted_at_the_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        fs::write(&target, "keep me\n").unwrap();
        let path = dir.path().join("state.bin");
        let mut planted = path.clone().into_os_string();
        planted.push(".tmp");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        let journal = sample(Phase::Sealing);
        journal.write(&path).unwrap();
        journal.write(&path).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me\n");
        assert!(fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(Journal::read(&path).unwrap(), Some(journal));
    }

    /// A journal directory others may write to (not sticky) is refused,
    /// naming it; a sticky one of ours is fine.
    #[test]
    fn write_refuses_a_directory_others_can_write_to() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let path = open.join("state.bin");
        let err = sample(Phase::Sealing).write(&path).unwrap_err().to_string();
        assert!(err.contains(&*open.to_string_lossy()), "{err}");
        assert!(err.contains("writable"), "{err}");
        assert!(!path.exists());
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        sample(Phase::Sealing).write(&path).unwrap();
    }

    /// A FIFO at the journal path (no writer) is refused at once, naming
    /// the path, instead of blocking the reader forever.
    #[test]
    fn read_refuses_a_fifo_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.bin");
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let (send, answer) = std::sync::mpsc::channel();
        let reading = path.clone();
        std::thread::spawn(move || {
            let _ = send.send(Journal::read(&reading).map_err(|e| e.to_string()));
        });
        // Not a timing assertion: only a read that blocks for good misses it.
        let result = answer
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("Journal::read blocked on a FIFO");
        let err = result.unwrap_err();
        assert!(err.contains("state.bin"), "{err}");
        assert!(err.contains("not a regular file"), "{err}");
    }
}
