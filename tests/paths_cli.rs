//! The paths an operator gives `handoff-supervisor` (trigger and control
//! sockets, journal), through the real command: what is already there is
//! never followed or destroyed, `check` accepts only what `run` can bind,
//! and nothing at those paths makes start-up hang.

#[path = "common/cli.rs"]
mod cli;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cli::{text, Fixture, Layout};
use common::noop_service;

/// Long enough for a loaded machine; a hang is what it catches.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A config with `layout`'s (absolute) socket paths, journal and data
/// directory.
fn write_config(f: &Fixture, layout: &Layout) {
    f.write_config_laid_out(&noop_service(), "", layout, "");
}

/// The usual config: everything in the fixture's directory, named by
/// absolute paths.
fn write_default_config(f: &Fixture) {
    write_config(f, &f.absolute_layout());
}

/// `run`, which must refuse to start (exit 1, without hanging); its log.
fn run_refused(f: &Fixture) -> String {
    let mut running = f.run();
    assert_eq!(running.wait_exit(EXIT_TIMEOUT), Some(1));
    running.log_text()
}

/// `<dir>/<prefix>xxx...` exactly `len` bytes long.
fn path_of_len(dir: &Path, prefix: &str, len: usize) -> PathBuf {
    let base = format!("{}/{prefix}", dir.display());
    assert!(base.len() < len, "{base} is too long already");
    PathBuf::from(format!("{base}{}", "x".repeat(len - base.len())))
}

/// `check` refuses a socket path too long for the temporary name `run`
/// binds first, and the longest it accepts `run` really binds, for the
/// control socket and the trigger socket alike.
#[test]
fn check_accepts_only_socket_paths_that_run_can_bind() {
    let f = Fixture::new();
    let dir = f.dir.path();
    // 107 bytes fit sun_path, but not with a temporary suffix added.
    for (control, trigger) in [
        (path_of_len(dir, "c", 107), f.path("t.sock")),
        (f.path("c.sock"), path_of_len(dir, "t", 107)),
    ] {
        write_config(
            &f,
            &Layout {
                control,
                trigger,
                ..f.absolute_layout()
            },
        );
        let out = f.cli(&["check"]);
        let stderr = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "check accepted a 107-byte path");
        assert!(stderr.contains("socket"), "{stderr}");
        assert!(stderr.contains("bytes"), "{stderr}");
    }
    let longest = (60..=107)
        .rev()
        .find(|&len| {
            write_config(
                &f,
                &Layout {
                    control: path_of_len(dir, "c", len),
                    trigger: path_of_len(dir, "t", len),
                    ..f.absolute_layout()
                },
            );
            f.cli(&["check"]).status.code() == Some(0)
        })
        .expect("check accepts some socket path length");
    let mut running = f.run();
    let pid = f.wait_serving_by(&mut running);
    assert!(pid > 0);
    assert!(path_of_len(dir, "c", longest).exists());
    assert!(path_of_len(dir, "t", longest).exists());
}

/// A symlink at the trigger socket path is not the supervisor's to follow
/// or replace: `run` refuses to start, saying so, and the link and its
/// target are left as they were. So is a regular file there.
#[test]
fn something_other_than_a_socket_at_the_trigger_path_is_refused_and_left_alone() {
    let f = Fixture::new();
    write_default_config(&f);
    let trigger = f.path("trigger.sock");
    let target = f.path("precious");
    std::fs::write(&target, "keep me\n").unwrap();

    std::os::unix::fs::symlink(&target, &trigger).unwrap();
    let log = run_refused(&f);
    assert!(log.contains(&*trigger.to_string_lossy()), "{log}");
    assert!(log.contains("symbolic link"), "{log}");
    assert_eq!(std::fs::read_link(&trigger).unwrap(), target);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");

    std::fs::remove_file(&trigger).unwrap();
    std::fs::write(&trigger, "an operator's file\n").unwrap();
    let log = run_refused(&f);
    assert!(log.contains("not a socket"), "{log}");
    assert_eq!(
        std::fs::read_to_string(&trigger).unwrap(),
        "an operator's file\n"
    );
}

/// A socket left by a supervisor that is gone is replaced.
#[test]
fn a_stale_trigger_socket_is_replaced() {
    let f = Fixture::new();
    write_default_config(&f);
    drop(std::os::unix::net::UnixListener::bind(f.path("trigger.sock")).unwrap());
    let mut running = f.run();
    f.wait_serving_by(&mut running);
}

/// A FIFO at the journal path (nobody writing to it) must not hang
/// start-up: `run` refuses it at once, naming it.
#[test]
fn a_fifo_at_the_journal_path_is_refused_without_hanging() {
    let f = Fixture::new();
    write_default_config(&f);
    let journal = f.path("journal/state.bin");
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    let status = Command::new("mkfifo").arg(&journal).status().unwrap();
    assert!(status.success());
    let log = run_refused(&f);
    assert!(log.contains(&*journal.to_string_lossy()), "{log}");
    assert!(log.contains("not a regular file"), "{log}");
}

/// The same for a Unix listener's path: a regular file there is not a stale
/// socket to delete.
#[test]
fn a_regular_file_at_a_unix_listener_path_is_refused_and_left_alone() {
    let f = Fixture::new();
    let listener = f.path("extra.sock");
    std::fs::write(&listener, "an operator's file\n").unwrap();
    f.write_config_laid_out(
        &noop_service(),
        "",
        &f.absolute_layout(),
        &format!(
            "\n[[listener]]\nname = \"extra\"\naddress = \"unix:{}\"\n",
            listener.display()
        ),
    );
    let log = run_refused(&f);
    assert!(log.contains("not a socket"), "{log}");
    assert_eq!(
        std::fs::read_to_string(&listener).unwrap(),
        "an operator's file\n"
    );
}
