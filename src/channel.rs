//! A control connection: whole frames out with one `send(2)` and
//! `MSG_NOSIGNAL`, whole frames in through a [`FrameReader`] that keeps a
//! partial frame across timeouts. Waits use poll(2) so a stop request can
//! interrupt them. Reads are `recvmsg`, so a descriptor that comes with
//! the bytes (v2 Item frames) is never dropped unseen.
#![allow(unsafe_code)]

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::fdpass::{recv_with_descriptors, send_with_descriptors, Received};
use crate::frame::{encode_frame, FrameReader};
use crate::poll::{wait_fd, Wait};
use crate::protocol::{Message, MessageKind, MAX_ITEMS_PER_BATCH, PROTO_MIN, PROTO_MOVES};

/// Bytes per `recvmsg`: a whole batch of Items (253 small frames) in one.
const READ_CHUNK: usize = 16 * 1024;

/// How long a blocked send may wait for the peer to make room.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The sending half, shareable with a heartbeat thread: the mutex keeps
/// frames from two threads from interleaving.
#[derive(Clone)]
pub struct Sender {
    stream: Arc<UnixStream>,
    version: Arc<Mutex<u16>>,
    lock: Arc<Mutex<()>>,
}

impl Sender {
    pub fn send(&self, message: &Message) -> Result<()> {
        self.send_together(std::slice::from_ref(message))
    }

    /// Several frames in one write: the peer gets all of them or, if this
    /// process dies first, none (never the first without the rest).
    pub fn send_together(&self, messages: &[Message]) -> Result<()> {
        let version = *self.version.lock().unwrap_or_else(|p| p.into_inner());
        let mut bytes = Vec::new();
        for message in messages {
            bytes.extend(encode_frame(version, message)?);
        }
        let _one_writer = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        send_all(&self.stream, &bytes)
    }
}

impl Sender {
    /// Item frames, each with its descriptor, a batch of at most
    /// [`MAX_ITEMS_PER_BATCH`] per `sendmsg` (docs/protocol.md). The
    /// descriptors are numbers the caller keeps open for the call (a closed
    /// one fails the send with EBADF).
    pub fn send_items<M: Borrow<Message>>(&self, items: &[(M, RawFd)]) -> Result<()> {
        let version = *self.version.lock().unwrap_or_else(|p| p.into_inner());
        for batch in items.chunks(MAX_ITEMS_PER_BATCH) {
            let mut bytes = Vec::new();
            let mut fds = Vec::with_capacity(batch.len());
            for (message, fd) in batch {
                let message = message.borrow();
                if message.kind() != MessageKind::Item {
                    return Err(Error::Encode(format!(
                        "{} carries no descriptor",
                        message.kind().name()
                    )));
                }
                bytes.extend(encode_frame(version, message)?);
                fds.push(*fd);
            }
            let _one_writer = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            send_all_with(&self.stream, &bytes, &fds)?;
        }
        Ok(())
    }
}

fn send_all(stream: &UnixStream, bytes: &[u8]) -> Result<()> {
    send_all_with(stream, bytes, &[])
}

/// Send every byte with MSG_NOSIGNAL, so a vanished peer is EPIPE, never a
/// SIGPIPE; `fds` go with the first bytes that leave. Waits for room at
/// most [`SEND_TIMEOUT`].
fn send_all_with(stream: &UnixStream, mut bytes: &[u8], mut fds: &[RawFd]) -> Result<()> {
    let deadline = Instant::now() + SEND_TIMEOUT;
    while !bytes.is_empty() {
        match send_with_descriptors(stream.as_raw_fd(), bytes, fds) {
            Ok(sent) => {
                bytes = &bytes[sent..];
                fds = &[];
            }
            Err(err) => match err.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    if wait_fd(stream.as_raw_fd(), libc::POLLOUT, None, Some(deadline))
                        .map_err(Error::Stream)?
                        != Wait::Ready
                    {
                        return Err(Error::Timeout);
                    }
                }
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                    return Err(Error::PeerClosed { mid_frame: false })
                }
                _ => return Err(Error::Stream(err)),
            },
        }
    }
    Ok(())
}

/// What [`Channel::fill`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    Nothing,
    Some,
}

/// A descriptor received, with where in the stream the read that brought
/// it began and ended (the batch it belongs to starts in that range).
#[derive(Debug)]
struct Arrived {
    fd: OwnedFd,
    read_start: u64,
    read_end: u64,
}

