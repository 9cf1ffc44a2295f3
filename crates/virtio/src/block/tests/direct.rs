//! `cache=none` (the image file in `O_DIRECT` mode): guest requests whose
//! buffers are aligned go straight to the file, the others through aligned
//! bounce buffers, on both engines; the right bytes land in the file and in
//! the guest either way.
//!
//! Needs a file system with direct I/O: /var/tmp, the temp dir or the
//! target dir (next to the test binary), whichever takes an `O_DIRECT`
//! write first (never tmpfs). Without one the tests print a SKIPPED line.

use std::os::unix::fs::{FileExt, OpenOptionsExt};

use storage::{AlignedBuf, CacheMode};
use vm_memory::GuestMemoryMmap;

use super::super::uring::{Dir, Io, PushError, Uring, MAX_BOUNCE};
use super::hostile::hostile_requests;
use super::*;
use crate::block::request::Span;

const TMPFS_MAGIC: i64 = 0x0102_1994;

/// A directory for images with direct I/O, removed on drop; `None` (and a
/// SKIPPED line) when there is none.
fn direct_dir(test: &str) -> Option<TempDir> {
    let mut candidates = vec![PathBuf::from("/var/tmp"), std::env::temp_dir()];
    if let Some(deps) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
    {
        candidates.push(deps);
    }
    static N: AtomicU32 = AtomicU32::new(0);
    for base in candidates {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("keel-blk-direct-{}-{n}", std::process::id()));
        if std::fs::create_dir_all(&dir).is_err() {
            continue;
        }
        let dir = TempDir(dir);
        if takes_direct_io(&dir.0) {
            return Some(dir);
        }
    }
    println!("{test}: SKIPPED (no file system with O_DIRECT in /var/tmp, $TMPDIR or target)");
    None
}

/// Whether `dir` takes an aligned `O_DIRECT` write (tmpfs excluded: it does
/// since Linux 6.6, through its page cache).
fn takes_direct_io(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero statfs is valid; statfs writes only into it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a live out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 || st.f_type as i64 == TMPFS_MAGIC {
        return false;
    }
    let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(dir.join("probe"))
    else {
        return false;
    };
    let buf = AlignedBuf::new(4096, 4096).unwrap();
    f.write_all_at(buf.as_slice(), 0).is_ok()
}

/// A raw image of `size` bytes filled with pattern 1, opened with cache=none.
fn direct_disk(dir: &TempDir, size: usize) -> (Arc<dyn DiskImage>, PathBuf) {
    let path = dir.path("disk.raw");
    std::fs::write(&path, pattern(size, 1)).unwrap();
    let disk = storage::open_with_cache(&path, Format::Raw, false, CacheMode::None).unwrap();
    assert!(disk.direct_io().is_some());
    (disk.into(), path)
}

/// Guest memory at `addr` plus `shift` bytes, `len` long, after aligning
/// `addr` up to 4096 (the driver's allocator gives 16-byte alignment).
fn place(d: &mut TestDriver, len: u64, shift: u64) -> u64 {
    let a = d.alloc(len + 4096 + shift);
    a.next_multiple_of(4096) + shift
}

/// One read or write of `pieces` (address, length) at `sector`; its status.
fn rw(d: &mut TestDriver, idx: &mut u16, kind: u32, sector: u64, pieces: &[(u64, u32)]) -> u8 {
    let header = d.alloc(16);
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    d.mem.write_slice(&h, GuestAddress(header)).unwrap();
    let status = d.alloc(1);
    d.fill_guest(status, 1, SENTINEL);
    let flags = if kind == VIRTIO_BLK_T_IN { WRITE } else { 0 };
    let mut bufs = vec![(header, 16, 0)];
    bufs.extend(pieces.iter().map(|&(a, l)| (a, l, flags)));
    bufs.push((status, 1, WRITE));
    d.add_chain(0, 0, &bufs);
    d.kick(0);
    d.wait_used(0, *idx, idx.wrapping_add(1));
    *idx = idx.wrapping_add(1);
    d.read_guest(status, 1)[0]
}

