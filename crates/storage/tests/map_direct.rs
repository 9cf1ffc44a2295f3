//! `DiskImage::map_direct`: where a request's bytes lie in the image's own file, for I/O that
//! bypasses the image (virtio-blk's io_uring path), and the leases that keep those places from
//! moving while such I/O is in flight.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{pattern, TempDir};
use storage::{DiskImage, Format};

const MIB: u64 = 1 << 20;

fn open(path: &Path, read_only: bool) -> Arc<dyn DiskImage> {
    Arc::from(storage::open(path, Format::Auto, read_only).unwrap())
}

/// The image's own file, as the io_uring path sees it.
fn fd_file(disk: &dyn DiskImage) -> File {
    File::from(disk.raw_fd().unwrap().try_clone_to_owned().unwrap())
}

#[test]
fn a_raw_disk_maps_each_byte_to_itself() {
    let dir = TempDir::new("md-raw");
    let path = dir.file("d.raw", 4 * MIB);
    let disk = open(&path, false);
    let m = disk.map_direct(8192, 4096, true).unwrap();
    assert_eq!(m.offset, 8192);
    assert!(m.lease.is_none());
    assert!(disk.map_direct(4 * MIB - 512, 1024, false).is_none());
    assert!(disk.map_direct(u64::MAX - 10, 4096, false).is_none());
    drop(disk);
    let ro = open(&path, true);
    assert!(ro.map_direct(0, 4096, false).is_some());
    assert!(ro.map_direct(0, 4096, true).is_none());
}

#[test]
fn qcow2_maps_only_allocated_contiguous_clusters_of_its_own_file() {
    let dir = TempDir::new("md-q");
    let path = dir.join("d.qcow2");
    storage::create_qcow2(&path, 64 * MIB, None).unwrap();
    let disk = open(&path, false);
    // Nothing allocated: reads are zeroes, writes allocate; both through the image.
    assert!(disk.map_direct(MIB, 4096, false).is_none());
    assert!(disk.map_direct(MIB, 4096, true).is_none());

    let data = pattern(4096, 7);
    disk.write_at(&data, MIB + 4096).unwrap();
    let m = disk.map_direct(MIB + 4096, 4096, false).unwrap();
    assert!(m.lease.is_some());
    let file = fd_file(&*disk);
    let mut seen = vec![0u8; 4096];
    file.read_exact_at(&mut seen, m.offset).unwrap();
    assert_eq!(seen, data, "the mapping points at the data");

    // Written there directly, read through the image.
    let w = disk.map_direct(MIB, 4096, true).unwrap();
    assert_eq!(
        w.offset + 4096,
        m.offset,
        "same cluster, in-cluster offsets kept"
    );
    let direct = pattern(4096, 9);
    file.write_all_at(&direct, w.offset).unwrap();
    let mut back = vec![0u8; 4096];
    disk.read_at(&mut back, MIB).unwrap();
    assert_eq!(back, direct);

    // A range running into an unallocated cluster is not in one piece.
    let cluster = disk.discard_alignment();
    assert!(disk.map_direct(MIB + cluster - 4096, 8192, false).is_none());
    // Nor one outside the disk.
    assert!(disk.map_direct(64 * MIB - 4096, 8192, false).is_none());
    drop((m, w));

    // Read-only: reads map, writes do not.
    drop((disk, file));
    let ro = open(&path, true);
    assert!(ro.map_direct(MIB, 4096, false).is_some());
    assert!(ro.map_direct(MIB, 4096, true).is_none());
}

#[test]
fn qcow2_overlays_map_their_own_clusters_but_never_the_base() {
    let dir = TempDir::new("md-ov");
    let base = dir.join("base.qcow2");
    storage::create_qcow2(&base, 16 * MIB, None).unwrap();
    open(&base, false).write_at(&pattern(65536, 1), 0).unwrap();
    let top = dir.join("top.qcow2");
    storage::create_qcow2(&top, 16 * MIB, Some(&base)).unwrap();
    let disk = open(&top, false);
    // The base's data is read through the image (another file), and a write must copy first.
    assert!(disk.map_direct(0, 4096, false).is_none());
    assert!(disk.map_direct(0, 4096, true).is_none());
    disk.write_at(&pattern(4096, 2), 0).unwrap();
    assert!(disk.map_direct(0, 4096, true).is_some());
    let mut rest = vec![0u8; 4096];
    disk.read_at(&mut rest, 4096).unwrap();
    assert_eq!(rest, pattern(65536, 1)[4096..8192], "copied on write");
}

#[test]
fn a_qcow2_discard_waits_for_the_leases_out_and_refuses_new_ones() {
    let dir = TempDir::new("md-lease");
    let path = dir.join("d.qcow2");
    storage::create_qcow2(&path, 16 * MIB, None).unwrap();
    let disk = open(&path, false);
    disk.write_at(&pattern(2 * 65536, 3), 0).unwrap();
    let held = disk.map_direct(0, 4096, true).unwrap();

    let (tx, rx) = mpsc::channel();
    let d2 = Arc::clone(&disk);
    let discarder = thread::spawn(move || {
        d2.discard(0, 65536).unwrap();
        tx.send(()).unwrap();
    });
    // The discard cannot free the cluster while its place is leased out.
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    // Meanwhile the image serves requests itself, and hands out no new places.
    assert!(disk.map_direct(65536, 4096, false).is_none());
    let mut buf = vec![0u8; 4096];
    disk.read_at(&mut buf, 65536).unwrap();
    assert_eq!(buf, pattern(2 * 65536, 3)[65536..65536 + 4096]);

    drop(held);
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    discarder.join().unwrap();
    // Discarded: zeroes, no place; the other cluster maps again.
    assert!(disk.map_direct(0, 4096, false).is_none());
    disk.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert!(disk.map_direct(65536, 4096, false).is_some());
}

#[test]
fn write_zeroes_waits_for_the_leases_out_too() {
    let dir = TempDir::new("md-wz");
    let path = dir.join("d.qcow2");
    storage::create_qcow2(&path, 16 * MIB, None).unwrap();
    let disk = open(&path, false);
    disk.write_at(&pattern(65536, 5), 0).unwrap();
    let held = disk.map_direct(0, 4096, false).unwrap();
    let (tx, rx) = mpsc::channel();
    let d2 = Arc::clone(&disk);
    let zeroer = thread::spawn(move || {
        d2.write_zeroes(0, 65536, false).unwrap();
        tx.send(()).unwrap();
    });
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    drop(held);
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    zeroer.join().unwrap();
    let mut buf = vec![1u8; 4096];
    disk.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}