/// A message and, for an Item, the descriptor that came with it.
#[derive(Debug)]
pub struct Incoming {
    pub message: Message,
    pub descriptor: Option<OwnedFd>,
}

/// One end of a control connection.
pub struct Channel {
    stream: Arc<UnixStream>,
    reader: FrameReader,
    sender: Sender,
    /// The attested writer of the buffered bytes' start, kept across
    /// `recv_attested` calls that time out mid-frame.
    attested: Option<u32>,
    /// Descriptors received and not yet taken by their Item frames.
    descriptors: VecDeque<Arrived>,
    /// Bytes read from the stream so far (the offset of the next read).
    read_total: u64,
}

impl Channel {
    pub fn new(stream: UnixStream) -> Result<Channel> {
        stream.set_nonblocking(true).map_err(Error::Stream)?;
        let stream = Arc::new(stream);
        Ok(Channel {
            sender: Sender {
                stream: Arc::clone(&stream),
                // Until negotiation: v1, unless the owner stamps its Hello
                // with a higher version it offers.
                version: Arc::new(Mutex::new(PROTO_MIN)),
                lock: Arc::new(Mutex::new(())),
            },
            stream,
            reader: FrameReader::new(),
            attested: None,
            descriptors: VecDeque::new(),
            read_total: 0,
        })
    }

