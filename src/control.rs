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
