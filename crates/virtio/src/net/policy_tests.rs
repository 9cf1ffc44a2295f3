//! The per-NIC policies through the in-process driver: forged transmits,
//! promiscuous mode, link state with the configuration interrupt, traffic
//! shaping.
//!
//! The shaping tests check that a configured rate is applied (a functional
//! check, not a performance one): the bounds are wide on purpose.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use super::features::*;
use super::tests::*;
use super::*;
use crate::testing::*;

fn net_rig(wants: u64, policy: NetPolicy, link: NetLink) -> Rig {
    let (backend, peer) = SocketBackend::pair().unwrap();
    let backend = Arc::new(backend);
    let mac = MacAddr::new(GUEST_MAC).unwrap();
    let net = Net::new(backend.clone(), mac)
        .with_policy(policy)
        .with_link(link);
    rig_net(wants, net, backend, peer)
}

/// A frame from `src` to a host, `len` bytes.
fn frame_from(src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1];
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(len, 0x5a);
    with_hdr(NetHdr::default(), &f)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn forged_transmits_are_dropped_when_rejected() {
    let policy = NetPolicy {
        reject_forged: true,
        ..NetPolicy::default()
    };
    let mut r = net_rig(0, policy, NetLink::default());
    let own = frame_from(GUEST_MAC, 60);
    r.tx_pieces(&[&own]);
    r.tx_done();
    assert_eq!(r.recv(), own);
    // Another source: the chain comes back, nothing goes out.
    let forged = frame_from([0x02, 0x6b, 0x65, 0, 0, 0x10], 60);
    // The source MAC split across buffers is still seen.
    r.tx_pieces(&[&forged[..15], &forged[15..]]);
    r.tx_done();
    assert!(r.peer.is_empty(), "a forged frame went out");
    assert_eq!(r.stats.tx_forged.load(Ordering::SeqCst), 1);
    assert_eq!(r.stats.tx_dropped.load(Ordering::SeqCst), 0);
    r.tx_pieces(&[&own[..20], &own[20..]]);
    r.tx_done();
    assert_eq!(r.recv(), own);
    assert_eq!(r.stats.tx_frames.load(Ordering::SeqCst), 2);
}

#[test]
fn forged_transmits_go_out_when_accepted() {
    let mut r = net_rig(0, NetPolicy::default(), NetLink::default());
    let forged = frame_from([0x02, 0x6b, 0x65, 0, 0, 0x10], 60);
    r.tx_pieces(&[&forged]);
    r.tx_done();
    assert_eq!(r.recv(), forged);
    assert_eq!(r.stats.tx_forged.load(Ordering::SeqCst), 0);
}

const OTHER_MAC: [u8; 6] = [0x02, 0x6b, 0x65, 0, 0, 0x10];
const BROADCAST: [u8; 6] = [0xff; 6];
/// mDNS's IPv4 group and IPv6's all-nodes group.
const MULTICAST4: [u8; 6] = [0x01, 0x00, 0x5e, 0, 0, 0xfb];
const MULTICAST6: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// A frame from a host to `dst`, `len` bytes, header first.
fn frame_to(dst: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f = frame(len, seed);
    f[..6].copy_from_slice(&dst);
    with_hdr(NetHdr::default(), &f)
}

fn reject_promiscuous() -> NetPolicy {
    NetPolicy {
        reject_promiscuous: true,
        ..NetPolicy::default()
    }
}

