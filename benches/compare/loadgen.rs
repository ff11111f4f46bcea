//! Closed-loop load for the key-value services: the semantics of the demo's
//! load generator (examples/demo/loadgen.py), compiled, because the Python
//! one is held to one core by the GIL and saturates before the services do
//! (see docs/benchmarks.md).
//!
//! * fresh clients open a new TCP connection per request; a refused or
//!   reset connection, or no answer within the timeout, is a failure;
//! * persistent clients keep one connection; when the server closes it
//!   between requests (a drain does), the client reconnects and resends
//!   the request once, as HTTP clients do, which is not a failure; every
//!   time the server closed or reset a persistent client's connection (end
//!   of file, ECONNRESET, EPIPE: on a request, or found by a last look when
//!   the load stops) is counted apart, as a kept connection closed
//!   ([`Results::closed`]), whether or not a resend followed;
//! * each client alternates `SET key value` and `GET key` on [`KEYS`] keys
//!   of its own, round robin, with a new value each time (so the services'
//!   logs are mostly overwritten records, which they compact, and the state
//!   stays the same size however long the run), checks every answer (a
//!   `GET` must return the value last acknowledged, or one written since by
//!   a `SET` that failed, which may or may not have been applied), and
//!   [`verify`] reads every key back at the end.
//!
//! A client either runs flat out (calibration) or is paced to a share of a
//! total request rate: it sends its next request at its next slot, or at
//! once when it is late (it never has more than one request outstanding).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Keys per client: 16 clients write 4,096 keys per part of a run.
pub const KEYS: u64 = 256;

/// One clock for the whole run: nanoseconds since the first call.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Refused,
    Reset,
    Timeout,
    Error,
    WrongAnswer,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
            Outcome::WrongAnswer => "wrong-answer",
        }
    }
}

/// One request: when it started and ended (`now_ns`), by which kind of
/// client, and how it went.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub start: u64,
    pub end: u64,
    pub fresh: bool,
    pub outcome: Outcome,
}

/// What a key may read back as: the value of its last acknowledged `SET`,
/// or that of a later `SET` that failed (it may have been applied).
#[derive(Default)]
pub struct Expected {
    pub acknowledged: Option<String>,
    pub maybe: Vec<String>,
}

impl Expected {
    fn allows(&self, value: &str) -> bool {
        self.acknowledged.as_deref() == Some(value) || self.maybe.iter().any(|v| v == value)
    }
}

#[derive(Default)]
pub struct Results {
    pub samples: Vec<Sample>,
    /// Acknowledged `SET`s.
    pub acknowledged: u64,
    /// Every key written, and what it may read back as.
    pub keys: HashMap<String, Expected>,
    pub resent: u64,
    /// When (`now_ns`) the server was seen to have closed or reset a
    /// persistent client's connection (end of file, ECONNRESET, EPIPE), one
    /// entry per connection: on a request (resent or not), or at the stop.
    pub closed: Vec<u64>,
    /// How the first of those were seen, each at its time in seconds on
    /// the run's clock (that of the processes.log files).
    pub closed_examples: Vec<String>,
    pub examples: Vec<String>,
}

pub struct Config {
    pub addr: SocketAddr,
    pub fresh: usize,
    pub persistent: usize,
    /// Total requests per second over all clients; None: flat out.
    pub rate: Option<f64>,
    /// Key prefix, unique per run segment.
    pub prefix: String,
}

pub struct LoadGenerator {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Results>>,
}

struct Client {
    addr: SocketAddr,
    prefix: String,
    period: Option<Duration>,
    stop: Arc<AtomicBool>,
    results: Results,
}

enum Failure {
    Io(std::io::Error),
    /// The server closed the connection before any byte of the answer.
    Closed,
}

fn classify(failure: &Failure) -> Outcome {
    match failure {
        Failure::Closed => Outcome::Reset,
        Failure::Io(e) => match e.kind() {
            ErrorKind::ConnectionRefused => Outcome::Refused,
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof => Outcome::Reset,
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Outcome::Timeout,
            _ => Outcome::Error,
        },
    }
}

fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Closed => "closed before the answer".into(),
        Failure::Io(e) => e.to_string(),
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(Failure::Io)?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(Failure::Io)?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(Failure::Io)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Send `request` and read one answer line, keeping what follows it.
fn exchange(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    request: &str,
) -> Result<String, Failure> {
    stream.write_all(request.as_bytes()).map_err(Failure::Io)?;
    read_line(stream, buffer)
}

