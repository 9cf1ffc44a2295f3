//! virtio-net end to end through the transport, in process, on a socket
//! pair backend: frames both ways, offloads, mergeable buffers, a guest
//! without buffers, a backend that blocks, and hostile chains.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};

use super::features::*;
use super::*;
use crate::features::{RING_EVENT_IDX, RING_INDIRECT_DESC, VERSION_1};
use crate::testing::*;

pub(super) const WRITE: u16 = VRING_DESC_F_WRITE as u16;
const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;
pub(super) const SENTINEL: u8 = 0xa5;
pub(super) const QSIZE: u16 = 16;
pub(super) const GUEST_MAC: [u8; 6] = [0x02, 0x6b, 0x65, 0, 0, 9];

pub(super) struct Rig {
    pub(super) d: TestDriver,
    pub(super) peer: SocketPeer,
    pub(super) backend: Arc<SocketBackend>,
    pub(super) stats: Arc<NetStats>,
    /// Next used index expected on RX and TX.
    pub(super) rx_used: u16,
    pub(super) tx_used: u16,
    pub(super) tx_slot: u16,
}

fn rig(wants: u64) -> Rig {
    let (backend, peer) = SocketBackend::pair().unwrap();
    rig_on(wants, Arc::new(backend), peer, None)
}

/// A rig on `backend`, counting in `stats` when given.
fn rig_on(
    wants: u64,
    backend: Arc<SocketBackend>,
    peer: SocketPeer,
    stats: Option<Arc<NetStats>>,
) -> Rig {
    let mac = MacAddr::new(GUEST_MAC).unwrap();
    let net = match stats {
        Some(s) => Net::with_stats(backend.clone(), mac, s),
        None => Net::new(backend.clone(), mac),
    };
    rig_net(wants, net, backend, peer)
}

/// A rig on `net`, whose backend is `backend`.
pub(super) fn rig_net(wants: u64, net: Net, backend: Arc<SocketBackend>, peer: SocketPeer) -> Rig {
    let stats = net.stats();
    let mut d = TestDriver::new(Box::new(net));
    d.enable_msix();
    d.init(VERSION_1 | wants).unwrap();
    d.setup_queue(0, QSIZE);
    d.setup_queue(1, QSIZE);
    d.driver_ok();
    Rig {
        d,
        peer,
        backend,
        stats,
        rx_used: 0,
        tx_used: 0,
        tx_slot: 0,
    }
}

/// An Ethernet frame of `len` bytes to the guest, with a recognizable body.
pub(super) fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut x = seed;
    while f.len() < len {
        x = x.wrapping_mul(31).wrapping_add(7);
        f.push(x);
    }
    f.truncate(len);
    f
}

pub(super) fn with_hdr(h: NetHdr, frame: &[u8]) -> Vec<u8> {
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(frame);
    v
}

impl Rig {
    /// Puts `bytes` in guest memory as the given pieces and sends them as
    /// one TX chain; returns the chain's head.
    pub(super) fn tx_pieces(&mut self, pieces: &[&[u8]]) -> u16 {
        let mut bufs = Vec::new();
        for p in pieces {
            let at = self.d.alloc(p.len() as u64 + 16);
            self.d.mem.write_slice(p, GuestAddress(at)).unwrap();
            bufs.push((at, p.len() as u32, 0u16));
        }
        self.tx_chain(&bufs)
    }

    pub(super) fn tx_chain(&mut self, bufs: &[(u64, u32, u16)]) -> u16 {
        let slot = self.tx_slot;
        self.tx_slot = (slot + bufs.len() as u16) % QSIZE;
        self.d.add_chain(1, slot, bufs);
        self.d.kick(1);
        slot
    }

    /// Waits for the next TX chain to come back; returns (head, len).
    pub(super) fn tx_done(&mut self) -> (u32, u32) {
        let used = self
            .d
            .wait_used(1, self.tx_used, self.tx_used.wrapping_add(1));
        self.tx_used = self.tx_used.wrapping_add(1);
        used[0]
    }

