//! The service's listening sockets: adopted from systemd socket activation
//! (matched by name, FileDescriptorName=) or bound here, once, for the life
//! of the supervisor.

use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;

use handoff::listeners::{ListenerKind, Listeners, Role, UNNAMED};

use crate::config::{Address, Config, Listener};
use crate::log::log;

/// Why a listener could not be bound.
#[derive(Debug)]
pub struct BindError {
    pub message: String,
    /// Someone is listening there already (a previous generation?).
    pub in_use: bool,
}

/// Listeners handed to this process by systemd (LISTEN_FDS), if any. Call
/// early: it reads and clears the variables.
pub fn inherited() -> Result<Listeners, String> {
    let inherited = handoff::listeners::detect().map_err(|e| e.to_string())?;
    if inherited.role() == Role::Successor {
        return Err("started as a handoff successor (HANDOFF_ROLE is set): \
                    the supervisor is not a service of another supervisor"
            .into());
    }
    Ok(inherited.into_listeners())
}

fn kind(address: &Address) -> ListenerKind {
    match address {
        Address::Tcp(_) => ListenerKind::Tcp,
        Address::Udp(_) => ListenerKind::Udp,
        Address::Unix(_) | Address::UnixAbstract(_) => ListenerKind::Unix,
    }
}

/// Take the configured listeners systemd passed (by name; by position when
/// systemd named none of them and the counts match). Returns, per config
/// listener, the adopted descriptor or None (to be bound).
pub fn adopt(config: &Config, inherited: &mut Listeners) -> Result<Vec<Option<OwnedFd>>, String> {
    let positional = !inherited.is_empty()
        && inherited.names().iter().all(|n| *n == UNNAMED)
        && inherited.len() == config.listeners.len();
    let mut adopted = Vec::new();
    for listener in &config.listeners {
        let name = if positional { UNNAMED } else { &listener.name };
        let fd = inherited
            .take_as(name, kind(&listener.address))
            .map_err(|e| format!("socket activation: listener {:?}: {e}", listener.name))?;
        if fd.is_some() {
            log!(
                Info,
                &[("listener", crate::log::Field::Str(&listener.name))],
                "listener {} ({}) adopted from systemd",
                listener.name,
                listener.text
            );
        }
        adopted.push(fd);
    }
    let mut left: Vec<&str> = inherited
        .names()
        .into_iter()
        .filter(|n| inherited.contains(n))
        .collect();
    left.dedup();
    if !left.is_empty() {
        log!(
            Warn,
            &[],
            "socket activation passed listeners the config does not name, closed: {}",
            left.join(", ")
        );
    }
    Ok(adopted)
}

/// Bind one listener.
pub fn bind(listener: &Listener) -> Result<OwnedFd, BindError> {
    let error = |e: std::io::Error| BindError {
        in_use: e.kind() == ErrorKind::AddrInUse,
        message: format!(
            "cannot bind listener {:?} on {}: {e}",
            listener.name, listener.text
        ),
    };
    match &listener.address {
        Address::Tcp(addr) => TcpListener::bind(addr).map(OwnedFd::from).map_err(error),
        Address::Udp(addr) => UdpSocket::bind(addr).map(OwnedFd::from).map_err(error),
        Address::UnixAbstract(name) => SocketAddr::from_abstract_name(name)
            .and_then(|addr| UnixListener::bind_addr(&addr))
            .map(OwnedFd::from)
            .map_err(error),
        Address::Unix(path) => {
            match existing_socket(path) {
                Err(why) => {
                    return Err(BindError {
                        in_use: false,
                        message: format!("cannot bind listener {:?}: {why}", listener.name),
                    })
                }
                Ok(Existing::Live) => {
                    return Err(error(std::io::Error::new(
                        ErrorKind::AddrInUse,
                        "a process is listening there",
                    )))
                }
                Ok(Existing::Stale) => {
                    let _ = std::fs::remove_file(path);
                }
                Ok(Existing::Nothing) => {}
            }
            UnixListener::bind(path).map(OwnedFd::from).map_err(error)
        }
    }
}

/// What is at a Unix socket path the supervisor binds.
#[derive(Debug, PartialEq, Eq)]
pub enum Existing {
    Nothing,
    /// A socket nobody accepts on: left by a process that is gone.
    Stale,
    /// A socket a running process accepts on.
    Live,
}

/// Look at `path` without following it. Anything but a socket (a symlink, a
/// regular file) is an error naming it: it is the operator's to remove,
/// never the supervisor's to follow or delete.
pub fn existing_socket(path: &Path) -> Result<Existing, String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path)
            .map(|t| format!(" to {}", t.display()))
            .unwrap_or_default();
        return Err(format!(
            "{} is a symbolic link{target}: the supervisor neither follows nor replaces it; \
             remove it, or configure the real path",
            path.display()
        ));
    }
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{} exists and is not a socket: the supervisor will not replace it; remove it, \
             or configure another path",
            path.display()
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Ok(Existing::Live),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(Existing::Stale),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
