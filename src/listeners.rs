//! Role detection and the inherited listeners (DESIGN §3).
//!
//! A successor finds listener i at fd 3+i and its end of the supervisor's
//! socketpair at fd 3+n, described by HANDOFF_ROLE, HANDOFF_SOCK_FD,
//! LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID. [`detect`] reads and removes
//! them, adopts the descriptors and marks them close-on-exec.
//!
//! The trap: each listener's open file description is shared with the
//! supervisor and the incumbent, so its file status flags (O_NONBLOCK) are
//! too. Nothing here changes them; only FD_CLOEXEC, which belongs to the
//! descriptor, is touched.
// Adopting inherited descriptors means trusting integers from the environment.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

pub const ENV_ROLE: &str = "HANDOFF_ROLE";
pub const ENV_SOCK_FD: &str = "HANDOFF_SOCK_FD";
pub const ENV_LISTEN_FDS: &str = "LISTEN_FDS";
pub const ENV_LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
pub const ENV_LISTEN_PID: &str = "LISTEN_PID";
/// The control socket path the supervisor reaches a successor at once it is
/// the incumbent: the successor may bind it ahead (ours sets it; optional).
pub const ENV_CONTROL_SOCKET: &str = "HANDOFF_CONTROL_SOCKET";
/// The value of HANDOFF_ROLE in a successor.
pub const ROLE_SUCCESSOR: &str = "successor";
/// The first inherited descriptor (after stdin, stdout, stderr).
pub const FIRST_FD: RawFd = 3;
/// More inherited listeners than this is taken as a corrupt environment.
pub const MAX_LISTEN_FDS: usize = 1024;
/// The name of a listener LISTEN_FDNAMES does not name (as systemd does).
pub const UNNAMED: &str = "unknown";

const ALL_VARS: [&str; 6] = [
    ENV_ROLE,
    ENV_SOCK_FD,
    ENV_LISTEN_FDS,
    ENV_LISTEN_FDNAMES,
    ENV_LISTEN_PID,
    ENV_CONTROL_SOCKET,
];

/// How this process was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Started on its own (possibly with listeners from systemd).
    ColdStart,
    /// Spawned by a supervisor for a handoff, with a control socket.
    Successor,
}

/// What a process inherited: its role, the supervisor's control socket (a
/// successor's) and the listeners.
#[derive(Debug)]
pub struct Inherited {
    role: Role,
    control: Option<OwnedFd>,
    /// A successor's HANDOFF_CONTROL_SOCKET.
    control_path: Option<PathBuf>,
    listeners: Listeners,
}

impl Inherited {
    pub fn role(&self) -> Role {
        self.role
    }

    pub fn is_successor(&self) -> bool {
        self.role == Role::Successor
    }

    pub fn listeners(&self) -> &Listeners {
        &self.listeners
    }

    pub fn listeners_mut(&mut self) -> &mut Listeners {
        &mut self.listeners
    }

    pub fn into_listeners(self) -> Listeners {
        self.listeners
    }

    /// A successor's end of the supervisor's socketpair (HANDOFF_SOCK_FD),
    /// for `successor::Successor::new`; None on a cold start or once taken.
    pub fn take_control(&mut self) -> Option<OwnedFd> {
        self.control.take()
    }

    /// Where the supervisor will reach a successor once it is the incumbent
    /// (HANDOFF_CONTROL_SOCKET), if it said so: see
    /// `Successor::expect_control_socket`.
    pub fn control_socket_path(&self) -> Option<&Path> {
        self.control_path.as_deref()
    }

    /// An `Inherited` built by hand (tests, or a host that arranges its own
    /// descriptors). A successor must come with its control socket.
    pub fn from_parts(
        role: Role,
        control: Option<OwnedFd>,
        listeners: Listeners,
    ) -> Result<Inherited> {
        if (role == Role::Successor) != control.is_some() {
            return Err(Error::WrongState(
                "a successor, and only a successor, has a control socket".into(),
            ));
        }
        Ok(Inherited {
            role,
            control,
            control_path: None,
            listeners,
        })
    }
}