    pub(super) fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 70_000];
        let n = self.peer.recv_timeout(&mut buf, TIMEOUT).unwrap();
        buf.truncate(n);
        buf
    }

    /// Posts `n` single-buffer RX chains of `len` bytes at slots
    /// `first..`; returns their addresses.
    pub(super) fn post_rx(&mut self, first: u16, n: u16, len: u32) -> Vec<u64> {
        let mut addrs = Vec::new();
        for i in 0..n {
            let at = self.d.alloc(u64::from(len) + 64);
            self.d.fill_guest(at, len as usize + 64, SENTINEL);
            self.d
                .add_chain(0, (first + i) % QSIZE, &[(at, len, WRITE)]);
            addrs.push(at);
        }
        self.d.kick(0);
        addrs
    }

    /// Waits for `n` more RX used elements.
    pub(super) fn rx_done(&mut self, n: u16) -> Vec<(u32, u32)> {
        let to = self.rx_used.wrapping_add(n);
        let used = self.d.wait_used(0, self.rx_used, to);
        self.rx_used = to;
        used
    }

    pub(super) fn rx_used_idx(&self) -> u16 {
        self.d.queues[&0].used_idx(&self.d.mem)
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn config_space_has_the_mac_and_link_up() {
    let mut r = rig(0);
    let dev = r.d.caps.device;
    let mac: Vec<u8> = (0..6).map(|i| r.d.bar_read(dev + i, 1) as u8).collect();
    assert_eq!(mac, GUEST_MAC);
    assert_eq!(r.d.bar_read(dev + 6, 2), 1, "VIRTIO_NET_S_LINK_UP");
    let offered = r.d.device_features();
    for f in [
        CSUM, GUEST_CSUM, MAC, STATUS, MRG_RXBUF, HOST_TSO4, HOST_TSO6, GUEST_TSO4, GUEST_TSO6,
    ] {
        assert_ne!(offered & f, 0, "feature {f:#x} offered");
    }
    assert_eq!(offered & (1 << 17), 0, "no control queue");
    assert!(r.d.dev().describe().contains("02:6b:65:00:00:09"));
}

#[test]
fn transmits_frames_in_one_or_several_buffers() {
    let mut r = rig(0);
    let f = frame(60, 1);
    let head = r.tx_pieces(&[&with_hdr(NetHdr::default(), &f)]);
    assert_eq!(r.tx_done(), (u32::from(head), 0));
    assert_eq!(r.recv(), with_hdr(NetHdr::default(), &f));
    r.d.wait_queue_irq(1);
    // Header apart, frame split in three.
    let f = frame(1514, 2);
    let hdr = NetHdr::default().to_bytes();
    r.tx_pieces(&[&hdr, &f[..100], &f[100..101], &f[101..]]);
    r.tx_done();
    assert_eq!(r.recv(), with_hdr(NetHdr::default(), &f));
    assert_eq!(r.stats.tx_frames.load(Ordering::SeqCst), 2);
    assert_eq!(r.stats.tx_bytes.load(Ordering::SeqCst), 60 + 1514);
}

#[test]
fn transmits_tso_frames_when_negotiated() {
    let mut r = rig(CSUM | HOST_TSO4);
    let h = NetHdr {
        flags: 1,
        gso_type: 1,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    let f = frame(64_000, 3);
    r.tx_pieces(&[&h.to_bytes(), &f[..32_000], &f[32_000..]]);
    r.tx_done();
    assert_eq!(r.recv(), with_hdr(h, &f));
    // Not negotiated for IPv6: dropped.
    let h6 = NetHdr { gso_type: 4, ..h };
    r.tx_pieces(&[&with_hdr(h6, &f)]);
    r.tx_done();
    assert_eq!(r.stats.tx_dropped.load(Ordering::SeqCst), 1);
    assert!(r.peer.is_empty());
}

#[test]
fn hostile_transmit_chains_are_dropped_and_the_device_keeps_going() {
    let mut r = rig(RING_INDIRECT_DESC);
    let good = with_hdr(NetHdr::default(), &frame(100, 4));
    let buf = r.d.alloc(0x20000);
    let mem_end = TEST_MEM_SIZE as u64;
    let csum = with_hdr(
        NetHdr {
            flags: 1,
            csum_start: 14,
            csum_offset: 6,
            ..NetHdr::default()
        },
        &frame(100, 5),
    );
    let gso = with_hdr(
        NetHdr {
            gso_type: 1,
            gso_size: 1000,
            ..NetHdr::default()
        },
        &frame(100, 6),
    );
    let table = r.d.alloc(16 * 32);
    for i in 0..32u16 {
        let flags = if i < 31 { NEXT } else { 0 };
        DescSpec::new(buf, 8, flags, i + 1)
            .write_at(&r.d.mem, GuestAddress(table + 16 * u64::from(i)));
    }
    let cases: Vec<(&str, Vec<u8>, Vec<DescSpec>)> = vec![
        (
            "short header",
            vec![0; 8],
            vec![DescSpec::new(buf, 8, 0, 0)],
        ),
        (
            "header only",
            vec![0; 12],
            vec![DescSpec::new(buf, 12, 0, 0)],
        ),
        (
            "runt frame",
            vec![0; 25],
            vec![DescSpec::new(buf, 25, 0, 0)],
        ),
        (
            "longer than 64 KiB",
            vec![0; 0x10100],
            vec![DescSpec::new(buf, 0x10100, 0, 0)],
        ),
        (
            "checksum offload not negotiated",
            csum.clone(),
            vec![DescSpec::new(buf, csum.len() as u32, 0, 0)],
        ),
        (
            "gso not negotiated",
            gso.clone(),
            vec![DescSpec::new(buf, gso.len() as u32, 0, 0)],
        ),
        (
            "writable buffer",
            good.clone(),
            vec![DescSpec::new(buf, good.len() as u32, WRITE, 0)],
        ),
        (
            "loop",
            good.clone(),
            vec![
                DescSpec::new(buf, 60, NEXT, 1),
                DescSpec::new(buf + 60, 52, NEXT, 0),
            ],
        ),
        (
            "outside guest memory",
            vec![],
            vec![DescSpec::new(mem_end - 20, 200, 0, 0)],
        ),
        (
            "length overflow",
            vec![],
            vec![
                DescSpec::new(buf, 0x100, NEXT, 1),
                DescSpec::new(buf, u32::MAX - 8, 0, 0),
            ],
        ),
        (
            "indirect longer than the queue",
            vec![],
            vec![DescSpec::new(table, 16 * 32, INDIRECT, 0)],
        ),
    ];
    let q = r.d.queues[&1];
    let mut dropped = 0;
    for (name, bytes, descs) in cases {
        r.d.mem.write_slice(&bytes, GuestAddress(buf)).unwrap();
        for (i, desc) in descs.iter().enumerate() {
            q.write_desc(&r.d.mem, i as u16, *desc);
        }
        q.publish(&r.d.mem, 0);
        r.d.kick(1);
        assert_eq!(r.tx_done(), (0, 0), "{name}");
        dropped += 1;
        assert_eq!(r.stats.tx_dropped.load(Ordering::SeqCst), dropped, "{name}");
        assert!(r.peer.is_empty(), "{name}: a frame went out");
        assert_eq!(r.d.status() & S_NEEDS_RESET, 0, "{name}: not a broken ring");
        // A good frame still goes through.
        r.tx_slot = 4;
        r.tx_pieces(&[&good]);
        r.tx_done();
        assert_eq!(r.recv(), good, "{name}");
    }
}

#[test]
fn receives_a_frame_into_one_chain() {
    let mut r = rig(0);
    let addrs = r.post_rx(0, 1, 1600);
    let f = frame(1514, 7);
    let sent = with_hdr(
        NetHdr {
            flags: 2,
            ..NetHdr::default()
        },
        &f,
    );
    r.peer.send(&sent).unwrap();
    assert_eq!(r.rx_done(1), vec![(0, 12 + 1514)]);
    r.d.wait_queue_irq(0);
    let got = r.d.read_guest(addrs[0], 12 + 1514 + 64);
    let h = NetHdr::from_bytes(got[..12].try_into().unwrap());
    assert_eq!(h.num_buffers, 1);
    assert_eq!(h.flags, 0, "no DATA_VALID without GUEST_CSUM");
    assert_eq!(&got[12..12 + 1514], &f[..]);
    assert!(
        got[12 + 1514..].iter().all(|&b| b == SENTINEL),
        "wrote past the frame"
    );
    assert_eq!(r.stats.rx_frames.load(Ordering::SeqCst), 1);
    assert_eq!(r.stats.rx_bytes.load(Ordering::SeqCst), 1514);
}

#[test]
fn mergeable_buffers_carry_a_big_frame_and_num_buffers() {
    let mut r = rig(MRG_RXBUF | GUEST_CSUM | GUEST_TSO4);
    assert_eq!(
        r.backend.offload(),
        libc::TUN_F_CSUM | libc::TUN_F_TSO4,
        "offloads handed to the backend"
    );
    let addrs = r.post_rx(0, 12, 8192);
    let h = NetHdr {
        flags: 1,
        gso_type: 1,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        hdr_len: 66,
        num_buffers: 0,
    };
    let f = frame(20_000, 8);
    r.peer.send(&with_hdr(h, &f)).unwrap();
    // 20 012 bytes over 8 KiB buffers: 8192 + 8192 + 3628.
    assert_eq!(r.rx_done(3), vec![(0, 8192), (1, 8192), (2, 3628)]);
    let mut got = r.d.read_guest(addrs[0], 8192);
    got.extend(r.d.read_guest(addrs[1], 8192));
    got.extend(r.d.read_guest(addrs[2], 3628));
    let gh = NetHdr::from_bytes(got[..12].try_into().unwrap());
    assert_eq!(
        gh,
        NetHdr {
            num_buffers: 3,
            ..h
        }
    );
    assert_eq!(&got[12..], &f[..]);
    assert_eq!(r.d.read_guest(addrs[2] + 3628, 64), vec![SENTINEL; 64]);
    // The next frame starts in the next buffer.
    let f2 = frame(100, 9);
    r.peer.send(&with_hdr(NetHdr::default(), &f2)).unwrap();
    assert_eq!(r.rx_done(1), vec![(3, 112)]);
    assert_eq!(r.d.read_guest(addrs[3] + 12, 100), f2);
    assert_eq!(
        NetHdr::from_bytes(r.d.read_guest(addrs[3], 12)[..].try_into().unwrap()).num_buffers,
        1
    );
}

#[test]
fn offloads_follow_the_driver_and_are_cleared_on_reset() {
    let mut r = rig(GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6 | GUEST_ECN);
    assert_eq!(
        r.backend.offload(),
        libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN
    );
    // A new driver: the reset clears them; TSO without its checksum
    // feature is not handed on.
    r.d.init(VERSION_1 | GUEST_TSO4 | MRG_RXBUF).unwrap();
    assert_eq!(r.backend.offload(), 0, "reset clears the offloads");
    r.d.setup_queue(0, QSIZE);
    r.d.setup_queue(1, QSIZE);
    r.d.driver_ok();
    assert_eq!(r.backend.offload(), 0);
    r.d.init(VERSION_1 | GUEST_CSUM).unwrap();
    r.d.setup_queue(0, QSIZE);
    r.d.setup_queue(1, QSIZE);
    r.d.driver_ok();
    assert_eq!(r.backend.offload(), libc::TUN_F_CSUM);
}

#[test]
fn frames_wait_in_the_backend_until_the_guest_posts_buffers() {
    let mut r = rig(MRG_RXBUF | RING_EVENT_IDX);
    let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(200 + i, i as u8)).collect();
    for f in &frames {
        r.peer.send(&with_hdr(NetHdr::default(), f)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(r.rx_used_idx(), 0);
    assert_eq!(r.stats.rx_dropped.load(Ordering::SeqCst), 0, "nothing lost");
    // One buffer: one frame; the others stay queued.
    let a = r.post_rx(0, 1, 2048);
    assert_eq!(r.rx_done(1), vec![(0, 212)]);
    assert_eq!(r.d.read_guest(a[0] + 12, 200), frames[0]);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(r.rx_used_idx(), 1);
    let b = r.post_rx(1, 4, 2048);
    assert_eq!(r.rx_done(2), vec![(1, 213), (2, 214)]);
    assert_eq!(r.d.read_guest(b[0] + 12, 201), frames[1]);
    assert_eq!(r.d.read_guest(b[1] + 12, 202), frames[2]);
    // Later frames use the buffers left over.
    r.peer
        .send(&with_hdr(NetHdr::default(), &frames[0]))
        .unwrap();
    assert_eq!(r.rx_done(1), vec![(3, 212)]);
}

#[test]
fn a_big_frame_waits_for_a_slow_guest_to_refill_instead_of_being_lost() {
    let mut r = rig(MRG_RXBUF | GUEST_CSUM | GUEST_TSO4 | RING_EVENT_IDX);
    // Two 4 KiB buffers: less than a 20 000-byte TSO frame needs.
    let a = r.post_rx(0, 2, 4096);
    let h = NetHdr {
        flags: 1,
        gso_type: 1,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        hdr_len: 66,
        num_buffers: 0,
    };
    let big = frame(20_000, 3);
    r.peer.send(&with_hdr(h, &big)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(r.rx_used_idx(), 0, "not squeezed into too little room");
    assert_eq!(r.stats.rx_dropped.load(Ordering::SeqCst), 0, "not lost");
    // The guest refills: the frame arrives whole, over five buffers.
    let b = r.post_rx(2, 4, 4096);
    assert_eq!(
        r.rx_done(5),
        vec![(0, 4096), (1, 4096), (2, 4096), (3, 4096), (4, 3628)]
    );
    let mut got = Vec::new();
    for at in a.iter().chain(&b[..2]) {
        got.extend(r.d.read_guest(*at, 4096));
    }
    got.extend(r.d.read_guest(b[2], 3628));
    assert_eq!(
        NetHdr::from_bytes(got[..12].try_into().unwrap()).num_buffers,
        5
    );
    assert_eq!(&got[12..], &big[..]);
    // A small frame still goes out at once into the one buffer left.
    let small = frame(300, 4);
    r.peer.send(&with_hdr(NetHdr::default(), &small)).unwrap();
    assert_eq!(r.rx_done(1), vec![(5, 312)]);
    assert_eq!(r.d.read_guest(b[3] + 12, 300), small);
}

#[test]
fn a_frame_that_half_the_ring_cannot_hold_is_dropped_and_the_next_arrives() {
    let mut r = rig(MRG_RXBUF | RING_EVENT_IDX);
    // Half the ring (8 of 16) in 1 KiB buffers: 8 KiB.
    let a = r.post_rx(0, QSIZE / 2, 1024);
    r.peer
        .send(&with_hdr(NetHdr::default(), &frame(9000, 5)))
        .unwrap();
    let small = frame(500, 6);
    r.peer.send(&with_hdr(NetHdr::default(), &small)).unwrap();
    assert_eq!(r.rx_done(1), vec![(0, 512)]);
    assert_eq!(r.d.read_guest(a[0] + 12, 500), small);
    assert_eq!(r.stats.rx_dropped.load(Ordering::SeqCst), 1);
}

#[test]
fn a_frame_too_big_for_the_buffers_is_dropped_and_counted() {
    let mut r = rig(0);
    let a = r.post_rx(0, 1, 1000);
    r.peer
        .send(&with_hdr(NetHdr::default(), &frame(3000, 1)))
        .unwrap();
    let small = frame(500, 2);
    r.peer.send(&with_hdr(NetHdr::default(), &small)).unwrap();
    assert_eq!(r.rx_done(1), vec![(0, 512)]);
    assert_eq!(r.d.read_guest(a[0] + 12, 500), small);
    assert_eq!(r.stats.rx_dropped.load(Ordering::SeqCst), 1);
}

#[test]
fn hostile_receive_chains_are_returned_unused() {
    let mut r = rig(MRG_RXBUF);
    let buf = r.d.alloc(4096);
    r.d.fill_guest(buf, 4096, SENTINEL);
    let q = r.d.queues[&0];
    let cases: Vec<(&str, Vec<DescSpec>)> = vec![
        ("readable buffer", vec![DescSpec::new(buf, 2048, 0, 0)]),
        (
            "smaller than a header",
            vec![DescSpec::new(buf, 8, WRITE, 0)],
        ),
        (
            "loop",
            vec![
                DescSpec::new(buf, 1024, WRITE | NEXT, 1),
                DescSpec::new(buf, 1024, WRITE | NEXT, 0),
            ],
        ),
        (
            "outside memory",
            vec![DescSpec::new(TEST_MEM_SIZE as u64 - 100, 2048, WRITE, 0)],
        ),
    ];
    let mut expected_bad = 0;
    for (name, descs) in cases {
        for (i, desc) in descs.iter().enumerate() {
            q.write_desc(&r.d.mem, i as u16, *desc);
        }
        q.publish(&r.d.mem, 0);
        r.d.kick(0);
        assert_eq!(r.rx_done(1), vec![(0, 0)], "{name}");
        expected_bad += 1;
        assert_eq!(r.stats.bad_rx_chains.load(Ordering::SeqCst), expected_bad);
        assert_eq!(
            r.d.read_guest(buf, 4096),
            vec![SENTINEL; 4096],
            "{name}: touched memory"
        );
        assert_eq!(r.d.status() & S_NEEDS_RESET, 0, "{name}");
    }
    // A good buffer then gets a frame.
    let a = r.post_rx(5, 1, 2048);
    let f = frame(64, 3);
    r.peer.send(&with_hdr(NetHdr::default(), &f)).unwrap();
    assert_eq!(r.rx_done(1), vec![(5, 76)]);
    assert_eq!(r.d.read_guest(a[0] + 12, 64), f);
}

#[test]
fn a_blocked_backend_holds_frames_without_losing_any() {
    let mut r = rig(0);
    // The socket buffer holds a limited number of big datagrams; send more
    // than fit without reading.
    let frames: Vec<Vec<u8>> = (0..40u8)
        .map(|i| with_hdr(NetHdr::default(), &frame(30_000, i)))
        .collect();
    let addr = r.d.alloc(40 * 30_100);
    let mut sent = 0usize;
    let mut got = Vec::new();
    while got.len() < frames.len() {
        // Keep the ring full while the backend blocks.
        while sent < frames.len() && sent - got.len() < 12 {
            let at = addr + sent as u64 * 30_100;
            r.d.mem
                .write_slice(&frames[sent], GuestAddress(at))
                .unwrap();
            r.tx_chain(&[(at, frames[sent].len() as u32, 0)]);
            sent += 1;
        }
        if got.is_empty() {
            // Let the worker fill the socket and block.
            std::thread::sleep(Duration::from_millis(50));
        }
        got.push(r.recv());
    }
    for (i, f) in frames.iter().enumerate() {
        assert!(got[i] == *f, "frame {i} differs or is out of order");
    }
    assert_eq!(r.stats.tx_dropped.load(Ordering::SeqCst), 0);
    assert_eq!(r.stats.tx_frames.load(Ordering::SeqCst), 40);
    assert!(
        r.stats.tx_blocked.load(Ordering::SeqCst) > 0,
        "the backend never blocked"
    );
    wait_for("all chains back", || {
        r.d.queues[&1].used_idx(&r.d.mem) == 40
    });
}

#[test]
fn reset_and_reinit_keep_working_and_pause_holds_frames() {
    let mut r = rig(MRG_RXBUF);
    r.post_rx(0, 2, 2048);
    r.peer
        .send(&with_hdr(NetHdr::default(), &frame(60, 1)))
        .unwrap();
    r.rx_done(1);
    // A new driver, with other queue sizes.
    r.d.init(VERSION_1 | MRG_RXBUF).unwrap();
    r.d.setup_queue(0, 8);
    r.d.setup_queue(1, 8);
    r.d.driver_ok();
    r.rx_used = 0;
    let a = r.d.alloc(2048);
    r.d.add_chain(0, 0, &[(a, 2048, WRITE)]);
    r.d.kick(0);
    r.d.dev().pause().unwrap();
    let f = frame(70, 2);
    r.peer.send(&with_hdr(NetHdr::default(), &f)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(r.rx_used_idx(), 0, "paused");
    r.d.dev().resume().unwrap();
    assert_eq!(r.rx_done(1), vec![(0, 82)]);
    assert_eq!(r.d.read_guest(a + 12, 70), f);
}

#[test]
fn broken_rx_ring_needs_reset() {
    let mut r = rig(0);
    let q = r.d.queues[&0];
    q.set_avail_idx(&r.d.mem, 100);
    r.d.kick(0);
    r.d.wait_needs_reset();
    // TX on the same device is no longer served either; a reset recovers.
    r.d.init(VERSION_1).unwrap();
    r.d.setup_queue(0, QSIZE);
    r.d.setup_queue(1, QSIZE);
    r.d.driver_ok();
    r.tx_used = 0;
    r.tx_slot = 0;
    let good = with_hdr(NetHdr::default(), &frame(60, 1));
    r.tx_pieces(&[&good]);
    r.tx_done();
    assert_eq!(r.recv(), good);
}

#[test]
fn split_frame_spreads_over_buffers() {
    assert_eq!(split_frame(100, [1000]), Some((1, 100)));
    assert_eq!(split_frame(1000, [1000, 5]), Some((1, 1000)));
    assert_eq!(split_frame(1001, [1000, 5]), Some((2, 1)));
    assert_eq!(split_frame(1006, [1000, 5]), None);
    assert_eq!(split_frame(10, []), None);
    assert_eq!(split_frame(0, [5]), None);
    assert_eq!(split_frame(12, [0, 12]), Some((2, 12)));
}

#[test]
fn tun_offloads_follow_guest_features() {
    assert_eq!(tun_offloads(0), 0);
    assert_eq!(
        tun_offloads(OFFERED),
        libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN
    );
    assert_eq!(
        tun_offloads(HOST_TSO4 | CSUM),
        0,
        "transmit features are not the TAP's business"
    );
}

#[test]
fn counters_add_up_and_outlive_the_device() {
    let (backend, peer) = SocketBackend::pair().unwrap();
    let backend = Arc::new(backend);
    let stats = Arc::new(NetStats::default());
    let mut r = rig_on(0, backend.clone(), peer, Some(stats.clone()));
    let out = frame(100, 1);
    r.tx_pieces(&[&with_hdr(NetHdr::default(), &out)]);
    r.tx_done();
    assert_eq!(r.recv(), with_hdr(NetHdr::default(), &out));
    // A transmit chain with a device-writable buffer is a guest error.
    let at = r.d.alloc(64);
    r.tx_chain(&[(at, 64, WRITE)]);
    r.tx_done();
    r.post_rx(0, 1, 1600);
    r.peer
        .send(&with_hdr(NetHdr::default(), &frame(300, 2)))
        .unwrap();
    r.rx_done(1);
    let load = |s: &NetStats| {
        [
            s.rx_frames.load(Ordering::Relaxed),
            s.rx_bytes.load(Ordering::Relaxed),
            s.tx_frames.load(Ordering::Relaxed),
            s.tx_bytes.load(Ordering::Relaxed),
            s.rx_dropped.load(Ordering::Relaxed),
            s.tx_dropped.load(Ordering::Relaxed),
        ]
    };
    assert_eq!(load(&stats), [1, 300, 1, 100, 0, 1]);
    // The next boot's device on the same backend goes on counting.
    let Rig { d, peer, .. } = r;
    drop(d);
    let mut r = rig_on(0, backend, peer, Some(stats.clone()));
    let out = frame(60, 3);
    r.tx_pieces(&[&with_hdr(NetHdr::default(), &out)]);
    r.tx_done();
    assert_eq!(r.recv(), with_hdr(NetHdr::default(), &out));
    assert_eq!(load(&stats), [1, 300, 2, 160, 0, 1]);
}
