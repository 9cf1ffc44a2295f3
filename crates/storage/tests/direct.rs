//! `CacheMode::None` (`O_DIRECT`): raw and qcow2 images moving aligned and unaligned requests
//! (buffers, offsets, lengths) correctly, and file systems that refuse direct I/O.
//!
//! Needs a directory on a file system with direct I/O: the target directory's tmp, /var/tmp or
//! the temp dir, whichever takes an `O_DIRECT` write first (tmpfs is not used: it takes
//! `O_DIRECT` only since Linux 6.6, and then through its page cache). Without one the tests
//! print a SKIPPED line.

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use common::{pattern, TempDir};
use storage::{AlignedBuf, CacheMode, DiskImage, Format, StorageError};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

const MIB: u64 = 1 << 20;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Whether `dir` is on a file system that takes an aligned `O_DIRECT` write (tmpfs excluded).
fn takes_direct_io(dir: &Path) -> bool {
    let probe = dir.join(format!(".keel-direct-probe-{}", std::process::id()));
    let ok = (|| {
        let cpath = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: an all-zero statfs is valid; statfs writes only into it.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a live out-pointer.
        if unsafe { libc::statfs(cpath.as_ptr(), &mut st) } != 0 || st.f_type as i64 == TMPFS_MAGIC
        {
            return None;
        }
        let f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .ok()?;
        let buf = AlignedBuf::new(4096, 4096).ok()?;
        std::os::unix::fs::FileExt::write_all_at(&f, buf.as_slice(), 0).ok()
    })()
    .is_some();
    let _ = fs::remove_file(&probe);
    ok
}

/// A temporary directory with direct I/O, or `None` after printing why the test is skipped.
fn direct_dir(test: &str, tag: &str) -> Option<TempDir> {
    let candidates = [
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        PathBuf::from("/var/tmp"),
        std::env::temp_dir(),
    ];
    for base in candidates {
        if fs::create_dir_all(&base).is_ok() && takes_direct_io(&base) {
            return Some(TempDir::new_in(&base, tag));
        }
    }
    println!(
        "{test}: SKIPPED (no file system with O_DIRECT among the target dir, /var/tmp, $TMPDIR)"
    );
    None
}

fn is_o_direct(fd: i32) -> bool {
    // SAFETY: F_GETFL on a live descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_DIRECT != 0
}

/// A file of `len` bytes of pattern `seed`; the pattern returned.
fn filled(path: &Path, len: usize, seed: u8) -> Vec<u8> {
    let data = pattern(len, seed);
    fs::write(path, &data).unwrap();
    data
}

/// Writes `data` at `offset` to the disk and to the model.
fn write(disk: &dyn DiskImage, model: &mut [u8], data: &[u8], offset: u64) {
    disk.write_at(data, offset).unwrap();
    let o = offset as usize;
    model[o..o + data.len()].copy_from_slice(data);
}

/// Reads `len` bytes at `offset` into a buffer `shift` bytes past a 4096-byte boundary.
fn read(disk: &dyn DiskImage, offset: u64, len: usize, shift: usize) -> Vec<u8> {
    let mut buf = AlignedBuf::new(len + shift, 4096).unwrap();
    disk.read_at(&mut buf.as_mut_slice()[shift..], offset)
        .unwrap();
    buf.as_slice()[shift..].to_vec()
}

