//! The trigger socket's protocol, and its clients: `trigger`, `prepare`,
//! `discard` and `status`.
//!
//! One request line per connection, then the answer:
//!
//! ```text
//! handoff [--force] [--prepared | --binary PATH]   PATH runs to the end of the line
//!   → phase NAME MS ID                   once per phase, as it completes
//!   → committed ID TOTAL_MS PID  |  rolled-back ID TOTAL_MS PHASE PARTY CAUSE REASON...
//!   | in-progress ID|- PHASE     |  refused REASON...  |  error REASON...
//!   | started PID                  no incumbent ran: PATH was started cold
//!   (--prepared: the successor `prepare` holds; error when none is)
//! prepare [--force] [--binary PATH]
//!   → prepared ID PID SPAWN_MS     spawned and handshaken, held for `handoff --prepared`
//!   | failed PARTY CAUSE REASON... it did not come up (nothing is held)
//!   | refused REASON...  |  error REASON...
//! discard
//!   → discarded ID PID  |  error REASON...
//! status text|json|prometheus
//!   → the rendered status, until the server closes the connection
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::status::{self, StatusFormat};

/// Requests longer than this are refused (a path is at most 4 KiB).
pub const MAX_REQUEST: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Handoff {
        force: bool,
        /// To the successor `Prepare` holds (no binary then).
        prepared: bool,
        binary: Option<PathBuf>,
    },
    /// Start and handshake a successor now, to be handed off to later.
    Prepare {
        force: bool,
        binary: Option<PathBuf>,
    },
    /// Stop the prepared successor.
    Discard,
    Status(StatusFormat),
}

/// The options after `handoff` or `prepare`.
#[derive(Debug, Default)]
struct Options {
    force: bool,
    prepared: bool,
    binary: Option<PathBuf>,
}

impl Options {
    /// `--force`, `--prepared` (where `prepared_allowed`) and
    /// `--binary PATH`, which must come last: PATH runs to the end.
    fn parse(mut rest: &str, prepared_allowed: bool) -> Result<Options, String> {
        let mut options = Options::default();
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(after) = rest.strip_prefix("--force") {
                options.force = true;
                rest = after;
            } else if let Some(after) = rest.strip_prefix("--prepared").filter(|_| prepared_allowed)
            {
                options.prepared = true;
                rest = after;
            } else if let Some(path) = rest.strip_prefix("--binary ") {
                if path.is_empty() {
                    return Err("--binary needs a path".into());
                }
                options.binary = Some(PathBuf::from(path));
                break;
            } else {
                return Err(format!("unknown option {rest:?}"));
            }
        }
        if options.prepared && options.binary.is_some() {
            return Err("--prepared hands off to the prepared successor: no --binary".into());
        }
        Ok(options)
    }
}

impl Request {
    pub fn parse(line: &str) -> Result<Request, String> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "status" => match rest.trim() {
                "" | "text" => Ok(Request::Status(StatusFormat::Text)),
                "json" => Ok(Request::Status(StatusFormat::Json)),
                "prometheus" => Ok(Request::Status(StatusFormat::Prometheus)),
                other => Err(format!("unknown status format {other:?}")),
            },
            "handoff" => {
                let Options {
                    force,
                    prepared,
                    binary,
                } = Options::parse(rest, true).map_err(|e| format!("handoff: {e}"))?;
                Ok(Request::Handoff {
                    force,
                    prepared,
                    binary,
                })
            }
            "prepare" => {
                let Options { force, binary, .. } =
                    Options::parse(rest, false).map_err(|e| format!("prepare: {e}"))?;
                Ok(Request::Prepare { force, binary })
            }
            "discard" if rest.trim().is_empty() => Ok(Request::Discard),
            _ => Err(format!("unknown request {line:?}")),
        }
    }

    pub fn to_line(&self) -> String {
        let with_options = |word: &str, force: bool, prepared: bool, binary: &Option<PathBuf>| {
            let mut line = String::from(word);
            if force {
                line.push_str(" --force");
            }
            if prepared {
                line.push_str(" --prepared");
            }
            if let Some(binary) = binary {
                line.push_str(" --binary ");
                line.push_str(&binary.to_string_lossy());
            }
            line.push('\n');
            line
        };
        match self {
            Request::Status(format) => format!("status {}\n", format.name()),
            Request::Handoff {
                force,
                prepared,
                binary,
            } => with_options("handoff", *force, *prepared, binary),
            Request::Prepare { force, binary } => with_options("prepare", *force, false, binary),
            Request::Discard => "discard\n".into(),
        }
    }
}