/// Detect this process's role and adopt what it inherited.
///
/// Reads the successor variables and removes them from the environment (so
/// children do not inherit them), then adopts listener i at fd 3+i and, in a
/// successor, the control socket at fd 3+n, marking each close-on-exec.
/// LISTEN_PID naming another process means the variables were inherited
/// from an ancestor and are not ours: nothing is adopted (a cold start). A
/// missing LISTEN_PID is accepted. Malformed variables are
/// [`Error::Environment`]; an advertised listener that is not an open socket
/// is [`Error::Listener`]. On error no descriptor is adopted or changed.
///
/// Meaningful once per process: a second call finds no variables and
/// answers a cold start with no listeners. It changes the environment, so
/// call it early, before other threads read the environment.
pub fn detect() -> Result<Inherited> {
    let vars = Vars::from_env();
    for name in ALL_VARS {
        std::env::remove_var(name);
    }
    let mut inherited = vars.plan(std::process::id())?.adopt()?;
    if inherited.is_successor() {
        inherited.control_path = vars
            .control_socket
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);
    }
    Ok(inherited)
}

/// The successor variables as found.
#[derive(Debug, Default, Clone)]
struct Vars {
    role: Option<OsString>,
    sock_fd: Option<OsString>,
    listen_fds: Option<OsString>,
    names: Option<OsString>,
    listen_pid: Option<OsString>,
    control_socket: Option<OsString>,
}

/// What the variables describe, before any descriptor is touched.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    role: Role,
    control_fd: Option<RawFd>,
    listeners: Vec<(String, RawFd)>,
}

impl Vars {
    fn from_env() -> Vars {
        let get = std::env::var_os;
        Vars {
            role: get(ENV_ROLE),
            sock_fd: get(ENV_SOCK_FD),
            listen_fds: get(ENV_LISTEN_FDS),
            names: get(ENV_LISTEN_FDNAMES),
            listen_pid: get(ENV_LISTEN_PID),
            control_socket: get(ENV_CONTROL_SOCKET),
        }
    }

    fn plan(&self, our_pid: u32) -> Result<Plan> {
        if let Some(pid) = &self.listen_pid {
            if number::<u32>(ENV_LISTEN_PID, pid)? != our_pid {
                // An ancestor's variables; the descriptors are not ours.
                return Ok(Plan {
                    role: Role::ColdStart,
                    control_fd: None,
                    listeners: Vec::new(),
                });
            }
        }
        let role = match self.role.as_deref().map(|r| r.to_str()) {
            None => Role::ColdStart,
            Some(Some(ROLE_SUCCESSOR)) => Role::Successor,
            Some(_) => {
                return Err(env_error(format!(
                    "{ENV_ROLE} is {:?}; the only value it takes is \"{ROLE_SUCCESSOR}\"",
                    self.role.as_deref().unwrap_or_default()
                )))
            }
        };
        let n = match &self.listen_fds {
            None => 0,
            Some(value) => number::<usize>(ENV_LISTEN_FDS, value)?,
        };
        if n > MAX_LISTEN_FDS {
            return Err(env_error(format!(
                "{ENV_LISTEN_FDS}={n} is more than the {MAX_LISTEN_FDS} listeners accepted"
            )));
        }
        let names = self.names(n)?;
        let listeners = names
            .into_iter()
            .zip(FIRST_FD..)
            .collect::<Vec<(String, RawFd)>>();
        let expected_sock_fd = FIRST_FD + n as RawFd;
        let control_fd = match (role, &self.sock_fd) {
            (Role::Successor, None) => {
                return Err(env_error(format!(
                    "{ENV_ROLE}={ROLE_SUCCESSOR} but {ENV_SOCK_FD} is not set"
                )))
            }
            (Role::Successor, Some(value)) => {
                let fd = number::<RawFd>(ENV_SOCK_FD, value)?;
                if fd != expected_sock_fd {
                    return Err(env_error(format!(
                        "{ENV_SOCK_FD}={fd} but with {ENV_LISTEN_FDS}={n} it must be {expected_sock_fd}"
                    )));
                }
                Some(fd)
            }
            (Role::ColdStart, Some(_)) => {
                return Err(env_error(format!(
                    "{ENV_SOCK_FD} is set but {ENV_ROLE} is not \"{ROLE_SUCCESSOR}\""
                )))
            }
            (Role::ColdStart, None) => None,
        };
        Ok(Plan {
            role,
            control_fd,
            listeners,
        })
    }

