//! Raw images through `storage::open`: round trips, range checks, read-only, discard,
//! write-zeroes, vectored I/O into guest memory, locking, probing.

mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use common::{pattern, sha256_file, TempDir};
use storage::{DiskImage, Format, StorageError};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

const MIB: u64 = 1 << 20;

fn open_rw(path: &std::path::Path) -> Box<dyn DiskImage> {
    storage::open(path, Format::Raw, false).unwrap()
}

#[test]
fn write_flush_reopen_read_back() {
    let dir = TempDir::new("raw-rt");
    let path = dir.file("d.raw", 4 * MIB);
    let data = pattern(100_000, 7);
    {
        let disk = open_rw(&path);
        assert_eq!(disk.size(), 4 * MIB);
        assert_eq!(disk.format(), Format::Raw);
        assert!(!disk.read_only());
        assert!(disk.describe().contains("d.raw"), "{}", disk.describe());
        disk.write_at(&data, 12_345).unwrap();
        disk.write_at(&data[..512], 4 * MIB - 512).unwrap();
        disk.flush().unwrap();
    }
    let disk = storage::open(&path, Format::Auto, true).unwrap();
    let mut buf = vec![0u8; data.len()];
    disk.read_at(&mut buf, 12_345).unwrap();
    assert_eq!(buf, data);
    let mut tail = [0u8; 512];
    disk.read_at(&mut tail, 4 * MIB - 512).unwrap();
    assert_eq!(&tail[..], &data[..512]);
    let mut head = [1u8; 100];
    disk.read_at(&mut head, 0).unwrap();
    assert!(head.iter().all(|b| *b == 0));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * MIB);
}

#[test]
fn requests_outside_the_disk_are_refused_and_nothing_is_written() {
    let dir = TempDir::new("raw-range");
    let path = dir.file("d.raw", MIB);
    let disk = open_rw(&path);
    let mut buf = [0u8; 512];
    let bad = [
        (MIB, 1u64),
        (MIB - 511, 512),
        (u64::MAX, 512),
        (u64::MAX - 100, 512),
    ];
    for (offset, len) in bad {
        let len_usize = len as usize;
        let e = disk.read_at(&mut buf[..len_usize], offset).unwrap_err();
        assert!(matches!(e, StorageError::OutOfRange { .. }), "{e}");
        assert!(e.is_guest_error());
        let e = disk.write_at(&buf[..len_usize], offset).unwrap_err();
        assert!(matches!(e, StorageError::OutOfRange { .. }), "{e}");
        let e = disk.discard(offset, len).unwrap_err();
        assert!(matches!(e, StorageError::OutOfRange { .. }), "{e}");
        let e = disk.write_zeroes(offset, len, true).unwrap_err();
        assert!(matches!(e, StorageError::OutOfRange { .. }), "{e}");
    }
    let e = disk.discard(0, u64::MAX).unwrap_err();
    assert!(matches!(e, StorageError::OutOfRange { .. }), "{e}");
    let e = disk.write_zeroes(1, u64::MAX, false).unwrap_err();
    assert!(matches!(e, StorageError::OutOfRange { .. }), "{e}");
    // Zero-length requests at the very end are fine.
    disk.read_at(&mut [], MIB).unwrap();
    disk.write_at(&[], MIB).unwrap();
    disk.flush().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), MIB);
}

#[test]
fn read_only_disks_refuse_writes() {
    let dir = TempDir::new("raw-ro");
    let path = dir.file("d.raw", MIB);
    std::fs::write(&path, pattern(MIB as usize, 3)).unwrap();
    let before = sha256_file(&path);
    let disk = storage::open(&path, Format::Raw, true).unwrap();
    assert!(disk.read_only());
    for e in [
        disk.write_at(&[1; 512], 0).unwrap_err(),
        disk.discard(0, 4096).unwrap_err(),
        disk.write_zeroes(0, 4096, false).unwrap_err(),
        disk.write_zeroes(0, 4096, true).unwrap_err(),
    ] {
        assert!(matches!(e, StorageError::ReadOnly), "{e}");
    }
    disk.flush().unwrap();
    let mut buf = vec![0u8; 4096];
    disk.read_at(&mut buf, 8192).unwrap();
    assert_eq!(buf, pattern(MIB as usize, 3)[8192..12288]);
    drop(disk);
    assert_eq!(sha256_file(&path), before);
}

