//! virtio-net on a real TAP, in a network namespace each test makes for
//! itself (on its own thread: `unshare(CLONE_NEWNET)` moves only that
//! thread, and the namespace with its TAP goes away when the test ends).
//! Without the privilege to do so, the tests print SKIPPED and pass.
//!
//! The test plays the guest: it sends ARP, ICMP and UDP frames through the
//! device's TX queue and reads what the host's stack answers on RX.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use vm_memory::{Bytes, GuestAddress};

use super::features::*;
use super::*;
use crate::features::VERSION_1;
use crate::testing::*;

const WRITE: u16 = VRING_DESC_F_WRITE as u16;
const QSIZE: u16 = 16;
const RX_BUF: u32 = 4096;
const GUEST_MAC: [u8; 6] = [0x02, 0x6b, 0x65, 0, 0, 0x42];
const GUEST_IP: [u8; 4] = [10, 9, 0, 2];
const HOST_IP: [u8; 4] = [10, 9, 0, 1];

/// Runs `f` on a thread in a new network namespace; `None` (and SKIPPED)
/// when this process may not make one.
fn in_netns<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare with a constant flag; it changes only this
            // thread's namespaces.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!(
                    "SKIPPED (cannot make a network namespace: {})",
                    std::io::Error::last_os_error()
                );
                return None;
            }
            if !std::path::Path::new(TUN_PATH).exists() {
                eprintln!("SKIPPED (no {TUN_PATH})");
                return None;
            }
            Some(f())
        })
        .join()
        .unwrap()
    })
}

#[repr(C)]
struct IfReqAddr {
    name: [u8; libc::IFNAMSIZ],
    addr: libc::sockaddr_in,
    _pad: [u8; 8],
}

/// Gives `name` an IPv4 address and netmask (SIOCSIFADDR, SIOCSIFNETMASK).
fn set_ipv4(name: &str, ip: [u8; 4], mask: [u8; 4]) {
    // SAFETY: socket(2) with constant arguments, wrapped at once.
    let sock = unsafe { OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0)) };
    for (req, a) in [(libc::SIOCSIFADDR, ip), (libc::SIOCSIFNETMASK, mask)] {
        // SAFETY: an all-zero ifreq is valid.
        let mut r: IfReqAddr = unsafe { std::mem::zeroed() };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        r.addr.sin_family = libc::AF_INET as libc::sa_family_t;
        r.addr.sin_addr.s_addr = u32::from_ne_bytes(a);
        // SAFETY: `r` is a live ifreq the kernel reads.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req, &mut r as *mut IfReqAddr) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    }
}

fn csum16(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn eth(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&GUEST_IP);
    h.extend_from_slice(&HOST_IP);
    let c = csum16(&h, 0);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

struct Guest {
    d: TestDriver,
    rx_used: u16,
    rx_slot: u16,
    rx_bufs: std::collections::HashMap<u16, u64>,
    tx_used: u16,
    tx_slot: u16,
}

impl Guest {
    fn new(tap: Tap, wants: u64) -> Self {
        let net = Net::new(Arc::new(tap), MacAddr::new(GUEST_MAC).unwrap());
        let mut d = TestDriver::new(Box::new(net));
        d.enable_msix();
        d.init(VERSION_1 | wants).unwrap();
        d.setup_queue(0, QSIZE);
        d.setup_queue(1, QSIZE);
        d.driver_ok();
        let mut g = Guest {
            d,
            rx_used: 0,
            rx_slot: 0,
            rx_bufs: Default::default(),
            tx_used: 0,
            tx_slot: 0,
        };
        for _ in 0..8 {
            g.post_rx();
        }
        g
    }

    fn post_rx(&mut self) {
        let slot = self.rx_slot;
        self.rx_slot = (slot + 1) % QSIZE;
        let at = *self
            .rx_bufs
            .entry(slot)
            .or_insert_with(|| self.d.alloc(u64::from(RX_BUF)));
        self.d.add_chain(0, slot, &[(at, RX_BUF, WRITE)]);
        self.d.kick(0);
    }

    /// Sends `frame` with header `h`.
    fn send(&mut self, h: NetHdr, frame: &[u8]) {
        let mut bytes = h.to_bytes().to_vec();
        bytes.extend_from_slice(frame);
        let at = self.d.alloc(bytes.len() as u64);
        self.d.mem.write_slice(&bytes, GuestAddress(at)).unwrap();
        let slot = self.tx_slot;
        self.tx_slot = (slot + 1) % QSIZE;
        self.d.add_chain(1, slot, &[(at, bytes.len() as u32, 0)]);
        self.d.kick(1);
        self.d
            .wait_used(1, self.tx_used, self.tx_used.wrapping_add(1));
        self.tx_used = self.tx_used.wrapping_add(1);
    }

    /// The next received frame (header, frame), buffers reposted.
    fn recv(&mut self) -> (NetHdr, Vec<u8>) {
        // Frames may arrive faster than we look: wait for *a* new one.
        let q = self.d.queues[&0];
        let start = Instant::now();
        while q.used_idx(&self.d.mem) == self.rx_used {
            assert!(start.elapsed() < TIMEOUT, "no frame received");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (head, len) = q.used_elem(&self.d.mem, self.rx_used);
        self.rx_used = self.rx_used.wrapping_add(1);
        let at = self.rx_bufs[&(head as u16)];
        let bytes = self.d.read_guest(at, len as usize);
        let h = NetHdr::from_bytes(bytes[..HDR_LEN].try_into().unwrap());
        assert_eq!(h.num_buffers, 1, "small frames fit one buffer");
        self.post_rx();
        (h, bytes[HDR_LEN..].to_vec())
    }

    /// Receives until `want` matches a frame (the host also sends IPv6
    /// neighbour discovery and such); bounded by the test timeout.
    fn recv_until(&mut self, what: &str, want: impl Fn(&[u8]) -> bool) -> (NetHdr, Vec<u8>) {
        let start = Instant::now();
        loop {
            assert!(start.elapsed() < TIMEOUT, "no {what} arrived");
            let (h, f) = self.recv();
            if want(&f) {
                return (h, f);
            }
        }
    }
}

/// ARP who-has HOST_IP; returns the TAP's MAC from the reply.
fn resolve_host(g: &mut Guest) -> [u8; 6] {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&GUEST_MAC);
    arp.extend_from_slice(&GUEST_IP);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&HOST_IP);
    g.send(NetHdr::default(), &eth([0xff; 6], 0x0806, &arp));
    let (_, reply) = g.recv_until("ARP reply", |f| {
        f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2]
    });
    assert_eq!(&reply[0..6], &GUEST_MAC);
    assert_eq!(&reply[28..32], &HOST_IP);
    reply[22..28].try_into().unwrap()
}

