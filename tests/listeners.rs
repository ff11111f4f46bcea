//! Role detection and inherited listeners in a real successor (DESIGN §3).
//!
//! The test binary re-executes itself with the descriptors arranged as a
//! supervisor arranges them (listener i at fd 3+i, the control socket at
//! 3+n); `child_process` runs `detect()` there and reports on stdout.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use handoff::listeners::{
    detect, Role, ENV_LISTEN_FDNAMES, ENV_LISTEN_FDS, ENV_LISTEN_PID, ENV_ROLE, ENV_SOCK_FD,
};
use handoff::{sys, Error};

const CHILD_SCENARIO: &str = "HANDOFF_LISTENERS_TEST_CHILD";
/// Asks the child to set LISTEN_PID to its own pid before detecting, as a
/// supervisor that forks and execs itself would.
const CHILD_PID_SELF: &str = "HANDOFF_LISTENERS_TEST_PID_SELF";
const VARS: [&str; 5] = [
    ENV_ROLE,
    ENV_SOCK_FD,
    ENV_LISTEN_FDS,
    ENV_LISTEN_FDNAMES,
    ENV_LISTEN_PID,
];
const TIMEOUT: Duration = Duration::from_secs(20);

/// Malformed environments and the variable each error must name. The child
/// runs them in order; fd 3 is /dev/null in that child.
const MALFORMED: &[(&[(&str, &str)], &str)] = &[
    (&[(ENV_LISTEN_FDS, "two")], ENV_LISTEN_FDS),
    (&[(ENV_LISTEN_FDS, "5000")], ENV_LISTEN_FDS),
    (&[(ENV_LISTEN_FDS, "-1")], ENV_LISTEN_FDS),
    (&[(ENV_LISTEN_PID, "self")], ENV_LISTEN_PID),
    (&[(ENV_ROLE, "incumbent")], ENV_ROLE),
    (&[(ENV_ROLE, "successor")], ENV_SOCK_FD),
    (
        &[
            (ENV_ROLE, "successor"),
            (ENV_LISTEN_FDS, "0"),
            (ENV_SOCK_FD, "4"),
        ],
        ENV_SOCK_FD,
    ),
    (
        &[(ENV_LISTEN_FDS, "2"), (ENV_LISTEN_FDNAMES, "web")],
        ENV_LISTEN_FDNAMES,
    ),
];

fn report(key: &str, value: impl std::fmt::Display) {
    println!("REPORT {key} {value}");
}

fn vars_gone() -> bool {
    VARS.iter().all(|v| std::env::var_os(v).is_none())
}

fn cloexec(fd: RawFd) -> String {
    match sys::is_cloexec(fd) {
        Ok(on) => on.to_string(),
        Err(e) => format!("error {e}"),
    }
}

/// The successor side. Scenarios: `successor` (fds web, dns, admin, control),
/// `foreign` (LISTEN_PID names another process), `malformed`, `trap`.
#[test]
fn child_process() {
    let Ok(scenario) = std::env::var(CHILD_SCENARIO) else {
        return;
    };
    if std::env::var_os(CHILD_PID_SELF).is_some() {
        std::env::set_var(ENV_LISTEN_PID, std::process::id().to_string());
    }
    match scenario.as_str() {
        "successor" => successor_child(),
        "foreign" => {
            let inherited = detect().unwrap();
            report("role", format!("{:?}", inherited.role()));
            report("count", inherited.listeners().len());
            report("vars_gone", vars_gone());
            report("fd3_cloexec", cloexec(3));
        }
        "malformed" => malformed_child(),
        "trap" => {
            let mut inherited = detect().unwrap();
            let listeners = inherited.listeners_mut();
            let tcp = listeners.take_tcp("tcp").unwrap().unwrap();
            let udp = listeners.take_udp("udp").unwrap().unwrap();
            let unix = listeners.take_unix("unix").unwrap().unwrap();
            for (name, fd) in [
                ("tcp", tcp.as_raw_fd()),
                ("udp", udp.as_raw_fd()),
                ("unix", unix.as_raw_fd()),
            ] {
                report(name, sys::is_nonblocking(fd).unwrap());
            }
        }
        other => panic!("unknown scenario {other}"),
    }
    println!("DONE");
}

