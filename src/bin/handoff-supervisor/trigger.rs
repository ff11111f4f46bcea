//! The trigger socket's protocol, and its two clients: `trigger` and
//! `status`.
//!
//! One request line per connection, then the answer:
//!
//! ```text
//! handoff [--force] [--binary PATH]      PATH runs to the end of the line
//!   → phase NAME MS ID                   once per phase, as it completes
//!   → committed ID TOTAL_MS PID  |  rolled-back ID TOTAL_MS PHASE PARTY CAUSE REASON...
//!   | in-progress ID|- PHASE     |  refused REASON...  |  error REASON...
//!   | started PID                  no incumbent ran: PATH was started cold
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
        binary: Option<PathBuf>,
    },
    Status(StatusFormat),
}

impl Request {
    pub fn parse(line: &str) -> Result<Request, String> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        if let Some(rest) = line.strip_prefix("status") {
            return match rest.trim() {
                "" | "text" => Ok(Request::Status(StatusFormat::Text)),
                "json" => Ok(Request::Status(StatusFormat::Json)),
                "prometheus" => Ok(Request::Status(StatusFormat::Prometheus)),
                other => Err(format!("unknown status format {other:?}")),
            };
        }
        let Some(mut rest) = line.strip_prefix("handoff") else {
            return Err(format!("unknown request {line:?}"));
        };
        let mut force = false;
        let mut binary = None;
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(after) = rest.strip_prefix("--force") {
                force = true;
                rest = after;
            } else if let Some(path) = rest.strip_prefix("--binary ") {
                if path.is_empty() {
                    return Err("--binary needs a path".into());
                }
                binary = Some(PathBuf::from(path));
                break;
            } else {
                return Err(format!("unknown handoff option {rest:?}"));
            }
        }
        Ok(Request::Handoff { force, binary })
    }

    pub fn to_line(&self) -> String {
        match self {
            Request::Status(format) => format!("status {}\n", format.name()),
            Request::Handoff { force, binary } => {
                let mut line = String::from("handoff");
                if *force {
                    line.push_str(" --force");
                }
                if let Some(binary) = binary {
                    line.push_str(" --binary ");
                    line.push_str(&binary.to_string_lossy());
                }
                line.push('\n');
                line
            }
        }
    }
}

/// One line of the answer to `handoff`.
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
            Reply::Refused(reason) => format!("refused {}\n", one_line(reason)),
            Reply::Error(reason) => format!("error {}\n", one_line(reason)),
        }
    }

    pub fn parse(line: &str) -> Option<Reply> {
        let line = line.trim_end_matches('\n');
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        // The last field is free text: the rollback's reason follows five.
        let mut fields = rest.splitn(if word == "rolled-back" { 6 } else { 4 }, ' ');
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

/// `handoff-supervisor trigger`: 0 committed (or started cold while the
/// service was being restarted), 1 rolled back, 2 otherwise.
pub fn run_trigger(config: &Config, binary: Option<PathBuf>, force: bool, quiet: bool) -> u8 {
    // The supervisor runs elsewhere: name the binary absolutely.
    let binary = match binary.map(std::path::absolute).transpose() {
        Ok(binary) => binary,
        Err(e) => {
            eprintln!("handoff-supervisor: --binary: {e}");
            return 2;
        }
    };
    if binary
        .as_ref()
        .is_some_and(|b| b.to_string_lossy().contains('\n'))
    {
        eprintln!("handoff-supervisor: --binary: a path with a newline cannot be sent");
        return 2;
    }
    let mut stream = match connect(config) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("handoff-supervisor: {e}");
            return 2;
        }
    };
    // The longest silence is one phase, and no phase outlasts the deadline.
    let silence = config.timeouts.deadline + Duration::from_secs(30);
    let request = Request::Handoff { force, binary };
    if let Err(e) = stream
        .set_read_timeout(Some(silence))
        .and_then(|()| stream.write_all(request.to_line().as_bytes()))
    {
        eprintln!("handoff-supervisor: cannot send the trigger: {e}");
        return 2;
    }
    let mut announced = false;
    for line in BufReader::new(stream).lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("handoff-supervisor: lost the supervisor's answer: {e}");
                return 2;
            }
        };
        match Reply::parse(&line) {
            Some(Reply::Phase { name, ms, id }) => {
                if !quiet {
                    if !announced {
                        println!("handoff {id}");
                        announced = true;
                    }
                    println!("  {name:<8} {ms:>10.3} ms");
                }
            }
            Some(Reply::Committed { id, total_ms, pid }) => {
                if !quiet {
                    println!(
                        "committed in {total_ms:.3} ms: pid {pid} is the incumbent (handoff {id})"
                    );
                }
                return 0;
            }
            Some(Reply::RolledBack {
                id,
                total_ms,
                phase,
                party,
                cause,
                reason,
            }) => {
                eprintln!(
                    "rolled back after {total_ms:.3} ms, in phase {phase}, by the {party} \
                     ({cause}): {reason} (handoff {id})"
                );
                return 1;
            }
            Some(Reply::Started { pid }) => {
                if !quiet {
                    println!(
                        "no incumbent was running (it was being restarted): started pid {pid} cold"
                    );
                }
                return 0;
            }
            Some(Reply::InProgress { id, phase }) => {
                eprintln!("handoff-supervisor: handoff in progress ({id}, phase {phase})");
                return 2;
            }
            Some(Reply::Refused(reason)) => {
                eprintln!("handoff-supervisor: refused: {reason}");
                return 2;
            }
            Some(Reply::Error(reason)) => {
                eprintln!("handoff-supervisor: {reason}");
                return 2;
            }
            None => {
                eprintln!("handoff-supervisor: unexpected answer {line:?}");
                return 2;
            }
        }
    }
    eprintln!("handoff-supervisor: the supervisor closed the connection without an outcome");
    2
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
                binary: None,
            },
            Request::Handoff {
                force: true,
                binary: Some("/opt/my service/bin".into()),
            },
            Request::Status(StatusFormat::Prometheus),
        ] {
            assert_eq!(Request::parse(&request.to_line()).unwrap(), request);
        }
        assert!(Request::parse("reboot\n").is_err());
        assert!(Request::parse("handoff --now\n").is_err());
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
            Reply::Refused("no".into()),
            Reply::Error("bad thing".into()),
        ] {
            assert_eq!(Reply::parse(&reply.to_line()).unwrap(), reply);
        }
    }
}
