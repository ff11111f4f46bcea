//! The control socket's path: bound privately (mode 0600) and atomically.
#![allow(unsafe_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// Bind a listening Unix socket at `path` with mode 0600, replacing whatever
/// is there in one rename: a client connecting meanwhile reaches either the
/// old socket or the new one, never nothing.
pub fn bind_private(path: &Path) -> Result<UnixListener> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let _ = fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).map_err(|e| Error::io("cannot bind control socket", &tmp, e))?;
    let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("cannot chmod control socket", &tmp, e))
        .and_then(|()| {
            fs::rename(&tmp, path).map_err(|e| Error::io("cannot place control socket at", path, e))
        });
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sys::set_cloexec(std::os::fd::AsRawFd::as_raw_fd(&listener)).map_err(Error::Stream)?;
    Ok(listener)
}

/// Only the supervisor's user, or root, may drive a handoff (invariant 9).
pub fn check_peer_uid(stream: &UnixStream) -> Result<sys::PeerCred> {
    let cred = sys::peer_cred(stream).map_err(Error::Stream)?;
    // SAFETY: geteuid cannot fail and touches no memory.
    let own = unsafe { libc::geteuid() };
    if cred.uid != own && cred.uid != 0 {
        return Err(Error::PeerNotPermitted { uid: cred.uid });
    }
    Ok(cred)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invariant 9: whatever is planted at the temporary name the bind
    /// used (`<path>.<pid>.tmp`) is neither followed nor removed.
    #[test]
    fn bind_private_leaves_a_symlink_planted_at_the_temporary_name_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        fs::write(&target, "keep me\n").unwrap();
        let path = dir.path().join("control.sock");
        let planted = dir
            .path()
            .join(format!("control.sock.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        let _listener = bind_private(&path).unwrap();
        UnixStream::connect(&path).unwrap();
        let mode = fs::symlink_metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read_link(&planted).unwrap(), target);
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me\n");
    }

    /// A directory others may write to (not sticky) is refused, naming it.
    #[test]
    fn bind_private_refuses_a_directory_others_can_write_to() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let err = bind_private(&open.join("control.sock"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&*open.to_string_lossy()), "{err}");
        assert!(err.contains("writable"), "{err}");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        bind_private(&open.join("control.sock")).unwrap();
    }
}
