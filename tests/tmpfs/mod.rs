//! A small tmpfs of the test's own, to fill up for real (ENOSPC from the
//! kernel, not a mock). Mounting takes root: without it the test is skipped
//! with a message when HANDOFF_SKIP_ROOT_TESTS=1, and fails saying why
//! otherwise (as tests/hostile_peers.rs does for its other-uid tests).
#![allow(dead_code)]

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

const FILLER: &str = "filler";

/// A mounted tmpfs, unmounted (and its mount point removed) on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// A 2 MiB tmpfs, or None when the test must be skipped.
    pub fn mount(test: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid cannot fail and touches no memory.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            if std::env::var_os("HANDOFF_SKIP_ROOT_TESTS").is_some_and(|v| v == "1") {
                let _ = writeln!(
                    std::io::stderr(),
                    "{test}: SKIPPED (HANDOFF_SKIP_ROOT_TESTS=1): mounting a tmpfs needs root \
                     (euid is {euid})"
                );
                return None;
            }
            panic!(
                "{test} needs root to mount a small tmpfs it can fill (euid is {euid}); run \
                 the tests as root or set HANDOFF_SKIP_ROOT_TESTS=1 to skip it"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs on {:?}", dir.path());
        Some(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write a file until the kernel answers ENOSPC, then check that not
    /// even one more byte fits in a new file.
    pub fn fill(&self) {
        let path = self.path().join(FILLER);
        let mut filler = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let full = loop {
            match filler.write_all(&chunk) {
                Ok(()) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
        assert!(self.is_full(), "{} is not full", self.path().display());
    }

    /// Whether a new one-byte file fails with ENOSPC.
    pub fn is_full(&self) -> bool {
        let probe = self.path().join("probe");
        let written = std::fs::write(&probe, b"x");
        let _ = std::fs::remove_file(&probe);
        matches!(written, Err(e) if e.raw_os_error() == Some(libc::ENOSPC))
    }

    /// Give the filler's space back.
    pub fn free(&self) {
        match std::fs::remove_file(self.path().join(FILLER)) {
            Err(e) if e.kind() != ErrorKind::NotFound => panic!("{e}"),
            _ => {}
        }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process the test failed to stop may still have a file open.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