    /// The version frames are sent with (the negotiated one, once set).
    pub fn version(&self) -> u16 {
        *self
            .sender
            .version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The stream itself, unless a [`Sender`] given out still holds it.
    pub fn into_stream(self) -> Option<UnixStream> {
        drop(self.sender);
        Arc::try_unwrap(self.stream).ok()
    }

    /// Frames sent from now on carry `version` (after negotiation).
    pub fn set_version(&self, version: u16) {
        *self
            .sender
            .version
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = version;
    }

    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    pub fn send(&self, message: &Message) -> Result<()> {
        self.sender.send(message)
    }

    pub fn send_together(&self, messages: &[Message]) -> Result<()> {
        self.sender.send_together(messages)
    }

    /// The next message, waiting until `deadline`. [`Error::Timeout`] when
    /// nothing whole arrived in time (a partial frame stays buffered).
    pub fn recv_until(&mut self, deadline: Instant) -> Result<Message> {
        loop {
            if let Some(message) = self.next_message()? {
                return Ok(message);
            }
            if self.fill()? == Filled::Nothing
                && wait_fd(self.stream.as_raw_fd(), libc::POLLIN, None, Some(deadline))
                    .map_err(Error::Stream)?
                    == Wait::TimedOut
            {
                return Err(Error::Timeout);
            }
        }
    }

    /// A whole message already buffered, if any (no I/O). A descriptor has
    /// no place here: an Item is taken with [`Channel::next_incoming`].
    pub fn next_message(&mut self) -> Result<Option<Message>> {
        match self.next_incoming()? {
            Some(Incoming {
                message,
                descriptor: None,
            }) => Ok(Some(message)),
            Some(Incoming { message, .. }) => Err(Error::Protocol(format!(
                "{} came with a descriptor where none belongs",
                message.kind().name()
            ))),
            None => Ok(None),
        }
    }

    /// A whole message already buffered and, for an Item, its descriptor
    /// (docs/protocol.md: each Item takes the next descriptor received; a
    /// missing one, or one left over past its batch, is an error).
    pub fn next_incoming(&mut self) -> Result<Option<Incoming>> {
        let start = self.read_total - self.reader.buffered() as u64;
        let Some(frame) = self.reader.next_frame()? else {
            return Ok(None);
        };
        if frame.message.kind() == MessageKind::Item {
            return match self.descriptors.front() {
                Some(front) if front.read_start <= start => {
                    let fd = self.descriptors.pop_front().map(|a| a.fd);
                    Ok(Some(Incoming {
                        message: frame.message,
                        descriptor: fd,
                    }))
                }
                _ => Err(Error::Protocol(
                    "an Item frame came without its descriptor".into(),
                )),
            };
        }
        if self
            .descriptors
            .front()
            .is_some_and(|a| a.read_end <= start)
        {
            let stray = self.descriptors.len();
            self.descriptors.clear();
            return Err(Error::Protocol(format!(
                "{stray} descriptor(s) received with no Item frame to take them (before {})",
                frame.message.kind().name()
            )));
        }
        Ok(Some(Incoming {
            message: frame.message,
            descriptor: None,
        }))
    }

    /// One `recvmsg`: bytes into the frame reader, descriptors into the
    /// queue (refused on a connection that did not negotiate v2, or when
    /// the kernel had to drop some).
    fn read_some(&mut self, chunk: &mut [u8]) -> Result<Received> {
        let mut fds = VecDeque::new();
        let received = recv_with_descriptors(self.stream.as_raw_fd(), chunk, &mut fds)
            .map_err(Error::Stream)?;
        let read_start = self.read_total;
        self.read_total += received.len as u64;
        self.reader.feed(&chunk[..received.len]);
        if received.truncated {
            return Err(Error::Protocol(
                "descriptors lost on the way (MSG_CTRUNC): the stream cannot be trusted".into(),
            ));
        }
        if !fds.is_empty() && self.version() < PROTO_MOVES {
            return Err(Error::Protocol(format!(
                "{} descriptor(s) on a protocol v{} connection",
                fds.len(),
                self.version()
            )));
        }
        let read_end = self.read_total;
        self.descriptors.extend(fds.into_iter().map(|fd| Arrived {
            fd,
            read_start,
            read_end,
        }));
        Ok(received)
    }

    /// Read what the socket holds without waiting. [`Error::PeerClosed`]
    /// at the end of the stream.
    pub fn fill(&mut self) -> Result<Filled> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut filled = Filled::Nothing;
        loop {
            match self.read_some(&mut chunk).map(|r| r.len) {
                Ok(0) => {
                    // Frames that came before the end are still delivered.
                    if filled == Filled::Some {
                        return Ok(filled);
                    }
                    return Err(Error::PeerClosed {
                        mid_frame: self.reader.buffered() > 0,
                    });
                }
                Ok(n) => {
                    filled = Filled::Some;
                    if n < chunk.len() {
                        return Ok(filled);
                    }
                }
                Err(Error::Stream(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(Error::Stream(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(filled)
                }
                Err(Error::Stream(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Error::PeerClosed { mid_frame: false })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Like `recv_until`, and also the pid the kernel attests for the
    /// process that sent the message's first bytes (SO_PASSCRED must have
    /// been set on this socket before the peer wrote).
    pub fn recv_attested(&mut self, deadline: Instant) -> Result<(Message, Option<u32>)> {
        while self.reader.buffered() == 0 {
            let mut chunk = [0u8; READ_CHUNK];
            match self.read_some(&mut chunk) {
                Ok(Received { len: 0, .. }) => return Err(Error::PeerClosed { mid_frame: false }),
                Ok(Received { pid, .. }) => self.attested = pid,
                Err(Error::Stream(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                // A peer that died with our frames unread resets the
                // connection: it closed, as far as we are concerned.
                Err(Error::Stream(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Error::PeerClosed { mid_frame: false })
                }
                Err(Error::Stream(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    match wait_fd(self.stream.as_raw_fd(), libc::POLLIN, None, Some(deadline))
                        .map_err(Error::Stream)?
                    {
                        Wait::Ready => {}
                        _ => return Err(Error::Timeout),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let message = self.recv_until(deadline)?;
        Ok((message, self.attested.take()))
    }
}

/// Turn on SO_PASSCRED, so every read can tell who wrote the bytes.
pub fn enable_passcred(stream: &UnixStream) -> Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int for the size passed.
    let ret = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(Error::Stream(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{HandoffId, ItemKind};

    fn item(seq: u32) -> Message {
        Message::Item {
            seq,
            kind: ItemKind::Connection,
            name: "kv".into(),
            unread: format!("GET k{seq}").into_bytes(),
            unwritten: Vec::new(),
            state: seq.to_le_bytes().to_vec(),
        }
    }

    fn v2_pair() -> (Channel, Channel) {
        let (a, b) = UnixStream::pair().unwrap();
        let (a, b) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
        a.set_version(PROTO_MOVES);
        b.set_version(PROTO_MOVES);
        (a, b)
    }

    fn inode(fd: &impl AsRawFd) -> u64 {
        // SAFETY: a zeroed stat is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a live descriptor and a valid out-parameter.
        assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
        st.st_ino
    }

    fn recv(channel: &mut Channel) -> Result<Incoming> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(incoming) = channel.next_incoming()? {
                return Ok(incoming);
            }
            if channel.fill()? == Filled::Nothing {
                wait_fd(
                    channel.stream().as_raw_fd(),
                    libc::POLLIN,
                    None,
                    Some(deadline),
                )
                .map_err(Error::Stream)?;
            }
        }
    }

    /// More items than one batch holds, heartbeats between the batches, the
    /// reader taking them while the writer still sends: every Item comes
    /// with its own descriptor, in order.
    #[test]
    fn items_keep_their_descriptors_across_batches() {
        const ITEMS: u32 = 600;
        let (sender, mut receiver) = v2_pair();
        let files: Vec<_> = (0..ITEMS).map(|_| tempfile::tempfile().unwrap()).collect();
        let expected: Vec<u64> = files.iter().map(inode).collect();
        let writer = sender.sender();
        let thread = std::thread::spawn(move || {
            let id = HandoffId::random();
            writer
                .send(&Message::Moving {
                    handoff_id: id,
                    items: ITEMS,
                })
                .unwrap();
            for (n, chunk) in files.chunks(250).enumerate() {
                let items: Vec<_> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (item((n * 250 + i) as u32), f.as_raw_fd()))
                    .collect();
                writer.send_items(&items).unwrap();
                writer
                    .send(&Message::Heartbeat { ts_ms: n as u64 })
                    .unwrap();
            }
        });
        let first = recv(&mut receiver).unwrap();
        assert!(matches!(
            first.message,
            Message::Moving { items: ITEMS, .. }
        ));
        let mut seq = 0;
        while seq < ITEMS {
            let incoming = recv(&mut receiver).unwrap();
            match incoming.message {
                Message::Item { seq: got, .. } => {
                    assert_eq!(got, seq);
                    let fd = incoming.descriptor.expect("an Item's descriptor");
                    assert_eq!(inode(&fd), expected[seq as usize], "item {seq}");
                    assert!(crate::sys::is_cloexec(fd.as_raw_fd()).unwrap());
                    seq += 1;
                }
                Message::Heartbeat { .. } => assert!(incoming.descriptor.is_none()),
                other => panic!("unexpected {other:?}"),
            }
        }
        thread.join().unwrap();
    }

    #[test]
    fn a_descriptor_on_a_v1_connection_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut receiver = Channel::new(b).unwrap();
        let file = tempfile::tempfile().unwrap();
        let frame = encode_frame(1, &Message::Heartbeat { ts_ms: 1 }).unwrap();
        send_with_descriptors(a.as_raw_fd(), &frame, &[file.as_raw_fd()]).unwrap();
        let err = recv(&mut receiver).unwrap_err();
        assert!(
            err.to_string()
                .contains("descriptor(s) on a protocol v1 connection"),
            "{err}"
        );
    }

    #[test]
    fn an_item_without_its_descriptor_is_refused() {
        let (sender, mut receiver) = v2_pair();
        let frame = encode_frame(PROTO_MOVES, &item(0)).unwrap();
        send_all(sender.stream(), &frame).unwrap();
        let err = recv(&mut receiver).unwrap_err();
        assert!(err.to_string().contains("without its descriptor"), "{err}");
    }

    #[test]
    fn a_descriptor_with_no_item_to_take_it_is_refused() {
        let (sender, mut receiver) = v2_pair();
        let file = tempfile::tempfile().unwrap();
        let heartbeat = encode_frame(PROTO_MOVES, &Message::Heartbeat { ts_ms: 1 }).unwrap();
        send_all_with(sender.stream(), &heartbeat, &[file.as_raw_fd()]).unwrap();
        // The stray descriptor's read is over before the next frame starts.
        send_all(sender.stream(), &heartbeat).unwrap();
        let mut outcome = Ok(());
        for _ in 0..2 {
            if let Err(e) = recv(&mut receiver) {
                outcome = Err(e);
                break;
            }
        }
        let err = outcome.expect_err("a stray descriptor went unnoticed");
        assert!(
            err.to_string().contains("no Item frame to take them"),
            "{err}"
        );
    }

    #[test]
    fn only_items_carry_descriptors() {
        let (sender, _receiver) = v2_pair();
        let file = tempfile::tempfile().unwrap();
        let err = sender
            .sender()
            .send_items(&[(Message::Heartbeat { ts_ms: 1 }, file.as_raw_fd())])
            .unwrap_err();
        assert!(matches!(err, Error::Encode(_)), "{err}");
    }
}
