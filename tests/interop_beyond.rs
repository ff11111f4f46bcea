//! Handoffs between implementations, with real processes and real sockets:
//! our supervisor driving services built on the reference crate
//! (`beyond-handoff` 0.1.4, renamed `beyond`), the reference supervisor
//! driving services built on libhandoff, and mixed generations under both.
//!
//! The services are the two peers in tests/peers/ (examples `peer-ours` and
//! `peer-beyond`, built on first use): a TCP listener `kv` answering `PING`
//! with `PONG <pid> <impl>`, a data-dir lock and a control socket. After
//! every handoff the test checks that it committed, that the old incumbent
//! exited 0 and closed its connections, that a fresh connection is answered
//! by the new process, that the new process holds the lock
//! (`DataDirLock::probe`) and serves the control socket, and that the
//! supervisor cleared its journal.

#[path = "peers/harness.rs"]
mod harness;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use handoff::spawn::Command;
use handoff::supervisor::{SpawnSpec, Supervisor};
use harness::{
    closed_by_server, cold_start_std, inode, lock_holder, peer_args, peer_binary, ping, ping_on,
    wait_serving, Impl, Procs,
};

const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// One service under test: its directories, its listener's address and
/// every process started for it.
struct Service {
    /// First, so that the processes are gone before their directories.
    procs: Procs,
    _tmp: tempfile::TempDir,
    data_dir: PathBuf,
    control: PathBuf,
    journal: PathBuf,
    addr: SocketAddr,
    /// The listener, until a supervisor takes it (ours) or for good (the
    /// reference one only borrows the descriptor).
    listener: Option<TcpListener>,
}

impl Service {
    fn new() -> Service {
        let tmp = tempfile::Builder::new()
            .prefix("interop-")
            .tempdir()
            .expect("tempdir");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        Service {
            data_dir: tmp.path().join("data"),
            control: tmp.path().join("control.sock"),
            journal: tmp.path().join("journal").join("state.bin"),
            addr: listener.local_addr().expect("local_addr"),
            listener: Some(listener),
            procs: Procs::default(),
            _tmp: tmp,
        }
    }

    fn args(&self) -> Vec<String> {
        peer_args(&self.data_dir, &self.control)
    }

    fn our_supervisor(&mut self) -> Supervisor {
        let listener = self.listener.take().expect("listener not taken yet");
        Supervisor::new(&self.control)
            .with_listener("kv", OwnedFd::from(listener))
            .expect("add listener")
            .with_journal(&self.journal)
    }

    fn beyond_supervisor(&self) -> beyond::supervisor::Supervisor {
        let fd = self.listener.as_ref().expect("listener").as_raw_fd();
        beyond::supervisor::Supervisor::new(&self.control)
            .expect("reference supervisor")
            .with_listener("kv", fd)
            .with_journal(self.journal.clone())
    }

    fn our_spec(&self, which: Impl) -> SpawnSpec {
        SpawnSpec {
            command: Command {
                binary: peer_binary(which),
                args: self.args().into_iter().map(Into::into).collect(),
                env: Vec::new(),
            },
            deadline: Duration::from_secs(30),
            drain_grace: Duration::from_secs(10),
        }
    }

    fn beyond_spec(&self, which: Impl) -> beyond::SpawnSpec {
        beyond::SpawnSpec {
            binary: peer_binary(which),
            args: self.args(),
            env: Vec::new(),
            deadline: Duration::from_secs(30),
            drain_grace: Duration::from_secs(10),
        }
    }

    /// The first generation, started by our supervisor.
    fn cold_start_ours(&mut self, supervisor: &Supervisor, which: Impl) -> u32 {
        let command = self.our_spec(which).command;
        let child = supervisor.spawn_cold(&command).expect("spawn_cold");
        let pid = self.procs.add_ours(child);
        self.wait_serving(None, pid, which);
        pid
    }

    /// The first generation, started with the reference crate's descriptor
    /// arrangement (for the reference supervisor, which has no cold start).
    fn cold_start_std(&mut self, which: Impl) -> u32 {
        let fd = self.listener.as_ref().expect("listener").as_raw_fd();
        let child = cold_start_std(which, &self.args(), "kv", fd);
        let pid = self.procs.add_std(child);
        self.wait_serving(None, pid, which);
        pid
    }

    fn wait_serving(&self, old_inode: Option<u64>, pid: u32, which: Impl) {
        wait_serving(
            self.addr,
            &self.data_dir,
            &self.control,
            old_inode,
            pid,
            which,
        );
    }