#[test]
fn discard_punches_holes_and_keeps_the_rest() {
    let dir = TempDir::new("raw-discard");
    let path = dir.file("d.raw", 4 * MIB);
    let disk = open_rw(&path);
    let data = pattern(4 * MIB as usize, 9);
    disk.write_at(&data, 0).unwrap();
    disk.flush().unwrap();
    let blocks_before = std::fs::metadata(&path).unwrap().blocks();
    disk.discard(MIB, 2 * MIB).unwrap();
    disk.flush().unwrap();
    let blocks_after = std::fs::metadata(&path).unwrap().blocks();
    // Holes where the file system can punch them (ext4, xfs, tmpfs, btrfs).
    assert!(
        blocks_after < blocks_before,
        "{blocks_after} < {blocks_before}"
    );
    let mut buf = vec![0u8; 4 * MIB as usize];
    disk.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..MIB as usize], &data[..MIB as usize]);
    assert!(buf[MIB as usize..3 * MIB as usize].iter().all(|b| *b == 0));
    assert_eq!(&buf[3 * MIB as usize..], &data[3 * MIB as usize..]);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * MIB);
}

#[test]
fn write_zeroes_zeroes_exactly_the_range_in_both_modes() {
    let dir = TempDir::new("raw-zero");
    let path = dir.file("d.raw", 2 * MIB);
    let disk = open_rw(&path);
    let data = pattern(2 * MIB as usize, 1);
    for may_unmap in [false, true] {
        disk.write_at(&data, 0).unwrap();
        // Unaligned on purpose.
        disk.write_zeroes(1000, 300_000, may_unmap).unwrap();
        let mut buf = vec![0u8; data.len()];
        disk.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..1000], &data[..1000]);
        assert!(buf[1000..301_000].iter().all(|b| *b == 0), "{may_unmap}");
        assert_eq!(&buf[301_000..], &data[301_000..]);
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * MIB);
}

/// Guest memory with three separate buffers (not adjacent in guest-physical space).
fn guest() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
}

fn slices(mem: &GuestMemoryMmap) -> Vec<VolatileSlice<'_>> {
    [(0x1000u64, 512usize), (0x8000, 4096), (0x20000, 1536)]
        .iter()
        .map(|(a, l)| mem.get_slice(GuestAddress(*a), *l).unwrap())
        .collect()
}

#[test]
fn vectored_io_moves_guest_buffers_in_order() {
    let dir = TempDir::new("raw-vec");
    let path = dir.file("d.raw", MIB);
    let disk = open_rw(&path);
    let mem = guest();
    let data = pattern(6144, 5);
    mem.write_slice(&data[..512], GuestAddress(0x1000)).unwrap();
    mem.write_slice(&data[512..4608], GuestAddress(0x8000))
        .unwrap();
    mem.write_slice(&data[4608..], GuestAddress(0x20000))
        .unwrap();
    disk.write_vectored_at(&slices(&mem), 3 * 512).unwrap();
    let mut buf = vec![0u8; 6144];
    disk.read_at(&mut buf, 3 * 512).unwrap();
    assert_eq!(buf, data);

    let other = pattern(6144, 77);
    disk.write_at(&other, 8192).unwrap();
    disk.read_vectored_at(&slices(&mem), 8192).unwrap();
    let mut got = vec![0u8; 6144];
    mem.read_slice(&mut got[..512], GuestAddress(0x1000))
        .unwrap();
    mem.read_slice(&mut got[512..4608], GuestAddress(0x8000))
        .unwrap();
    mem.read_slice(&mut got[4608..], GuestAddress(0x20000))
        .unwrap();
    assert_eq!(got, other);

    let e = disk
        .read_vectored_at(&slices(&mem), MIB - 4096)
        .unwrap_err();
    assert!(
        matches!(e, StorageError::OutOfRange { len: 6144, .. }),
        "{e}"
    );
    let e = disk
        .write_vectored_at(&slices(&mem), MIB - 4096)
        .unwrap_err();
    assert!(matches!(e, StorageError::OutOfRange { .. }), "{e}");
}