/// Through a rig with `wants` and promiscuous mode rejected: a frame for
/// another MAC is counted and leaves no trace in guest memory; frames for
/// the NIC's MAC, broadcast and multicast ones arrive, in order.
fn promiscuous_reject_filters_unicast_for_others(wants: u64) {
    let mut r = net_rig(wants, reject_promiscuous(), NetLink::default());
    let addrs = r.post_rx(0, 4, 1600);
    r.peer.send(&frame_to(OTHER_MAC, 100, 1)).unwrap();
    wait_for("the filtered frame", || {
        r.stats.rx_filtered.load(Ordering::SeqCst) == 1
    });
    assert_eq!(r.rx_used_idx(), 0, "a frame for another MAC was delivered");
    for &a in &addrs {
        assert_eq!(
            r.d.read_guest(a, 1600 + 64),
            vec![SENTINEL; 1664],
            "the filtered frame reached guest memory"
        );
    }
    let frames = [
        frame_to(GUEST_MAC, 100, 2),
        frame_to(BROADCAST, 200, 3),
        frame_to(MULTICAST4, 300, 4),
        frame_to(MULTICAST6, 90, 5),
    ];
    for f in &frames {
        r.peer.send(f).unwrap();
    }
    let want: Vec<(u32, u32)> = (0..)
        .zip(&frames)
        .map(|(i, f)| (i, f.len() as u32))
        .collect();
    assert_eq!(r.rx_done(4), want);
    for (&a, f) in addrs.iter().zip(&frames) {
        assert_eq!(r.d.read_guest(a + 12, f.len() - 12), f[12..]);
        assert_eq!(r.d.read_guest(a + f.len() as u64, 16), vec![SENTINEL; 16]);
    }
    assert_eq!(r.stats.rx_filtered.load(Ordering::SeqCst), 1);
    assert_eq!(r.stats.rx_frames.load(Ordering::SeqCst), 4);
    assert_eq!(r.stats.rx_dropped.load(Ordering::SeqCst), 0);
}

#[test]
fn promiscuous_reject_filters_unicast_for_others_in_single_buffers() {
    promiscuous_reject_filters_unicast_for_others(0);
}

#[test]
fn promiscuous_reject_filters_unicast_for_others_in_mergeable_buffers() {
    promiscuous_reject_filters_unicast_for_others(MRG_RXBUF);
}

#[test]
fn promiscuous_reject_copies_a_big_frame_over_mergeable_buffers() {
    let mut r = net_rig(MRG_RXBUF, reject_promiscuous(), NetLink::default());
    // Room for the largest frame: the frames are not waiting for room.
    let addrs = r.post_rx(0, 12, 8192);
    r.peer.send(&frame_to(OTHER_MAC, 20_000, 1)).unwrap();
    let own = frame_to(GUEST_MAC, 20_000, 2);
    r.peer.send(&own).unwrap();
    // 20 012 bytes over 8 KiB buffers: 8192 + 8192 + 3628.
    assert_eq!(r.rx_done(3), vec![(0, 8192), (1, 8192), (2, 3628)]);
    let mut got = r.d.read_guest(addrs[0], 8192);
    got.extend(r.d.read_guest(addrs[1], 8192));
    got.extend(r.d.read_guest(addrs[2], 3628));
    assert_eq!(
        NetHdr::from_bytes(got[..12].try_into().unwrap()).num_buffers,
        3
    );
    assert_eq!(got[12..], own[12..]);
    assert_eq!(r.d.read_guest(addrs[2] + 3628, 64), vec![SENTINEL; 64]);
    assert_eq!(r.stats.rx_filtered.load(Ordering::SeqCst), 1);
    let b = frame_to(BROADCAST, 100, 3);
    r.peer.send(&b).unwrap();
    assert_eq!(r.rx_done(1), vec![(3, 112)]);
    assert_eq!(r.d.read_guest(addrs[3] + 12, 100), b[12..]);
}

#[test]
fn promiscuous_reject_still_drops_a_frame_too_big_for_a_single_buffer() {
    let mut r = net_rig(0, reject_promiscuous(), NetLink::default());
    let addrs = r.post_rx(0, 2, 1600);
    r.peer.send(&frame_to(GUEST_MAC, 2000, 1)).unwrap();
    let own = frame_to(GUEST_MAC, 100, 2);
    r.peer.send(&own).unwrap();
    // The big one is lost (as without the policy), not filtered; the
    // chain it did not fit takes the next frame.
    assert_eq!(r.rx_done(1), vec![(0, own.len() as u32)]);
    assert_eq!(r.d.read_guest(addrs[0] + 12, 100), own[12..]);
    assert_eq!(r.stats.rx_dropped.load(Ordering::SeqCst), 1);
    assert_eq!(r.stats.rx_filtered.load(Ordering::SeqCst), 0);
}

