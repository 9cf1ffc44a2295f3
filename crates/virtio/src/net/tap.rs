//! A TAP device as a virtio-net backend: `/dev/net/tun` with `IFF_TAP |
//! IFF_NO_PI | IFF_VNET_HDR`, a 12-byte virtio-net header on every frame,
//! non-blocking.
//!
//! [`Tap::open`] with a name attaches to the TAP of that name if it exists
//! (a persistent one, e.g. from `ip tuntap add`, which an unprivileged user
//! may open if it belongs to them) and creates it otherwise; without a name
//! it creates `keelN`, the first free one. A TAP keel-vmm created is brought
//! up (no address: put it in a bridge or give it one) and disappears when
//! keel-vmm exits.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::backend::{readv, writev, NetBackend};
use super::HDR_LEN;

/// The clone device.
pub const TUN_PATH: &str = "/dev/net/tun";
/// Longest interface name (IFNAMSIZ less the NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;
/// The kernel picks N in `keelN` for a TAP with no name.
const AUTO_NAME: &str = "keel%d";

/// Why a TAP cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("TAP name '{0}' is too long: at most {MAX_NAME_LEN} bytes")]
    NameTooLong(String),
    #[error("TAP name '{0}' is not valid: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    #[error("Cannot open {TUN_PATH} (is the tun module loaded?)")]
    OpenTun(#[source] io::Error),
    #[error("Cannot attach to TAP {name}{hint}")]
    Attach {
        name: String,
        hint: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("Cannot set up TAP {name}: {what}")]
    Setup {
        name: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Checks an interface name the way the kernel will (`dev_valid_name`),
/// with Keel's stricter alphabet.
pub fn check_name(name: &str) -> Result<(), TapError> {
    if name.len() > MAX_NAME_LEN {
        return Err(TapError::NameTooLong(name.to_string()));
    }
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        return Err(TapError::BadName(name.to_string()));
    }
    Ok(())
}

/// An open TAP queue.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    created: bool,
}

/// `struct ifreq` with the name and the flags member of the union.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl IfReqFlags {
    fn new(name: &str, flags: libc::c_int) -> Self {
        let mut r = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: flags as libc::c_short,
            _pad: [0; 22],
        };
        let n = name.len().min(MAX_NAME_LEN);
        r.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        r
    }

    fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(0);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

fn ioctl_ptr<T>(fd: RawFd, req: libc::Ioctl, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is a live, exclusively borrowed value of the type the
    // request expects (the callers pair them), which the kernel reads and
    // may write within its size.
    let r = unsafe { libc::ioctl(fd, req, arg as *mut T) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn attach_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) => {
            " (creating a TAP needs CAP_NET_ADMIN; an existing one must belong to this user)"
        }
        Some(libc::EBUSY) => " (another process has it open)",
        Some(libc::EINVAL) => " (is it a TAP device?)",
        _ => "",
    }
}

impl Tap {
    /// Opens the TAP `name` (creating it if it does not exist), or a new
    /// `keelN` when `name` is `None`; see the module documentation.
    pub fn open(name: Option<&str>) -> Result<Tap, TapError> {
        if let Some(n) = name {
            check_name(n)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(TapError::OpenTun)?;
        let fd = file.as_raw_fd();
        let base = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        let want = name.unwrap_or(AUTO_NAME);
        let attach = |source| TapError::Attach {
            name: want.to_string(),
            hint: attach_hint(&source),
            source,
        };
        // Create it, or learn that it exists and attach to it.
        let mut req = IfReqFlags::new(want, base | libc::IFF_TUN_EXCL);
        let created = match ioctl_ptr(fd, libc::TUNSETIFF, &mut req) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && name.is_some() => {
                req = IfReqFlags::new(want, base);
                ioctl_ptr(fd, libc::TUNSETIFF, &mut req).map_err(attach)?;
                false
            }
            Err(e) => return Err(attach(e)),
        };
        let tap = Tap {
            name: req.name(),
            file,
            created,
        };
        let setup = |what| {
            let name = tap.name.clone();
            move |source| TapError::Setup { name, what, source }
        };
        let mut hdr_len = HDR_LEN as libc::c_int;
        ioctl_ptr(fd, libc::TUNSETVNETHDRSZ, &mut hdr_len)
            .map_err(setup("cannot set the virtio-net header size"))?;
        tap.set_offload(0)
            .map_err(setup("cannot turn the offloads off"))?;
        if created {
            tap.bring_up().map_err(setup("cannot bring the link up"))?;
        }
        Ok(tap)
    }