    fn names(&self, n: usize) -> Result<Vec<String>> {
        let Some(joined) = &self.names else {
            return Ok(vec![UNNAMED.to_owned(); n]);
        };
        let joined = joined.to_str().ok_or_else(|| {
            env_error(format!(
                "{ENV_LISTEN_FDNAMES} is not valid UTF-8: {joined:?}"
            ))
        })?;
        let names: Vec<String> = if joined.is_empty() {
            Vec::new()
        } else {
            joined.split(':').map(str::to_owned).collect()
        };
        if names.len() != n {
            return Err(env_error(format!(
                "{ENV_LISTEN_FDNAMES}={joined:?} names {} listeners but {ENV_LISTEN_FDS}={n}",
                names.len()
            )));
        }
        Ok(names)
    }
}

impl Plan {
    /// Check every descriptor, then take ownership of all of them: on error
    /// nothing is owned, so nothing that may be someone else's gets closed.
    fn adopt(self) -> Result<Inherited> {
        for (name, fd) in &self.listeners {
            sys::socket_option(*fd, libc::SOL_SOCKET, libc::SO_TYPE).map_err(|e| {
                Error::Listener(format!(
                    "inherited listener \"{name}\" (fd {fd}) is not an open socket: {e}"
                ))
            })?;
        }
        if let Some(fd) = self.control_fd {
            match sys::socket_option(fd, libc::SOL_SOCKET, libc::SO_DOMAIN) {
                Ok(libc::AF_UNIX) => {}
                Ok(_) => {
                    return Err(env_error(format!(
                        "{ENV_SOCK_FD}={fd} is not a Unix socket"
                    )))
                }
                Err(e) => {
                    return Err(env_error(format!(
                        "{ENV_SOCK_FD}={fd} is not an open socket: {e}"
                    )))
                }
            }
        }
        // SAFETY: the environment, addressed to this process (LISTEN_PID),
        // hands these descriptors over to us; each is open (checked above),
        // they are distinct (3.., then 3+n), and nothing else in the process
        // claims them: the variables are gone, so they are adopted once.
        let adopt = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
        let listeners = Listeners::from_fds(
            self.listeners
                .into_iter()
                .map(|(name, fd)| (name, adopt(fd))),
        );
        let control = self.control_fd.map(adopt);
        for fd in listeners
            .entries
            .iter()
            .filter_map(|e| e.fd.as_ref())
            .chain(&control)
        {
            let fd = fd.as_raw_fd();
            sys::set_cloexec(fd)
                .map_err(|e| env_error(format!("cannot mark fd {fd} close-on-exec: {e}")))?;
        }
        Ok(Inherited {
            role: self.role,
            control,
            control_path: None,
            listeners,
        })
    }
}

fn env_error(message: String) -> Error {
    Error::Environment(message)
}

/// A plain decimal: no sign, no spaces, no empty string.
fn number<T: std::str::FromStr>(var: &str, value: &std::ffi::OsStr) -> Result<T> {
    let bad = || env_error(format!("{var}={value:?} is not a decimal number"));
    let text = value.to_str().ok_or_else(bad)?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse().map_err(|_| {
        env_error(format!(
            "{var}={text} is out of range for a {}",
            std::any::type_name::<T>()
        ))
    })
}

/// What a listener is taken as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// A listening TCP socket (IPv4 or IPv6).
    Tcp,
    /// A UDP socket (IPv4 or IPv6).
    Udp,
    /// A listening Unix stream socket.
    Unix,
}

impl ListenerKind {
    fn describe(self) -> &'static str {
        match self {
            ListenerKind::Tcp => "a TCP listener",
            ListenerKind::Udp => "a UDP socket",
            ListenerKind::Unix => "a Unix listener",
        }
    }
}

#[derive(Debug)]
struct Entry {
    name: String,
    /// None once taken.
    fd: Option<OwnedFd>,
}

/// The inherited listeners, by name, in descriptor order. Names may repeat
/// (as in systemd); a take gets the first one of that name not yet taken.
#[derive(Debug, Default)]
pub struct Listeners {
    entries: Vec<Entry>,
}

impl Listeners {
    /// Listeners from descriptors the caller owns (tests, or a host that
    /// arranged its own).
    pub fn from_fds(fds: impl IntoIterator<Item = (String, OwnedFd)>) -> Listeners {
        Listeners {
            entries: fds
                .into_iter()
                .map(|(name, fd)| Entry { name, fd: Some(fd) })
                .collect(),
        }
    }

    /// How many listeners were inherited, taken ones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of listener `index` (fd 3+index), taken or not.
    pub fn name(&self, index: usize) -> Option<&str> {
        self.entries.get(index).map(|e| e.name.as_str())
    }

