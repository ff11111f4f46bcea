//! handoff-supervisor: runs a service that takes part in handoffs, in any
//! language, and hands it off on demand (trigger, SIGHUP, systemctl reload).
#![deny(unsafe_code)]

mod bind;
mod cli;
mod config;
mod connections;
mod events;
mod generation;
mod log;
mod notify;
mod preparing;
mod probe;
mod process;
mod restart;
mod run;
mod server;
mod signals;
mod startup;
mod state;
mod status;
mod trigger;
mod tunables;
mod worker;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, LogLevel};
use config::Config;
use status::StatusFormat;

/// Exit status for usage and configuration errors (clap's too).
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    // Help and version exit 0 on stdout; usage errors exit 2 on stderr.
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Run {
            config,
            log_format,
            log_level,
        } => with_config(&config.path, |config| {
            tunables::tune_malloc();
            run::run(
                config,
                run::Options {
                    log_format,
                    log_level: level(log_level),
                },
            )
        }),
        Command::Trigger {
            config,
            binary,
            prepared,
            force,
            quiet,
        } => with_config(&config.path, |config| {
            trigger::run_trigger(&config, binary, prepared, force, quiet)
        }),
        Command::Prepare {
            config,
            binary,
            force,
            quiet,
        } => with_config(&config.path, |config| {
            trigger::run_prepare(&config, binary, force, quiet)
        }),
        Command::Discard { config, quiet } => {
            with_config(&config.path, |config| trigger::run_discard(&config, quiet))
        }
        Command::Status {
            config,
            json,
            prometheus,
        } => with_config(&config.path, |config| {
            trigger::run_status(&config, status_format(json, prometheus))
        }),
        Command::Check { config } => with_config(&config.path, |config| {
            println!("{}: ok", config.path.display());
            0
        }),
    };
    ExitCode::from(status)
}

/// Load the config file and run `command` with it; a bad file is a usage
/// error, reported before anything starts.
fn with_config(path: &Path, command: impl FnOnce(Config) -> u8) -> u8 {
    match Config::load(path) {
        Ok(config) => command(config),
        Err(e) => {
            eprintln!("handoff-supervisor: {e}");
            USAGE_ERROR
        }
    }
}

fn level(level: LogLevel) -> log::Level {
    match level {
        LogLevel::Error => log::Level::Error,
        LogLevel::Warn => log::Level::Warn,
        LogLevel::Info => log::Level::Info,
        LogLevel::Debug => log::Level::Debug,
    }
}

/// `status`'s format from its flags (clap refuses both at once).
fn status_format(json: bool, prometheus: bool) -> StatusFormat {
    match (json, prometheus) {
        (true, _) => StatusFormat::Json,
        (_, true) => StatusFormat::Prometheus,
        _ => StatusFormat::Text,
    }
}
