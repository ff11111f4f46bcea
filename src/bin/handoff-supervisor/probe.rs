//! Who serves the control socket: the library's Hello exchange, which
//! starts no handoff (the incumbent sees a session close while idle and
//! goes on serving).

use std::path::Path;
use std::time::Duration;

use handoff::protocol::HandoffId;
use handoff::supervisor::hello::greet_incumbent;

/// The pid of the incumbent answering at `control`, as the kernel attests
/// it, or None when nobody (or something else) answers within `timeout`.
pub fn incumbent_pid(control: &Path, timeout: Duration) -> Option<u32> {
    greet_incumbent(control, timeout, HandoffId::random())
        .ok()
        .map(|greeted| greeted.pid)
}