fn successor_child() {
    let mut inherited = detect().unwrap();
    report("role", format!("{:?}", inherited.role()));
    report("names", inherited.listeners().names().join(","));
    report("vars_gone", vars_gone());
    for fd in 3..=6 {
        report(&format!("cloexec{fd}"), cloexec(fd));
    }
    let listeners = inherited.listeners_mut();
    match listeners.take_tcp("dns") {
        Err(e @ Error::Listener(_)) => report("tcp_of_dns", e),
        other => report("tcp_of_dns", format!("unexpected {other:?}")),
    }
    report(
        "tcp_of_missing",
        format!("{:?}", listeners.take_tcp("missing")),
    );

    // The connection the parent made before we existed waits in the queue.
    let web = listeners.take_tcp("web").unwrap().unwrap();
    let (mut conn, _) = web.accept().unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).unwrap();
    report("tcp_read", String::from_utf8_lossy(&buf));
    conn.write_all(b"pong").unwrap();

    let dns = listeners.take_udp("dns").unwrap().unwrap();
    let mut datagram = [0u8; 64];
    let (len, from) = dns.recv_from(&mut datagram).unwrap();
    report("udp_read", String::from_utf8_lossy(&datagram[..len]));
    dns.send_to(b"ack", from).unwrap();

    let admin = listeners.take_unix("admin").unwrap().unwrap();
    let (mut conn, _) = admin.accept().unwrap();
    conn.read_exact(&mut buf).unwrap();
    report("unix_read", String::from_utf8_lossy(&buf));

    let control = inherited
        .take_control()
        .expect("a successor has a control socket");
    report("control_fd", control.as_raw_fd());
    UnixStream::from(control).write_all(b"ctl").unwrap();

    let again = detect().unwrap();
    report(
        "second_detect",
        format!("{:?} {}", again.role(), again.listeners().len()),
    );
}

fn malformed_child() {
    for (i, (pairs, _)) in MALFORMED.iter().enumerate() {
        for (name, value) in *pairs {
            std::env::set_var(name, value);
        }
        let outcome = match detect() {
            Err(e @ Error::Environment(_)) => format!("environment {e}"),
            other => format!("unexpected {other:?}"),
        };
        report(&format!("case{i}"), outcome);
        report(&format!("case{i}_vars_gone"), vars_gone());
    }
    // fd 3 is /dev/null: advertised as a listener, it is refused untouched.
    std::env::set_var(ENV_LISTEN_FDS, "1");
    let outcome = match detect() {
        Err(e @ Error::Listener(_)) => format!("listener {e}"),
        other => format!("unexpected {other:?}"),
    };
    report("not_a_socket", outcome);
    report("fd3_cloexec", cloexec(3));
}

/// A re-executed copy of this test binary with `fds` at 3, 4, ...; killed
/// and reaped when dropped.
struct Successor {
    child: Child,
    lines: Receiver<String>,
}

