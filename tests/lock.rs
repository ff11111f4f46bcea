//! The data-dir lock between real processes (DESIGN §4, invariant 1).
//!
//! The test binary re-executes itself as the other process: `child_process`
//! does nothing in a normal run, and plays a lock holder when
//! HANDOFF_LOCK_TEST_CHILD is set.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use handoff::lock::{DataDirLock, LockState, GENERATION_FILE, LOCK_FILE, PIDFILE};
use handoff::Error;

mod tmpfs;

const CHILD_MODE: &str = "HANDOFF_LOCK_TEST_CHILD";
const CHILD_DIR: &str = "HANDOFF_LOCK_TEST_DIR";
const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// The other process. Modes: `hold` (acquire, report, hold until stdin
/// closes, release), `cycle` (acquire, report, release), `try` (report
/// whether acquire fails and whom it names).
#[test]
fn child_process() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR).expect("child needs a dir"));
    match mode.as_str() {
        "hold" | "cycle" => {
            let lock = DataDirLock::acquire(&dir).expect("child acquires");
            println!("LOCKED {} {}", std::process::id(), lock.generation());
            if mode == "hold" {
                // Hold until the parent closes our stdin (or kills us).
                let _ = std::io::stdin().read_to_end(&mut Vec::new());
            }
            lock.release().expect("child releases");
            println!("RELEASED");
        }
        "try" => match DataDirLock::acquire(&dir) {
            Err(Error::LockHeld { holder, .. }) => println!("HELD {holder:?}"),
            other => println!("UNEXPECTED {other:?}"),
        },
        other => panic!("unknown child mode {other}"),
    }
}

/// A re-executed copy of this test binary, killed and reaped when dropped.
struct Helper {
    child: Child,
    lines: Receiver<String>,
}

impl Helper {
    fn spawn(mode: &str, dir: &Path) -> Helper {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_MODE, mode)
            .env(CHILD_DIR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Helper { child, lines }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What follows `prefix` on the next line that has it (the test harness
    /// prints its own lines too).
    fn expect(&self, prefix: &str) -> String {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no {prefix:?} line from the child: {e}"));
            // libtest's "test child_process ... " may precede our first line.
            if let Some((_, rest)) = line.split_once(prefix) {
                return rest.trim().to_owned();
            }
        }
    }

    /// `LOCKED <pid> <generation>` → the generation, checking the pid.
    fn locked_generation(&self) -> u64 {
        let rest = self.expect("LOCKED ");
        let (pid, generation) = rest.split_once(' ').unwrap();
        assert_eq!(pid.parse::<u32>().unwrap(), self.pid());
        generation.parse().unwrap()
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the child");
        self.child.wait().expect("reap the child");
    }

    /// Close the child's stdin and wait for a clean exit.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pidfile's content, None when it names nobody (missing or blank).
fn pidfile(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(PIDFILE)).ok()?;
    (!text.trim().is_empty()).then_some(text)
}

fn lock_inode(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(LOCK_FILE)).unwrap().ino()
}

#[test]
fn a_live_holder_is_named_and_never_broken_and_a_killed_one_leaves_a_harmless_pidfile() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut holder = Helper::spawn("hold", dir);
    assert_eq!(holder.locked_generation(), 1);
    let inode = lock_inode(dir);
    assert_eq!(pidfile(dir), Some(format!("{}\n", holder.pid())));

    match DataDirLock::acquire(dir) {
        Err(Error::LockHeld {
            holder: pid,
            dir: named,
        }) => {
            assert_eq!(pid, Some(holder.pid()));
            assert_eq!(named, std::fs::canonicalize(dir).unwrap());
        }
        other => panic!("expected LockHeld, got {other:?}"),
    }
    assert_eq!(
        DataDirLock::probe(dir).unwrap(),
        LockState::Held {
            pid: Some(holder.pid())
        }
    );
    // Retrying does not break a live holder either.
    let err = DataDirLock::acquire_with_retry(dir, Duration::from_millis(200)).unwrap_err();
    assert!(matches!(err, Error::LockHeld { .. }), "{err}");
    assert!(DataDirLock::probe(dir).unwrap().is_held());

    holder.kill();
    // The dead holder's pidfile is still there, naming it...
    assert_eq!(pidfile(dir), Some(format!("{}\n", holder.pid())));
    // ...and stands in nobody's way.
    assert_eq!(DataDirLock::probe(dir).unwrap(), LockState::Free);
    let lock = DataDirLock::acquire(dir).unwrap();
    assert_eq!(lock.generation(), 2);
    assert_eq!(pidfile(dir), Some(format!("{}\n", std::process::id())));

    lock.release().unwrap();
    assert_eq!(pidfile(dir), None);
    assert_eq!(lock_inode(dir), inode, "the lock file is never replaced");
}

#[test]
fn acquire_with_retry_waits_out_a_dying_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let holder = Helper::spawn("hold", dir);
    assert_eq!(holder.locked_generation(), 1);
    let pid = holder.pid() as libc::pid_t;
    let killing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let killing = std::sync::Arc::clone(&killing);
        std::thread::spawn(move || {
            // The wait under test, not a synchronisation: the acquirer is
            // meant to be blocked through it.
            std::thread::sleep(Duration::from_millis(200));
            // Set first: the lock is free only once the signal is on its way.
            killing.store(true, std::sync::atomic::Ordering::SeqCst);
            // SAFETY: signalling our own child, which is not reaped before the
            // join below, so the pid cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        })
    };
    let lock = DataDirLock::acquire_with_retry(dir, Duration::from_secs(10)).unwrap();
    assert!(
        killing.load(std::sync::atomic::Ordering::SeqCst),
        "the lock was granted while its holder lived"
    );
    assert_eq!(lock.generation(), 2);
    killer.join().unwrap();
    drop(holder);
}