/// One line of the answer to `handoff`, `prepare` or `discard`.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Phase {
        name: String,
        ms: f64,
        id: String,
    },
    Committed {
        id: String,
        total_ms: f64,
        pid: u32,
    },
    RolledBack {
        id: String,
        total_ms: f64,
        phase: String,
        /// Who caused it and how (`Party::name`, `Cause::name`).
        party: String,
        cause: String,
        reason: String,
    },
    InProgress {
        id: String,
        phase: String,
    },
    /// No incumbent was running (it was being restarted): the binary was
    /// started cold instead of handed off to.
    Started {
        pid: u32,
    },
    /// A successor is prepared and held.
    Prepared {
        id: String,
        pid: u32,
        spawn_ms: f64,
    },
    /// The successor to prepare did not come up (`Abort`'s party, cause
    /// and detail); nothing is held.
    NotPrepared {
        party: String,
        cause: String,
        reason: String,
    },
    /// The prepared successor was stopped.
    Discarded {
        id: String,
        pid: u32,
    },
    Refused(String),
    Error(String),
}

impl Reply {
    pub fn to_line(&self) -> String {
        let one_line = |s: &str| s.replace('\n', " ");
        match self {
            Reply::Phase { name, ms, id } => format!("phase {name} {ms:.3} {id}\n"),
            Reply::Committed { id, total_ms, pid } => {
                format!("committed {id} {total_ms:.3} {pid}\n")
            }
            Reply::RolledBack {
                id,
                total_ms,
                phase,
                party,
                cause,
                reason,
            } => format!(
                "rolled-back {id} {total_ms:.3} {phase} {party} {cause} {}\n",
                one_line(reason)
            ),
            Reply::InProgress { id, phase } => format!("in-progress {id} {phase}\n"),
            Reply::Started { pid } => format!("started {pid}\n"),
            Reply::Prepared { id, pid, spawn_ms } => {
                format!("prepared {id} {pid} {spawn_ms:.3}\n")
            }
            Reply::NotPrepared {
                party,
                cause,
                reason,
            } => format!("failed {party} {cause} {}\n", one_line(reason)),
            Reply::Discarded { id, pid } => format!("discarded {id} {pid}\n"),
            Reply::Refused(reason) => format!("refused {}\n", one_line(reason)),
            Reply::Error(reason) => format!("error {}\n", one_line(reason)),
        }
    }

    pub fn parse(line: &str) -> Option<Reply> {
        let line = line.trim_end_matches('\n');
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        // The last field is free text: the rollback's reason follows five,
        // a failed prepare's two.
        let free_after = match word {
            "rolled-back" => 5,
            "failed" => 2,
            _ => 3,
        };
        let mut fields = rest.splitn(free_after + 1, ' ');
        let mut next = || fields.next().map(str::to_owned);
        Some(match word {
            "phase" => Reply::Phase {
                name: next()?,
                ms: next()?.parse().ok()?,
                id: next()?,
            },
            "committed" => Reply::Committed {
                id: next()?,
                total_ms: next()?.parse().ok()?,
                pid: next()?.parse().ok()?,
            },
            "rolled-back" => Reply::RolledBack {
                id: next()?,
                total_ms: next()?.parse().ok()?,
                phase: next()?,
                party: next()?,
                cause: next()?,
                reason: next().unwrap_or_default(),
            },
            "in-progress" => Reply::InProgress {
                id: next()?,
                phase: next()?,
            },
            "started" => Reply::Started {
                pid: next()?.parse().ok()?,
            },
            "prepared" => Reply::Prepared {
                id: next()?,
                pid: next()?.parse().ok()?,
                spawn_ms: next()?.parse().ok()?,
            },
            "failed" => Reply::NotPrepared {
                party: next()?,
                cause: next()?,
                reason: next().unwrap_or_default(),
            },
            "discarded" => Reply::Discarded {
                id: next()?,
                pid: next()?.parse().ok()?,
            },
            "refused" => Reply::Refused(rest.to_owned()),
            "error" => Reply::Error(rest.to_owned()),
            _ => return None,
        })
    }
}

fn connect(config: &Config) -> Result<UnixStream, String> {
    let path = &config.service.trigger_socket;
    UnixStream::connect(path).map_err(|e| {
        format!(
            "the supervisor is not running (cannot connect to {}: {e})",
            path.display()
        )
    })
}