    /// Every listener's name, in descriptor order, taken ones included.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// Whether a listener of this name is still there to be taken.
    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// Take the listener `name` as it is, without checking what it is.
    pub fn take_fd(&mut self, name: &str) -> Option<OwnedFd> {
        let index = self.position(name)?;
        self.entries[index].fd.take()
    }

    /// Take the listener `name` if it is a socket of `kind`. Ok(None) when
    /// there is no such listener left; [`Error::Listener`] when it is of
    /// another kind, in which case it stays here. Its flags are untouched.
    pub fn take_as(&mut self, name: &str, kind: ListenerKind) -> Result<Option<OwnedFd>> {
        let Some(index) = self.position(name) else {
            return Ok(None);
        };
        let entry = &mut self.entries[index];
        let fd = entry.fd.as_ref().expect("position finds untaken entries");
        let actual = SocketKind::of(fd.as_raw_fd())
            .map_err(|e| Error::Listener(format!("listener \"{name}\": {e}")))?;
        if actual.kind() != Some(kind) {
            return Err(Error::Listener(format!(
                "listener \"{name}\" is {}, not {}",
                actual.describe(),
                kind.describe()
            )));
        }
        Ok(entry.fd.take())
    }

    /// Take a TCP listener. Never changes O_NONBLOCK: the incumbent shares it.
    pub fn take_tcp(&mut self, name: &str) -> Result<Option<TcpListener>> {
        Ok(self
            .take_as(name, ListenerKind::Tcp)?
            .map(TcpListener::from))
    }

    /// Take a UDP socket. Never changes O_NONBLOCK: the incumbent shares it.
    pub fn take_udp(&mut self, name: &str) -> Result<Option<UdpSocket>> {
        Ok(self.take_as(name, ListenerKind::Udp)?.map(UdpSocket::from))
    }

    /// Take a Unix stream listener. Never changes O_NONBLOCK: the incumbent
    /// shares it.
    pub fn take_unix(&mut self, name: &str) -> Result<Option<UnixListener>> {
        Ok(self
            .take_as(name, ListenerKind::Unix)?
            .map(UnixListener::from))
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.name == name && e.fd.is_some())
    }
}

/// What a socket is, from the kernel's point of view.
struct SocketKind {
    domain: libc::c_int,
    ty: libc::c_int,
    protocol: libc::c_int,
    listening: bool,
}

impl SocketKind {
    fn of(fd: RawFd) -> std::io::Result<SocketKind> {
        let option = |name| sys::socket_option(fd, libc::SOL_SOCKET, name);
        let ty = option(libc::SO_TYPE)?;
        Ok(SocketKind {
            domain: option(libc::SO_DOMAIN)?,
            ty,
            protocol: option(libc::SO_PROTOCOL)?,
            listening: ty == libc::SOCK_STREAM && option(libc::SO_ACCEPTCONN)? != 0,
        })
    }

    fn is_inet(&self) -> bool {
        self.domain == libc::AF_INET || self.domain == libc::AF_INET6
    }

    fn kind(&self) -> Option<ListenerKind> {
        match (self.ty, self.protocol) {
            (libc::SOCK_STREAM, libc::IPPROTO_TCP) if self.is_inet() && self.listening => {
                Some(ListenerKind::Tcp)
            }
            (libc::SOCK_DGRAM, libc::IPPROTO_UDP) if self.is_inet() => Some(ListenerKind::Udp),
            (libc::SOCK_STREAM, _) if self.domain == libc::AF_UNIX && self.listening => {
                Some(ListenerKind::Unix)
            }
            _ => None,
        }
    }