    /// The interface's name (`keel0` for a TAP opened without a name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether keel-vmm created the TAP (it then disappears when the last
    /// fd closes) rather than attaching to an existing one.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Frames for the guest that the kernel dropped because the TAP's
    /// queue was full — keel-vmm stops reading while the guest has no
    /// receive buffers, so this is what a guest too slow to take its
    /// frames loses — since the interface was created: its transmit drop
    /// counter in `/proc/thread-self/net/dev` (the calling thread's network
    /// namespace). `None` when it cannot be read.
    pub fn queue_drops(&self) -> Option<u64> {
        let text = std::fs::read_to_string("/proc/thread-self/net/dev").ok()?;
        tx_dropped(&text, &self.name)
    }

    /// Sets IFF_UP (SIOCSIFFLAGS through a throwaway socket).
    fn bring_up(&self) -> io::Result<()> {
        // SAFETY: socket(2) with constant arguments; the fd is wrapped at once.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `s` is a new fd that nothing else owns.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s) };
        let mut req = IfReqFlags::new(&self.name, 0);
        ioctl_ptr(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req)?;
        req.flags |= libc::IFF_UP as libc::c_short;
        ioctl_ptr(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req)
    }
}

impl NetBackend for Tap {
    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    unsafe fn read_frame(&self, iovs: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: forwarded from the caller. A TAP returns the frame's
        // whole length even when it had to cut it short.
        unsafe { readv(self.file.as_raw_fd(), iovs) }
    }

    unsafe fn write_frame(&self, iovs: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: forwarded from the caller.
        unsafe { writev(self.file.as_raw_fd(), iovs) }
    }

    fn set_offload(&self, tun_flags: u32) -> io::Result<()> {
        // TUNSETOFFLOAD takes the flags as the argument itself.
        // SAFETY: an integer argument; the kernel dereferences nothing.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                tun_flags as libc::c_ulong,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        if self.created {
            format!("TAP {} (created by keel-vmm)", self.name)
        } else {
            format!("TAP {}", self.name)
        }
    }
}

/// The transmit drop counter of interface `name` in the text of
/// `/proc/net/dev` (`name: rx_bytes rx_packets rx_errs rx_drop … tx_bytes
/// tx_packets tx_errs tx_drop …`: the 12th number).
pub(crate) fn tx_dropped(net_dev: &str, name: &str) -> Option<u64> {
    net_dev.lines().find_map(|line| {
        let (iface, numbers) = line.split_once(':')?;
        if iface.trim() != name {
            return None;
        }
        numbers.split_whitespace().nth(11)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("keel0").is_ok());
        assert!(check_name("tap-vm_1.2").is_ok());
        assert!(check_name("a23456789012345").is_ok());
        assert!(matches!(
            check_name("a234567890123456"),
            Err(TapError::NameTooLong(_))
        ));
        for bad in ["", ".", "..", "a/b", "a b", "a:b", "tap%d", "é", "a\0b"] {
            assert!(
                matches!(check_name(bad), Err(TapError::BadName(_))),
                "{bad:?}"
            );
        }
        let m = check_name("averyveryverylongname").unwrap_err().to_string();
        assert!(m.contains("at most 15"), "{m}");
    }

    #[test]
    fn ifreq_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<IfReqFlags>(), 40);
        let r = IfReqFlags::new("keel%d", 0x1002);
        assert_eq!(r.name(), "keel%d");
        assert_eq!(r.flags, 0x1002);
    }
}