/// `--binary` as the supervisor, which runs elsewhere, can use it: an
/// absolute path on one line; the exit status when it cannot be.
fn absolute_binary(binary: Option<PathBuf>) -> Result<Option<PathBuf>, u8> {
    let binary = binary.map(std::path::absolute).transpose().map_err(|e| {
        eprintln!("handoff-supervisor: --binary: {e}");
        2
    })?;
    if binary
        .as_ref()
        .is_some_and(|b| b.to_string_lossy().contains('\n'))
    {
        eprintln!("handoff-supervisor: --binary: a path with a newline cannot be sent");
        return Err(2);
    }
    Ok(binary)
}

/// Send `request`, waiting at most `silence` for each line of the answer;
/// the exit status when it cannot be sent.
fn send(config: &Config, request: &Request, silence: Duration) -> Result<UnixStream, u8> {
    let mut stream = connect(config).map_err(|e| {
        eprintln!("handoff-supervisor: {e}");
        2
    })?;
    stream
        .set_read_timeout(Some(silence))
        .and_then(|()| stream.write_all(request.to_line().as_bytes()))
        .map_err(|e| {
            eprintln!("handoff-supervisor: cannot send the request: {e}");
            2
        })?;
    Ok(stream)
}

/// The first line of the answer on `stream`: the reply, or the exit status
/// for a lost or unintelligible one.
fn one_reply(stream: UnixStream) -> Result<Reply, u8> {
    let mut line = String::new();
    match BufReader::new(stream).read_line(&mut line) {
        Ok(0) => {
            eprintln!("handoff-supervisor: the supervisor closed the connection without an answer");
            Err(2)
        }
        Ok(_) => Reply::parse(&line).ok_or_else(|| unexpected(&line)),
        Err(e) => {
            eprintln!("handoff-supervisor: lost the supervisor's answer: {e}");
            Err(2)
        }
    }
}

fn unexpected(line: &str) -> u8 {
    eprintln!("handoff-supervisor: unexpected answer {line:?}");
    2
}

/// `refused` and `error`, answered to any request: exit status 2.
fn refused_or_error(reply: Reply) -> u8 {
    match reply {
        Reply::InProgress { id, phase } => {
            eprintln!("handoff-supervisor: handoff in progress ({id}, phase {phase})");
        }
        Reply::Refused(reason) => eprintln!("handoff-supervisor: refused: {reason}"),
        Reply::Error(reason) => eprintln!("handoff-supervisor: {reason}"),
        other => return unexpected(other.to_line().trim_end()),
    }
    2
}

/// `handoff-supervisor trigger`: 0 committed (or started cold while the
/// service was being restarted), 1 rolled back, 2 otherwise. `prepared`:
/// to the successor `prepare` holds.
pub fn run_trigger(
    config: &Config,
    binary: Option<PathBuf>,
    prepared: bool,
    force: bool,
    quiet: bool,
) -> u8 {
    let binary = match absolute_binary(binary) {
        Ok(binary) => binary,
        Err(status) => return status,
    };
    // The longest silence is one phase, and no phase outlasts the deadline.
    let silence = config.timeouts.deadline + Duration::from_secs(30);
    let request = Request::Handoff {
        force,
        prepared,
        binary,
    };
    let stream = match send(config, &request, silence) {
        Ok(stream) => stream,
        Err(status) => return status,
    };
    let mut announced = false;
    for line in BufReader::new(stream).lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("handoff-supervisor: lost the supervisor's answer: {e}");
                return 2;
            }
        };
        let Some(reply) = Reply::parse(&line) else {
            return unexpected(&line);
        };
        match reply {
            Reply::Phase { name, ms, id } => {
                if !quiet {
                    if !announced {
                        println!("handoff {id}");
                        announced = true;
                    }
                    println!("  {name:<8} {ms:>10.3} ms");
                }
            }
            Reply::Committed { id, total_ms, pid } => {
                if !quiet {
                    println!(
                        "committed in {total_ms:.3} ms: pid {pid} is the incumbent (handoff {id})"
                    );
                }
                return 0;
            }
            Reply::RolledBack {
                id,
                total_ms,
                phase,
                party,
                cause,
                reason,
            } => {
                eprintln!(
                    "rolled back after {total_ms:.3} ms, in phase {phase}, by the {party} \
                     ({cause}): {reason} (handoff {id})"
                );
                return 1;
            }
            Reply::Started { pid } => {
                if !quiet {
                    println!(
                        "no incumbent was running (it was being restarted): started pid {pid} cold"
                    );
                }
                return 0;
            }
            other => return refused_or_error(other),
        }
    }
    eprintln!("handoff-supervisor: the supervisor closed the connection without an outcome");
    2
}