fn put(d: &TestDriver, pieces: &[(u64, u32)], data: &[u8]) {
    let mut at = 0;
    for &(a, l) in pieces {
        d.mem
            .write_slice(&data[at..at + l as usize], GuestAddress(a))
            .unwrap();
        at += l as usize;
    }
}

fn get(d: &TestDriver, pieces: &[(u64, u32)]) -> Vec<u8> {
    pieces
        .iter()
        .flat_map(|&(a, l)| d.read_guest(a, l as usize))
        .collect()
}

/// Writes then reads back aligned and unaligned layouts through a
/// cache=none disk on `engine`; the file ends up with exactly the writes.
fn aligned_and_unaligned(test: &str, io_uring: bool) {
    let Some(dir) = direct_dir(test) else {
        return;
    };
    let size = 4 << 20;
    let (disk, path) = direct_disk(&dir, size);
    let mut model = pattern(size, 1);
    let opts = BlockOptions {
        io_uring,
        ..BlockOptions::new("disk0")
    };
    let block = Block::new(disk, opts).unwrap();
    let engine = if io_uring {
        IoEngine::IoUring
    } else {
        IoEngine::Sync
    };
    assert_eq!(block.io_engine(), engine);
    assert!(
        block.describe().contains("cache=none"),
        "{}",
        block.describe()
    );
    let mut d = TestDriver::new(Box::new(block));
    d.enable_msix();
    d.init(ALL).unwrap();
    d.setup_queue(0, 16);
    d.driver_ok();
    let mut idx = 0;
    // (name, lengths of the pieces, shift of each piece's address)
    let layouts: [(&str, &[u32], u64); 5] = [
        ("aligned, one page", &[4096], 0),
        ("aligned, two pieces", &[8192, 4096], 0),
        ("odd addresses", &[4096], 1),
        ("pieces not whole sectors", &[700, 3396, 512], 0),
        ("odd addresses and pieces", &[100, 1948, 2048, 4000, 96], 3),
    ];
    for (i, (name, lens, shift)) in layouts.iter().enumerate() {
        let total: u32 = lens.iter().sum();
        let sector = 8 + 64 * i as u64;
        let pieces: Vec<(u64, u32)> = lens
            .iter()
            .map(|&l| (place(&mut d, u64::from(l), *shift), l))
            .collect();
        let data = pattern(total as usize, 40 + i as u8);
        put(&d, &pieces, &data);
        assert_eq!(
            rw(&mut d, &mut idx, VIRTIO_BLK_T_OUT, sector, &pieces),
            OK,
            "{name}"
        );
        let o = sector as usize * 512;
        model[o..o + data.len()].copy_from_slice(&data);
        // Read back into other buffers of the same layout.
        let back: Vec<(u64, u32)> = lens
            .iter()
            .map(|&l| (place(&mut d, u64::from(l), *shift), l))
            .collect();
        assert_eq!(
            rw(&mut d, &mut idx, VIRTIO_BLK_T_IN, sector, &back),
            OK,
            "{name}"
        );
        assert_eq!(get(&d, &back), data, "{name}: read back");
    }
    // Longer than one bounce buffer, unaligned: served in pieces.
    let big = [
        (place(&mut d, MAX_BOUNCE, 1), MAX_BOUNCE as u32),
        (place(&mut d, 512, 1), 512),
    ];
    let data = pattern(MAX_BOUNCE as usize + 512, 77);
    put(&d, &big, &data);
    assert_eq!(rw(&mut d, &mut idx, VIRTIO_BLK_T_OUT, 2048, &big), OK);
    model[2048 * 512..2048 * 512 + data.len()].copy_from_slice(&data);
    d.fill_guest(big[0].0, big[0].1 as usize, 0);
    d.fill_guest(big[1].0, 512, 0);
    assert_eq!(rw(&mut d, &mut idx, VIRTIO_BLK_T_IN, 2048, &big), OK);
    assert!(get(&d, &big) == data, "long unaligned read back");
    assert_eq!(rw(&mut d, &mut idx, VIRTIO_BLK_T_FLUSH, 0, &[]), OK);
    drop(d);
    assert!(
        std::fs::read(&path).unwrap() == model,
        "the file holds the writes"
    );
}

