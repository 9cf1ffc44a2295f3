//! virtio-net device benchmark without a guest: the in-process test driver
//! (`virtio::testing`) plays the guest's driver against a real virtio-net
//! device (PCI transport, worker thread, MSI-X on eventfds) whose backend
//! is a `SOCK_SEQPACKET` pair, drained or filled by a thread here.
//!
//! ```text
//! cargo run --release -p virtio --features testing --example netbench -- [SECONDS]
//! ```
//!
//! Four cases: guest → host and host → guest, with 1514-byte frames (no
//! offloads) and 64 000-byte frames (TSO, mergeable 4 KiB receive buffers,
//! as Linux uses them). Reported: MB/s, frames/s and CPU time per frame, of
//! the device's worker thread alone (scheduler run time) and of the whole
//! process (which includes the driver and the peer thread).

use std::time::{Duration, Instant};

use virtio::features::{RING_EVENT_IDX, VERSION_1};
use virtio::net::features::{CSUM, GUEST_CSUM, GUEST_TSO4, HOST_TSO4, MRG_RXBUF};
use virtio::net::{MacAddr, Net, NetHdr, SocketBackend, HDR_LEN};
use virtio::testing::{DescSpec, TestDriver, TestQueueLayout};
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use vm_memory::{Address, Bytes, GuestAddress};

const QSIZE: u16 = 256;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;

fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into `ru`, which lives for the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Run time of the device's worker thread, `net-socket` (schedstat, ns).
fn device_cpu_time() -> Duration {
    let mut total = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "net-socket" {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(total)
}

/// The used ring, read as the device fills it.
struct Used {
    layout: TestQueueLayout,
    seen: u16,
}

impl Used {
    /// Heads the device returned since the last call.
    fn take(&mut self, d: &TestDriver, out: &mut Vec<u16>) {
        let now = self.layout.used_idx(&d.mem);
        while self.seen != now {
            out.push(self.layout.used_elem(&d.mem, self.seen).0 as u16);
            self.seen = self.seen.wrapping_add(1);
        }
    }
}

fn device(features: u64) -> (TestDriver, virtio::net::SocketPeer) {
    let (backend, peer) = SocketBackend::pair().expect("socket pair");
    let mac = MacAddr::new([0x02, 0x6b, 0x65, 0, 0, 1]).expect("mac");
    let mut d = TestDriver::new(Box::new(Net::new(std::sync::Arc::new(backend), mac)));
    d.enable_msix();
    d.init(VERSION_1 | RING_EVENT_IDX | features)
        .expect("features");
    d.setup_queue(RX_QUEUE, QSIZE);
    d.setup_queue(TX_QUEUE, QSIZE);
    d.driver_ok();
    (d, peer)
}

fn report(name: &str, frame: usize, frames: u64, wall: Duration, dev: Duration, cpu: Duration) {
    let s = wall.as_secs_f64();
    println!(
        "{name:<24} {:>8.1} MB/s {:>9.0} frames/s   device {:>6.0} ns/frame   process {:>6.0} ns/frame",
        (frames * frame as u64) as f64 / s / 1e6,
        frames as f64 / s,
        dev.as_nanos() as f64 / frames.max(1) as f64,
        cpu.as_nanos() as f64 / frames.max(1) as f64,
    );
}

/// Guest → host: every TX slot sends the same frame; a thread drains.
fn guest_to_host(name: &str, frame: usize, features: u64, hdr: NetHdr, seconds: u64) {
    let (mut d, peer) = device(features);
    let peer = std::sync::Arc::new(peer);
    let drain = {
        let peer = peer.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            let mut frames = 0u64;
            // Until the device's end closes (0) or nothing comes for 1 s.
            while let Ok(n) = peer.recv_timeout(&mut buf, Duration::from_secs(1)) {
                if n == 0 {
                    break;
                }
                frames += 1;
            }
            frames
        })
    };
    let mut bytes = hdr.to_bytes().to_vec();
    bytes.resize(HDR_LEN + frame, 0x5a);
    let buf = d.alloc(bytes.len() as u64);
    d.mem.write_slice(&bytes, GuestAddress(buf)).expect("frame");
    let layout = d.queues[&TX_QUEUE];
    for slot in 0..QSIZE {
        DescSpec::new(buf, bytes.len() as u32, 0, 0)
            .write_at(&d.mem, layout.desc.unchecked_add(16 * u64::from(slot)));
        layout.publish(&d.mem, slot);
    }
    d.kick(TX_QUEUE);
    let mut used = Used { layout, seen: 0 };
    let mut heads = Vec::new();
    let (cpu0, dev0, start) = (cpu_time(), device_cpu_time(), Instant::now());
    let mut frames = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        heads.clear();
        used.take(&d, &mut heads);
        if heads.is_empty() {
            std::thread::yield_now();
            continue;
        }
        frames += heads.len() as u64;
        for &h in &heads {
            layout.publish(&d.mem, h);
        }
        d.kick(TX_QUEUE);
    }
    let (wall, cpu, dev) = (start.elapsed(), cpu_time() - cpu0, device_cpu_time() - dev0);
    report(name, frame, frames, wall, dev, cpu);
    drop(d);
    let _ = drain.join();
}

/// Host → guest: a thread sends frames as fast as it can; the driver
/// recycles `buf_len`-byte receive buffers.
fn host_to_guest(name: &str, frame: usize, features: u64, buf_len: u32, seconds: u64) {
    let (mut d, peer) = device(features);
    let layout = d.queues[&RX_QUEUE];
    for slot in 0..QSIZE {
        let at = d.alloc(u64::from(buf_len));
        DescSpec::new(at, buf_len, WRITE, 0)
            .write_at(&d.mem, layout.desc.unchecked_add(16 * u64::from(slot)));
        layout.publish(&d.mem, slot);
    }
    d.kick(RX_QUEUE);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut bytes = NetHdr::default().to_bytes().to_vec();
            bytes.resize(HDR_LEN + frame, 0xa5);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if peer.send(&bytes).is_err() {
                    break;
                }
            }
        })
    };
    let mut used = Used { layout, seen: 0 };
    let mut heads = Vec::new();
    let (cpu0, dev0, start) = (cpu_time(), device_cpu_time(), Instant::now());
    let mut buffers = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        heads.clear();
        used.take(&d, &mut heads);
        if heads.is_empty() {
            std::thread::yield_now();
            continue;
        }
        buffers += heads.len() as u64;
        for &h in &heads {
            layout.publish(&d.mem, h);
        }
        d.kick(RX_QUEUE);
    }
    let (wall, cpu, dev) = (start.elapsed(), cpu_time() - cpu0, device_cpu_time() - dev0);
    // Each frame took ceil((header + frame) / buffer) buffers.
    let per_frame = (HDR_LEN + frame).div_ceil(buf_len as usize) as u64;
    report(name, frame, buffers / per_frame, wall, dev, cpu);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(d);
    let _ = sender.join();
}

fn main() {
    let seconds = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let tso = NetHdr {
        flags: 1,
        gso_type: 1,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    guest_to_host("guest → host 1514 B", 1514, 0, NetHdr::default(), seconds);
    guest_to_host(
        "guest → host 64000 B TSO",
        64_000,
        CSUM | HOST_TSO4,
        tso,
        seconds,
    );
    host_to_guest("host → guest 1514 B", 1514, 0, 2048, seconds);
    host_to_guest(
        "host → guest 64000 B MRG",
        64_000,
        MRG_RXBUF | GUEST_CSUM | GUEST_TSO4,
        4096,
        seconds,
    );
}
