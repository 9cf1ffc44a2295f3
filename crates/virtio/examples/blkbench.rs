//! virtio-blk device benchmark without a guest: the in-process test driver
//! (`virtio::testing`) drives a real virtio-blk device (PCI transport,
//! worker threads, MSI-X on eventfds) with 4 KiB random reads against a
//! raw and a qcow2 image, and reports requests per second and CPU time per
//! request: of the device's worker threads alone (scheduler run time), and
//! of the whole process (the driver thread polls the used ring too).
//!
//! ```text
//! cargo run --release -p virtio --features testing --example blkbench -- [SECONDS] [DIR]
//! ```
//!
//! The images (64 MiB, written once) stay in the page cache, so this
//! measures the device path — chain parsing, guest-memory slices,
//! `preadv`/imago, used ring, interrupts, thread wake-ups — not a disk.
//! Modes: queue depth 1 (one request, kick, wait: wake-up latency bound),
//! queue depth 32 on one queue (32 requests per kick: what a batch costs),
//! and queue depth 32 on each of two queues (two worker threads).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use storage::{DiskImage, Format};
use virtio::block::{Block, BlockOptions};
use virtio::features::{RING_EVENT_IDX, RING_INDIRECT_DESC, VERSION_1};
use virtio::testing::TestDriver;
use virtio_bindings::virtio_blk::VIRTIO_BLK_T_IN;
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use vm_memory::{Bytes, GuestAddress};

const MIB: u64 = 1 << 20;
const DISK_SIZE: u64 = 64 * MIB;
const BLOCK: u32 = 4096;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;

/// User + system CPU time of this process (every thread).
fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into `ru`, which lives for the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time of the device's worker threads (`blk-*`), from
/// the scheduler's per-thread run time (`/proc/self/task/*/schedstat`, ns).
fn device_cpu_time() -> Duration {
    let mut total = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("blk-") {
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

/// xorshift64: reproducible random sectors.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One in-flight slot: header, 4 KiB of data, status.
#[derive(Clone, Copy)]
struct Slot {
    header: u64,
    data: u64,
    status: u64,
}

struct Bench {
    d: TestDriver,
    slots: Vec<Vec<Slot>>,
    used: Vec<u16>,
    rng: Rng,
}

impl Bench {
    fn new(disk: Arc<dyn DiskImage>, queues: u16, depth: u16) -> Self {
        let opts = BlockOptions {
            num_queues: queues,
            ..BlockOptions::new("bench")
        };
        let mut d = TestDriver::new(Box::new(Block::new(disk, opts).expect("device")));
        d.enable_msix();
        d.init(VERSION_1 | RING_EVENT_IDX | RING_INDIRECT_DESC | u64::MAX)
            .expect("features");
        let size = (depth * 4).next_power_of_two();
        let mut slots = Vec::new();
        for q in 0..queues {
            d.setup_queue(q, size);
            slots.push(
                (0..depth)
                    .map(|_| Slot {
                        header: d.alloc(16),
                        data: d.alloc(u64::from(BLOCK)),
                        status: d.alloc(16),
                    })
                    .collect(),
            );
        }
        d.driver_ok();
        Bench {
            d,
            slots,
            used: vec![0; usize::from(queues)],
            rng: Rng(0x9e37_79b9_7f4a_7c15),
        }
    }

    /// Offers every slot of every queue (random 4 KiB reads), kicks each
    /// queue once and spins until all are used; returns the request count.
    fn round(&mut self) -> u64 {
        let sectors = DISK_SIZE / u64::from(BLOCK);
        let mut n = 0u64;
        for (q, slots) in self.slots.iter().enumerate() {
            for (i, s) in slots.iter().enumerate() {
                let sector = (self.rng.next() % sectors) * u64::from(BLOCK / 512);
                let mut h = [0u8; 16];
                h[0..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
                h[8..16].copy_from_slice(&sector.to_le_bytes());
                self.d
                    .mem
                    .write_slice(&h, GuestAddress(s.header))
                    .expect("header");
                self.d.add_chain(
                    q as u16,
                    (i * 3) as u16,
                    &[
                        (s.header, 16, 0),
                        (s.data, BLOCK, WRITE),
                        (s.status, 1, WRITE),
                    ],
                );
                n += 1;
            }
        }
        for q in 0..self.slots.len() {
            self.d.kick(q as u16);
        }
        for (q, slots) in self.slots.iter().enumerate() {
            let want = self.used[q].wrapping_add(slots.len() as u16);
            let layout = self.d.queues[&(q as u16)];
            let start = Instant::now();
            while layout.used_idx(&self.d.mem) != want {
                assert!(start.elapsed() < Duration::from_secs(5), "device stalled");
                // Leave the CPU to the device thread (2-core machines).
                std::thread::yield_now();
            }
            self.used[q] = want;
        }
        n
    }
}

fn run(name: &str, disk: &Arc<dyn DiskImage>, queues: u16, depth: u16, secs: f64) {
    let mut b = Bench::new(disk.clone(), queues, depth);
    for _ in 0..100 {
        b.round();
    }
    let budget = Duration::from_secs_f64(secs);
    let (t0, c0, d0) = (Instant::now(), cpu_time(), device_cpu_time());
    let mut ops = 0u64;
    while t0.elapsed() < budget {
        ops += b.round();
    }
    let wall = t0.elapsed();
    let cpu = cpu_time() - c0;
    let dev = device_cpu_time() - d0;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / ops as f64;
    println!(
        "{name:<22} {:>9.0} req/s  {:>6.2} µs device CPU/req  {:>6.2} µs process CPU/req",
        ops as f64 / wall.as_secs_f64(),
        per(dev),
        per(cpu),
    );
}

fn prepare(dir: &Path, name: &str, format: Format) -> Arc<dyn DiskImage> {
    let path: PathBuf = dir.join(name);
    let _ = std::fs::remove_file(&path);
    match format {
        Format::Qcow2 => storage::create_qcow2(&path, DISK_SIZE, None).expect("create qcow2"),
        _ => storage::create_raw(&path, DISK_SIZE).expect("create raw"),
    }
    let disk: Arc<dyn DiskImage> = storage::open(&path, format, false).expect("open").into();
    // Fill it so reads hit allocated data (qcow2 clusters, page cache).
    let chunk: Vec<u8> = (0..MIB as usize).map(|i| (i % 251) as u8).collect();
    for off in (0..DISK_SIZE).step_by(MIB as usize) {
        disk.write_at(&chunk, off).expect("fill");
    }
    disk.flush().expect("flush");
    disk
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("keel-blkbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    println!("virtio-blk 4 KiB random reads through the device, {secs} s per line");
    for (label, name, format) in [
        ("raw", "disk.raw", Format::Raw),
        ("qcow2", "disk.qcow2", Format::Qcow2),
    ] {
        let disk = prepare(&dir, name, format);
        run(&format!("{label} qd1"), &disk, 1, 1, secs);
        run(&format!("{label} qd32"), &disk, 1, 32, secs);
        run(&format!("{label} qd32 x 2 queues"), &disk, 2, 32, secs);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