    /// A connection the incumbent has accepted and answered.
    fn connection_to(&self, pid: u32) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let (answered, _) = ping_on(&stream).expect("PING before the handoff");
        assert_eq!(answered, pid, "PING before the handoff");
        stream
    }

    /// Everything that must hold once `old` handed off to `new`.
    fn check_handed_off(&mut self, old: u32, new: u32, which: Impl, held: TcpStream, ino: u64) {
        assert_ne!(old, new);
        assert_eq!(
            self.procs.wait_exit(old, EXIT_TIMEOUT),
            Ok(0),
            "old incumbent {old} must exit 0 after Commit"
        );
        assert!(
            closed_by_server(&held, Duration::from_secs(5)),
            "the old incumbent's connection must be closed by its drain"
        );
        self.wait_serving(Some(ino), new, which);
        let (answered, tag) = ping(self.addr).expect("PING after the handoff");
        assert_eq!((answered, tag.as_str()), (new, which.tag()));
        assert_eq!(
            lock_holder(&self.data_dir),
            Ok(Some(new)),
            "the new incumbent holds the data-dir lock"
        );
        assert!(
            !self.journal.exists(),
            "the journal is cleared after a commit"
        );
    }

    /// One handoff by our supervisor from `old` to a new `which`.
    fn our_handoff(&mut self, supervisor: &Supervisor, old: u32, which: Impl) -> u32 {
        let held = self.connection_to(old);
        let ino = inode(&self.control).expect("control socket");
        let outcome = supervisor
            .perform_handoff(&self.our_spec(which))
            .expect("perform_handoff");
        let successor = outcome.successor;
        let new = successor.as_ref().map(|c| c.pid());
        if let Some(child) = successor {
            self.procs.add_ours(child);
        }
        assert!(
            outcome.committed,
            "not committed: {:?}",
            outcome.abort_reason
        );
        assert_eq!(outcome.incumbent_pid, old);
        let new = new.expect("a committed outcome carries the successor");
        self.check_handed_off(old, new, which, held, ino);
        new
    }

    /// One handoff by the reference supervisor from `old` to a new `which`.
    fn beyond_handoff(
        &mut self,
        supervisor: &beyond::supervisor::Supervisor,
        old: u32,
        which: Impl,
    ) -> u32 {
        let held = self.connection_to(old);
        let ino = inode(&self.control).expect("control socket");
        let outcome = supervisor
            .perform_handoff(self.beyond_spec(which))
            .expect("reference perform_handoff");
        let new = outcome.child.map(|child| self.procs.add_std(child));
        assert!(
            outcome.committed,
            "not committed: {:?}",
            outcome.abort_reason
        );
        let new = new.expect("a committed outcome carries the successor");
        self.check_handed_off(old, new, which, held, ino);
        new
    }
}

#[test]
fn our_supervisor_hands_off_beyond_to_beyond_three_times() {
    let mut service = Service::new();
    let supervisor = service.our_supervisor();
    let mut pid = service.cold_start_ours(&supervisor, Impl::Beyond);
    for _ in 0..3 {
        pid = service.our_handoff(&supervisor, pid, Impl::Beyond);
    }
}

#[test]
fn beyond_supervisor_hands_off_ours_to_ours() {
    let mut service = Service::new();
    let supervisor = service.beyond_supervisor();
    let mut pid = service.cold_start_std(Impl::Ours);
    // Twice: the second incumbent was itself started without LISTEN_PID.
    for _ in 0..2 {
        pid = service.beyond_handoff(&supervisor, pid, Impl::Ours);
    }
}

#[test]
fn our_supervisor_hands_off_between_implementations() {
    let mut service = Service::new();
    let supervisor = service.our_supervisor();
    let pid = service.cold_start_ours(&supervisor, Impl::Ours);
    let pid = service.our_handoff(&supervisor, pid, Impl::Beyond);
    service.our_handoff(&supervisor, pid, Impl::Ours);
}

#[test]
fn beyond_supervisor_hands_off_between_implementations() {
    let mut service = Service::new();
    let supervisor = service.beyond_supervisor();
    let pid = service.cold_start_std(Impl::Beyond);
    let pid = service.beyond_handoff(&supervisor, pid, Impl::Ours);
    service.beyond_handoff(&supervisor, pid, Impl::Beyond);
}

/// A service that moves its connections when it can (protocol v2,
/// tests/peers/mover_service.rs) under the reference supervisor, which
/// speaks v1 only: every handoff is a v1 one (its Hello offers 1..=2, the
/// reference chooses 1), so the drain closes the kept connection, as
/// `check_handed_off` asserts, and nothing of v2 reaches the reference.
#[test]
fn beyond_supervisor_hands_off_a_v2_service_in_v1() {
    let mut service = Service::new();
    let supervisor = service.beyond_supervisor();
    let mut pid = service.cold_start_std(Impl::Mover);
    for _ in 0..2 {
        pid = service.beyond_handoff(&supervisor, pid, Impl::Mover);
    }
}