fn host_tap(name: &str) -> Tap {
    let tap = Tap::open(Some(name)).unwrap();
    assert!(tap.created());
    assert_eq!(tap.name(), name);
    set_ipv4(name, HOST_IP, [255, 255, 255, 0]);
    tap
}

#[test]
fn ping_and_udp_through_a_real_tap() {
    in_netns(|| {
        let tap = host_tap("ktest0");
        let mut g = Guest::new(tap, MRG_RXBUF);
        let host_mac = resolve_host(&mut g);
        // ICMP echo request → reply.
        let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
        icmp.extend_from_slice(b"keel ping payload");
        let c = csum16(&icmp, 0);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        g.send(NetHdr::default(), &eth(host_mac, 0x0800, &ipv4(1, &icmp)));
        let (_, reply) = g.recv_until("ICMP echo reply", |f| {
            f.len() >= 42 && f[12..14] == [0x08, 0x00] && f[23] == 1 && f[34] == 0
        });
        assert_eq!(&reply[38..40], &[0x12, 0x34]);
        assert_eq!(&reply[42..], b"keel ping payload");
        // UDP from the host's stack to the guest, with a full checksum
        // (no GUEST_CSUM was negotiated).
        let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::from(HOST_IP), 6000)).unwrap();
        sock.send_to(
            b"to the guest",
            SocketAddrV4::new(Ipv4Addr::from(GUEST_IP), 5000),
        )
        .unwrap();
        let (h, f) = g.recv_until("UDP datagram", |f| f.len() >= 42 && f[23] == 17);
        assert_eq!(h.flags & 1, 0, "no partial checksum without GUEST_CSUM");
        assert_eq!(&f[42..], b"to the guest");
    });
}

