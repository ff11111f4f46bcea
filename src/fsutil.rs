//! Files the library creates next to a path it is given (temporaries, the
//! lock's files, sockets) never follow or replace what someone else planted
//! there (invariant 9): temporaries get unpredictable names and are created
//! with O_EXCL (which never follows a symlink), and a directory that another
//! user may write to is refused, since they could swap our files in it.
#![allow(unsafe_code)]

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How many bytes [`temporary_path`] adds to a path: `.` + 8 hex digits + `.tmp`.
pub const TEMPORARY_SUFFIX_LEN: usize = 13;

/// How many fresh names to try when one is taken already.
const ATTEMPTS: usize = 8;

/// A fresh temporary name next to `path`: `<path>.<8 random hex digits>.tmp`,
/// random so that nobody can plant something at it in advance.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    let random = uuid::Uuid::new_v4().as_u128() as u32;
    name.push(format!(".{random:08x}.tmp"));
    PathBuf::from(name)
}

/// The directory `path` is in (`.` for a bare name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Create `dir` and its missing parents, none of them writable by others
/// whatever the umask (a later [`check_private_dir`] would refuse them).
pub fn create_dirs(dir: &Path) -> io::Result<()> {
    // A stat first: a mkdir of one that exists (every successor's data dir)
    // still takes its parent's lock, held by whoever renames a file there.
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(0o755).create(dir)
}

/// Refuse a directory that another user may write to: only ours or root's,
/// and if everyone may write to it, sticky (as /tmp is), so that nobody else
/// can rename or remove what we create there. A group-writable directory is
/// the operator's choice and allowed.
pub fn check_private_dir(dir: &Path) -> Result<()> {
    let meta = fs::metadata(dir).map_err(|e| Error::io("cannot stat directory", dir, e))?;
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    let why = if meta.uid() != euid && meta.uid() != 0 {
        format!("owned by uid {}, who may write to it", meta.uid())
    } else if meta.mode() & 0o002 != 0 && meta.mode() & 0o1000 == 0 {
        "writable by every user and not sticky".to_string()
    } else {
        return Ok(());
    };
    Err(Error::io(
        "refusing directory",
        dir,
        io::Error::new(
            ErrorKind::PermissionDenied,
            format!("{why}: another user could replace the files created there"),
        ),
    ))
}

/// How far a replaced file must reach before `replace` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The disk: the file and its directory fsynced (survives a power cut).
    Durable,
    /// Every process: renamed into place, no fsync. A process that starts
    /// after ours crashed reads it; a power cut may bring back the old one.
    Visible,
}

/// Write `bytes` to a new temporary file next to `path` (mode `mode`),
/// fsync it when `durability` asks, and give its name; nothing is left
/// behind on failure.
fn write_temporary(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> Result<PathBuf> {
    check_private_dir(parent_dir(path))?;
    let (tmp, mut file) = create_temporary(path, mode)?;
    let written = file
        .write_all(bytes)
        .map_err(|e| Error::io("cannot write", &tmp, e))
        .and_then(|()| match durability {
            Durability::Durable => file
                .sync_all()
                .map_err(|e| Error::io("cannot fsync", &tmp, e)),
            Durability::Visible => Ok(()),
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

fn create_temporary(path: &Path, mode: u32) -> Result<(PathBuf, File)> {
    let mut attempt = 0;
    loop {
        let tmp = temporary_path(path);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt + 1 < ATTEMPTS => {
                attempt += 1
            }
            Err(e) => return Err(Error::io("cannot create", &tmp, e)),
        }
    }
}

/// Replace `path`: write a temporary file, rename it over `path`, and for
/// `Durability::Durable` fsync both the file (before the rename) and the
/// directory (after). Readers see the old content or the new one; on
/// failure `path` is left as it was.
pub fn replace(path: &Path, bytes: &[u8], mode: u32, durability: Durability) -> Result<()> {
    let tmp = write_temporary(path, bytes, mode, durability)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("cannot rename into", path, e));
    }
    match durability {
        Durability::Durable => sync_dir(parent_dir(path)),
        Durability::Visible => Ok(()),
    }
}

/// fsync a directory so a rename or a new entry in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot fsync directory", dir, e))
}

/// Open an existing regular file for reading without blocking on what is
/// not one (a FIFO with no writer would block `open` forever) and without
/// following a symlink. `Err` with `NotFound` when there is none.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::new(e.kind(), "is a symbolic link"),
            _ => e,
        })?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("not a regular file ({what})"),
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_fresh_and_exactly_the_suffix_longer() {
        let path = Path::new("/run/kv/control.sock");
        let (a, b) = (temporary_path(path), temporary_path(path));
        assert_ne!(a, b);
        assert_eq!(
            a.as_os_str().len(),
            path.as_os_str().len() + TEMPORARY_SUFFIX_LEN
        );
        assert!(a.to_str().unwrap().starts_with("/run/kv/control.sock."));
    }
}
