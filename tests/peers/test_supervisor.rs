//! test-supervisor: the supervisor of tests/crash_recovery.rs, in its own
//! process so that a crash point can kill it (SIGKILL) without killing the
//! test.
//!
//! ```text
//! test-supervisor --control PATH --journal PATH --data-dir DIR --service BIN
//!                 [--service-arg ARG]... (handoff | recover)
//! ```
//!
//! The listener `kv` is inherited at fd 3. The service runs as
//! `BIN --data-dir DIR --control-socket PATH [ARG]...`.
//!
//! - `handoff`: finish or roll back whatever a previous supervisor left in
//!   the journal, then hand the service off once. Prints `committed <pid>`
//!   (the new incumbent) and exits 0, or `rolled-back: <reason>` and exits 1.
//! - `recover`: only the journal recovery. Prints `none`, or
//!   `committed <pid> phase=<phase>` / `rolled-back <pid|-> phase=<phase>`
//!   (the incumbent answering afterwards), and exits 0.
//!
//! Any other failure exits 2. A committed successor is left running: this
//! process just exits and the successor is reparented.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use handoff::supervisor::{Recovery, SpawnSpec, Supervisor};

const PROGRAM: &str = "test-supervisor";
/// Where the test puts the listener.
const LISTENER_FD: i32 = 3;

#[derive(Default)]
struct Args {
    control: Option<PathBuf>,
    journal: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    service: Option<PathBuf>,
    service_args: Vec<OsString>,
    mode: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{} needs a value", arg.to_string_lossy()))
        };
        match arg.to_str() {
            Some("--control") => args.control = Some(value()?.into()),
            Some("--journal") => args.journal = Some(value()?.into()),
            Some("--data-dir") => args.data_dir = Some(value()?.into()),
            Some("--service") => args.service = Some(value()?.into()),
            Some("--service-arg") => args.service_args.push(value()?),
            Some(mode @ ("handoff" | "recover")) if args.mode.is_none() => {
                args.mode = Some(mode.to_string())
            }
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    Ok(args)
}

/// The listener the test placed at fd 3.
fn inherited_listener() -> Result<OwnedFd, String> {
    // SAFETY: `stat` is plain old data, for which all zeroes is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat with a valid stat buffer; a closed descriptor is
    // answered with EBADF and nothing else happens.
    if unsafe { libc::fstat(LISTENER_FD, &mut st) } != 0 {
        return Err(format!(
            "no listener at fd {LISTENER_FD}: {}",
            std::io::Error::last_os_error()
        ));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(format!("fd {LISTENER_FD} is not a socket"));
    }
    // SAFETY: fd 3 is open (fstat above) and is ours by the calling
    // convention of this program: the test dup2()s its listener there just
    // before exec, and nothing else in this process refers to fd 3, so this
    // OwnedFd is its only owner. (The supervisor marks it close-on-exec.)
    Ok(unsafe { OwnedFd::from_raw_fd(LISTENER_FD) })
}

fn describe(recovery: &Option<Recovery>) -> String {
    match recovery {
        None => "none".to_string(),
        Some(r) => format!(
            "{} {} phase={}",
            if r.committed {
                "committed"
            } else {
                "rolled-back"
            },
            r.incumbent_pid
                .map_or_else(|| "-".to_string(), |pid| pid.to_string()),
            r.journal.phase.name()
        ),
    }
}

fn run() -> Result<ExitCode, String> {
    let args = parse_args()?;
    let (Some(control), Some(journal), Some(data_dir), Some(service), Some(mode)) = (
        args.control,
        args.journal,
        args.data_dir,
        args.service,
        args.mode,
    ) else {
        return Err(
            "usage: test-supervisor --control PATH --journal PATH --data-dir DIR \
             --service BIN [--service-arg ARG]... (handoff | recover)"
                .into(),
        );
    };
    let pid = std::process::id();
    handoff::log::set_logger(Some(Box::new(move |level, message| {
        eprintln!("{PROGRAM}[{pid}] {}: {message}", level.name())
    })));

    let supervisor = Supervisor::new(&control)
        .with_listener("kv", inherited_listener()?)
        .map_err(|e| e.to_string())?
        .with_journal(&journal);
    let recovery = supervisor
        .resume_from_journal()
        .map_err(|e| format!("resume_from_journal: {e}"))?;
    if mode == "recover" {
        println!("{}", describe(&recovery));
        return Ok(ExitCode::SUCCESS);
    }
    if recovery.is_some() {
        eprintln!("{PROGRAM}[{pid}] recovered: {}", describe(&recovery));
    }

    let mut spec = SpawnSpec::new(&service);
    spec.command.args = vec![
        "--data-dir".into(),
        data_dir.into(),
        "--control-socket".into(),
        control.into(),
    ];
    spec.command.args.extend(args.service_args);
    let outcome = supervisor
        .perform_handoff(&spec)
        .map_err(|e| format!("perform_handoff: {e}"))?;
    if outcome.committed {
        let successor = outcome.successor.map_or(0, |child| child.pid());
        // The successor is the incumbent now: leave it running.
        println!("committed {successor}");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("rolled-back: {}", outcome.abort_reason.unwrap_or_default());
        Ok(ExitCode::from(1))
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            ExitCode::from(2)
        }
    }
}