#[test]
fn cache_none_through_io_uring_moves_aligned_and_unaligned_requests() {
    aligned_and_unaligned("cache_none_io_uring", true);
}

#[test]
fn cache_none_synchronously_moves_aligned_and_unaligned_requests() {
    aligned_and_unaligned("cache_none_sync", false);
}

#[test]
fn hostile_requests_against_a_cache_none_disk() {
    let Some(dir) = direct_dir("hostile_cache_none") else {
        return;
    };
    let path = dir.path("disk.raw");
    storage::create_raw(&path, 1 << 20).unwrap();
    let disk = storage::open_with_cache(&path, Format::Raw, false, CacheMode::None).unwrap();
    hostile_requests(disk.into(), &move || std::fs::read(&path).unwrap());
}

/// The engine itself: an unaligned read and write go through its bounce
/// buffer (the kernel would refuse the guest's buffers with EINVAL), and a
/// request too long to bounce is left to the synchronous path.
#[test]
fn uring_bounces_unaligned_buffers() {
    let Some(dir) = direct_dir("uring_bounces") else {
        return;
    };
    let (disk, path) = direct_disk(&dir, 4 << 20);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let mut u = Uring::new(&disk, &mem, 8).unwrap();
    let bufs = |dir| {
        [Buffer {
            addr: GuestAddress(0x1001),
            len: 4096,
            writable: dir == Dir::Read,
        }]
    };
    let io = |dir, offset| Io {
        head: 0,
        status: GuestAddress(0x10_0000),
        used_len: 0,
        dir,
        offset,
        span: Span {
            writable: dir == Dir::Read,
            start: 0,
            len: 4096,
        },
    };
    // Waits for the one request in flight, copies a read back, frees its
    // slot (before any assertion: a busy slot would hang the drop); the
    // kernel's result and whether the copy worked.
    let run = |u: &mut Uring| {
        u.wait().unwrap();
        let mut done = Vec::new();
        while done.is_empty() {
            u.reap(&mut done);
        }
        let (k, res) = done[0];
        let copied = u.copy_back(&mem, k, u64::try_from(res).unwrap_or(0));
        u.release(k);
        (done.len(), res, copied)
    };
    // Write pattern 9 from the odd address to byte 8192.
    let data = pattern(4096, 9);
    mem.write_slice(&data, GuestAddress(0x1001)).unwrap();
    u.push(&mem, io(Dir::Write, 8192), &bufs(Dir::Write))
        .unwrap();
    assert_eq!(run(&mut u), (1, 4096, true), "the write completed whole");
    let mut file = vec![0u8; 4096];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut file, 8192)
        .unwrap();
    assert_eq!(file, data);
    // Read bytes 0..4096 (pattern 1) back to the odd address.
    mem.write_slice(&[0u8; 4096], GuestAddress(0x1001)).unwrap();
    u.push(&mem, io(Dir::Read, 0), &bufs(Dir::Read)).unwrap();
    assert_eq!(run(&mut u), (1, 4096, true));
    let mut got = vec![0u8; 4096];
    mem.read_slice(&mut got, GuestAddress(0x1001)).unwrap();
    assert_eq!(got, &pattern(4 << 20, 1)[..4096]);
    // Too long to bounce: the caller serves it synchronously.
    let long = [Buffer {
        addr: GuestAddress(0x1001),
        len: MAX_BOUNCE as u32 + 512,
        writable: true,
    }];
    let mut big = io(Dir::Read, 0);
    big.span.len = MAX_BOUNCE + 512;
    assert_eq!(u.push(&mem, big, &long), Err(PushError::Synchronous));
    assert_eq!(u.in_flight(), 0);
}
