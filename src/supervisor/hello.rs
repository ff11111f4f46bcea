//! The Hello exchange, the one way every supervisor-side caller meets a
//! peer: the incumbent on its control socket (a handoff, a recovery probe,
//! the CLI's `status`) and the successor on its socketpair.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::channel::Channel;
use crate::control::check_peer_uid;
use crate::error::{Error, Result};
use crate::protocol::{negotiate_version, HandoffId, Message, Side, PROTO_MAX, PROTO_MIN};

/// How long a refused or missing control socket is retried: right after a
/// commit the new incumbent binds the path a moment after announcing Ready,
/// while the old one's socket no longer listens.
const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// An incumbent that answered our Hello exchange.
pub struct Greeted {
    pub channel: Channel,
    /// As the kernel attests it (and the incumbent announced it).
    pub pid: u32,
    pub version: u16,
}

/// Connect to the incumbent at `control`, check its credentials and its
/// Hello, and answer HelloAck under `handoff_id`. An exchange that is not
/// followed by PrepareHandoff starts no handoff: the incumbent sees the
/// session close while idle and serves on.
pub fn greet_incumbent(control: &Path, hello: Duration, handoff_id: HandoffId) -> Result<Greeted> {
    Connected::to(control, hello)?.greet(handoff_id)
}

/// A control connection to the incumbent whose Hello is not read yet: a
/// handoff starts its successor meanwhile, while the incumbent's loop
/// answers the connection.
pub struct Connected {
    channel: Channel,
    pid: u32,
    deadline: Instant,
}

impl Connected {
    /// Connect to `control` and check the peer's credentials; its Hello is
    /// due within `hello` from now.
    pub fn to(control: &Path, hello: Duration) -> Result<Connected> {
        let deadline = Instant::now() + hello;
        let stream = connect_control(control, Instant::now() + CONNECT_RETRY.min(hello))?;
        let cred = check_peer_uid(&stream)?;
        Ok(Connected {
            channel: Channel::new(stream)?,
            pid: cred.pid,
            deadline,
        })
    }

    /// Read and check the incumbent's Hello, and answer HelloAck.
    pub fn greet(mut self, handoff_id: HandoffId) -> Result<Greeted> {
        let greeting = self.channel.recv_until(self.deadline)?;
        let version = accept_hello(&greeting, Side::Incumbent, self.pid)?;
        self.channel.set_version(version);
        self.channel.send(&Message::HelloAck {
            proto_version_chosen: version,
            handoff_id,
        })?;
        Ok(Greeted {
            channel: self.channel,
            pid: self.pid,
            version,
        })
    }
}

/// Connect to the control socket, retrying refused or missing until `deadline`.
fn connect_control(path: &Path, deadline: Instant) -> Result<UnixStream> {
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(Error::io("cannot connect to the incumbent at", path, e)),
        }
    }
}

/// Check a peer's Hello (its role, and its pid against the kernel's) and
/// negotiate the version.
pub(crate) fn accept_hello(hello: &Message, role: Side, kernel_pid: u32) -> Result<u16> {
    let Message::Hello {
        role: their_role,
        pid,
        proto_min,
        proto_max,
        ..
    } = hello
    else {
        return Err(Error::Protocol(format!(
            "expected Hello, got {}",
            hello.kind().name()
        )));
    };
    if *their_role != role {
        return Err(Error::Protocol(format!(
            "peer says it is {their_role:?}, expected {role:?}"
        )));
    }
    if *pid != kernel_pid {
        return Err(Error::PeerIdentity(format!(
            "peer announces pid {pid} but the kernel says {kernel_pid}"
        )));
    }
    negotiate_version((PROTO_MIN, PROTO_MAX), (*proto_min, *proto_max))
}
