//! The command line, defined once: clap parses it, and the cli-docs example
//! (cli_docs/) renders it as man pages and shell completions. Only clap and
//! std here, so that the example can include this file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum, ValueHint};

/// After the options in `--help`; the man page's NOTES.
const AFTER_HELP: &str = "\
Signals: SIGHUP to `run` hands off, as `trigger` does; SIGTERM or SIGINT stop
the service, a prepared successor and the supervisor (during a handoff: once
it ends, or at once on a second signal). Exit status 2 is always a usage or configuration error,
reported before anything starts. The config file, and running under systemd:
docs/systemd.md.";

#[derive(Debug, Parser)]
#[command(
    name = "handoff-supervisor",
    version,
    about = "Run a service that takes part in libhandoff handoffs, and hand it off on demand",
    long_about = "\
Runs a service that takes part in libhandoff handoffs, in any language, and
hands it off to a new process on demand (`trigger`, SIGHUP, `systemctl
reload`), with no refused connection and no lost write. A successor that
fails is rolled back to the running process.",
    after_help = AFTER_HELP,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the service and supervise it, in the foreground
    #[command(long_about = "\
Binds the config file's listeners, starts the service and supervises it, in
the foreground, handing it off on `trigger` or SIGHUP.

Exit status: 0 stopped by SIGTERM or SIGINT (or a clean exit under the
`on-failure` restart policy); 1 a runtime failure (cannot bind, cannot start
the service, the restart policy gave up); 2 a usage or configuration error.")]
    Run {
        #[command(flatten)]
        config: ConfigFile,
        /// Log lines (on stderr) as text or as one JSON object per line
        #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Human)]
        log_format: LogFormat,
        /// The least severe events logged
        #[arg(long, value_enum, value_name = "LEVEL", default_value_t = LogLevel::Info)]
        log_level: LogLevel,
    },
    /// Hand the running service off to a new process, printing each phase
    #[command(long_about = "\
Hands the running service off to a new process, printing each phase as it
completes.

With --prepared, hands off to the successor `prepare` started: the switch
without the spawn, with the budgets the config had then.

Exit status: 0 committed; 1 rolled back (the running process serves on);
2 any other error (not running, a handoff in progress, a refused binary,
nothing prepared).")]
    Trigger {
        #[command(flatten)]
        config: ConfigFile,
        /// Run PATH as the successor (this time only)
        #[arg(long, value_name = "PATH", value_hint = ValueHint::ExecutablePath)]
        binary: Option<PathBuf>,
        /// Hand off to the successor `prepare` started (it keeps its binary)
        #[arg(long, conflicts_with = "binary")]
        prepared: bool,
        /// Try even a binary refused after 3 failed handoffs
        #[arg(long)]
        force: bool,
        /// Print nothing but errors
        #[arg(short, long)]
        quiet: bool,
    },
    /// Start a successor now and hold it, for `trigger --prepared` later
    #[command(long_about = "\
Starts a successor now and exchanges its Hello, then holds it, waiting: the
running process serves on, untouched. `trigger --prepared` hands off to it
later (the switch without the spawn), `discard` stops it. One is held at a
time; a held successor that exits is dropped (logged), and stopping the
supervisor stops it.

Exit status: 0 prepared (its pid printed); 1 the successor did not come up
(why is printed; nothing is held); 2 any other error (not running, one
already prepared, no incumbent, a refused binary).")]
    Prepare {
        #[command(flatten)]
        config: ConfigFile,
        /// Run PATH as the successor
        #[arg(long, value_name = "PATH", value_hint = ValueHint::ExecutablePath)]
        binary: Option<PathBuf>,
        /// Try even a binary refused after 3 failed handoffs
        #[arg(long)]
        force: bool,
        /// Print nothing but errors
        #[arg(short, long)]
        quiet: bool,
    },
    /// Stop the successor `prepare` started
    #[command(long_about = "\
Stops the successor `prepare` started (Abort, SIGTERM, SIGKILL after the
kill grace) and reaps it; the running process serves on.

Exit status: 0 discarded; 2 an error (not running, nothing prepared).")]
    Discard {
        #[command(flatten)]
        config: ConfigFile,
        /// Print nothing but errors
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show what the supervisor is doing
    #[command(long_about = "\
Shows what the supervisor is doing: its state, the incumbent, the handoff in
progress and the last one, and its counters.

Exit status: 0 running; 2 an error; 3 not running.")]
    Status {
        #[command(flatten)]
        config: ConfigFile,
        /// As JSON
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// In Prometheus text format
        #[arg(long)]
        prometheus: bool,
    },
    /// Check the config file and exit
    #[command(long_about = "\
Checks the config file as `run` does before anything starts, and exits.

Exit status: 0 valid; 2 invalid.")]
    Check {
        #[command(flatten)]
        config: ConfigFile,
    },
}

#[derive(Debug, Args)]
pub struct ConfigFile {
    /// The configuration file (TOML)
    #[arg(short = 'c', long = "config", value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub path: PathBuf,
}

/// `--log-format` (log.rs's `Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[value(alias = "text")]
    Human,
    Json,
}

/// `--log-level`, as the library's `handoff::log::Level` (main.rs converts:
/// that type is not ours to derive clap's trait on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    #[value(alias = "warning")]
    Warn,
    Info,
    Debug,
}