#[test]
fn promiscuous_accept_delivers_every_frame() {
    let mut r = net_rig(0, NetPolicy::default(), NetLink::default());
    let addrs = r.post_rx(0, 5, 1600);
    let frames = [
        frame_to(OTHER_MAC, 100, 1),
        frame_to(GUEST_MAC, 100, 2),
        frame_to(BROADCAST, 200, 3),
        frame_to(MULTICAST4, 300, 4),
        frame_to(MULTICAST6, 90, 5),
    ];
    for f in &frames {
        r.peer.send(f).unwrap();
    }
    let want: Vec<(u32, u32)> = (0..)
        .zip(&frames)
        .map(|(i, f)| (i, f.len() as u32))
        .collect();
    assert_eq!(r.rx_done(5), want);
    for (&a, f) in addrs.iter().zip(&frames) {
        assert_eq!(r.d.read_guest(a + 12, f.len() - 12), f[12..]);
    }
    assert_eq!(r.stats.rx_filtered.load(Ordering::SeqCst), 0);
    assert_eq!(r.stats.rx_frames.load(Ordering::SeqCst), 5);
}

fn link_status(r: &mut Rig) -> u64 {
    let dev = r.d.caps.device;
    r.d.bar_read(dev + 6, 2)
}

#[test]
fn link_down_is_signalled_and_stops_frames_both_ways() {
    let link = NetLink::default();
    let mut r = net_rig(0, NetPolicy::default(), link.clone());
    assert_eq!(link_status(&mut r), 1);
    let addrs = r.post_rx(0, 4, 1600);

    assert!(link.set_up(false));
    assert!(!link.set_up(false), "no change");
    r.d.wait_config_irq();
    assert_eq!(link_status(&mut r), 0);
    // TX: dropped, counted.
    let own = frame_from(GUEST_MAC, 60);
    r.tx_pieces(&[&own]);
    r.tx_done();
    assert!(r.peer.is_empty());
    assert_eq!(r.stats.tx_dropped.load(Ordering::SeqCst), 1);
    // RX: read from the backend and dropped.
    r.peer.send(&frame_from([2, 0, 0, 0, 0, 1], 100)).unwrap();
    wait_for("the drop", || {
        r.stats.rx_dropped.load(Ordering::SeqCst) == 1
    });
    assert_eq!(r.rx_used_idx(), 0, "nothing delivered while down");

    assert!(link.set_up(true));
    r.d.wait_config_irq();
    assert_eq!(link_status(&mut r), 1);
    let f = frame_from([2, 0, 0, 0, 0, 1], 100);
    r.peer.send(&f).unwrap();
    assert_eq!(r.rx_done(1), vec![(0, f.len() as u32)]);
    assert_eq!(r.d.read_guest(addrs[0] + 12, 100), f[12..]);
    r.tx_pieces(&[&own]);
    r.tx_done();
    assert_eq!(r.recv(), own);
}

#[test]
fn a_link_down_before_the_driver_starts_reads_as_down_and_survives_a_new_device() {
    let link = NetLink::new(false);
    let mut r = net_rig(0, NetPolicy::default(), link.clone());
    assert_eq!(link_status(&mut r), 0);
    drop(r);
    // The next boot's device shares the link.
    let mut r = net_rig(0, NetPolicy::default(), link.clone());
    assert_eq!(link_status(&mut r), 0);
    link.set_up(true);
    r.d.wait_config_irq();
    assert_eq!(link_status(&mut r), 1);
}

