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
    check_bindable(path)?;
    let mut attempts = 8;
    let (tmp, listener) = loop {
        let tmp = fsutil::temporary_path(path);
        match bind_owner_only(&tmp) {
            Ok(listener) => break (tmp, listener),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempts > 1 => attempts -= 1,
            Err(e) => return Err(Error::io("cannot bind control socket", &tmp, e)),
        }
    };
    rename_into_place(&tmp, path)?;
    Ok(listener)
}

/// What [`bind_private`] requires of `path` before it binds anything.
fn check_bindable(path: &Path) -> Result<()> {
    check_path(path).map_err(|why| {
        Error::io(
            "cannot bind control socket",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, why),
        )
    })?;
    fsutil::check_private_dir(fsutil::parent_dir(path))
}

/// The socket bound at `tmp` now answers at `path`; on failure it is gone.
fn rename_into_place(tmp: &Path, path: &Path) -> Result<()> {
    fs::rename(tmp, path).map_err(|e| {
        let _ = fs::remove_file(tmp);
        Error::io("cannot place control socket at", path, e)
    })
}

/// A successor's control socket bound ahead, during its handshake, at
/// [`prebound_path`] (its pid in the name, so that the supervisor can
/// remove it should the successor die before Ready), and renamed over the
/// control socket's path when it announces Ready: the bind (0.05-0.08 ms
/// here) leaves the blackout. Dropped unplaced, it removes its file.
#[derive(Debug)]
pub struct PreboundSocket {
    listener: Option<UnixListener>,
    tmp: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl PreboundSocket {
    /// Bind and listen at `path`'s prebound name, in a directory no other
    /// user may write to, after removing a socket that a dead process with
    /// our pid left there (nothing else is touched: then this fails).
    pub fn bind(path: &Path) -> Result<PreboundSocket> {
        check_bindable(path)?;
        let tmp = prebound_path(path, std::process::id());
        remove_socket(&tmp);
        let listener =
            bind_owner_only(&tmp).map_err(|e| Error::io("cannot bind control socket", &tmp, e))?;
        Ok(PreboundSocket {
            listener: Some(listener),
            tmp,
            path: path.to_owned(),
        })
    }

    /// The control socket's path this is for.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rename it over its path: from now on it answers there.
    pub fn place(mut self) -> Result<UnixListener> {
        rename_into_place(&self.tmp, &self.path)?;
        Ok(self.listener.take().expect("placed once"))
    }
}

impl Drop for PreboundSocket {
    fn drop(&mut self) {
        if self.listener.take().is_some() {
            remove_socket(&self.tmp);
        }
    }
}

/// Where process `pid` binds the control socket `path` ahead:
/// `<path>.<pid, 8 hex digits>.tmp`, as long as a temporary name.
pub fn prebound_path(path: &Path, pid: u32) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{pid:08x}.tmp"));
    std::path::PathBuf::from(name)
}

/// Remove what a successor that died before Ready left at its prebound
/// name (a socket, nothing else).
pub fn remove_prebound(path: &Path, pid: u32) {
    remove_socket(&prebound_path(path, pid));
}

/// Remove `path` if it is a socket (never following a symlink).
fn remove_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = fs::remove_file(path);
    }
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

    #[test]
    fn a_prebound_socket_listens_at_its_pid_name_until_placed_over_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let tmp = prebound_path(&path, std::process::id());
        let prebound = PreboundSocket::bind(&path).unwrap();
        assert_eq!(prebound.path(), path);
        let mode = fs::symlink_metadata(&tmp).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!path.exists());
        // Connections made before the rename are queued, then accepted.
        let early = UnixStream::connect(&tmp).unwrap();
        let listener = prebound.place().unwrap();
        assert!(!tmp.exists());
        let _late = UnixStream::connect(&path).unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        drop(early);

        // Dropped unplaced: its file goes with it.
        let other = dir.path().join("other.sock");
        drop(PreboundSocket::bind(&other).unwrap());
        assert!(!prebound_path(&other, std::process::id()).exists());
        assert!(!other.exists());
    }

    /// A socket a dead process with our pid left is replaced; anything else
    /// planted at the name is neither followed nor removed.
    #[test]
    fn a_prebound_name_in_use_is_taken_only_from_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let tmp = prebound_path(&path, std::process::id());
        drop(UnixListener::bind(&tmp).unwrap());
        assert!(tmp.exists());
        let prebound = PreboundSocket::bind(&path).unwrap();
        UnixStream::connect(&tmp).unwrap();
        drop(prebound);

        let target = dir.path().join("precious");
        fs::write(&target, "keep me\n").unwrap();
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        let err = PreboundSocket::bind(&path).unwrap_err().to_string();
        assert!(err.contains("cannot bind control socket"), "{err}");
        assert_eq!(fs::read_link(&tmp).unwrap(), target);
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me\n");
        // Nor does the supervisor's clean-up touch it.
        remove_prebound(&path, std::process::id());
        assert_eq!(fs::read_link(&tmp).unwrap(), target);
        fs::remove_file(&tmp).unwrap();

        // What it does remove: a dead successor's socket.
        drop(UnixListener::bind(prebound_path(&path, 4_000_000)).unwrap());
        remove_prebound(&path, 4_000_000);
        assert!(!prebound_path(&path, 4_000_000).exists());
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