#[test]
fn checksum_offload_both_ways_through_a_real_tap() {
    in_netns(|| {
        let tap = host_tap("ktest1");
        let mut g = Guest::new(tap, MRG_RXBUF | CSUM | GUEST_CSUM | GUEST_TSO4 | HOST_TSO4);
        let host_mac = resolve_host(&mut g);
        let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::from(HOST_IP), 6001)).unwrap();
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        // Guest → host with the UDP checksum left to the device: the
        // checksum field holds only the pseudo-header sum.
        let payload = b"checksum me, host";
        let ulen = (8 + payload.len()) as u16;
        let mut udp = Vec::new();
        udp.extend_from_slice(&5001u16.to_be_bytes());
        udp.extend_from_slice(&6001u16.to_be_bytes());
        udp.extend_from_slice(&ulen.to_be_bytes());
        let mut pseudo = GUEST_IP.to_vec();
        pseudo.extend_from_slice(&HOST_IP);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&ulen.to_be_bytes());
        let partial = !csum16(&pseudo, 0);
        udp.extend_from_slice(&partial.to_be_bytes());
        udp.extend_from_slice(payload);
        let h = NetHdr {
            flags: 1,
            csum_start: 34,
            csum_offset: 6,
            ..NetHdr::default()
        };
        g.send(h, &eth(host_mac, 0x0800, &ipv4(17, &udp)));
        let mut buf = [0u8; 64];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], payload);
        assert_eq!(from.port(), 5001);
        // Host → guest: with GUEST_CSUM the TAP leaves the checksum to the
        // guest and says so.
        sock.send_to(
            b"partial for you",
            SocketAddrV4::new(Ipv4Addr::from(GUEST_IP), 5001),
        )
        .unwrap();
        let (h, f) = g.recv_until("UDP datagram", |f| f.len() >= 42 && f[23] == 17);
        assert_eq!(h.flags & 1, 1, "NEEDS_CSUM: offloads reached the TAP");
        assert_eq!(usize::from(h.csum_start), 34);
        assert_eq!(usize::from(h.csum_offset), 6);
        assert_eq!(&f[42..], b"partial for you");
    });
}

#[test]
fn tap_open_errors_are_clear() {
    in_netns(|| {
        let e = Tap::open(Some("lo")).unwrap_err().to_string();
        assert!(e.contains("TAP lo") && e.contains("TAP device"), "{e}");
        let first = Tap::open(Some("ktest2")).unwrap();
        let e = Tap::open(Some("ktest2")).unwrap_err().to_string();
        assert!(e.contains("another process"), "{e}");
        drop(first);
        // Gone with its last fd; the name is free again.
        let again = Tap::open(Some("ktest2")).unwrap();
        assert!(again.created());
        let auto = Tap::open(None).unwrap();
        assert_eq!(auto.name(), "keel0");
        assert!(auto.describe().contains("created by keel-vmm"));
        let e = Tap::open(Some("name-that-is-too-long"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("too long"), "{e}");
    });
}

#[test]
fn an_existing_persistent_tap_is_opened_not_created() {
    in_netns(|| {
        // Make a persistent TAP the way `ip tuntap add` does.
        let maker = Tap::open(Some("ktest3")).unwrap();
        // SAFETY: TUNSETPERSIST takes an integer.
        let rc = unsafe { libc::ioctl(maker.fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) };
        assert_eq!(rc, 0);
        drop(maker);
        let tap = Tap::open(Some("ktest3")).unwrap();
        assert!(!tap.created());
        assert_eq!(tap.describe(), "TAP ktest3");
        // SAFETY: as above; the namespace goes away anyway.
        unsafe { libc::ioctl(tap.fd(), libc::TUNSETPERSIST, 0 as libc::c_ulong) };
    });
}

#[test]
fn proc_net_dev_transmit_drops() {
    let text = "Inter-|   Receive                            |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n \
keel0: 5 1 2 3 0 0 0 0 70 7 0 42 0 0 0 0\n";
    assert_eq!(super::tap::tx_dropped(text, "keel0"), Some(42));
    assert_eq!(super::tap::tx_dropped(text, "lo"), Some(0));
    assert_eq!(super::tap::tx_dropped(text, "keel"), None);
    assert_eq!(super::tap::tx_dropped("keel0: 1 2 3", "keel0"), None);
}

/// Frames for a guest that takes none are dropped by the kernel once the
/// TAP's queue is full, and [`Tap::queue_drops`] sees them.
#[test]
fn frames_a_guest_does_not_take_are_counted_as_queue_drops() {
    in_netns(|| {
        let tap = host_tap("ktest4");
        assert_eq!(tap.queue_drops(), Some(0));
        // A packet socket sends raw frames out of the TAP, towards the
        // "guest" (nobody reads the TAP: its queue fills up).
        // SAFETY: socket(2) with constant arguments, wrapped at once.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: `fd` is new and owned by nothing else.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new("ktest4").unwrap();
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(index, 0);
        // SAFETY: an all-zero sockaddr_ll is valid.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = index as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&GUEST_MAC);
        let frame = eth(GUEST_MAC, 0x88b5, &[0u8; 46]);
        let sent = 2000;
        for _ in 0..sent {
            // SAFETY: `frame` and `to` are live for the call.
            let n = unsafe {
                libc::sendto(
                    sock.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&to as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(
                n,
                frame.len() as isize,
                "{}",
                std::io::Error::last_os_error()
            );
        }
        let dropped = tap.queue_drops().unwrap();
        // The queue holds at most 1000 (500 on Linux today).
        assert!(
            (sent - 1000..=sent).contains(&dropped),
            "{dropped} of {sent} dropped"
        );
    });
}