impl Successor {
    fn spawn(scenario: &str, fds: &[RawFd], env: &[(&str, String)]) -> Successor {
        assert!(fds.len() <= 8);
        let fds = fds.to_vec();
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_SCENARIO, scenario)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        for var in VARS {
            command.env_remove(var);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe calls (fcntl, dup2) on a vector allocated
        // before the fork; it neither allocates nor takes locks.
        unsafe {
            command.pre_exec(move || {
                // First out of the way (close-on-exec, so these copies vanish
                // at exec), so that placing one cannot clobber another...
                let mut high = [0 as RawFd; 8];
                for (slot, fd) in high.iter_mut().zip(&fds) {
                    *slot = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 64);
                    if *slot < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // ...then at 3, 4, ...; dup2 leaves the copy inheritable.
                for (target, fd) in (3..).zip(&high[..fds.len()]) {
                    if libc::dup2(*fd, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("spawn the successor");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Successor { child, lines }
    }

    /// Every `REPORT key value` until `DONE`; then the child must exit 0.
    fn reports(mut self) -> HashMap<String, String> {
        let deadline = Instant::now() + TIMEOUT;
        let mut reports = HashMap::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("child stopped reporting ({e}); got {reports:?}"));
            // libtest's "test child_process ... " may precede our first line.
            if line.ends_with("DONE") {
                break;
            }
            if let Some((_, rest)) = line.split_once("REPORT ") {
                let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
                reports.insert(key.to_owned(), value.to_owned());
            }
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
        reports
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn successor_env(names: &str, n: usize) -> Vec<(&'static str, String)> {
    vec![
        (ENV_ROLE, "successor".into()),
        (ENV_LISTEN_FDS, n.to_string()),
        (ENV_LISTEN_FDNAMES, names.into()),
        (ENV_SOCK_FD, (3 + n).to_string()),
    ]
}

fn run_successor(pid_self: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let dns = UdpSocket::bind("127.0.0.1:0").unwrap();
    let admin_path = tmp.path().join("admin.sock");
    let admin = UnixListener::bind(&admin_path).unwrap();
    let (control, control_child) = UnixStream::pair().unwrap();

    // Clients arrive before the successor exists; nothing refuses them.
    let mut tcp_client = TcpStream::connect(web.local_addr().unwrap()).unwrap();
    tcp_client.write_all(b"ping").unwrap();
    let udp_client = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp_client
        .send_to(b"dgram", dns.local_addr().unwrap())
        .unwrap();
    let mut unix_client = UnixStream::connect(&admin_path).unwrap();
    unix_client.write_all(b"unix").unwrap();

    let mut env = successor_env("web:dns:admin", 3);
    if pid_self {
        env.push((CHILD_PID_SELF, "1".into()));
    }
    let child = Successor::spawn(
        "successor",
        &[
            web.as_raw_fd(),
            dns.as_raw_fd(),
            admin.as_raw_fd(),
            control_child.as_raw_fd(),
        ],
        &env,
    );
    drop(control_child);
    let r = child.reports();

    assert_eq!(r["role"], "Successor");
    assert_eq!(r["names"], "web,dns,admin");
    assert_eq!(r["vars_gone"], "true");
    for fd in 3..=6 {
        assert_eq!(r[&format!("cloexec{fd}")], "true", "fd {fd}");
    }
    assert!(
        r["tcp_of_dns"].contains("listener \"dns\" is a UDP socket, not a TCP listener"),
        "{}",
        r["tcp_of_dns"]
    );
    assert_eq!(r["tcp_of_missing"], "Ok(None)");
    assert_eq!(r["tcp_read"], "ping");
    assert_eq!(r["udp_read"], "dgram");
    assert_eq!(r["unix_read"], "unix");
    assert_eq!(r["control_fd"], "6");
    assert_eq!(r["second_detect"], "ColdStart 0");

    let mut buf = [0u8; 4];
    tcp_client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    udp_client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let len = udp_client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"ack");
    let mut ctl = Vec::new();
    (&control).read_to_end(&mut ctl).unwrap();
    assert_eq!(ctl, b"ctl");
}

#[test]
fn a_successor_adopts_its_listeners_and_control_socket_without_listen_pid() {
    run_successor(false);
}

#[test]
fn a_successor_adopts_its_listeners_when_listen_pid_names_it() {
    run_successor(true);
}

#[test]
fn listen_pid_naming_another_process_adopts_nothing() {
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let (_control, control_child) = UnixStream::pair().unwrap();
    let mut env = successor_env("web", 1);
    env.push((ENV_LISTEN_PID, std::process::id().to_string()));
    let child = Successor::spawn(
        "foreign",
        &[web.as_raw_fd(), control_child.as_raw_fd()],
        &env,
    );
    let r = child.reports();
    assert_eq!(r["role"], format!("{:?}", Role::ColdStart));
    assert_eq!(r["count"], "0");
    assert_eq!(r["vars_gone"], "true");
    // Not adopted, so not touched either.
    assert_eq!(r["fd3_cloexec"], "false");
}

#[test]
fn a_malformed_environment_is_an_environment_error_naming_the_variable() {
    let dev_null = std::fs::File::open("/dev/null").unwrap();
    let child = Successor::spawn("malformed", &[dev_null.as_raw_fd()], &[]);
    let r = child.reports();
    for (i, (pairs, var)) in MALFORMED.iter().enumerate() {
        let outcome = &r[&format!("case{i}")];
        assert!(outcome.starts_with("environment "), "{pairs:?}: {outcome}");
        assert!(
            outcome.contains(var),
            "{pairs:?} must name {var}: {outcome}"
        );
        assert_eq!(r[&format!("case{i}_vars_gone")], "true", "{pairs:?}");
    }
    let outcome = &r["not_a_socket"];
    assert!(outcome.starts_with("listener "), "{outcome}");
    assert!(outcome.contains("not an open socket"), "{outcome}");
    assert_eq!(r["fd3_cloexec"], "false", "a refused fd is left alone");
}

/// DESIGN §3's trap: the successor shares each listener's open file
/// description with the incumbent, so changing O_NONBLOCK there would turn
/// the incumbent's non-blocking accept loop into a blocking one.
#[test]
fn detect_and_take_leave_the_shared_o_nonblock_flag_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let unix = UnixListener::bind(tmp.path().join("s")).unwrap();
    tcp.set_nonblocking(true).unwrap();
    udp.set_nonblocking(true).unwrap();
    // The Unix one stays blocking: neither direction may be changed.
    let (_control, control_child) = UnixStream::pair().unwrap();
    let child = Successor::spawn(
        "trap",
        &[
            tcp.as_raw_fd(),
            udp.as_raw_fd(),
            unix.as_raw_fd(),
            control_child.as_raw_fd(),
        ],
        &successor_env("tcp:udp:unix", 3),
    );
    let r = child.reports();
    assert_eq!(r["tcp"], "true");
    assert_eq!(r["udp"], "true");
    assert_eq!(r["unix"], "false");

    assert!(sys::is_nonblocking(tcp.as_raw_fd()).unwrap());
    assert!(sys::is_nonblocking(udp.as_raw_fd()).unwrap());
    assert!(!sys::is_nonblocking(unix.as_raw_fd()).unwrap());
    // The incumbent's accept loop still never blocks.
    let err = tcp.accept().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
}
