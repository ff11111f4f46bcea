//! A client connection to a line service (the example services, peer-mover)
//! that a test keeps across handoffs: an EOF or a reset where an answer is
//! due fails the test, naming what it waited for.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct LineClient {
    /// The connection; `reader.get_ref()` for a shutdown or an option.
    pub reader: BufReader<TcpStream>,
}

impl LineClient {
    /// Connected, reads timing out after `timeout`.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> LineClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(timeout)).unwrap();
        LineClient {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, bytes: &str) {
        self.reader
            .get_ref()
            .write_all(bytes.as_bytes())
            .unwrap_or_else(|e| panic!("a kept connection failed sending {bytes:?}: {e}"));
    }

    /// The next answer line, or None at EOF; a reset fails the test.
    pub fn next_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line.trim_end().to_string()),
            Err(e) => panic!("a kept connection failed: {e}"),
        }
    }

    /// The next answer line; an EOF fails the test too.
    pub fn line(&mut self) -> String {
        self.next_line()
            .unwrap_or_else(|| panic!("a kept connection was closed (EOF)"))
    }

    /// `request`, and its answer.
    pub fn ask(&mut self, request: &str) -> String {
        self.send(&format!("{request}\n"));
        self.next_line()
            .unwrap_or_else(|| panic!("closed before answering {request:?}"))
    }

    /// PING: the pid that answered and its tag (empty when it gives none).
    pub fn ping(&mut self) -> (u32, String) {
        let answer = self.ask("PING");
        let mut words = answer.split(' ');
        assert_eq!(words.next(), Some("PONG"), "{answer:?}");
        let pid = words.next().and_then(|p| p.parse().ok()).expect("a pid");
        (pid, words.next().unwrap_or_default().to_string())
    }
}