#[test]
fn the_generation_goes_up_by_one_on_every_acquire_across_processes_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    let child = Helper::spawn("cycle", dir);
    assert_eq!(child.locked_generation(), 1);
    child.expect("RELEASED");
    child.finish();
    let inode = lock_inode(dir);

    // A fresh value each time, as after a restart of this process.
    let lock = DataDirLock::acquire(dir).unwrap();
    assert_eq!(lock.generation(), 2);
    lock.release().unwrap();
    let lock = DataDirLock::acquire(dir).unwrap();
    assert_eq!(lock.generation(), 3);
    drop(lock);

    let child = Helper::spawn("hold", dir);
    assert_eq!(child.locked_generation(), 4);
    child.finish();

    let mut child = Helper::spawn("hold", dir);
    assert_eq!(child.locked_generation(), 5);
    child.kill();

    assert_eq!(DataDirLock::acquire(dir).unwrap().generation(), 6);
    assert_eq!(read_generation(dir), 6);
    assert_eq!(lock_inode(dir), inode, "the lock file is never replaced");
}

#[test]
fn another_process_sees_this_one_as_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lock = DataDirLock::acquire(dir).unwrap();
    let child = Helper::spawn("try", dir);
    assert_eq!(
        child.expect("HELD "),
        format!("Some({})", std::process::id())
    );
    child.finish();
    lock.release().unwrap();

    let child = Helper::spawn("cycle", dir);
    assert_eq!(child.locked_generation(), 2);
    child.finish();
}

/// The generation as every reader takes it: trimmed, then parsed.
fn read_generation(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join(GENERATION_FILE)).unwrap();
    text.trim().parse().unwrap()
}

/// DESIGN: nothing the incumbent needs to keep or retake its lock may
/// require new disk space. A rolled-back incumbent releases and retakes
/// its lock with the data directory's filesystem full.
#[test]
fn release_and_acquire_again_on_a_full_filesystem_keep_the_lock_and_count_up() {
    let Some(fs) = tmpfs::Tmpfs::mount("release_and_acquire_again_on_a_full_filesystem") else {
        return;
    };
    let dir = fs.join("data");
    let lock = DataDirLock::acquire(&dir).unwrap();
    assert_eq!(lock.generation(), 1);
    fs.fill();

    lock.release().unwrap();
    assert_eq!(DataDirLock::probe(&dir).unwrap(), LockState::Free);
    let lock = DataDirLock::acquire(&dir).expect("acquire on a full filesystem");
    assert_eq!(lock.generation(), 2);
    assert_eq!(read_generation(&dir), 2);
    assert_eq!(
        DataDirLock::probe(&dir).unwrap(),
        LockState::Held {
            pid: Some(std::process::id())
        }
    );
    lock.release().unwrap();

    // Another process takes it in turn, still with no space left, and
    // names itself as the holder.
    let child = Helper::spawn("hold", &dir);
    assert_eq!(child.locked_generation(), 3);
    assert_eq!(
        DataDirLock::probe(&dir).unwrap(),
        LockState::Held {
            pid: Some(child.pid())
        }
    );
    child.finish();
    assert_eq!(DataDirLock::probe(&dir).unwrap(), LockState::Free);
    assert!(fs.is_full(), "the test ran on a full filesystem");
    assert_eq!(read_generation(&dir), 3);
}

/// Invariant 9: what the lock writes next to the path it is given never
/// follows a symlink someone planted there, at the temporary names the
/// library used (`<file>.tmp`) or at the files themselves.
#[test]
fn acquire_never_follows_a_planted_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("precious");
    std::fs::write(&target, "keep me\n").unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    for name in [PIDFILE, GENERATION_FILE] {
        std::os::unix::fs::symlink(&target, dir.join(format!("{name}.tmp"))).unwrap();
    }
    for generation in 1..=2 {
        let lock = DataDirLock::acquire(&dir).unwrap();
        assert_eq!(lock.generation(), generation);
        lock.release().unwrap();
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
    for name in [PIDFILE, GENERATION_FILE] {
        let meta = std::fs::symlink_metadata(dir.join(name)).unwrap();
        assert!(meta.is_file(), "{name} is a regular file");
    }

    // A symlink at the pidfile itself is refused, naming it.
    std::fs::remove_file(dir.join(PIDFILE)).unwrap();
    std::os::unix::fs::symlink(&target, dir.join(PIDFILE)).unwrap();
    let err = DataDirLock::acquire(&dir).unwrap_err();
    assert!(err.to_string().contains(PIDFILE), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
    assert_eq!(DataDirLock::probe(&dir).unwrap(), LockState::Free);
}

/// A data directory others may write to (not sticky) is refused, naming
/// it: anyone could replace the lock's files there. A sticky one of ours
/// (as /tmp is root's) is fine.
#[test]
fn a_data_dir_others_can_write_to_is_refused_unless_sticky_and_ours() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("open");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = DataDirLock::acquire(&dir).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&*dir.to_string_lossy()), "{text}");
    assert!(text.contains("writable"), "{text}");

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    assert_eq!(DataDirLock::acquire(&dir).unwrap().generation(), 1);
}