#[test]
fn threads_share_one_disk() {
    let dir = TempDir::new("raw-threads");
    let path = dir.file("d.raw", 8 * MIB);
    let disk: Arc<dyn DiskImage> = Arc::from(open_rw(&path));
    let handles: Vec<_> = (0..4u8)
        .map(|t| {
            let disk = Arc::clone(&disk);
            std::thread::spawn(move || {
                for i in 0..64u64 {
                    let off = (i * 4 + t as u64) * 4096;
                    disk.write_at(&pattern(4096, t ^ i as u8), off).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for t in 0..4u8 {
        for i in 0..64u64 {
            let mut buf = vec![0u8; 4096];
            disk.read_at(&mut buf, (i * 4 + t as u64) * 4096).unwrap();
            assert_eq!(buf, pattern(4096, t ^ i as u8));
        }
    }
}

#[test]
fn writable_images_are_locked_against_a_second_opener() {
    let dir = TempDir::new("raw-lock");
    let path = dir.file("d.raw", MIB);
    let rw = open_rw(&path);
    let e = storage::open(&path, Format::Raw, false).unwrap_err();
    assert!(matches!(e, StorageError::Locked { .. }), "{e}");
    let e = storage::open(&path, Format::Raw, true).unwrap_err();
    assert!(matches!(e, StorageError::Locked { .. }), "{e}");
    drop(rw);
    let ro1 = storage::open(&path, Format::Raw, true).unwrap();
    let _ro2 = storage::open(&path, Format::Raw, true).unwrap();
    let e = storage::open(&path, Format::Raw, false).unwrap_err();
    assert!(matches!(e, StorageError::Locked { .. }), "{e}");
    // Probing needs no lock.
    assert_eq!(storage::probe(&path).unwrap(), Format::Raw);
    drop(ro1);
}

#[test]
fn open_errors_are_clear() {
    let dir = TempDir::new("raw-errors");
    let missing = dir.join("missing.raw");
    let e = storage::open(&missing, Format::Auto, false).unwrap_err();
    match &e {
        StorageError::Open { path, source } => {
            assert_eq!(path, &missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("missing.raw"));

    let e = storage::open(dir.path(), Format::Raw, true).unwrap_err();
    assert!(matches!(e, StorageError::Open { .. }), "{e}");

    let odd = dir.file("odd.raw", 513);
    let e = storage::open(&odd, Format::Auto, false).unwrap_err();
    assert!(matches!(e, StorageError::RawSize { size: 513, .. }), "{e}");
}

#[test]
fn a_qcow2_magic_is_never_served_as_raw_unless_forced() {
    let dir = TempDir::new("raw-probe");
    let path = dir.file("fake.img", MIB);
    let mut head = vec![0u8; 512];
    head[..4].copy_from_slice(&storage::QCOW2_MAGIC);
    head[4..8].copy_from_slice(&3u32.to_be_bytes());
    let mut data = head.clone();
    data.resize(MIB as usize, 0);
    std::fs::write(&path, &data).unwrap();

    assert_eq!(storage::probe(&path).unwrap(), Format::Qcow2);
    // Auto: it claims to be qcow2, its header is garbage: an error, not a raw disk.
    let e = storage::open(&path, Format::Auto, true).unwrap_err();
    assert!(
        matches!(e, StorageError::InvalidQcow2 { .. }),
        "{e}: {:?}",
        std::error::Error::source(&e)
    );
    // Forced raw: the user knows best.
    let disk = storage::open(&path, Format::Raw, true).unwrap();
    let mut buf = vec![0u8; 512];
    disk.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, head);

    // And a raw file asked to be qcow2 is refused.
    let raw = dir.file("plain.raw", MIB);
    let e = storage::open(&raw, Format::Qcow2, true).unwrap_err();
    assert!(matches!(e, StorageError::NotQcow2 { .. }), "{e}");
    // Shorter than the magic: raw.
    let tiny = dir.file("tiny.raw", 0);
    assert_eq!(storage::probe(&tiny).unwrap(), Format::Raw);
}

#[test]
fn create_raw_makes_a_sparse_disk_of_the_size() {
    let dir = TempDir::new("raw-create");
    let path = dir.join("new.raw");
    storage::create_raw(&path, 64 * MIB).unwrap();
    let disk = storage::open(&path, Format::Auto, false).unwrap();
    assert_eq!(disk.size(), 64 * MIB);
    assert_eq!(disk.format(), Format::Raw);
    drop(disk);
    let e = storage::create_raw(&path, MIB).unwrap_err();
    assert!(matches!(e, StorageError::Create { .. }), "{e}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 * MIB);
    for size in [0, 1000] {
        let e = storage::create_raw(&dir.join("bad.raw"), size).unwrap_err();
        assert!(matches!(e, StorageError::CreateSize { .. }), "{e}");
    }
}
