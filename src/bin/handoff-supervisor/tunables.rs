//! glibc's per-thread cache of freed chunks (the tcache) off, and one
//! malloc arena, for the supervisor and for nothing it starts.
//!
//! Why: with the cache, the supervisor's resident set grew by 40-70 KiB
//! over 350 handoffs, steadily, while its live heap stayed flat at about
//! 20 KB (massif): chunks parked in the caches of its long-lived threads
//! (their own and those short-lived ones had allocated) are neither reused
//! by the others nor coalesced, and the heap grows past them. With
//! `GLIBC_TUNABLES=glibc.malloc.tcache_count=0` it stays flat from the
//! first handoff on; the supervisor allocates too little for the cache to
//! matter to its speed. Tunables are read only when a program starts, so
//! `run` executes itself once more with the cache off (and one arena,
//! below), and puts the variable back as it found it before anything else
//! runs: the services it spawns get the environment the supervisor was
//! given.
//!
//! One arena: every handoff runs on a thread of its own (worker.rs), and
//! glibc gives such threads arenas of their own, whose freed memory is
//! kept. With the kv-cpp service the resident set still grew by 72-88 KiB
//! after the warm-up in 1,000 handoffs (two published runs). In a run of
//! 400 (`compare --systems libhandoff-cpp`, /proc/PID/status every 1.5 s)
//! the anonymous part rose from 288 to 336 KiB and moved between 332 and
//! 336; with `glibc.malloc.arena_max=1` too, from 256 to 288, moving
//! between 280 and 288. A tunable the user set stands.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::process::Command;

const TUNABLES: &str = "GLIBC_TUNABLES";
/// Each of ours: the tunable, and the setting added unless the user set it.
const OURS: [(&str, &str); 2] = [
    ("glibc.malloc.tcache_count", "glibc.malloc.tcache_count=0"),
    ("glibc.malloc.arena_max", "glibc.malloc.arena_max=1"),
];
/// Set for the second start only: the variable as it was (`=value`), or
/// empty when there was none.
const AS_GIVEN: &str = "HANDOFF_SUPERVISOR_GLIBC_TUNABLES";

/// Call first thing, while the process has one thread. Returns when ours
/// are set, or when they cannot be (then the supervisor runs without
/// them, as it did before).
pub fn tune_malloc() {
    if let Some(given) = std::env::var_os(AS_GIVEN) {
        restore(&given);
        return;
    }
    if !cfg!(target_env = "gnu") {
        return;
    }
    let given = std::env::var_os(TUNABLES);
    let missing = missing(given.as_deref());
    if missing.is_empty() {
        // The user chose them: theirs stand.
        return;
    }
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "handoff-supervisor".into());
    let error = Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env(TUNABLES, with_ours(given.as_deref(), &missing))
        .env(AS_GIVEN, encode(given.as_deref()))
        .exec();
    eprintln!(
        "handoff-supervisor: cannot restart with glibc's malloc tuned ({error}): running as it is"
    );
}

fn contains(value: &OsStr, needle: &str) -> bool {
    value
        .as_bytes()
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Our settings for the tunables the user did not set.
fn missing(given: Option<&OsStr>) -> Vec<&'static str> {
    OURS.iter()
        .filter(|(name, _)| !given.is_some_and(|value| contains(value, name)))
        .map(|&(_, setting)| setting)
        .collect()
}

/// The user's tunables, if any, then `ours`.
fn with_ours(given: Option<&OsStr>, ours: &[&str]) -> OsString {
    let mut joined = OsString::new();
    if let Some(value) = given.filter(|value| !value.is_empty()) {
        joined.push(value);
        joined.push(":");
    }
    joined.push(ours.join(":"));
    joined
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
        let both = "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1";
        assert_eq!(with_ours(None, &missing(None)), both);
        let empty = Some(OsStr::new(""));
        assert_eq!(with_ours(empty, &missing(empty)), both);
        let arenas = Some(OsStr::new("glibc.malloc.arena_max=2"));
        assert_eq!(
            with_ours(arenas, &missing(arenas)),
            "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0"
        );
        let cache = Some(OsStr::new("glibc.malloc.tcache_count=3"));
        assert_eq!(missing(cache), ["glibc.malloc.arena_max=1"]);
        let all = Some(OsStr::new(
            "glibc.malloc.tcache_count=3:glibc.malloc.arena_max=4",
        ));
        assert!(missing(all).is_empty());
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
