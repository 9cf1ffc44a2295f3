//! A native disk benchmark that needs no guest: 1 MiB sequential and 4 KiB random reads and
//! writes against a raw and a qcow2 image, through the same `DiskImage` calls virtio-blk makes.
//!
//! ```text
//! cargo run --release -p storage --example diskbench -- [DIR] [SIZE_MIB] [SECONDS]
//! ```
//!
//! Images (default 512 MiB) are created in DIR (default: the system temp dir) and removed
//! afterwards. I/O is buffered, so once written, reads come from the page cache: the numbers
//! measure this crate's and imago's overhead per request (queue depth 1, one thread), which is
//! what regressions in the device path show up in, not the disk.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use storage::{DiskImage, Format};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into `ru`, which lives for the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// xorshift64: reproducible random offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One measured phase.
struct Sample {
    ops: u64,
    bytes: u64,
    wall: Duration,
    cpu: Duration,
}

/// Runs `op(i)` until `budget` has passed (checking every 16 calls) or `max_ops` ran.
fn measure(
    budget: Duration,
    max_ops: u64,
    bytes_per_op: u64,
    mut op: impl FnMut(u64) -> Result<()>,
) -> Result<Sample> {
    let (t0, c0) = (Instant::now(), cpu_time());
    let mut ops = 0;
    while ops < max_ops && (ops % 16 != 0 || t0.elapsed() < budget) {
        op(ops)?;
        ops += 1;
    }
    Ok(Sample {
        ops,
        bytes: ops * bytes_per_op,
        wall: t0.elapsed(),
        cpu: cpu_time() - c0,
    })
}

fn report(image: &str, test: &str, s: &Sample) {
    let secs = s.wall.as_secs_f64();
    println!(
        "{image:<14} {test:<32} {:>10.0} {:>10.1} {:>10.2}",
        s.ops as f64 / secs,
        s.bytes as f64 / MIB as f64 / secs,
        s.cpu.as_secs_f64() * 1e6 / s.ops.max(1) as f64,
    );
}

/// Every phase against one image.
fn bench(name: &str, disk: &dyn DiskImage, mem: &GuestMemoryMmap, budget: Duration) -> Result<()> {
    let size = disk.size();
    let big = vec![0x5au8; MIB as usize];
    let mut small = vec![0xa5u8; 4096];
    let blocks_1m = size / MIB;
    let blocks_4k = size / (4 * KIB);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // 4 KiB random writes into a fresh image: for qcow2, most allocate a cluster.
    let s = measure(budget, blocks_4k, 4 * KIB, |_| {
        let off = rng.next() % blocks_4k * 4 * KIB;
        Ok(disk.write_at(&small, off)?)
    })?;
    report(name, "4k rand write (fresh)", &s);

    let s = measure(Duration::MAX, blocks_1m, MIB, |i| {
        Ok(disk.write_at(&big, i * MIB)?)
    })?;
    report(name, "1M seq write (fill)", &s);
    let t = Instant::now();
    disk.flush()?;
    println!(
        "{name:<14} {:<32} {:>10.1} ms",
        "flush after fill",
        t.elapsed().as_secs_f64() * 1e3
    );

    let s = measure(budget, u64::MAX, MIB, |i| {
        Ok(disk.write_at(&big, i % blocks_1m * MIB)?)
    })?;
    report(name, "1M seq write (overwrite)", &s);

    let mut buf = vec![0u8; MIB as usize];
    let s = measure(budget, u64::MAX, MIB, |i| {
        Ok(disk.read_at(&mut buf, i % blocks_1m * MIB)?)
    })?;
    report(name, "1M seq read (bounce buffer)", &s);

    let slice_1m = mem.get_slice(GuestAddress(0), MIB as usize)?;
    let s = measure(budget, u64::MAX, MIB, |i| {
        Ok(disk.read_vectored_at(&[slice_1m], i % blocks_1m * MIB)?)
    })?;
    report(name, "1M seq read (guest memory)", &s);

    let s = measure(budget, u64::MAX, 4 * KIB, |_| {
        let off = rng.next() % blocks_4k * 4 * KIB;
        Ok(disk.write_at(&small, off)?)
    })?;
    report(name, "4k rand write (allocated)", &s);

    let s = measure(budget, u64::MAX, 4 * KIB, |_| {
        let off = rng.next() % blocks_4k * 4 * KIB;
        Ok(disk.read_at(&mut small, off)?)
    })?;
    report(name, "4k rand read (bounce buffer)", &s);

    let slice_4k = mem.get_slice(GuestAddress(2 * MIB), 4096)?;
    let s = measure(budget, u64::MAX, 4 * KIB, |_| {
        let off = rng.next() % blocks_4k * 4 * KIB;
        Ok(disk.read_vectored_at(&[slice_4k], off)?)
    })?;
    report(name, "4k rand read (guest memory)", &s);

    let s = measure(budget, u64::MAX, 4 * KIB, |_| {
        let off = rng.next() % blocks_4k * 4 * KIB;
        Ok(disk.write_vectored_at(&[slice_4k], off)?)
    })?;
    report(name, "4k rand write (guest memory)", &s);

    let s = measure(budget, 200, 4 * KIB, |_| {
        let off = rng.next() % blocks_4k * 4 * KIB;
        disk.write_at(&small, off)?;
        Ok(disk.flush()?)
    })?;
    report(name, "4k rand write + flush", &s);
    Ok(())
}

/// Removes the benchmark's images even when a phase fails.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let size_mib: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(512);
    let secs: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2.0);
    let budget = Duration::from_secs_f64(secs);
    let size = size_mib * MIB;

    let tag = std::process::id();
    let raw = dir.join(format!("keel-diskbench-{tag}.raw"));
    let qcow2 = dir.join(format!("keel-diskbench-{tag}.qcow2"));
    let _cleanup = Cleanup(vec![raw.clone(), qcow2.clone()]);
    storage::create_raw(&raw, size).context("creating the raw image")?;
    storage::create_qcow2(&qcow2, size, None).context("creating the qcow2 image")?;
    let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)])?;

    println!(
        "diskbench: {size_mib} MiB images in {}, {secs} s per phase, queue depth 1, 1 thread, buffered I/O",
        dir.display()
    );
    println!(
        "{:<14} {:<32} {:>10} {:>10} {:>10}",
        "image", "test", "ops/s", "MiB/s", "cpu µs/op"
    );
    for (name, path) in [("raw", &raw), ("qcow2", &qcow2)] {
        let disk = storage::open(Path::new(path), Format::Auto, false)?;
        bench(name, disk.as_ref(), &mem, budget).with_context(|| disk.describe())?;
    }
    Ok(())
}
