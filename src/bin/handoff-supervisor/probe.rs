//! Who serves the control socket: a Hello exchange that starts no handoff
//! (the incumbent sees a session close while idle and goes on serving).

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use handoff::channel::Channel;
use handoff::protocol::{negotiate_version, HandoffId, Message, Side, PROTO_MAX, PROTO_MIN};

/// The pid of the incumbent answering at `control`, as the kernel attests
/// it, or None when nobody (or something else) answers within `timeout`.
pub fn incumbent_pid(control: &Path, timeout: Duration) -> Option<u32> {
    let stream = UnixStream::connect(control).ok()?;
    let cred = handoff::control::check_peer_uid(&stream).ok()?;
    let mut channel = Channel::new(stream).ok()?;
    let hello = channel.recv_until(Instant::now() + timeout, None).ok()?;
    let Message::Hello {
        role: Side::Incumbent,
        pid,
        proto_min,
        proto_max,
        ..
    } = hello
    else {
        return None;
    };
    if pid != cred.pid {
        return None;
    }
    let version = negotiate_version((PROTO_MIN, PROTO_MAX), (proto_min, proto_max)).ok()?;
    channel.set_version(version);
    channel
        .send(&Message::HelloAck {
            proto_version_chosen: version,
            handoff_id: HandoffId::random(),
        })
        .ok()?;
    Some(pid)
}