    fn describe(&self) -> String {
        let inet = self.is_inet();
        let unix = self.domain == libc::AF_UNIX;
        match (self.ty, self.protocol) {
            (libc::SOCK_STREAM, libc::IPPROTO_TCP) if inet && self.listening => {
                "a TCP listener".into()
            }
            (libc::SOCK_STREAM, libc::IPPROTO_TCP) if inet => {
                "a TCP socket that is not listening".into()
            }
            (libc::SOCK_DGRAM, libc::IPPROTO_UDP) if inet => "a UDP socket".into(),
            (libc::SOCK_STREAM, _) if unix && self.listening => "a Unix listener".into(),
            (libc::SOCK_STREAM, _) if unix => "a Unix stream socket that is not listening".into(),
            (libc::SOCK_DGRAM, _) if unix => "a Unix datagram socket".into(),
            (libc::SOCK_SEQPACKET, _) if unix => "a Unix seqpacket socket".into(),
            _ => format!(
                "a socket of family {}, type {}, protocol {}",
                self.domain, self.ty, self.protocol
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        let mut vars = Vars::default();
        for (name, value) in pairs {
            let value = Some(OsString::from(value));
            match *name {
                ENV_ROLE => vars.role = value,
                ENV_SOCK_FD => vars.sock_fd = value,
                ENV_LISTEN_FDS => vars.listen_fds = value,
                ENV_LISTEN_FDNAMES => vars.names = value,
                ENV_LISTEN_PID => vars.listen_pid = value,
                other => panic!("unknown variable {other}"),
            }
        }
        vars
    }

    const PID: u32 = 4242;

    fn cold() -> Plan {
        Plan {
            role: Role::ColdStart,
            control_fd: None,
            listeners: vec![],
        }
    }

    #[test]
    fn no_variables_is_a_cold_start_with_nothing() {
        assert_eq!(vars(&[]).plan(PID).unwrap(), cold());
    }

    #[test]
    fn a_successor_gets_listeners_from_3_and_the_control_socket_after_them() {
        let plan = vars(&[
            (ENV_ROLE, "successor"),
            (ENV_LISTEN_FDS, "2"),
            (ENV_LISTEN_FDNAMES, "web:admin"),
            (ENV_SOCK_FD, "5"),
            (ENV_LISTEN_PID, "4242"),
        ])
        .plan(PID)
        .unwrap();
        assert_eq!(
            plan,
            Plan {
                role: Role::Successor,
                control_fd: Some(5),
                listeners: vec![("web".into(), 3), ("admin".into(), 4)],
            }
        );
    }

    #[test]
    fn missing_names_are_unknown_and_a_missing_listen_pid_is_accepted() {
        let plan = vars(&[(ENV_LISTEN_FDS, "2")]).plan(PID).unwrap();
        assert_eq!(
            plan.listeners,
            vec![("unknown".into(), 3), ("unknown".into(), 4)]
        );
        let plan = vars(&[(ENV_ROLE, "successor"), (ENV_SOCK_FD, "3")])
            .plan(PID)
            .unwrap();
        assert_eq!(plan.control_fd, Some(3));
        assert!(plan.listeners.is_empty());
    }

    #[test]
    fn listen_pid_of_another_process_adopts_nothing_even_if_malformed_otherwise() {
        let plan = vars(&[
            (ENV_ROLE, "successor"),
            (ENV_LISTEN_FDS, "2"),
            (ENV_SOCK_FD, "99"),
            (ENV_LISTEN_PID, "1"),
        ])
        .plan(PID)
        .unwrap();
        assert_eq!(plan, cold());
    }

    #[test]
    fn malformed_variables_are_environment_errors_naming_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[(ENV_LISTEN_FDS, "two")], ENV_LISTEN_FDS),
            (&[(ENV_LISTEN_FDS, "")], ENV_LISTEN_FDS),
            (&[(ENV_LISTEN_FDS, "+1")], ENV_LISTEN_FDS),
            (&[(ENV_LISTEN_FDS, "-1")], ENV_LISTEN_FDS),
            (&[(ENV_LISTEN_FDS, "1025")], ENV_LISTEN_FDS),
            (
                &[(ENV_LISTEN_FDS, "99999999999999999999999")],
                ENV_LISTEN_FDS,
            ),
            (&[(ENV_LISTEN_PID, "me")], ENV_LISTEN_PID),
            (&[(ENV_ROLE, "incumbent")], ENV_ROLE),
            (&[(ENV_ROLE, "successor")], ENV_SOCK_FD),
            (
                &[
                    (ENV_ROLE, "successor"),
                    (ENV_LISTEN_FDS, "1"),
                    (ENV_SOCK_FD, "3"),
                ],
                ENV_SOCK_FD,
            ),
            (&[(ENV_ROLE, "successor"), (ENV_SOCK_FD, "x")], ENV_SOCK_FD),
            (&[(ENV_SOCK_FD, "3")], ENV_SOCK_FD),
            (
                &[(ENV_LISTEN_FDS, "2"), (ENV_LISTEN_FDNAMES, "a")],
                ENV_LISTEN_FDNAMES,
            ),
            (
                &[(ENV_LISTEN_FDS, "1"), (ENV_LISTEN_FDNAMES, "")],
                ENV_LISTEN_FDNAMES,
            ),
            (&[(ENV_LISTEN_FDNAMES, "a")], ENV_LISTEN_FDNAMES),
        ];
        for (pairs, named) in cases {
            match vars(pairs).plan(PID) {
                Err(e @ Error::Environment(_)) => {
                    assert!(e.to_string().contains(named), "{pairs:?}: {e}")
                }
                other => panic!("{pairs:?}: expected an environment error, got {other:?}"),
            }
        }
    }

    fn tcp() -> OwnedFd {
        TcpListener::bind("127.0.0.1:0").unwrap().into()
    }

    fn udp() -> OwnedFd {
        UdpSocket::bind("127.0.0.1:0").unwrap().into()
    }

    fn unix(dir: &std::path::Path) -> OwnedFd {
        UnixListener::bind(dir.join("s")).unwrap().into()
    }

    #[test]
    fn typed_takes_check_the_family_and_leave_a_mismatch_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = Listeners::from_fds([
            ("web".to_owned(), tcp()),
            ("dns".to_owned(), udp()),
            ("admin".to_owned(), unix(dir.path())),
        ]);
        let err = listeners.take_tcp("dns").unwrap_err();
        assert!(matches!(err, Error::Listener(_)));
        assert!(
            err.to_string()
                .contains("listener \"dns\" is a UDP socket, not a TCP listener"),
            "{err}"
        );
        let err = listeners.take_udp("web").unwrap_err();
        assert!(
            err.to_string()
                .contains("\"web\" is a TCP listener, not a UDP socket"),
            "{err}"
        );
        let err = listeners.take_tcp("admin").unwrap_err();
        assert!(
            err.to_string()
                .contains("\"admin\" is a Unix listener, not a TCP listener"),
            "{err}"
        );
        assert!(listeners.take_unix("web").is_err());
        assert!(listeners.take_tcp("nope").unwrap().is_none());

        assert!(listeners.take_udp("dns").unwrap().is_some());
        assert!(listeners.take_tcp("web").unwrap().is_some());
        assert!(listeners.take_unix("admin").unwrap().is_some());
        // Taken once; the names stay listed.
        assert!(listeners.take_tcp("web").unwrap().is_none());
        assert!(!listeners.contains("web"));
        assert_eq!(listeners.names(), ["web", "dns", "admin"]);
    }

    #[test]
    fn a_connected_or_unbound_stream_is_not_a_listener() {
        let (a, _b) = UnixStream::pair().unwrap();
        let stream = std::net::TcpStream::connect(
            TcpListener::bind("127.0.0.1:0")
                .map(|l| l.local_addr().unwrap())
                .unwrap(),
        );
        let mut listeners = Listeners::from_fds([("pair".to_owned(), OwnedFd::from(a))]);
        let err = listeners.take_unix("pair").unwrap_err();
        assert!(
            err.to_string()
                .contains("a Unix stream socket that is not listening"),
            "{err}"
        );
        if let Ok(stream) = stream {
            let mut listeners = Listeners::from_fds([("c".to_owned(), OwnedFd::from(stream))]);
            let err = listeners.take_tcp("c").unwrap_err();
            assert!(err.to_string().contains("not listening"), "{err}");
        }
    }

    #[test]
    fn repeated_names_are_taken_in_order_and_take_fd_is_unchecked() {
        let mut listeners = Listeners::from_fds([("x".to_owned(), tcp()), ("x".to_owned(), udp())]);
        assert!(listeners.take_fd("x").is_some());
        // The first "x" is gone; the second is the UDP one.
        assert!(listeners.take_tcp("x").is_err());
        assert!(listeners.take_udp("x").unwrap().is_some());
        assert!(listeners.take_fd("x").is_none());
        assert_eq!(listeners.len(), 2);
    }

    #[test]
    fn taking_never_touches_o_nonblock() {
        for nonblocking in [true, false] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(nonblocking).unwrap();
            let mut listeners = Listeners::from_fds([("t".to_owned(), listener.into())]);
            let taken = listeners.take_tcp("t").unwrap().unwrap();
            assert_eq!(sys::is_nonblocking(taken.as_raw_fd()).unwrap(), nonblocking);
        }
    }

    #[test]
    fn from_parts_pairs_a_successor_with_its_control_socket() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(Inherited::from_parts(Role::Successor, None, Listeners::default()).is_err());
        let mut inherited =
            Inherited::from_parts(Role::Successor, Some(a.into()), Listeners::default()).unwrap();
        assert!(inherited.is_successor());
        assert!(inherited.take_control().is_some());
        assert!(inherited.take_control().is_none());
    }
}
