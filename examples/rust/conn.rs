//! One client connection: what it sent and what it is owed, read and
//! written without blocking.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::protocol::{LINE_TOO_LONG, MAX_LINE};

/// The input buffer: a whole line and its `\n`.
pub const IN_CAP: usize = MAX_LINE + 1;
/// Stop reading a connection while this much output waits for it.
const OUT_HIGH: usize = 64 * 1024;
/// How long a connection shut down for writing is read and discarded
/// before close, so that a late request does not turn into a reset.
const LINGER: Duration = Duration::from_millis(500);

pub struct Conn {
    pub stream: TcpStream,
    /// Received, not yet answered: at most a partial line between turns.
    input: Vec<u8>,
    output: Vec<u8>,
    /// How much of `output` is written.
    written: usize,
    /// Inside an overlong line: skip to its newline.
    pub discarding: bool,
    /// The peer closed its side.
    pub eof: bool,
    /// To be closed at the end of this iteration.
    pub dead: bool,
    /// Shut down for writing; reading and discarding until `linger_until`.
    pub lingering: bool,
    linger_until: Instant,
    /// Handed to the successor: neither read nor written until the outcome.
    pub moved: bool,
    /// Lines answered, and those since the drain began.
    served: u64,
    drain_answered: u64,
}

impl Conn {
    /// A connection, made non-blocking (its own open file description).
    pub fn new(stream: TcpStream) -> std::io::Result<Conn> {
        stream.set_nonblocking(true)?;
        Ok(Conn {
            stream,
            input: Vec::with_capacity(IN_CAP),
            output: Vec::new(),
            written: 0,
            discarding: false,
            eof: false,
            dead: false,
            lingering: false,
            linger_until: Instant::now(),
            moved: false,
            served: 0,
            drain_answered: 0,
        })
    }

    /// A connection that moved here, with its carried input and output.
    pub fn adopted(
        stream: TcpStream,
        unread: Vec<u8>,
        unwritten: Vec<u8>,
        discarding: bool,
    ) -> std::io::Result<Conn> {
        let mut conn = Conn::new(stream)?;
        conn.input = unread;
        conn.output = unwritten;
        conn.discarding = discarding;
        Ok(conn)
    }

    pub fn unread(&self) -> &[u8] {
        &self.input
    }

    pub fn unwritten(&self) -> &[u8] {
        &self.output[self.written..]
    }

    pub fn out_pending(&self) -> usize {
        self.output.len() - self.written
    }

    /// Whether poll should wake us for reading.
    pub fn wants_input(&self) -> bool {
        !self.eof && (self.lingering || self.out_pending() < OUT_HIGH)
    }

    /// When a lingering connection is to be closed.
    pub fn linger_deadline(&self) -> Option<Instant> {
        self.lingering.then_some(self.linger_until)
    }

    /// Answered the request in progress, idle between requests, closed by
    /// the peer: a v1 drain may close it now.
    pub fn drainable(&self) -> bool {
        self.drain_answered > 0
            || (self.served > 0 && self.input.is_empty() && !self.discarding)
            || self.eof
    }

    /// Answer every whole line received with `answer`'s line (the answer
    /// without its `\n`). `draining`: a drain is in progress.
    pub fn process_input(&mut self, draining: bool, answer: &mut dyn FnMut(&[u8]) -> Vec<u8>) {
        let mut start = 0;
        while let Some(at) = self.input[start..].iter().position(|&b| b == b'\n') {
            let line = &self.input[start..start + at];
            let reply = if self.discarding {
                self.discarding = false;
                LINE_TOO_LONG.as_bytes().to_vec()
            } else {
                answer(line)
            };
            self.served += 1;
            self.drain_answered += u64::from(draining);
            self.reply(&reply);
            start += at + 1;
        }
        self.input.drain(..start);
        if self.discarding {
            self.input.clear(); // still inside the overlong line
        } else if self.input.len() == IN_CAP {
            self.discarding = true; // a full buffer and no newline
            self.input.clear();
        }
    }

    fn reply(&mut self, line: &[u8]) {
        if self.written > 0 && self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        }
        self.output.extend_from_slice(line);
        self.output.push(b'\n');
    }

    /// Read what has arrived (a bounded number of rounds, for fairness) and
    /// answer its whole lines.
    pub fn read(&mut self, draining: bool, answer: &mut dyn FnMut(&[u8]) -> Vec<u8>) {
        let mut discard = [0u8; 4096];
        for _ in 0..16 {
            if self.dead || self.eof || (!self.lingering && self.out_pending() >= OUT_HIGH) {
                return;
            }
            let got = if self.lingering {
                self.stream.read(&mut discard)
            } else {
                let had = self.input.len();
                self.input.resize(IN_CAP, 0);
                let got = self.stream.read(&mut self.input[had..]);
                self.input.truncate(had + *got.as_ref().unwrap_or(&0));
                got
            };
            match got {
                Ok(0) => self.eof = true,
                Ok(_) if self.lingering => {}
                Ok(_) => self.process_input(draining, answer),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => self.dead = true,
            }
        }
    }

    /// Write what the socket takes.
    pub fn flush(&mut self) {
        while !self.dead && self.out_pending() > 0 {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => self.dead = true,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => self.dead = true,
            }
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        }
    }

    /// Close gracefully: FIN after the answers already sent, then read and
    /// discard for a while, so a request racing the close does not draw a
    /// reset that could destroy answers the client has not read yet.
    pub fn linger(&mut self) {
        if self.lingering || self.dead {
            return;
        }
        if self.stream.shutdown(std::net::Shutdown::Write).is_err() || self.eof {
            self.dead = true;
            return;
        }
        self.lingering = true;
        self.input.clear();
        self.linger_until = Instant::now() + LINGER;
    }
}
