//! The control socket's path: bound privately (mode 0600) and atomically.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil::{self, TEMPORARY_SUFFIX_LEN};
use crate::sys;

/// The longest path `sun_path` holds (108 bytes with the NUL).
const SUN_PATH_MAX: usize = 107;

/// The longest path [`bind_private`] can bind: the socket is bound first at
/// a temporary name 13 bytes longer (`.` + 8 hex digits + `.tmp`).
pub const MAX_PATH_LEN: usize = SUN_PATH_MAX - TEMPORARY_SUFFIX_LEN;

/// Whether [`bind_private`] can bind `path`, saying why not (also what the
/// supervisor's `check` applies to its control and trigger sockets).
pub fn check_path(path: &Path) -> std::result::Result<(), String> {
    let len = path.as_os_str().len();
    if len > MAX_PATH_LEN {
        return Err(format!(
            "{} is {len} bytes; a control or trigger socket path may have at most \
             {MAX_PATH_LEN} (a Unix socket path has at most {SUN_PATH_MAX}, and the socket \
             is bound first at a temporary name {TEMPORARY_SUFFIX_LEN} bytes longer)",
            path.display()
        ));
    }
    Ok(())
}

/// Bind a listening Unix socket at `path` with mode 0600, replacing whatever
/// is there in one rename: a client connecting meanwhile reaches either the
/// old socket or the new one, never nothing. The socket is bound at a fresh
/// temporary name, in a directory no other user may write to, and created
/// with its mode (no chmod by path that a swapped-in symlink could redirect).
pub fn bind_private(path: &Path) -> Result<UnixListener> {
    check_path(path).map_err(|why| {
        Error::io(
            "cannot bind control socket",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, why),
        )
    })?;
    fsutil::check_private_dir(fsutil::parent_dir(path))?;
    let mut attempts = 8;
    let (tmp, listener) = loop {
        let tmp = fsutil::temporary_path(path);
        match bind_owner_only(&tmp) {
            Ok(listener) => break (tmp, listener),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempts > 1 => attempts -= 1,
            Err(e) => return Err(Error::io("cannot bind control socket", &tmp, e)),
        }
    };
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("cannot place control socket at", path, e));
    }
    Ok(listener)
}

/// socket + fchmod 0600 + bind + listen: Linux creates the socket file with
/// the socket's mode (less the umask), so it is never reachable by others.
fn bind_owner_only(path: &Path) -> io::Result<UnixListener> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let bytes = c_path.as_bytes_with_nul();
    if bytes.len() > addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path too long for a Unix socket",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor we just opened and own alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let check = |ret: libc::c_int| {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: fchmod on a descriptor we own; no memory is involved.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) })?;
    // SAFETY: `addr` is a valid sockaddr_un, and the length passed is its size.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    })?;
    // SAFETY: listen on a descriptor we own; no memory is involved.
    if let Err(e) = check(unsafe { libc::listen(fd.as_raw_fd(), libc::SOMAXCONN) }) {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(UnixListener::from(fd))
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
    use std::os::unix::fs::PermissionsExt;

    /// Invariant 9: whatever is planted at the temporary name the bind
    /// used (`<path>.<pid>.tmp`) is neither followed nor removed.
    #[test]
    fn bind_private_leaves_a_symlink_planted_at_the_temporary_name_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        fs::write(&target, "keep me\n").unwrap();
        let path = dir.path().join("control.sock");
        // The name this function used before it made them random.
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
