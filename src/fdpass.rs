//! Descriptors over a Unix stream socket (SCM_RIGHTS, docs/protocol.md
//! "Descriptors on the wire"): one `sendmsg` carries a batch's bytes and
//! its descriptors; one `recvmsg` reads bytes, the descriptors that came
//! with them and the sender's credentials, and never loses a descriptor
//! without saying so.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::protocol::MAX_ITEMS_PER_BATCH;

/// Room for a full batch of descriptors and the sender's credentials.
const CONTROL_WORDS: usize = (MAX_ITEMS_PER_BATCH * 4 + 128) / 8;

/// What one `recvmsg` gave.
#[derive(Debug, Default)]
pub struct Received {
    /// Bytes read into the buffer (0: end of stream).
    pub len: usize,
    /// The pid the kernel attests for the writer (SO_PASSCRED on).
    pub pid: Option<u32>,
    /// The kernel had more ancillary data than there was room for: some
    /// descriptors were lost on the way, and the stream must be abandoned.
    pub truncated: bool,
}

/// `sendmsg` of `bytes` with `fds` attached (none: a plain send), without
/// waiting and without SIGPIPE. Answers how many bytes went; the
/// descriptors travel with the first of them, so a partial send is
/// completed with plain sends.
pub fn send_with_descriptors(socket: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    assert!(fds.len() <= MAX_ITEMS_PER_BATCH, "a batch over SCM_MAX_FD");
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE is arithmetic on its argument.
        let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = space;
        // SAFETY: the control buffer is aligned (u64), zeroed and at least
        // `space` bytes long (CONTROL_WORDS covers a full batch), so the first
        // header and its data fit; each descriptor is written unaligned.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&header);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as usize;
            let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
            for (i, fd) in fds.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), *fd);
            }
        }
    }
    // SAFETY: `header` points to live buffers of the lengths it states; a
    // descriptor number that is not open makes the call fail with EBADF.
    let sent = unsafe { libc::sendmsg(socket, &header, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// `recvmsg` into `buf` without waiting: descriptors that came with the
/// bytes are appended to `fds` (close-on-exec), the writer's pid is taken
/// from SCM_CREDENTIALS when present.
pub fn recv_with_descriptors(
    socket: RawFd,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<Received> {
    recv_into(socket, buf, fds, CONTROL_WORDS)
}

/// [`recv_with_descriptors`] with a control buffer of `words` u64s (the
/// tests make it small to see truncation reported).
fn recv_into(
    socket: RawFd,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
    words: usize,
) -> io::Result<Received> {
    let mut control = [0u64; CONTROL_WORDS];
    let words = words.min(CONTROL_WORDS);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = words * 8;
    // SAFETY: `header` points to live buffers of the lengths it states.
    let n = unsafe {
        libc::recvmsg(
            socket,
            &mut header,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut received = Received {
        len: n as usize,
        pid: None,
        truncated: header.msg_flags & libc::MSG_CTRUNC != 0,
    };
    // SAFETY: walking the control messages recvmsg filled in, with the
    // kernel's own CMSG macros, within `msg_controllen`; every descriptor
    // in an SCM_RIGHTS message is now ours, and is owned exactly once.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_CREDENTIALS)
                    if len >= std::mem::size_of::<libc::ucred>() =>
                {
                    let cred = std::ptr::read_unaligned(data.cast::<libc::ucred>());
                    received.pid = Some(cred.pid as u32);
                }
                (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                    let data = data.cast::<libc::c_int>();
                    for i in 0..len / std::mem::size_of::<libc::c_int>() {
                        fds.push_back(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// `n` descriptors, each its own open file.
    fn open_files(n: usize) -> Vec<OwnedFd> {
        (0..n)
            .map(|_| OwnedFd::from(tempfile::tempfile().expect("a temporary file")))
            .collect()
    }

    /// The inode a descriptor refers to (same open file on both sides).
    fn inode(fd: &OwnedFd) -> u64 {
        // SAFETY: a zeroed stat is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a live descriptor and a valid out-parameter.
        assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
        st.st_ino
    }

    fn cloexec(fd: &OwnedFd) -> bool {
        crate::sys::is_cloexec(fd.as_raw_fd()).unwrap()
    }

    #[test]
    fn a_full_batch_arrives_in_order_close_on_exec() {
        let (a, b) = UnixStream::pair().unwrap();
        let readers = open_files(MAX_ITEMS_PER_BATCH);
        let borrowed: Vec<_> = readers.iter().map(|fd| fd.as_raw_fd()).collect();
        let bytes = vec![7u8; 3000];
        let sent = send_with_descriptors(a.as_raw_fd(), &bytes, &borrowed).unwrap();
        assert_eq!(sent, bytes.len());

        let mut queue = VecDeque::new();
        let mut buf = [0u8; 100]; // less than was sent: the rest stays queued
        let got = recv_with_descriptors(b.as_raw_fd(), &mut buf, &mut queue).unwrap();
        assert!(!got.truncated);
        assert_eq!(got.len, 100);
        assert_eq!(queue.len(), MAX_ITEMS_PER_BATCH);
        for (sent, received) in readers.iter().zip(&queue) {
            assert_eq!(inode(sent), inode(received));
            assert!(cloexec(received));
        }
        // The rest of the bytes come without descriptors.
        let mut rest = vec![0u8; 4096];
        let got = recv_with_descriptors(b.as_raw_fd(), &mut rest, &mut queue).unwrap();
        assert_eq!(got.len, 2900);
        assert_eq!(queue.len(), MAX_ITEMS_PER_BATCH);
    }

    /// A read never joins the bytes of two batches: each batch's
    /// descriptors come with a read of their own, whatever the buffer.
    #[test]
    fn descriptors_of_consecutive_batches_stay_apart() {
        let (a, b) = UnixStream::pair().unwrap();
        let readers = open_files(10);
        for (i, chunk) in readers.chunks(5).enumerate() {
            let borrowed: Vec<_> = chunk.iter().map(|fd| fd.as_raw_fd()).collect();
            send_with_descriptors(a.as_raw_fd(), &[i as u8; 10], &borrowed).unwrap();
        }
        let mut queue = VecDeque::new();
        let mut buf = [0u8; 4096];
        let first = recv_with_descriptors(b.as_raw_fd(), &mut buf, &mut queue).unwrap();
        assert_eq!((first.len, queue.len()), (10, 5));
        let second = recv_with_descriptors(b.as_raw_fd(), &mut buf, &mut queue).unwrap();
        assert_eq!((second.len, queue.len()), (10, 10));
        for (sent, received) in readers.iter().zip(&queue) {
            assert_eq!(inode(sent), inode(received));
        }
    }

    #[test]
    fn a_control_buffer_too_small_is_reported_as_truncated() {
        let (a, b) = UnixStream::pair().unwrap();
        let readers = open_files(20);
        let borrowed: Vec<_> = readers.iter().map(|fd| fd.as_raw_fd()).collect();
        send_with_descriptors(a.as_raw_fd(), b"x", &borrowed).unwrap();
        let mut queue = VecDeque::new();
        let mut buf = [0u8; 16];
        let got = recv_into(b.as_raw_fd(), &mut buf, &mut queue, 4).unwrap();
        assert!(got.truncated, "MSG_CTRUNC not seen");
        assert!(queue.len() < 20);
    }

    #[test]
    fn bytes_without_descriptors_and_the_end_of_the_stream() {
        let (a, b) = UnixStream::pair().unwrap();
        send_with_descriptors(a.as_raw_fd(), b"plain", &[]).unwrap();
        drop(a);
        let mut queue = VecDeque::new();
        let mut buf = [0u8; 16];
        let got = recv_with_descriptors(b.as_raw_fd(), &mut buf, &mut queue).unwrap();
        assert_eq!((&buf[..got.len], queue.len()), (&b"plain"[..], 0));
        let end = recv_with_descriptors(b.as_raw_fd(), &mut buf, &mut queue).unwrap();
        assert_eq!(end.len, 0);
    }

    #[test]
    fn a_vanished_peer_is_an_error_not_a_signal() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let readers = open_files(1);
        let err =
            send_with_descriptors(a.as_raw_fd(), b"x", &[readers[0].as_raw_fd()]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
