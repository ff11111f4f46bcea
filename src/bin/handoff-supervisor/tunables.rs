//! glibc's per-thread cache of freed chunks (the tcache) off for the
//! supervisor, and for nothing it starts.
//!
//! Why: with the cache, the supervisor's resident set grew by 40-70 KiB
//! over 350 handoffs, steadily, while its live heap stayed flat at about
//! 20 KB (massif): chunks parked in the caches of its long-lived threads
//! (their own and those short-lived ones had allocated) are neither reused
//! by the others nor coalesced, and the heap grows past them. With
//! `GLIBC_TUNABLES=glibc.malloc.tcache_count=0` it stays flat from the
//! first handoff on; the supervisor allocates too little for the cache to
//! matter to its speed. Tunables are read only when a program starts, so
//! `run` executes itself once more with the cache off, and puts the
//! variable back as it found it before anything else runs: the services
//! it spawns get the environment the supervisor was given.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::process::Command;

const TUNABLES: &str = "GLIBC_TUNABLES";
const NO_TCACHE: &str = "glibc.malloc.tcache_count=0";
/// Set for the second start only: the variable as it was (`=value`), or
/// empty when there was none.
const AS_GIVEN: &str = "HANDOFF_SUPERVISOR_GLIBC_TUNABLES";

/// Call first thing, while the process has one thread. Returns when the
/// cache is off, or when it cannot be turned off (then the supervisor runs
/// with it, as it did before).
pub fn turn_off_the_tcache() {
    if let Some(given) = std::env::var_os(AS_GIVEN) {
        restore(&given);
        return;
    }
    if !cfg!(target_env = "gnu") {
        return;
    }
    let given = std::env::var_os(TUNABLES);
    if given
        .as_deref()
        .is_some_and(|value| contains(value, "glibc.malloc.tcache_count"))
    {
        // The user chose a cache size: theirs stands.
        return;
    }
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "handoff-supervisor".into());
    let error = Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env(TUNABLES, with_no_tcache(given.as_deref()))
        .env(AS_GIVEN, encode(given.as_deref()))
        .exec();
    eprintln!(
        "handoff-supervisor: cannot restart with glibc's tcache off ({error}): running with it"
    );
}

fn contains(value: &OsStr, needle: &str) -> bool {
    value
        .as_bytes()
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// The user's tunables, if any, then ours.
fn with_no_tcache(given: Option<&OsStr>) -> OsString {
    match given {
        Some(value) if !value.is_empty() => {
            let mut joined = value.to_os_string();
            joined.push(":");
            joined.push(NO_TCACHE);
            joined
        }
        _ => NO_TCACHE.into(),
    }
}

fn encode(given: Option<&OsStr>) -> OsString {
    match given {
        Some(value) => {
            let mut encoded = OsString::from("=");
            encoded.push(value);
            encoded
        }
        None => OsString::new(),
    }
}

fn decode(encoded: &OsStr) -> Option<OsString> {
    let bytes = encoded.as_bytes();
    bytes
        .strip_prefix(b"=")
        .map(|value| OsString::from_vec(value.to_vec()))
}

fn restore(encoded: &OsStr) {
    // Edition 2021: set_var is safe; we are still single-threaded here.
    std::env::remove_var(AS_GIVEN);
    match decode(encoded) {
        Some(value) => std::env::set_var(TUNABLES, value),
        None => std::env::remove_var(TUNABLES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_tunables_come_first_and_come_back_as_they_were() {
        assert_eq!(with_no_tcache(None), NO_TCACHE);
        assert_eq!(with_no_tcache(Some(OsStr::new(""))), NO_TCACHE);
        assert_eq!(
            with_no_tcache(Some(OsStr::new("glibc.malloc.arena_max=2"))),
            "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0"
        );
        for given in [None, Some(""), Some("glibc.malloc.arena_max=2")] {
            let given = given.map(OsStr::new);
            assert_eq!(decode(&encode(given)).as_deref(), given);
        }
        assert!(contains(
            OsStr::new("a=1:glibc.malloc.tcache_count=3"),
            "glibc.malloc.tcache_count"
        ));
        assert!(!contains(OsStr::new("glibc.malloc.arena_max=2"), "tcache"));
    }
}
