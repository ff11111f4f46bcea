//! The trigger socket (mode 0600, peer uid checked) and the optional
//! metrics endpoint. Each connection gets a short-lived thread and five
//! seconds to send its request, so a silent client blocks nobody.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::log::{log, Field};
use crate::run::Event;
use crate::state::Shared;
use crate::status::Snapshot;
use crate::trigger::{Reply, Request, StatusFormat, MAX_REQUEST};
use crate::worker::SocketProgress;

/// How long a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are answered "busy" and closed.
const MAX_CONNECTIONS: usize = 64;

#[derive(Clone)]
pub struct Context {
    pub shared: Shared,
    pub config: Arc<Config>,
    pub events: Sender<Event>,
    active: Arc<AtomicUsize>,
}

impl Context {
    pub fn new(shared: Shared, config: Arc<Config>, events: Sender<Event>) -> Context {
        Context {
            shared,
            config,
            events,
            active: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn snapshot(&self, format: StatusFormat) -> String {
        let state = self.shared.lock().clone();
        Snapshot::of(&state, &self.config).render(format)
    }

    /// Run `work` on a thread of its own, unless too many already run.
    fn spawn_connection(&self, work: impl FnOnce() + Send + 'static) -> bool {
        if self.active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        let active = Arc::clone(&self.active);
        let spawned = std::thread::Builder::new()
            .name("connection".into())
            .spawn(move || {
                work();
                active.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }
}

/// Accept trigger connections on a thread, for the life of the process.
pub fn serve_triggers(listener: UnixListener, context: Context) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("trigger-socket".into())
        .spawn(move || loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let ctx = context.clone();
                    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
                    let Ok(copy) = stream.try_clone() else {
                        continue;
                    };
                    if !context.spawn_connection(move || handle_trigger(copy, &ctx)) {
                        let _ = stream.write_all(Reply::Error("busy".into()).to_line().as_bytes());
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and the like: transient.
                    log!(Warn, &[], "trigger socket: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })?;
    Ok(())
}

fn handle_trigger(mut stream: UnixStream, ctx: &Context) {
    if let Err(e) = handoff::control::check_peer_uid(&stream) {
        log!(Warn, &[], "trigger socket: refused a connection: {e}");
        let _ = stream.write_all(Reply::Error(e.to_string()).to_line().as_bytes());
        return;
    }
    let line = match read_request(&mut stream, b"\n") {
        Ok(line) => line,
        Err(e) => {
            log!(Debug, &[], "trigger socket: no request: {e}");
            let reason = format!("no request: {e}");
            let _ = stream.write_all(Reply::Error(reason).to_line().as_bytes());
            return;
        }
    };
    match Request::parse(&line) {
        Err(e) => {
            let _ = stream.write_all(Reply::Error(e).to_line().as_bytes());
        }
        Ok(Request::Status(format)) => {
            let _ = stream.write_all(ctx.snapshot(format).as_bytes());
        }
        Ok(Request::Handoff { force, binary }) => {
            let _ = stream.set_read_timeout(None);
            let event = Event::Handoff {
                force,
                binary,
                source: "trigger",
                progress: Box::new(SocketProgress::new(stream)),
            };
            // The main loop answers; if it is gone the process is exiting.
            let _ = ctx.events.send(event);
        }
    }
}

/// Read until `end` (excluded) within REQUEST_TIMEOUT and MAX_REQUEST bytes.
fn read_request(stream: &mut impl ReadTimeout, end: &[u8]) -> std::io::Result<String> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_timeout(left)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Err(ErrorKind::TimedOut.into()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        request.extend_from_slice(&chunk[..n]);
        if let Some(at) = request.windows(end.len()).position(|w| w == end) {
            request.truncate(at);
            return String::from_utf8(request).map_err(|_| ErrorKind::InvalidData.into());
        }
        if request.len() > MAX_REQUEST {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                "request too long",
            ));
        }
    }
}

trait ReadTimeout: Read {
    fn set_timeout(&self, timeout: Duration) -> std::io::Result<()>;
}

impl ReadTimeout for UnixStream {
    fn set_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

impl ReadTimeout for std::net::TcpStream {
    fn set_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

/// `GET /metrics` over HTTP/1.x, for Prometheus to scrape.
pub fn serve_metrics(listener: TcpListener, context: Context) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    let ctx = context.clone();
                    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
                    context.spawn_connection(move || handle_metrics(stream, &ctx));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log!(Warn, &[], "metrics endpoint: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })?;
    Ok(())
}

fn handle_metrics(mut stream: std::net::TcpStream, ctx: &Context) {
    let Ok(request) = read_request(&mut stream, b"\r\n\r\n") else {
        return;
    };
    let mut words = request.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            ctx.snapshot(StatusFormat::Prometheus),
        ),
        ("GET", "/status") => (
            "200 OK",
            "application/json",
            ctx.snapshot(StatusFormat::Json),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    log!(
        Debug,
        &[("path", Field::Str(path))],
        "metrics endpoint: {method} {path}: {status}"
    );
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}