#[test]
fn raw_cache_none_is_o_direct_and_moves_aligned_and_unaligned_requests() {
    let Some(dir) = direct_dir("raw_cache_none", "raw") else {
        return;
    };
    let path = dir.join("d.raw");
    let mut model = filled(&path, (8 * MIB) as usize, 3);
    let disk = storage::open_with_cache(&path, Format::Raw, false, CacheMode::None).unwrap();
    assert!(is_o_direct(disk.raw_fd().unwrap().as_raw_fd()));
    let d = disk.direct_io().unwrap();
    assert_eq!(d.block, 512);
    assert!(d.mem_align.is_power_of_two() && d.mem_align <= 4096);
    assert!(
        disk.describe().contains("cache=none"),
        "{}",
        disk.describe()
    );

    // Aligned buffer, offset and length: straight to the file.
    let mut aligned = AlignedBuf::new(8192, 4096).unwrap();
    aligned.as_mut_slice().copy_from_slice(&pattern(8192, 11));
    write(&*disk, &mut model, aligned.as_slice(), 8192);
    // A buffer at an odd address (whole sectors at a sector offset).
    let odd = pattern(4096 + 1, 12);
    write(&*disk, &mut model, &odd[1..], 65536);
    // Offsets and lengths inside sectors: read-modify-write of the partial sectors.
    write(&*disk, &mut model, &pattern(1000, 13), 12_345);
    write(&*disk, &mut model, &pattern(100, 14), 512 * 9 + 7);
    write(&*disk, &mut model, &pattern(512, 15), 8 * MIB - 512);
    // Longer than one bounce buffer, unaligned in every way.
    write(
        &*disk,
        &mut model,
        &pattern(3 * MIB as usize + 100, 16)[1..],
        700,
    );
    disk.flush().unwrap();

    for (offset, len) in [
        (8192, 8192),
        (65536, 4096),
        (12_000, 2000),
        (512 * 9, 512),
        (8 * MIB - 512, 512),
        (0, 4 * MIB as usize),
    ] {
        for shift in [0, 1, 512] {
            let o = offset as usize;
            assert_eq!(
                read(&*disk, offset, len, shift),
                &model[o..o + len],
                "{len} bytes at {offset}, buffer shifted by {shift}"
            );
        }
    }
    drop(disk);
    assert!(
        fs::read(&path).unwrap() == model,
        "the file has what was written"
    );
}

#[test]
fn raw_cache_none_vectored_io_with_unaligned_guest_buffers() {
    let Some(dir) = direct_dir("raw_cache_none_vectored", "rawv") else {
        return;
    };
    let path = dir.join("d.raw");
    let mut model = filled(&path, (4 * MIB) as usize, 5);
    let disk = storage::open_with_cache(&path, Format::Raw, false, CacheMode::None).unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let slices = |pieces: &[(u64, usize)]| -> Vec<VolatileSlice<'_>> {
        pieces
            .iter()
            .map(|&(a, l)| mem.get_slice(GuestAddress(a), l).unwrap())
            .collect()
    };
    for (pieces, offset) in [
        // Aligned: page-aligned buffers of whole sectors.
        (vec![(0x1_0000, 4096), (0x3_0000, 8192)], 40_960u64),
        // Odd addresses, odd lengths, whole sectors in all.
        (vec![(0x2_0001, 700), (0x4_0003, 3396)], 409_600),
        // Many pieces, aligned addresses but lengths inside sectors.
        (
            vec![(0x5_0000, 100), (0x6_0000, 412), (0x7_0000, 512)],
            1_024_000,
        ),
    ] {
        let total: usize = pieces.iter().map(|p| p.1).sum();
        let data = pattern(total, offset as u8);
        let w = slices(&pieces);
        let mut at = 0;
        for s in &w {
            s.copy_from(&data[at..at + s.len()]);
            at += s.len();
        }
        disk.write_vectored_at(&w, offset).unwrap();
        model[offset as usize..offset as usize + total].copy_from_slice(&data);
        // Read back into other buffers, shifted by 3 bytes.
        let shifted: Vec<(u64, usize)> = pieces.iter().map(|&(a, l)| (a + 0x8_0003, l)).collect();
        let r = slices(&shifted);
        disk.read_vectored_at(&r, offset).unwrap();
        let mut back = vec![0u8; total];
        let mut at = 0;
        for s in &r {
            s.copy_to(&mut back[at..at + s.len()]);
            at += s.len();
        }
        assert_eq!(back, data, "{pieces:?} at {offset}");
    }
    // Write-zeroes (fallocate or written zeroes) keeps the neighbours.
    disk.write_zeroes(100_000, 5000, false).unwrap();
    model[100_000..105_000].fill(0);
    disk.flush().unwrap();
    drop(disk);
    assert!(fs::read(&path).unwrap() == model);
}