fn read_line(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<String, Failure> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(Failure::Closed),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::Io(e)),
        }
    }
}

impl Client {
    fn record(
        &mut self,
        start: u64,
        fresh: bool,
        outcome: Outcome,
        detail: impl FnOnce() -> String,
    ) {
        self.results.samples.push(Sample {
            start,
            end: now_ns(),
            fresh,
            outcome,
        });
        if outcome != Outcome::Ok && self.results.examples.len() < 10 {
            let detail = detail();
            self.results
                .examples
                .push(format!("{}: {detail}", outcome.name()));
        }
    }

    /// The server closed or reset this persistent client's connection.
    fn closed(&mut self, how: impl FnOnce() -> String) {
        let at = now_ns();
        self.results.closed.push(at);
        if self.results.closed_examples.len() < 10 {
            let how = how();
            self.results.closed_examples.push(format!(
                "{:.6} s: {}: {how}",
                at as f64 / 1e9,
                self.prefix
            ));
        }
    }

    /// Whether `answer` is right for `request`; remembers acknowledged SETs.
    fn check(&mut self, key: &str, value: Option<&str>, answer: &str) -> Outcome {
        match value {
            Some(value) if answer.starts_with("OK ") => {
                self.results.acknowledged += 1;
                let expected = self.results.keys.entry(key.to_string()).or_default();
                expected.acknowledged = Some(value.to_string());
                expected.maybe.clear();
                Outcome::Ok
            }
            Some(_) => {
                self.unsure(key, value);
                Outcome::WrongAnswer
            }
            None => {
                let expected = self.results.keys.get(key);
                let acknowledged = expected.is_some_and(|e| e.acknowledged.is_some());
                match answer.strip_prefix("VALUE ") {
                    Some(got) if expected.is_some_and(|e| e.allows(got)) => Outcome::Ok,
                    None if answer == "NOTFOUND" && !acknowledged => Outcome::Ok,
                    _ => Outcome::WrongAnswer,
                }
            }
        }
    }

    /// A `SET` that failed may still have been applied.
    fn unsure(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            let expected = self.results.keys.entry(key.to_string()).or_default();
            expected.maybe.push(value.to_string());
        }
    }

    fn run(mut self, fresh: bool) -> Results {
        let mut next = Instant::now();
        let mut n: u64 = 0;
        let mut kept: Option<TcpStream> = None;
        let mut buffer = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(period) = self.period {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                next = next.max(now) + period;
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            n += 1;
            let key = format!("{}-{}", self.prefix, n.div_ceil(2) % KEYS);
            let value = format!("v{}", n.div_ceil(2));
            let (request, set) = if n % 2 == 1 {
                (format!("SET {key} {value}\n"), Some(value.as_str()))
            } else {
                (format!("GET {key}\n"), None)
            };
            let start = now_ns();
            if fresh {
                let answer = connect(self.addr).and_then(|mut stream| {
                    let mut buffer = Vec::new();
                    exchange(&mut stream, &mut buffer, &request)
                });
                match answer {
                    Ok(answer) => {
                        let outcome = self.check(&key, set, &answer);
                        self.record(start, true, outcome, || {
                            format!("{} -> {answer}", request.trim())
                        });
                    }
                    Err(failure) => {
                        self.unsure(&key, set);
                        let outcome = classify(&failure);
                        self.record(start, true, outcome, || {
                            format!("{}: {}", request.trim(), describe(&failure))
                        });
                    }
                }
                continue;
            }
            let mut outcome = None;
            for attempt in 0..2 {
                let reused = kept.is_some();
                let stream = match kept.take() {
                    Some(stream) => stream,
                    None => match connect(self.addr) {
                        Ok(stream) => {
                            buffer.clear();
                            stream
                        }
                        Err(failure) => {
                            outcome = Some(Err(failure));
                            break;
                        }
                    },
                };
                let mut stream = stream;
                match exchange(&mut stream, &mut buffer, &request) {
                    Ok(answer) => {
                        kept = Some(stream);
                        outcome = Some(Ok(answer));
                        break;
                    }
                    Err(failure) => {
                        if classify(&failure) == Outcome::Reset {
                            self.closed(|| {
                                format!(
                                    "{} on a {} connection: {}",
                                    request.trim(),
                                    if reused { "kept" } else { "new" },
                                    describe(&failure)
                                )
                            });
                        }
                        // A kept connection closed between requests:
                        // reconnect and resend once. Anything on a new
                        // connection is a failure.
                        if reused && attempt == 0 && classify(&failure) == Outcome::Reset {
                            self.results.resent += 1;
                            continue;
                        }
                        outcome = Some(Err(failure));
                        break;
                    }
                }
            }
            match outcome {
                Some(Ok(answer)) => {
                    let outcome = self.check(&key, set, &answer);
                    self.record(start, false, outcome, || {
                        format!("{} -> {answer}", request.trim())
                    });
                }
                Some(Err(failure)) => {
                    self.unsure(&key, set);
                    let outcome = classify(&failure);
                    self.record(start, false, outcome, || {
                        format!("{}: {}", request.trim(), describe(&failure))
                    });
                }
                None => {}
            }
        }
        if let Some(stream) = kept {
            // A close since the last answer has not been seen yet: look.
            if let Some(how) = closed_by_peer(&stream) {
                self.closed(|| format!("at the stop: {how}"));
            }
        }
        self.results
    }
}

