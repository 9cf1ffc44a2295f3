//! The few raw system calls the library needs: creating a persistent TAP
//! (`/dev/net/tun` ioctls) and a UDP socket bound to one interface.
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates the persistent TAP `name` (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
/// single queue, as keel-vmm opens it), owned by `owner` when given.
/// Fails with EBUSY when it exists.
pub fn create_persistent_tap(name: &str, owner: Option<u32>) -> io::Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let fd = file.as_raw_fd();
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    let n = name.as_bytes();
    if n.is_empty() || n.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    req.name[..n.len()].copy_from_slice(n);
    req.flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_TUN_EXCL)
        as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes a struct ifreq; `req` has its layout
    // (name, then the flags in the union) and lives across the call.
    if unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut req as *mut IfReqFlags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some(uid) = owner {
        // SAFETY: TUNSETOWNER takes the uid as the integer argument.
        if unsafe { libc::ioctl(fd, libc::TUNSETOWNER, uid as libc::c_ulong) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: TUNSETPERSIST takes the flag as the integer argument.
    if unsafe { libc::ioctl(fd, libc::TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn setsockopt_raw(fd: i32, level: i32, opt: i32, val: &[u8]) -> io::Result<()> {
    // SAFETY: `val` is a live buffer of the given length for the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            val.as_ptr().cast(),
            val.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A UDP socket on 0.0.0.0:`port` that only sees (and sends through) the
/// interface `dev` (SO_BINDTODEVICE), with SO_REUSEADDR so each bridge can
/// have its own server on the same port, and SO_BROADCAST.
pub fn udp_socket_on_device(dev: &str, port: u16) -> io::Result<UdpSocket> {
    // SAFETY: plain socket(2); the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one = 1i32.to_ne_bytes();
    setsockopt_raw(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one)?;
    setsockopt_raw(raw, libc::SOL_SOCKET, libc::SO_BROADCAST, &one)?;
    setsockopt_raw(raw, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, dev.as_bytes())?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is a valid sockaddr_in of the given size.
    let r = unsafe {
        libc::bind(
            raw,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UdpSocket::from(fd))
}
