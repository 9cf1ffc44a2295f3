//! Where a virtio-net device's frames go: the [`NetBackend`] trait, and
//! [`SocketBackend`], a Unix `SOCK_SEQPACKET` pair for tests and device
//! benchmarks (one datagram per frame, header included, like the TAP).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A frame source and sink. Every frame carries the 12-byte virtio-net
/// header in front ([`super::HDR_LEN`]); the fd is non-blocking.
pub trait NetBackend: Send + Sync {
    /// The fd the worker waits on: readable when a frame can be read,
    /// writable when one can be written.
    fn fd(&self) -> RawFd;

    /// Reads one frame into `iovs` and returns its whole length, which is
    /// more than the iovecs hold when the frame was cut short (the rest is
    /// lost). `WouldBlock` when there is none.
    ///
    /// # Safety
    /// Every iovec must describe memory that is valid for writes of its
    /// length until the call returns.
    unsafe fn read_frame(&self, iovs: &[libc::iovec]) -> io::Result<usize>;

    /// Writes one frame gathered from `iovs`. `WouldBlock` when the backend
    /// cannot take it now (wait for the fd to be writable).
    ///
    /// # Safety
    /// Every iovec must describe memory that is valid for reads of its
    /// length until the call returns.
    unsafe fn write_frame(&self, iovs: &[libc::iovec]) -> io::Result<usize>;

    /// Tells the backend which offloads the reader (the guest) accepts:
    /// `TUN_F_*` flags, as `TUNSETOFFLOAD` takes them.
    fn set_offload(&self, tun_flags: u32) -> io::Result<()>;

    /// One line for logs (`TAP keel0`).
    fn describe(&self) -> String;

    /// A short name (the interface's), for the worker thread: `net-<name>`.
    fn name(&self) -> &str;
}

/// The longest iovec array one call takes (Linux's `UIO_MAXIOV`).
pub const IOV_MAX: usize = 1024;

fn iov_count(iovs: &[libc::iovec]) -> io::Result<libc::c_int> {
    if iovs.len() > IOV_MAX {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(iovs.len() as libc::c_int)
}

/// `readv(2)`, retried on EINTR.
///
/// # Safety
/// As [`NetBackend::read_frame`].
pub(crate) unsafe fn readv(fd: RawFd, iovs: &[libc::iovec]) -> io::Result<usize> {
    let n = iov_count(iovs)?;
    loop {
        // SAFETY: the caller vouches for the iovecs; `n` is their count.
        let r = unsafe { libc::readv(fd, iovs.as_ptr(), n) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `writev(2)`, retried on EINTR.
///
/// # Safety
/// As [`NetBackend::write_frame`].
pub(crate) unsafe fn writev(fd: RawFd, iovs: &[libc::iovec]) -> io::Result<usize> {
    let n = iov_count(iovs)?;
    loop {
        // SAFETY: the caller vouches for the iovecs; `n` is their count.
        let r = unsafe { libc::writev(fd, iovs.as_ptr(), n) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The device's end of a `SOCK_SEQPACKET` pair: each datagram is one frame
/// with its header.
#[derive(Debug)]
pub struct SocketBackend {
    fd: OwnedFd,
    offload: AtomicU32,
}

/// The other end, for a test or benchmark playing the network.
#[derive(Debug)]
pub struct SocketPeer {
    fd: OwnedFd,
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two fds socketpair writes.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded: both fds are new and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl SocketBackend {
    /// A connected pair: the backend (non-blocking) and its peer (blocking).
    pub fn pair() -> io::Result<(SocketBackend, SocketPeer)> {
        let (a, b) = seqpacket_pair()?;
        set_nonblocking(a.as_raw_fd())?;
        Ok((
            SocketBackend {
                fd: a,
                offload: AtomicU32::new(0),
            },
            SocketPeer { fd: b },
        ))
    }

    /// The offload flags last set with [`NetBackend::set_offload`].
    pub fn offload(&self) -> u32 {
        self.offload.load(Ordering::SeqCst)
    }
}

impl NetBackend for SocketBackend {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    unsafe fn read_frame(&self, iovs: &[libc::iovec]) -> io::Result<usize> {
        let n = iov_count(iovs)?;
        // SAFETY: a zeroed msghdr is valid (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iovs.as_ptr().cast_mut();
        msg.msg_iovlen = n as usize;
        loop {
            // MSG_TRUNC: the datagram's whole length, as the TAP reports it.
            // SAFETY: `msg` points at the caller's iovecs, which the caller
            // vouches for; the kernel writes only into them.
            let r = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    unsafe fn write_frame(&self, iovs: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: forwarded from the caller.
        unsafe { writev(self.fd.as_raw_fd(), iovs) }
    }

    fn set_offload(&self, tun_flags: u32) -> io::Result<()> {
        self.offload.store(tun_flags, Ordering::SeqCst);
        Ok(())
    }

    fn describe(&self) -> String {
        "socket pair".to_string()
    }

    fn name(&self) -> &str {
        "socket"
    }
}

impl SocketPeer {
    /// Sends one frame (header included).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: the pointer and length describe `frame`, which the kernel
        // only reads.
        let r = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one frame into `buf` (its length, at most `buf.len()`), or
    /// `TimedOut` after `timeout`.
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if r == 0 {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        // SAFETY: the pointer and length describe `buf`, which the kernel
        // writes at most `buf.len()` bytes into.
        let r = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    /// True when no frame is waiting.
    pub fn is_empty(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut pfd, 1, 0) == 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(buf: &mut [u8]) -> libc::iovec {
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }
    }

    #[test]
    fn frames_keep_their_boundaries_and_report_truncation() {
        let (b, peer) = SocketBackend::pair().unwrap();
        let mut a = [0u8; 4];
        let mut c = [0u8; 4];
        let iovs = [iov(&mut a), iov(&mut c)];
        // SAFETY: the iovecs point at live local arrays.
        let r = unsafe { b.read_frame(&iovs) };
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        peer.send(&[1, 2, 3, 4, 5, 6]).unwrap();
        peer.send(&[9; 20]).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { b.read_frame(&iovs) }.unwrap(), 6);
        assert_eq!((a, &c[..2]), ([1, 2, 3, 4], &[5u8, 6][..]));
        // SAFETY: as above.
        assert_eq!(unsafe { b.read_frame(&iovs) }.unwrap(), 20, "whole length");
        let out = [7u8; 30];
        let wiov = [libc::iovec {
            iov_base: out.as_ptr() as *mut _,
            iov_len: out.len(),
        }];
        // SAFETY: the iovec points at a live local array.
        assert_eq!(unsafe { b.write_frame(&wiov) }.unwrap(), 30);
        let mut got = [0u8; 64];
        let n = peer.recv_timeout(&mut got, Duration::from_secs(1)).unwrap();
        assert_eq!(&got[..n], &out[..]);
        assert!(peer.is_empty());
        let too_many = vec![iov(&mut a); IOV_MAX + 1];
        // SAFETY: as above (never used: refused first).
        assert!(unsafe { b.read_frame(&too_many) }.is_err());
    }
}
