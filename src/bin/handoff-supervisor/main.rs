//! handoff-supervisor: runs a service that takes part in handoffs, in any
//! language, and hands it off on demand (trigger, SIGHUP, systemctl reload).
#![deny(unsafe_code)]

mod bind;
mod config;
mod connections;
mod events;
mod generation;
mod log;
mod notify;
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
mod worker;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use config::Config;
use status::StatusFormat;

const USAGE: &str = "\
usage: handoff-supervisor <command> --config FILE [options]

Runs a service that takes part in libhandoff handoffs and hands it off to a
new process on demand, with no refused connection and no lost write.

commands:
  run       start the service and supervise it, in the foreground
              --log-format human|json   log lines (stderr) as text or JSON [human]
              --log-level LEVEL         error, warn, info or debug [info]
  trigger   hand the running service off to a new process, printing each
            phase as it completes; exit 0 committed, 1 rolled back, 2 error
              --binary PATH             run PATH as the successor (this time)
              --force                   even a binary refused after 3 failures
              --quiet                   print nothing but errors
  status    what the supervisor is doing; exit 0 running, 3 not running
              --json                    as JSON
              --prometheus              in Prometheus text format
  check     check the config file and exit (0 when valid)

options:
  -c, --config FILE   the configuration file (TOML), required
  -h, --help          this help
  -V, --version       the version

signals to `run`: SIGHUP hands off (as `trigger`); SIGTERM or SIGINT stop the
service and the supervisor (during a handoff: once it ends, or at once on a
second signal). See docs/systemd.md for running under systemd.
";

/// Exit status for usage and configuration errors.
const USAGE_ERROR: u8 = 2;

#[derive(Debug, Default)]
struct Args {
    command: Option<String>,
    config: Option<PathBuf>,
    binary: Option<PathBuf>,
    force: bool,
    quiet: bool,
    json: bool,
    prometheus: bool,
    log_format: Option<String>,
    log_level: Option<String>,
}

enum Parsed {
    Args(Args),
    Help,
    Version,
}

fn parse(mut argv: impl Iterator<Item = OsString>) -> Result<Parsed, String> {
    let mut args = Args::default();
    while let Some(arg) = argv.next() {
        let text = arg
            .to_str()
            .ok_or_else(|| format!("argument {arg:?} is not UTF-8"))?
            .to_owned();
        // --opt=value is --opt value.
        let (flag, mut inline) = match text.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(OsString::from(value)))
            }
            _ => (text.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .take()
                .or_else(|| argv.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" | "help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "-c" | "--config" => args.config = Some(value(&flag)?.into()),
            "--binary" => args.binary = Some(value(&flag)?.into()),
            "--log-format" => args.log_format = Some(string(value(&flag)?)?),
            "--log-level" => args.log_level = Some(string(value(&flag)?)?),
            "--force" => args.force = true,
            "--quiet" | "-q" => args.quiet = true,
            "--json" => args.json = true,
            "--prometheus" => args.prometheus = true,
            command @ ("run" | "trigger" | "status" | "check") if args.command.is_none() => {
                args.command = Some(command.to_owned())
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other => return Err(format!("unexpected argument {other:?}")),
        }
        if inline.is_some() {
            return Err(format!("{flag} takes no value"));
        }
    }
    Ok(Parsed::Args(args))
}

fn string(value: OsString) -> Result<String, String> {
    value
        .into_string()
        .map_err(|v| format!("{v:?} is not UTF-8"))
}

/// Options that only one command takes.
fn check_options(args: &Args, command: &str) -> Result<(), String> {
    let used = [
        ("--binary", args.binary.is_some(), "trigger"),
        ("--force", args.force, "trigger"),
        ("--quiet", args.quiet, "trigger"),
        ("--json", args.json, "status"),
        ("--prometheus", args.prometheus, "status"),
        ("--log-format", args.log_format.is_some(), "run"),
        ("--log-level", args.log_level.is_some(), "run"),
    ];
    for (option, given, owner) in used {
        if given && owner != command {
            return Err(format!(
                "{option} is an option of `{owner}`, not of `{command}`"
            ));
        }
    }
    if args.json && args.prometheus {
        return Err("--json and --prometheus exclude each other".into());
    }
    Ok(())
}

fn level(name: &str) -> Option<log::Level> {
    Some(match name {
        "error" => log::Level::Error,
        "warn" | "warning" => log::Level::Warn,
        "info" => log::Level::Info,
        "debug" => log::Level::Debug,
        _ => return None,
    })
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("handoff-supervisor: {message}\n(see handoff-supervisor --help)");
    ExitCode::from(USAGE_ERROR)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("handoff-supervisor {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Args(args)) => args,
        Err(e) => return usage_error(&e),
    };
    let Some(command) = args.command.clone() else {
        eprint!("{USAGE}");
        return ExitCode::from(USAGE_ERROR);
    };
    if let Err(e) = check_options(&args, &command) {
        return usage_error(&e);
    }
    let Some(config_path) = &args.config else {
        return usage_error("--config FILE is required");
    };
    let log_format = match args.log_format.as_deref().map(log::Format::parse) {
        None => log::Format::Human,
        Some(Some(format)) => format,
        Some(None) => return usage_error("--log-format is human or json"),
    };
    let log_level = match args.log_level.as_deref().map(level) {
        None => log::Level::Info,
        Some(Some(level)) => level,
        Some(None) => return usage_error("--log-level is error, warn, info or debug"),
    };
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("handoff-supervisor: {e}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let status = match command.as_str() {
        "run" => run::run(
            config,
            run::Options {
                log_format,
                log_level,
            },
        ),
        "trigger" => trigger::run_trigger(&config, args.binary, args.force, args.quiet),
        "status" => {
            let format = if args.json {
                StatusFormat::Json
            } else if args.prometheus {
                StatusFormat::Prometheus
            } else {
                StatusFormat::Text
            };
            trigger::run_status(&config, format)
        }
        "check" => {
            println!("{}: ok", config.path.display());
            0
        }
        _ => unreachable!("parse accepts only the commands above"),
    };
    ExitCode::from(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        match parse(list.iter().map(OsString::from))? {
            Parsed::Args(args) => Ok(args),
            _ => Err("help or version".into()),
        }
    }

    #[test]
    fn parses_both_spellings() {
        let a = args(&["trigger", "--config=/x.toml", "--binary", "/b", "--force"]).unwrap();
        assert_eq!(a.command.as_deref(), Some("trigger"));
        assert_eq!(a.config, Some(PathBuf::from("/x.toml")));
        assert_eq!(a.binary, Some(PathBuf::from("/b")));
        assert!(a.force);
        assert!(args(&["run", "--bogus"]).is_err());
        assert!(args(&["run", "--force=yes"]).is_err());
        assert!(args(&["run", "--config"]).is_err());
        assert!(args(&["run", "status"]).is_err());
    }

    #[test]
    fn options_belong_to_their_command() {
        let a = args(&["run", "-c", "x", "--json"]).unwrap();
        assert!(check_options(&a, "run").is_err());
        let a = args(&["status", "-c", "x", "--json"]).unwrap();
        assert!(check_options(&a, "status").is_ok());
    }
}
