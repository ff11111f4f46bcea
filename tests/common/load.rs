//! A closed-loop client load for the key-value example services
//! (examples/README.md), in the spirit of examples/demo/loadgen.py, for the
//! crash matrix and the load tests.
//!
//! Workers of two kinds run until stopped:
//!
//! - fresh: a new TCP connection per request;
//! - persistent: one connection kept open; when the server closes it between
//!   requests (a drain does) before any byte of the answer, the worker
//!   reconnects and resends the request once (the contract's client
//!   expectations), which is counted as `resent`, not as a failure.
//!
//! Each worker sends `SET key value` then `GET key` (once or more) on keys of
//! its own.
//! Every acknowledged SET is remembered; a SET that got no answer may or may
//! not have been applied and is remembered as possible until a later one is
//! acknowledged. A GET that answers something else than the acknowledged
//! value (or a possible later one) is a `wrong-answer`: a lost write.
//! [`verify`] reads every acknowledged write back at the end.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a key must read back as.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The last acknowledged value.
    pub acked: Option<String>,
    /// Values sent after it whose SET got no answer: any of them may be
    /// the one on disk.
    pub possible: Vec<String>,
}

impl Expect {
    fn allows(&self, value: Option<&str>) -> bool {
        match value {
            Some(v) => self.acked.as_deref() == Some(v) || self.possible.iter().any(|p| p == v),
            // NOTFOUND only if nothing was ever acknowledged.
            None => self.acked.is_none(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Tally {
    /// Requests answered correctly.
    pub ok: u64,
    /// Of which acknowledged SETs.
    pub writes: u64,
    /// Kept connections closed by the server between requests, resent.
    pub resent: u64,
    /// Failed requests by kind: refused, reset, timeout, error, wrong-answer.
    pub failures: BTreeMap<&'static str, u64>,
    /// The first few failures, for the report.
    pub examples: Vec<String>,
    /// The slowest answered request.
    pub max_latency: Duration,
    /// Per key: what it must read back as.
    pub keys: HashMap<String, Expect>,
}

impl Tally {
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn lost(&self) -> u64 {
        self.failures.get("wrong-answer").copied().unwrap_or(0)
    }

    fn fail(&mut self, kind: &'static str, detail: String) {
        *self.failures.entry(kind).or_default() += 1;
        if self.examples.len() < 8 {
            self.examples.push(format!("{kind}: {detail}"));
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.writes += other.writes;
        self.resent += other.resent;
        for (kind, n) in other.failures {
            *self.failures.entry(kind).or_default() += n;
        }
        for example in other.examples {
            if self.examples.len() < 8 {
                self.examples.push(example);
            }
        }
        self.max_latency = self.max_latency.max(other.max_latency);
        self.keys.extend(other.keys);
    }

    /// `ok 1234 (writes 600), resent 3, failed 0`, and failures by kind.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "requests ok {} (writes {}), resent {}, failed {}",
            self.ok,
            self.writes,
            self.resent,
            self.failed()
        );
        if !self.failures.is_empty() {
            let kinds: Vec<String> = self
                .failures
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            text.push_str(&format!(" ({})", kinds.join(", ")));
        }
        text
    }
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub fresh: usize,
    pub persistent: usize,
    /// Each worker waits this long after each SET and its GETs.
    pub pace: Duration,
    /// GETs of the key after each SET (reads do not grow the log).
    pub reads_per_write: u32,
    /// Keys per worker, reused round-robin (bounds memory and the number
    /// of keys to verify); None: a new key per write.
    pub key_space: Option<u64>,
    /// Connect and answer timeout: a request still queued while no process
    /// serves (a crash, before the cold restart) waits this long.
    pub timeout: Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            fresh: 2,
            persistent: 2,
            pace: Duration::from_millis(2),
            reads_per_write: 1,
            key_space: None,
            timeout: Duration::from_secs(10),
        }
    }
}

struct Shared {
    stop: AtomicBool,
    pause: AtomicBool,
    paused: AtomicUsize,
    /// Requests answered so far, all workers.
    answered: AtomicUsize,
}

pub struct Load {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<Tally>>,
}

impl Load {
    pub fn start(addr: SocketAddr, config: LoadConfig) -> Load {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            pause: AtomicBool::new(false),
            paused: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
        });
        let mut workers = Vec::new();
        for (kind, count) in [("fresh", config.fresh), ("kept", config.persistent)] {
            for index in 0..count {
                let shared = Arc::clone(&shared);
                let config = config.clone();
                let worker = Worker {
                    addr,
                    prefix: format!("{kind}{index}-"),
                    persistent: kind == "kept",
                    config,
                    shared,
                    conn: None,
                    tally: Tally::default(),
                };
                workers.push(std::thread::spawn(move || worker.run()));
            }
        }
        Load { shared, workers }
    }

    pub fn answered(&self) -> usize {
        self.shared.answered.load(Ordering::Relaxed)
    }

    /// Wait until `n` more requests were answered (or `timeout`).
    pub fn wait_answers(&self, n: usize, timeout: Duration) -> bool {
        let target = self.answered() + n;
        let deadline = Instant::now() + timeout;
        while self.answered() < target {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Stop issuing requests and close every kept connection; returns
    /// once every worker is idle (false after `timeout`).
    pub fn pause(&self, timeout: Duration) -> bool {
        self.shared.pause.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        while self.shared.paused.load(Ordering::SeqCst) < self.workers.len() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    pub fn resume(&self) {
        self.shared.pause.store(false, Ordering::SeqCst);
        while self.shared.paused.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn stop(self) -> Tally {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.pause.store(false, Ordering::SeqCst);
        let mut total = Tally::default();
        for worker in self.workers {
            total.merge(worker.join().expect("load worker panicked"));
        }
        total
    }
}

enum Failure {
    /// The server closed a connection that had served before, with no
    /// byte of the answer sent: resend on a new one.
    ClosedBetween,
    Io(&'static str, String),
}

fn classify(e: &std::io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::ConnectionRefused => "refused",
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof => "reset",
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "timeout",
        _ => "error",
    }
}

struct Conn {
    reader: BufReader<TcpStream>,
    /// It has answered a request already.
    served: bool,
}

struct Worker {
    addr: SocketAddr,
    prefix: String,
    persistent: bool,
    config: LoadConfig,
    shared: Arc<Shared>,
    conn: Option<Conn>,
    tally: Tally,
}

impl Worker {
    fn run(mut self) -> Tally {
        let mut n: u64 = 0;
        while !self.shared.stop.load(Ordering::SeqCst) {
            if self.shared.pause.load(Ordering::SeqCst) {
                self.conn = None;
                self.shared.paused.fetch_add(1, Ordering::SeqCst);
                while self.shared.pause.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                self.shared.paused.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            n += 1;
            let slot = self.config.key_space.map_or(n, |space| n % space);
            let key = format!("{}{slot}", self.prefix);
            let value = format!("v{n}");
            self.set(&key, &value);
            for _ in 0..self.config.reads_per_write {
                self.get(&key);
            }
            if !self.config.pace.is_zero() {
                std::thread::sleep(self.config.pace);
            }
        }
        self.tally
    }

    fn set(&mut self, key: &str, value: &str) {
        match self.request(&format!("SET {key} {value}")) {
            Some(answer) if answer.starts_with("OK ") => {
                self.tally.ok += 1;
                self.tally.writes += 1;
                let expect = self.tally.keys.entry(key.to_string()).or_default();
                expect.acked = Some(value.to_string());
                expect.possible.clear();
            }
            Some(answer) => {
                self.tally
                    .fail("wrong-answer", format!("SET {key} {value} -> {answer}"));
                self.maybe(key, value);
            }
            None => self.maybe(key, value),
        }
    }

    fn maybe(&mut self, key: &str, value: &str) {
        self.tally
            .keys
            .entry(key.to_string())
            .or_default()
            .possible
            .push(value.to_string());
    }

    fn get(&mut self, key: &str) {
        let Some(answer) = self.request(&format!("GET {key}")) else {
            return;
        };
        let got = if answer == "NOTFOUND" {
            None
        } else if let Some(value) = answer.strip_prefix("VALUE ") {
            Some(value)
        } else {
            self.tally
                .fail("wrong-answer", format!("GET {key} -> {answer}"));
            return;
        };
        let expect = self.tally.keys.get(key).cloned().unwrap_or_default();
        if expect.allows(got) {
            self.tally.ok += 1;
        } else {
            self.tally.fail(
                "wrong-answer",
                format!("GET {key} -> {answer}, acknowledged {:?}", expect.acked),
            );
        }
    }

    /// One request; the answer, or None after recording the failure.
    fn request(&mut self, line: &str) -> Option<String> {
        let started = Instant::now();
        let mut resent = false;
        loop {
            match self.exchange(line) {
                Ok(answer) => {
                    self.tally.max_latency = self.tally.max_latency.max(started.elapsed());
                    self.shared.answered.fetch_add(1, Ordering::Relaxed);
                    return Some(answer);
                }
                Err(Failure::ClosedBetween) if !resent => {
                    resent = true;
                    self.tally.resent += 1;
                }
                Err(Failure::ClosedBetween) => {
                    self.tally
                        .fail("reset", format!("{line}: closed again before an answer"));
                    return None;
                }
                Err(Failure::Io(kind, detail)) => {
                    self.tally.fail(kind, format!("{line}: {detail}"));
                    return None;
                }
            }
        }
    }

    fn exchange(&mut self, line: &str) -> Result<String, Failure> {
        let io = |e: std::io::Error| Failure::Io(classify(&e), e.to_string());
        if self.conn.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, self.config.timeout).map_err(io)?;
            stream
                .set_read_timeout(Some(self.config.timeout))
                .map_err(io)?;
            stream
                .set_write_timeout(Some(self.config.timeout))
                .map_err(io)?;
            let _ = stream.set_nodelay(true);
            self.conn = Some(Conn {
                reader: BufReader::new(stream),
                served: false,
            });
        }
        let conn = self.conn.as_mut().expect("connected above");
        let served = conn.served;
        let result = (|| {
            conn.reader
                .get_mut()
                .write_all(format!("{line}\n").as_bytes())?;
            let mut answer = String::new();
            conn.reader.read_line(&mut answer)?;
            Ok::<String, std::io::Error>(answer)
        })();
        let answer = match result {
            Ok(answer) => answer,
            Err(e) => {
                self.conn = None;
                let kind = classify(&e);
                return Err(if served && kind == "reset" {
                    Failure::ClosedBetween
                } else {
                    Failure::Io(kind, e.to_string())
                });
            }
        };
        let Some(answer) = answer.strip_suffix('\n') else {
            self.conn = None;
            // EOF: with nothing read on a connection that had served, the
            // server closed it between requests.
            return Err(if served && answer.is_empty() {
                Failure::ClosedBetween
            } else {
                Failure::Io(
                    "reset",
                    format!("closed without a whole answer (got {answer:?})"),
                )
            });
        };
        let answer = answer.trim_end_matches('\r').to_string();
        if self.persistent {
            if let Some(conn) = self.conn.as_mut() {
                conn.served = true;
            }
        } else {
            self.conn = None;
        }
        Ok(answer)
    }
}

/// Read every key back (pipelined on one connection): the keys whose value
/// is not one the load allows (lost writes), with what they read as.
pub fn verify(addr: SocketAddr, keys: &HashMap<String, Expect>) -> std::io::Result<Vec<String>> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut lost = Vec::new();
    let all: Vec<(&String, &Expect)> = keys.iter().collect();
    for batch in all.chunks(256) {
        let mut requests = String::new();
        for (key, _) in batch {
            requests.push_str(&format!("GET {key}\n"));
        }
        writer.write_all(requests.as_bytes())?;
        for (key, expect) in batch {
            let mut answer = String::new();
            if reader.read_line(&mut answer)? == 0 {
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the server closed the verifying connection",
                ));
            }
            let answer = answer.trim_end();
            let got = if answer == "NOTFOUND" {
                None
            } else {
                answer.strip_prefix("VALUE ")
            };
            if (got.is_none() && answer != "NOTFOUND") || !expect.allows(got) {
                lost.push(format!(
                    "{key}: read {answer:?}, acknowledged {:?}",
                    expect.acked
                ));
            }
        }
    }
    Ok(lost)
}