#[test]
fn raw_writeback_is_buffered() {
    let dir = TempDir::new("wb");
    let path = dir.file("d.raw", MIB);
    let disk = storage::open_with_cache(&path, Format::Raw, false, CacheMode::Writeback).unwrap();
    assert!(!is_o_direct(disk.raw_fd().unwrap().as_raw_fd()));
    assert!(disk.direct_io().is_none());
    assert!(!disk.describe().contains("cache=none"));
}

#[test]
fn qcow2_cache_none_with_a_backing_file_moves_unaligned_requests() {
    let Some(dir) = direct_dir("qcow2_cache_none", "qcow2") else {
        return;
    };
    let base = dir.join("base.raw");
    let mut model = filled(&base, (4 * MIB) as usize, 9);
    let top = dir.join("top.qcow2");
    storage::create_qcow2(&top, 4 * MIB, Some(Path::new("base.raw"))).unwrap();
    {
        let disk = storage::open_with_cache(&top, Format::Auto, false, CacheMode::None).unwrap();
        assert_eq!(disk.format(), Format::Qcow2);
        let what = disk.describe();
        assert!(
            what.contains("cache=none") && what.contains("base.raw"),
            "{what}"
        );
        // Its own file is shared for direct I/O (map_direct), with that file's needs.
        assert!(disk.direct_io().is_some());
        assert!(is_o_direct(disk.raw_fd().unwrap().as_raw_fd()));
        write(&*disk, &mut model, &pattern(4096 + 1, 21)[1..], 65536);
        write(&*disk, &mut model, &pattern(777, 22), 200_001);
        write(&*disk, &mut model, &pattern(MIB as usize, 23), MIB + 512);
        disk.flush().unwrap();
        for (offset, len) in [(0, 4 * MIB as usize), (199_000, 3000), (65536, 4096)] {
            let o = offset as usize;
            assert_eq!(read(&*disk, offset, len, 1), &model[o..o + len]);
        }
    }
    // The same bytes through the page cache, and the base untouched.
    let disk = storage::open(&top, Format::Auto, true).unwrap();
    assert_eq!(read(&*disk, 0, 4 * MIB as usize, 0), model);
    assert_eq!(fs::read(&base).unwrap(), pattern((4 * MIB) as usize, 9));
}

/// A file system that refuses `O_DIRECT` outright: procfs (its files are regular files).
#[test]
fn a_file_system_without_direct_io_is_refused_with_a_hint() {
    let path = Path::new("/proc/self/stat");
    let err = storage::open_with_cache(path, Format::Raw, true, CacheMode::None).unwrap_err();
    assert!(matches!(err, StorageError::DirectIo { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("/proc/self/stat"), "{msg}");
    assert!(msg.contains("use cache=writeback"), "{msg}");
    assert!(!msg.contains('\n'));
}

/// tmpfs refused `O_DIRECT` (EINVAL) before Linux 6.6; newer kernels take it.
#[test]
fn tmpfs_is_refused_where_it_has_no_direct_io() {
    let dir = Path::new("/dev/shm");
    if !dir.is_dir() {
        println!("tmpfs_is_refused: SKIPPED (no /dev/shm)");
        return;
    }
    let t = TempDir::new_in(dir, "tmpfs");
    let path = t.file("d.raw", MIB);
    match storage::open_with_cache(&path, Format::Raw, false, CacheMode::None) {
        Err(e) => {
            assert!(matches!(e, StorageError::DirectIo { .. }), "{e:?}");
            assert!(e.to_string().contains("cache=writeback"), "{e}");
        }
        Ok(disk) => {
            // This kernel's tmpfs does O_DIRECT; it must then work like any other.
            println!("tmpfs_is_refused: SKIPPED (this kernel's tmpfs takes O_DIRECT)");
            disk.write_at(&pattern(1000, 1), 333).unwrap();
            assert_eq!(read(&*disk, 333, 1000, 1), pattern(1000, 1));
        }
    }
}