/// Whether the server closed or reset `stream` (no request outstanding):
/// how, or None while it is open.
fn closed_by_peer(stream: &TcpStream) -> Option<String> {
    if let Err(e) = stream.set_nonblocking(true) {
        return Some(format!("cannot look: {e}"));
    }
    let mut byte = [0u8; 1];
    loop {
        return match stream.peek(&mut byte) {
            Ok(0) => Some("end of file".into()),
            // Bytes nobody asked for: open, but not quiet.
            Ok(_) => None,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            Err(e) => Some(e.to_string()),
        };
    }
}

impl LoadGenerator {
    pub fn start(config: &Config) -> LoadGenerator {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = config.fresh + config.persistent;
        let period = config
            .rate
            .map(|rate| Duration::from_secs_f64(clients as f64 / rate.max(1e-3)));
        let mut threads = Vec::new();
        for i in 0..clients {
            let fresh = i < config.fresh;
            let client = Client {
                addr: config.addr,
                prefix: format!("{}{}{}", config.prefix, if fresh { "f" } else { "k" }, i),
                period,
                stop: Arc::clone(&stop),
                results: Results::default(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("load-{i}"))
                    .spawn(move || client.run(fresh))
                    .expect("spawn a load thread"),
            );
        }
        LoadGenerator { stop, threads }
    }

    pub fn stop(self) -> Results {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Results::default();
        for thread in self.threads {
            let results = thread.join().expect("a load thread panicked");
            all.samples.extend(results.samples);
            all.acknowledged += results.acknowledged;
            all.keys.extend(results.keys);
            all.resent += results.resent;
            all.closed.extend(results.closed);
            for example in results.closed_examples {
                if all.closed_examples.len() < 10 {
                    all.closed_examples.push(example);
                }
            }
            for example in results.examples {
                if all.examples.len() < 10 {
                    all.examples.push(example);
                }
            }
        }
        all.samples.sort_by_key(|s| s.start);
        all.closed.sort_unstable();
        all
    }
}

/// Read every key with an acknowledged write back (pipelined, on one
/// connection): the keys that lost it (missing, or a value never written
/// after it).
pub fn verify(addr: SocketAddr, keys: &HashMap<String, Expected>) -> Result<Vec<String>, String> {
    let entries: Vec<(&String, &Expected)> = keys
        .iter()
        .filter(|(_, expected)| expected.acknowledged.is_some())
        .collect();
    let mut lost = Vec::new();
    let mut done = 0;
    let mut attempts = 0;
    while done < entries.len() {
        let batch = &entries[done..(done + 256).min(entries.len())];
        let outcome = (|| -> Result<Vec<String>, Failure> {
            let mut stream = connect(addr)?;
            let mut request = String::new();
            for (key, _) in batch {
                request.push_str("GET ");
                request.push_str(key);
                request.push('\n');
            }
            stream.write_all(request.as_bytes()).map_err(Failure::Io)?;
            let mut buffer = Vec::new();
            let mut answers = Vec::with_capacity(batch.len());
            for _ in batch {
                answers.push(read_line(&mut stream, &mut buffer)?);
            }
            Ok(answers)
        })();
        match outcome {
            Ok(answers) => {
                for ((key, expected), answer) in batch.iter().zip(answers) {
                    if !answer
                        .strip_prefix("VALUE ")
                        .is_some_and(|got| expected.allows(got))
                    {
                        lost.push((*key).clone());
                    }
                }
                done += batch.len();
            }
            Err(failure) => {
                attempts += 1;
                if attempts > 20 {
                    return Err(format!("verification failed: {}", describe(&failure)));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(lost)
}
