//! The trigger socket (mode 0600, peer uid checked) and the optional
//! metrics endpoint. Each connection gets a short-lived thread and five
//! seconds to send its request, so a silent client blocks nobody; how many
//! are served at once, and which idle one gives way, is `connections`.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::connections::{Admission, Connections, Ticket};
use crate::events::{Event, Progress, SocketProgress};
use crate::log::{log, Field};
use crate::state::Shared;
use crate::status::Snapshot;
use crate::status::StatusFormat;
use crate::trigger::{Reply, Request, MAX_REQUEST};

/// How long a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Context {
    pub shared: Shared,
    pub config: Arc<Config>,
    pub events: Sender<Event>,
    connections: Connections,
}

impl Context {
    pub fn new(shared: Shared, config: Arc<Config>, events: Sender<Event>) -> Context {
        let connections = Connections::new(handoff::sys::free_descriptors());
        log!(
            Debug,
            &[],
            "serving at most {} trigger and metrics connections at once",
            connections.max()
        );
        Context {
            shared,
            config,
            events,
            connections,
        }
    }

    fn snapshot(&self, format: StatusFormat) -> String {
        let state = self.shared.lock().clone();
        Snapshot::of(&state, &self.config).render(format)
    }

    /// Serve `stream` with `work` on a thread of its own, if there is room;
    /// the stream comes back when there is not.
    fn spawn_connection<S: AsRawFd + Send + 'static>(
        &self,
        what: &str,
        stream: S,
        work: impl FnOnce(S, Ticket) + Send + 'static,
    ) -> Option<S> {
        let ticket = match self.connections.admit(stream.as_raw_fd()) {
            Admission::Busy => return Some(stream),
            Admission::Admitted(ticket) => ticket,
            Admission::AdmittedByEviction(ticket) => {
                log!(
                    Warn,
                    &[],
                    "{what}: {} connections at once (the most the descriptor limit allows): \
                     closed the oldest idle connection for a new one",
                    self.connections.max()
                );
                ticket
            }
        };
        // The thread owns both; a thread that cannot start drops them, the
        // ticket first (a tuple drops in order), so the descriptor is never
        // listed once closed.
        let connection = (ticket, stream);
        let spawned = std::thread::Builder::new()
            .name("connection".into())
            .spawn(move || {
                let (ticket, stream) = connection;
                work(stream, ticket)
            });
        if let Err(e) = spawned {
            log!(Warn, &[], "{what}: cannot start a connection thread: {e}");
        }
        None
    }
}

/// A descriptor held in reserve: when accept finds the table full, it is
/// given up so that the connection can still be accepted and answered.
struct Spare(Option<File>);

impl Spare {
    fn new() -> Spare {
        Spare(File::open("/dev/null").ok())
    }

    /// Out of descriptors: free the spare, if we still have it.
    fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = File::open("/dev/null").ok();
        }
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Accept connections on a thread, for the life of the process.
fn serve<S: Stream + AsRawFd + Write + Send + 'static>(
    what: &'static str,
    mut accept: impl FnMut() -> std::io::Result<S> + Send + 'static,
    context: Context,
    handle: fn(S, Ticket, &Context),
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(what.into())
        .spawn(move || {
            let mut spare = Spare::new();
            loop {
                spare.restore();
                match accept() {
                    Ok(stream) => {
                        let _ = stream.set_send_timeout(REQUEST_TIMEOUT);
                        let ctx = context.clone();
                        let work = move |stream, ticket| handle(stream, ticket, &ctx);
                        if let Some(mut stream) = context.spawn_connection(what, stream, work) {
                            log!(Warn, &[], "{what}: every connection serves a request: busy");
                            let _ =
                                stream.write_all(Reply::Error("busy".into()).to_line().as_bytes());
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if out_of_descriptors(&e) && spare.release() => {
                        // The next accept gets the spare's slot.
                        log!(
                            Warn,
                            &[],
                            "{what}: out of descriptors ({e}): using the spare one for the next \
                         connection"
                        );
                    }
                    Err(e) => {
                        log!(Warn, &[], "{what}: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(())
}

/// Accept trigger connections on a thread, for the life of the process.
pub fn serve_triggers(listener: UnixListener, context: Context) -> std::io::Result<()> {
    serve(
        "trigger socket",
        move || listener.accept().map(|(stream, _)| stream),
        context,
        handle_trigger,
    )
}

/// Every path calls `ticket.done_waiting()` before the stream can close:
/// an idle connection's descriptor must stay valid while it is listed.
fn handle_trigger(mut stream: UnixStream, ticket: Ticket, ctx: &Context) {
    if let Err(e) = handoff::control::check_peer_uid(&stream) {
        ticket.done_waiting();
        log!(Warn, &[], "trigger socket: refused a connection: {e}");
        let _ = stream.write_all(Reply::Error(e.to_string()).to_line().as_bytes());
        return;
    }
    let request = read_request(&mut stream, b"\n");
    if ticket.done_waiting() {
        let reason = "closed: too many idle connections; send the request at once";
        let _ = stream.write_all(Reply::Error(reason.into()).to_line().as_bytes());
        return;
    }
    let line = match request {
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
        Ok(Request::Handoff {
            force,
            prepared,
            binary,
        }) => to_main_loop(ctx, stream, |progress| Event::Handoff {
            force,
            prepared,
            binary,
            source: "trigger",
            progress,
        }),
        Ok(Request::Prepare { force, binary }) => {
            to_main_loop(ctx, stream, |progress| Event::Prepare {
                force,
                binary,
                progress,
            })
        }
        Ok(Request::Discard) => to_main_loop(ctx, stream, |progress| Event::Discard { progress }),
    }
}

/// Pass a request the main loop answers on, with `stream` to answer on.
fn to_main_loop(ctx: &Context, stream: UnixStream, event: impl FnOnce(Box<dyn Progress>) -> Event) {
    // A handoff's answer may be a long time coming.
    let _ = stream.set_read_timeout(None);
    // If the main loop is gone the process is exiting.
    let _ = ctx
        .events
        .send(event(Box::new(SocketProgress::new(stream))));
}

/// Read until `end` (excluded) within REQUEST_TIMEOUT and MAX_REQUEST bytes.
fn read_request(stream: &mut impl Stream, end: &[u8]) -> std::io::Result<String> {
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

/// The two kinds of connection, as `serve` and `read_request` use them.
trait Stream: Read {
    fn set_timeout(&self, timeout: Duration) -> std::io::Result<()>;
    fn set_send_timeout(&self, timeout: Duration) -> std::io::Result<()>;
}

impl Stream for UnixStream {
    fn set_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }

    fn set_send_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_write_timeout(Some(timeout))
    }
}

impl Stream for std::net::TcpStream {
    fn set_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }

    fn set_send_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_write_timeout(Some(timeout))
    }
}

/// `GET /metrics` over HTTP/1.x, for Prometheus to scrape. By hand, not an
/// HTTP crate: one GET line per connection, answered and closed, on
/// connections `serve` already bounds and times out.
pub fn serve_metrics(listener: TcpListener, context: Context) -> std::io::Result<()> {
    serve(
        "metrics endpoint",
        move || listener.accept().map(|(stream, _)| stream),
        context,
        handle_metrics,
    )
}

fn handle_metrics(mut stream: std::net::TcpStream, ticket: Ticket, ctx: &Context) {
    let request = read_request(&mut stream, b"\r\n\r\n");
    if ticket.done_waiting() {
        return;
    }
    let Ok(request) = request else {
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