/// The time from sending `frames` TSO frames of `len` bytes through a TX
/// shaped at `bps` with a 1 514-byte burst until the last one arrives.
#[test]
fn transmit_shaping_holds_the_rate() {
    const FRAMES: usize = 11;
    const LEN: usize = 64_000;
    // The last frame may go once the bucket has refilled the 10 frames
    // before it, less the burst: (10 * 64 000 - 1 514) bytes in 300 ms.
    let bps = ((FRAMES - 1) * LEN - 1514) as u64 * 8 * 10 / 3;
    let policy = NetPolicy {
        tx: Some(Shaping {
            average_bps: bps,
            burst_bytes: 1514,
            peak_bps: None,
        }),
        ..NetPolicy::default()
    };
    let mut r = net_rig(CSUM | HOST_TSO4, policy, NetLink::default());
    let h = NetHdr {
        flags: 1,
        gso_type: 1,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    let bytes = with_hdr(h, &frame(LEN, 3));
    let at = r.d.alloc(bytes.len() as u64);
    r.d.mem.write_slice(&bytes, GuestAddress(at)).unwrap();
    let start = Instant::now();
    for _ in 0..FRAMES {
        r.tx_chain(&[(at, bytes.len() as u32, 0)]);
    }
    for _ in 0..FRAMES {
        assert_eq!(r.recv().len(), bytes.len());
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took <= Duration::from_secs(1),
        "{took:?} for about 300 ms of traffic"
    );
    assert_eq!(
        r.stats.tx_bytes.load(Ordering::SeqCst),
        (FRAMES * LEN) as u64
    );
}

#[test]
fn receive_shaping_holds_the_rate() {
    const FRAMES: usize = 6;
    const LEN: usize = 30_000;
    let bps = ((FRAMES - 1) * LEN - 1514) as u64 * 8 * 10 / 3;
    let policy = NetPolicy {
        rx: Some(Shaping {
            average_bps: bps,
            burst_bytes: 1514,
            peak_bps: None,
        }),
        ..NetPolicy::default()
    };
    let mut r = net_rig(0, policy, NetLink::default());
    r.post_rx(0, FRAMES as u16, (LEN + 12) as u32);
    let f = frame_from([2, 0, 0, 0, 0, 1], LEN);
    let start = Instant::now();
    let peer = &r.peer;
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..FRAMES {
                peer.send(&f).unwrap();
            }
        });
    });
    r.rx_done(FRAMES as u16);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took <= Duration::from_secs(1),
        "{took:?} for about 300 ms of traffic"
    );
    assert_eq!(
        r.stats.rx_bytes.load(Ordering::SeqCst),
        (FRAMES * LEN) as u64
    );
    assert_eq!(r.stats.rx_dropped.load(Ordering::SeqCst), 0);
}

#[test]
fn a_peak_rate_caps_a_burst() {
    // A burst big enough for everything, but a peak rate: 5 frames of
    // 30 000 bytes at a peak where 4 of them (less the peak bucket's
    // 1 514 bytes) take 300 ms.
    const FRAMES: usize = 5;
    const LEN: usize = 30_000;
    let peak = ((FRAMES - 1) * LEN - 1514) as u64 * 8 * 10 / 3;
    let policy = NetPolicy {
        rx: Some(Shaping {
            average_bps: peak / 2,
            burst_bytes: 10 << 20,
            peak_bps: Some(peak),
        }),
        ..NetPolicy::default()
    };
    let mut r = net_rig(0, policy, NetLink::default());
    r.post_rx(0, FRAMES as u16, (LEN + 12) as u32);
    let f = frame_from([2, 0, 0, 0, 0, 1], LEN);
    let start = Instant::now();
    for _ in 0..FRAMES {
        r.peer.send(&f).unwrap();
    }
    r.rx_done(FRAMES as u16);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took <= Duration::from_secs(1),
        "{took:?} for about 300 ms of traffic"
    );
}
