//! virtio-vsock device benchmark without a guest: the in-process test
//! driver (`virtio::testing`) plays the guest's driver against a real
//! virtio-vsock device (PCI transport, worker thread, MSI-X on eventfds)
//! whose host side is a Unix socket drained or filled by a thread here.
//!
//! ```text
//! cargo run --release -p virtio --features testing --example vsockbench -- [SECONDS]
//! ```
//!
//! Two directions, 4 KiB payloads (Linux's receive buffer size):
//! - guest → host: RW packets on the transmit queue, within the credit the
//!   device grants (its CREDIT_UPDATEs read from the receive queue);
//! - host → guest: a thread writes the socket as fast as it can, the
//!   driver recycles 4 KiB receive buffers and returns credit.
//!
//! Reported: MB/s, packets/s and CPU time per packet, of the device's
//! worker thread alone (scheduler run time) and of the whole process.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use virtio::features::{RING_EVENT_IDX, VERSION_1};
use virtio::testing::{TestDriver, TestQueueLayout};
use virtio::vsock::{
    Header, Vsock, HEADER_LEN, HOST_CID, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RW,
    RX_QUEUE, TX_QUEUE, TYPE_STREAM,
};
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use vm_memory::{Address, Bytes, GuestAddress};

const CID: u64 = 3;
const PAYLOAD: usize = 4096;
const QSIZE: u16 = 128;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;
const GUEST_BUF: u32 = 256 * 1024;

fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into `ru`, which lives for the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Run time of the `virtio-vsock` worker thread (schedstat, ns).
fn device_cpu_time() -> Duration {
    let mut total = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "virtio-vsock" {
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

fn header(op: u16, len: usize, fwd_cnt: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port: 1000,
        dst_port: 1234,
        len: len as u32,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: GUEST_BUF,
        fwd_cnt,
    }
}

/// A queue whose slots each own one buffer, recycled as they come back.
struct Ring {
    layout: TestQueueLayout,
    bufs: Vec<u64>,
    seen: u16,
}

impl Ring {
    fn new(d: &mut TestDriver, queue: u16, len: u32, flags: u16) -> Self {
        let layout = d.queues[&queue];
        let bufs: Vec<u64> = (0..QSIZE).map(|_| d.alloc(u64::from(len))).collect();
        for (slot, &addr) in bufs.iter().enumerate() {
            virtio::testing::DescSpec::new(addr, len, flags, 0)
                .write_at(&d.mem, layout.desc.unchecked_add(16 * slot as u64));
        }
        Self {
            layout,
            bufs,
            seen: 0,
        }
    }

    /// Buffers the device returned since the last call: (slot, length).
    fn used(&mut self, d: &TestDriver) -> Vec<(u16, u32)> {
        let now = self.layout.used_idx(&d.mem);
        let mut out = Vec::new();
        while self.seen != now {
            let (head, len) = self.layout.used_elem(&d.mem, self.seen);
            out.push((head as u16, len));
            self.seen = self.seen.wrapping_add(1);
        }
        out
    }
}

fn setup() -> (TestDriver, UnixStream, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("keel-vsockbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("v.sock");
    let listener = UnixListener::bind(format!("{}_1234", path.display())).expect("listener");
    let mut d = TestDriver::new(Box::new(Vsock::new(CID, &path).expect("vsock")));
    d.enable_msix();
    d.init(VERSION_1 | RING_EVENT_IDX).expect("features");
    d.setup_queue(RX_QUEUE, QSIZE);
    d.setup_queue(TX_QUEUE, QSIZE);
    d.setup_queue(2, 8);
    d.driver_ok();
    // Connect: REQUEST on the transmit queue, RESPONSE on the receive queue.
    let rx = d.queues[&RX_QUEUE];
    let tx = d.queues[&TX_QUEUE];
    let rxbuf = d.alloc(HEADER_LEN as u64 + PAYLOAD as u64);
    virtio::testing::DescSpec::new(rxbuf, (HEADER_LEN + PAYLOAD) as u32, WRITE, 0)
        .write_at(&d.mem, rx.desc);
    rx.publish(&d.mem, 0);
    let txbuf = d.alloc(HEADER_LEN as u64);
    d.mem
        .write_slice(&header(OP_REQUEST, 0, 0).to_bytes(), GuestAddress(txbuf))
        .expect("request");
    virtio::testing::DescSpec::new(txbuf, HEADER_LEN as u32, 0, 0).write_at(&d.mem, tx.desc);
    tx.publish(&d.mem, 0);
    d.kick(TX_QUEUE);
    d.kick(RX_QUEUE);
    d.wait_used(RX_QUEUE, 0, 1);
    d.wait_used(TX_QUEUE, 0, 1);
    let mut h = [0u8; HEADER_LEN];
    d.mem
        .read_slice(&mut h, GuestAddress(rxbuf))
        .expect("response");
    assert_eq!(Header::parse(&h).expect("header").op, OP_RESPONSE);
    let (host, _) = listener.accept().expect("accept");
    (d, host, dir)
}

fn report(name: &str, bytes: u64, packets: u64, wall: Duration, dev: Duration, cpu: Duration) {
    let s = wall.as_secs_f64();
    println!(
        "{name:<14} {:>8.1} MB/s {:>9.0} packets/s   device {:>6.0} ns/packet   process {:>6.0} ns/packet",
        bytes as f64 / s / 1e6,
        packets as f64 / s,
        dev.as_nanos() as f64 / packets.max(1) as f64,
        cpu.as_nanos() as f64 / packets.max(1) as f64,
    );
}

/// Guest → host: RW packets within the device's credit.
fn guest_to_host(seconds: u64) {
    let (mut d, mut host, dir) = setup();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        while let Ok(n) = host.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let rx_len = (HEADER_LEN + PAYLOAD) as u32;
    let mut rx = Ring::new(&mut d, RX_QUEUE, rx_len, WRITE);
    rx.seen = 1;
    let mut tx = Ring::new(&mut d, TX_QUEUE, rx_len, 0);
    tx.seen = 1;
    let packet = {
        let mut p = header(OP_RW, PAYLOAD, 0).to_bytes().to_vec();
        p.resize(HEADER_LEN + PAYLOAD, 0x5a);
        p
    };
    for &addr in &tx.bufs {
        d.mem
            .write_slice(&packet, GuestAddress(addr))
            .expect("packet");
    }
    for slot in 0..QSIZE {
        rx.layout.publish(&d.mem, slot);
    }
    d.kick(RX_QUEUE);
    let (mut free_tx, mut sent, mut fwd) = ((0..QSIZE).collect::<Vec<u16>>(), 0u64, 0u64);
    let peer_buf = 256 * 1024u64;
    let (cpu0, dev0, start) = (cpu_time(), device_cpu_time(), Instant::now());
    let end = start + Duration::from_secs(seconds);
    while Instant::now() < end {
        for (slot, _) in rx.used(&d) {
            let mut h = [0u8; HEADER_LEN];
            d.mem
                .read_slice(&mut h, GuestAddress(rx.bufs[usize::from(slot)]))
                .expect("rx");
            let h = Header::parse(&h).expect("header");
            if h.op == OP_CREDIT_UPDATE || h.op == OP_RW {
                fwd = fwd.max(u64::from(h.fwd_cnt));
            }
            rx.layout.publish(&d.mem, slot);
            d.kick(RX_QUEUE);
        }
        for (slot, _) in tx.used(&d) {
            free_tx.push(slot);
        }
        let mut published = false;
        // 32-bit counters wrap; the benchmark stays far below 4 GiB of credit math.
        while let Some(&slot) = free_tx.last() {
            let in_flight = sent - fwd.min(sent);
            if in_flight + PAYLOAD as u64 > peer_buf {
                break;
            }
            free_tx.pop();
            tx.layout.publish(&d.mem, slot);
            sent += PAYLOAD as u64;
            published = true;
            if sent >= u64::from(u32::MAX) - (1 << 24) {
                break;
            }
        }
        if published {
            d.kick(TX_QUEUE);
        } else {
            std::hint::spin_loop();
        }
        if sent >= u64::from(u32::MAX) - (1 << 24) {
            break;
        }
    }
    let wall = start.elapsed();
    let (cpu, dev) = (cpu_time() - cpu0, device_cpu_time() - dev0);
    drop(d);
    let got = reader.join().unwrap_or(0);
    report("guest → host", got, got / PAYLOAD as u64, wall, dev, cpu);
    let _ = std::fs::remove_dir_all(dir);
}

/// Host → guest: a thread fills the socket; the driver recycles buffers
/// and returns credit with every 64 KiB it consumed.
fn host_to_guest(seconds: u64) {
    let (mut d, host, dir) = setup();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut host = host;
        std::thread::spawn(move || {
            let buf = vec![0xa5u8; 1 << 16];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if host.write_all(&buf).is_err() {
                    break;
                }
            }
        })
    };
    let rx_len = (HEADER_LEN + PAYLOAD) as u32;
    let mut rx = Ring::new(&mut d, RX_QUEUE, rx_len, WRITE);
    rx.seen = 1;
    let mut tx = Ring::new(&mut d, TX_QUEUE, HEADER_LEN as u32, 0);
    tx.seen = 1;
    for slot in 0..QSIZE {
        rx.layout.publish(&d.mem, slot);
    }
    d.kick(RX_QUEUE);
    let (mut got, mut packets, mut told) = (0u64, 0u64, 0u64);
    let mut free_tx: Vec<u16> = (0..QSIZE).collect();
    let (cpu0, dev0, start) = (cpu_time(), device_cpu_time(), Instant::now());
    let end = start + Duration::from_secs(seconds);
    while Instant::now() < end {
        let used = rx.used(&d);
        if used.is_empty() {
            std::hint::spin_loop();
            continue;
        }
        for (slot, len) in used {
            if len as usize > HEADER_LEN {
                got += u64::from(len) - HEADER_LEN as u64;
                packets += 1;
            }
            rx.layout.publish(&d.mem, slot);
        }
        d.kick(RX_QUEUE);
        for (slot, _) in tx.used(&d) {
            free_tx.push(slot);
        }
        if got - told >= 64 * 1024 {
            if let Some(slot) = free_tx.pop() {
                let h = header(OP_CREDIT_UPDATE, 0, got as u32);
                d.mem
                    .write_slice(&h.to_bytes(), GuestAddress(tx.bufs[usize::from(slot)]))
                    .expect("credit");
                tx.layout.publish(&d.mem, slot);
                d.kick(TX_QUEUE);
                told = got;
            }
        }
    }
    let wall = start.elapsed();
    let (cpu, dev) = (cpu_time() - cpu0, device_cpu_time() - dev0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(d);
    let _ = writer.join();
    report("host → guest", got, packets, wall, dev, cpu);
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    let seconds = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    println!("virtio-vsock, {PAYLOAD}-byte payloads, {seconds} s per direction");
    guest_to_host(seconds);
    host_to_guest(seconds);
}