/// `handoff-supervisor prepare`: 0 prepared, 1 the successor did not come
/// up, 2 otherwise.
pub fn run_prepare(config: &Config, binary: Option<PathBuf>, force: bool, quiet: bool) -> u8 {
    let binary = match absolute_binary(binary) {
        Ok(binary) => binary,
        Err(status) => return status,
    };
    // The spawn and Hello take at most the hello timeout; a failure then
    // stops the successor, SIGKILL after the kill grace.
    let silence = config.timeouts.hello + config.timeouts.kill_grace + Duration::from_secs(30);
    let reply = send(config, &Request::Prepare { force, binary }, silence).and_then(one_reply);
    match reply {
        Ok(Reply::Prepared { id, pid, spawn_ms }) => {
            if !quiet {
                println!(
                    "prepared pid {pid} in {spawn_ms:.3} ms (handoff {id}): `trigger --prepared` \
                     hands off to it, `discard` stops it"
                );
            }
            0
        }
        Ok(Reply::NotPrepared {
            party,
            cause,
            reason,
        }) => {
            eprintln!("handoff-supervisor: not prepared, by the {party} ({cause}): {reason}");
            1
        }
        Ok(other) => refused_or_error(other),
        Err(status) => status,
    }
}

/// `handoff-supervisor discard`: 0 discarded, 2 otherwise (nothing was
/// prepared).
pub fn run_discard(config: &Config, quiet: bool) -> u8 {
    let silence = config.timeouts.kill_grace + Duration::from_secs(30);
    match send(config, &Request::Discard, silence).and_then(one_reply) {
        Ok(Reply::Discarded { id, pid }) => {
            if !quiet {
                println!("discarded pid {pid} (handoff {id}): stopped and reaped");
            }
            0
        }
        Ok(other) => refused_or_error(other),
        Err(status) => status,
    }
}

/// `handoff-supervisor status`: 0 when the supervisor runs, 3 when it does
/// not (as `systemctl status`), 2 on other errors.
pub fn run_status(config: &Config, format: StatusFormat) -> u8 {
    let mut stream = match connect(config) {
        Ok(stream) => stream,
        Err(e) => {
            print!("{}", status::render_offline(config, &e, format));
            return 3;
        }
    };
    let mut answer = String::new();
    let sent = stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .and_then(|()| stream.write_all(Request::Status(format).to_line().as_bytes()))
        .and_then(|()| stream.read_to_string(&mut answer));
    if let Err(e) = sent {
        eprintln!("handoff-supervisor: cannot read the status: {e}");
        return 2;
    }
    if let Some(Reply::Error(reason)) = Reply::parse(&answer) {
        eprintln!("handoff-supervisor: {reason}");
        return 2;
    }
    print!("{answer}");
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for request in [
            Request::Handoff {
                force: false,
                prepared: false,
                binary: None,
            },
            Request::Handoff {
                force: true,
                prepared: false,
                binary: Some("/opt/my service/bin".into()),
            },
            Request::Handoff {
                force: false,
                prepared: true,
                binary: None,
            },
            Request::Prepare {
                force: false,
                binary: None,
            },
            Request::Prepare {
                force: true,
                binary: Some("/opt/kv --prepared".into()),
            },
            Request::Discard,
            Request::Status(StatusFormat::Prometheus),
        ] {
            assert_eq!(Request::parse(&request.to_line()).unwrap(), request);
        }
        for bad in [
            "reboot\n",
            "handoff --now\n",
            "handoff --prepared --binary /b\n",
            "prepare --prepared\n",
            "prepare --binary \n",
            "discard now\n",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            Reply::Phase {
                name: "drain".into(),
                ms: 1.5,
                id: "x".into(),
            },
            Reply::Committed {
                id: "x".into(),
                total_ms: 20.25,
                pid: 42,
            },
            Reply::RolledBack {
                id: "x".into(),
                total_ms: 3.0,
                phase: "ready".into(),
                party: "successor".into(),
                cause: "exited".into(),
                reason: "successor exited with status 3".into(),
            },
            Reply::InProgress {
                id: "-".into(),
                phase: "hello".into(),
            },
            Reply::Started { pid: 7 },
            Reply::Prepared {
                id: "x".into(),
                pid: 9,
                spawn_ms: 3.25,
            },
            Reply::NotPrepared {
                party: "successor".into(),
                cause: "protocol".into(),
                reason: "successor Hello came from pid Some(1), not the spawned 2".into(),
            },
            Reply::Discarded {
                id: "x".into(),
                pid: 9,
            },
            Reply::Refused("no".into()),
            Reply::Error("bad thing".into()),
        ] {
            assert_eq!(Reply::parse(&reply.to_line()).unwrap(), reply);
        }
    }
}
