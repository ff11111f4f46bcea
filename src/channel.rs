//! A control connection: whole frames out with one `send(2)` and
//! `MSG_NOSIGNAL`, whole frames in through a [`FrameReader`] that keeps a
//! partial frame across timeouts. Waits use poll(2) so a stop request can
//! interrupt them.
#![allow(unsafe_code)]

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::frame::{encode_frame, FrameReader};
use crate::poll::{wait_fd, Wait};
use crate::protocol::{Message, PROTO_MAX};

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
        let version = *self.version.lock().unwrap_or_else(|p| p.into_inner());
        let frame = encode_frame(version, message)?;
        let _one_writer = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        send_all(&self.stream, &frame)
    }
}

/// Send every byte with MSG_NOSIGNAL, so a vanished peer is EPIPE, never a
/// SIGPIPE; waits for room at most [`SEND_TIMEOUT`].
fn send_all(stream: &UnixStream, mut bytes: &[u8]) -> Result<()> {
    let deadline = Instant::now() + SEND_TIMEOUT;
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid slice for the length passed; the fd is
        // owned by `stream`, alive for the call.
        let sent = unsafe {
            libc::send(
                stream.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if sent >= 0 {
            bytes = &bytes[sent as usize..];
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
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

/// One end of a control connection.
pub struct Channel {
    stream: Arc<UnixStream>,
    reader: FrameReader,
    sender: Sender,
    /// The attested writer of the buffered bytes' start, kept across
    /// `recv_attested` calls that time out mid-frame.
    attested: Option<u32>,
}

impl Channel {
    pub fn new(stream: UnixStream) -> Result<Channel> {
        stream.set_nonblocking(true).map_err(Error::Stream)?;
        let stream = Arc::new(stream);
        Ok(Channel {
            sender: Sender {
                stream: Arc::clone(&stream),
                version: Arc::new(Mutex::new(PROTO_MAX)),
                lock: Arc::new(Mutex::new(())),
            },
            stream,
            reader: FrameReader::new(),
            attested: None,
        })
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
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

    /// A whole message already buffered, if any (no I/O).
    pub fn next_message(&mut self) -> Result<Option<Message>> {
        Ok(self.reader.next_frame()?.map(|frame| frame.message))
    }

    /// Read what the socket holds without waiting. [`Error::PeerClosed`]
    /// at the end of the stream.
    pub fn fill(&mut self) -> Result<Filled> {
        let mut chunk = [0u8; 4096];
        let mut filled = Filled::Nothing;
        loop {
            match (&*self.stream).read(&mut chunk) {
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
                    self.reader.feed(&chunk[..n]);
                    filled = Filled::Some;
                    if n < chunk.len() {
                        return Ok(filled);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(filled),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Error::PeerClosed { mid_frame: false })
                }
                Err(e) => return Err(Error::Stream(e)),
            }
        }
    }

    /// Like `recv_until`, and also the pid the kernel attests for the
    /// process that sent the message's first bytes (SO_PASSCRED must have
    /// been set on this socket before the peer wrote).
    pub fn recv_attested(&mut self, deadline: Instant) -> Result<(Message, Option<u32>)> {
        while self.reader.buffered() == 0 {
            let mut chunk = [0u8; 4096];
            match recv_with_pid(self.stream.as_raw_fd(), &mut chunk) {
                Ok((0, _)) => return Err(Error::PeerClosed { mid_frame: false }),
                Ok((n, pid)) => {
                    self.reader.feed(&chunk[..n]);
                    self.attested = pid;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A peer that died with our frames unread resets the
                // connection: it closed, as far as we are concerned.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Error::PeerClosed { mid_frame: false })
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match wait_fd(self.stream.as_raw_fd(), libc::POLLIN, None, Some(deadline))
                        .map_err(Error::Stream)?
                    {
                        Wait::Ready => {}
                        _ => return Err(Error::Timeout),
                    }
                }
                Err(e) => return Err(Error::Stream(e)),
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

/// recvmsg(2) that also returns the sender's pid from SCM_CREDENTIALS.
fn recv_with_pid(fd: std::os::fd::RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u32>)> {
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `header` points to live buffers of the lengths it states.
    let n = unsafe { libc::recvmsg(fd, &mut header, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut pid = None;
    // SAFETY: walking the control messages recvmsg filled in, with the
    // kernel's own CMSG macros, within `msg_controllen`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
            {
                let cred = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::ucred>());
                pid = Some(cred.pid as u32);
            } else if (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_RIGHTS
            {
                // Descriptors nobody asked for: close them, never leak them.
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    libc::close(std::ptr::read_unaligned(data.add(i)));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
    }
    Ok((n as usize, pid))
}
