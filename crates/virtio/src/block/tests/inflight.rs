//! Requests in flight through io_uring: completion out of order, flush
//! after what is in flight, pause and reset with I/O running, short
//! transfers; and the same traffic through both engines.
//!
//! [`SocketDisk`] is a "raw image" whose descriptor is one end of a
//! datagram socket pair: a read completes when the test sends a datagram,
//! a write sends one (and waits when the peer's queue is full). So the test
//! decides when requests finish. Sockets take offset 0 only: every request
//! here is at sector 0.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use super::*;

/// Bytes of the socket disk (its reads all go to sector 0).
const SOCK_DISK: u64 = 1 << 20;
/// What the disk's synchronous read gives (the rest of a short read).
const SYNC_FILL: u8 = 0xab;

#[derive(Debug)]
struct SocketDisk {
    sock: UnixDatagram,
    flushes: AtomicU32,
}

impl DiskImage for SocketDisk {
    fn format(&self) -> Format {
        Format::Raw
    }
    fn size(&self) -> u64 {
        SOCK_DISK
    }
    fn read_only(&self) -> bool {
        false
    }
    fn discard_alignment(&self) -> u64 {
        4096
    }
    fn describe(&self) -> String {
        "socket".into()
    }
    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.sock.as_fd())
    }
    fn read_at(&self, buf: &mut [u8], _offset: u64) -> Result<(), StorageError> {
        buf.fill(SYNC_FILL);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), StorageError> {
        Err(StorageError::Write {
            offset,
            len: buf.len() as u64,
            source: std::io::Error::from_raw_os_error(libc::EIO),
        })
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn discard(&self, _offset: u64, _len: u64) -> Result<(), StorageError> {
        Ok(())
    }
    fn write_zeroes(&self, _offset: u64, _len: u64, _unmap: bool) -> Result<(), StorageError> {
        Ok(())
    }
}

/// A socket disk, the test's end of it, and a driver with a queue of
/// `size` on it; skips nothing: io_uring must work on the test machine.
fn socket_driver(size: u16) -> (TestDriver, Arc<SocketDisk>, UnixDatagram) {
    let (dev_end, peer) = UnixDatagram::pair().unwrap();
    peer.set_read_timeout(Some(TIMEOUT)).unwrap();
    let disk = Arc::new(SocketDisk {
        sock: dev_end,
        flushes: AtomicU32::new(0),
    });
    let block = Block::new(disk.clone(), BlockOptions::new("sock")).unwrap();
    assert_eq!(block.io_engine(), IoEngine::IoUring, "io_uring unavailable");
    let mut d = TestDriver::new(Box::new(block));
    d.enable_msix();
    d.init(ALL | RING_EVENT_IDX).unwrap();
    d.setup_queue(0, size);
    d.driver_ok();
    (d, disk, peer)
}

/// The used ring's heads from `from` to `to`.
fn heads(d: &mut TestDriver, from: u16, to: u16) -> Vec<u32> {
    d.wait_used(0, from, to).iter().map(|u| u.0).collect()
}

/// Checks for a while that the used ring stays at `idx`.
fn stays(d: &TestDriver, idx: u16) {
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(d.queues[&0].used_idx(&d.mem), idx, "used ring moved");
}

#[test]
fn engines_are_chosen_by_image_and_option() {
    let dir = TempDir::new("engine");
    let raw = raw_disk(&dir, 1 << 20, false);
    let b = Block::new(raw.clone(), BlockOptions::new("d")).unwrap();
    assert_eq!(b.io_engine(), IoEngine::IoUring);
    assert!(b.describe().ends_with(", io_uring"), "{}", b.describe());
    let opts = BlockOptions {
        io_uring: false,
        ..BlockOptions::new("d")
    };
    assert_eq!(Block::new(raw, opts).unwrap().io_engine(), IoEngine::Sync);
    let path = dir.path("d.qcow2");
    storage::create_qcow2(&path, 1 << 20, None).unwrap();
    let qcow2: Arc<dyn DiskImage> = storage::open(&path, Format::Qcow2, false).unwrap().into();
    let b = Block::new(qcow2, BlockOptions::new("q")).unwrap();
    assert_eq!(
        b.io_engine(),
        IoEngine::IoUring,
        "qcow2 too (allocated clusters)"
    );
    let mock = MockDisk::new(4096, false);
    let b = Block::new(mock, BlockOptions::new("m")).unwrap();
    assert_eq!(b.io_engine(), IoEngine::Sync);
}

#[test]
fn many_requests_in_flight_complete_out_of_order() {
    let (mut d, _, peer) = socket_driver(64);
    // Eight reads wait for data; a GET_ID and a write behind them finish
    // at once.
    let reads: Vec<Req> = (0..8)
        .map(|i| submit(&mut d, 0, i * 3, VIRTIO_BLK_T_IN, 0, Data::In(4096)))
        .collect();
    let id = submit(&mut d, 0, 24, VIRTIO_BLK_T_GET_ID, 0, Data::In(20));
    let data = pattern(4096, 42);
    let w = submit(&mut d, 0, 27, VIRTIO_BLK_T_OUT, 0, Data::Out(&data));
    d.kick(0);
    let mut first = heads(&mut d, 0, 2);
    first.sort_unstable();
    assert_eq!(first, vec![24, 27], "GET_ID and the write first");
    assert_eq!((status_of(&d, &id), status_of(&d, &w)), (OK, OK));
    // The driver hears of them while the reads are still in flight.
    d.wait_queue_irq(0);
    let mut got = vec![0u8; 8192];
    assert_eq!(peer.recv(&mut got).unwrap(), 4096);
    assert_eq!(&got[..4096], &data[..]);
    stays(&d, 2);
    assert!(reads.iter().all(|r| status_of(&d, r) == SENTINEL));
    // Each datagram completes one read, whichever the kernel picks.
    for i in 0..8u8 {
        peer.send(&pattern(4096, 100 + i)).unwrap();
    }
    let mut rest = heads(&mut d, 2, 10);
    rest.sort_unstable();
    assert_eq!(rest, (0..8).map(|i| i * 3).collect::<Vec<u32>>());
    let mut seen: Vec<u8> = reads
        .iter()
        .map(|r| {
            assert_eq!(status_of(&d, r), OK);
            let got = d.read_guest(r.data, 4096);
            let seed = got[0];
            assert_eq!(got, pattern(4096, seed));
            seed
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (100..108).collect::<Vec<u8>>());
    assert_eq!(d.status() & S_NEEDS_RESET, 0);
}

#[test]
fn a_flush_completes_after_the_writes_in_flight_and_holds_later_chains() {
    let (mut d, disk, peer) = socket_driver(256);
    // More datagrams than the peer's queue takes: the last writes wait.
    let n = 64u16;
    for i in 0..n {
        submit(
            &mut d,
            0,
            i * 3,
            VIRTIO_BLK_T_OUT,
            0,
            Data::Out(&pattern(4096, i as u8)),
        );
    }
    let flush = submit(&mut d, 0, n * 3, VIRTIO_BLK_T_FLUSH, 0, Data::None);
    let id = submit(&mut d, 0, n * 3 + 3, VIRTIO_BLK_T_GET_ID, 0, Data::In(20));
    d.kick(0);
    std::thread::sleep(Duration::from_millis(100));
    let done = d.queues[&0].used_idx(&d.mem);
    assert!(
        done < n,
        "all {done} writes went through: nothing in flight"
    );
    assert_eq!(disk.flushes.load(Ordering::SeqCst), 0, "flushed too early");
    assert_eq!(status_of(&d, &flush), SENTINEL);
    assert_eq!(status_of(&d, &id), SENTINEL, "a chain after the flush ran");
    // The peer takes every datagram: the writes finish, then the flush,
    // then the GET_ID.
    let mut buf = vec![0u8; 8192];
    for _ in 0..n {
        assert_eq!(peer.recv(&mut buf).unwrap(), 4096);
    }
    let order = heads(&mut d, 0, n + 2);
    let pos = |head: u16| order.iter().position(|&h| h == u32::from(head)).unwrap();
    assert_eq!(pos(n * 3), usize::from(n), "flush after every write");
    assert_eq!(pos(n * 3 + 3), usize::from(n) + 1);
    assert_eq!((status_of(&d, &flush), status_of(&d, &id)), (OK, OK));
    assert_eq!(disk.flushes.load(Ordering::SeqCst), 1);
}

#[test]
fn discards_and_write_zeroes_wait_for_the_requests_in_flight() {
    // (They may free qcow2 clusters that requests in flight were given.)
    let (mut d, _, peer) = socket_driver(64);
    let reads: Vec<Req> = (0..4)
        .map(|i| submit(&mut d, 0, i * 3, VIRTIO_BLK_T_IN, 0, Data::In(512)))
        .collect();
    let ranges = [(8, 8, 0)];
    let discard = submit(
        &mut d,
        0,
        12,
        VIRTIO_BLK_T_DISCARD,
        0,
        Data::Ranges(&ranges),
    );
    let id = submit(&mut d, 0, 15, VIRTIO_BLK_T_GET_ID, 0, Data::In(20));
    d.kick(0);
    stays(&d, 0);
    assert_eq!(
        status_of(&d, &discard),
        SENTINEL,
        "discarded with reads in flight"
    );
    assert_eq!(
        status_of(&d, &id),
        SENTINEL,
        "a chain after the discard ran"
    );
    for i in 0..4u8 {
        peer.send(&[i; 512]).unwrap();
    }
    let order = heads(&mut d, 0, 6);
    assert_eq!(&order[4..], &[12, 15], "the discard after the reads");
    assert!(reads.iter().all(|r| status_of(&d, r) == OK));
    assert_eq!((status_of(&d, &discard), status_of(&d, &id)), (OK, OK));
    // Write-zeroes the same way.
    let r = submit(&mut d, 0, 0, VIRTIO_BLK_T_IN, 0, Data::In(512));
    let wz = submit(
        &mut d,
        0,
        3,
        VIRTIO_BLK_T_WRITE_ZEROES,
        0,
        Data::Ranges(&ranges),
    );
    d.kick(0);
    stays(&d, 6);
    assert_eq!(status_of(&d, &wz), SENTINEL);
    peer.send(&[9; 512]).unwrap();
    assert_eq!(heads(&mut d, 6, 8), vec![0, 3]);
    assert_eq!((status_of(&d, &r), status_of(&d, &wz)), (OK, OK));
}

#[test]
fn pause_waits_for_the_requests_in_flight_and_answers_them() {
    let (mut d, _, peer) = socket_driver(16);
    let reads: Vec<Req> = (0..2)
        .map(|i| submit(&mut d, 0, i * 3, VIRTIO_BLK_T_IN, 0, Data::In(512)))
        .collect();
    d.kick(0);
    stays(&d, 0);
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        peer.send(&[1; 512]).unwrap();
        peer.send(&[2; 512]).unwrap();
        peer
    });
    let start = Instant::now();
    d.dev().pause().unwrap();
    assert!(start.elapsed() >= Duration::from_millis(90));
    // Answered before the pause returned: nothing left running.
    assert_eq!(d.queues[&0].used_idx(&d.mem), 2);
    assert!(reads.iter().all(|r| status_of(&d, r) == OK));
    let peer = sender.join().unwrap();
    // Paused: a new request waits, then runs on resume.
    let r = submit(&mut d, 0, 6, VIRTIO_BLK_T_IN, 0, Data::In(512));
    d.kick(0);
    peer.send(&[3; 512]).unwrap();
    stays(&d, 2);
    d.dev().resume().unwrap();
    d.wait_used(0, 2, 3);
    assert_eq!(d.read_guest(r.data, 512), vec![3; 512]);
}

#[test]
fn reset_cancels_the_requests_in_flight_without_answering_them() {
    let (mut d, _, peer) = socket_driver(16);
    let reads: Vec<Req> = (0..4)
        .map(|i| submit(&mut d, 0, i * 3, VIRTIO_BLK_T_IN, 0, Data::In(512)))
        .collect();
    d.kick(0);
    stays(&d, 0);
    let layout = d.queues[&0];
    let start = Instant::now();
    d.reset();
    assert!(start.elapsed() < Duration::from_secs(2), "reset waited");
    assert!(!d.dev().state().active);
    assert_eq!(layout.used_idx(&d.mem), 0);
    assert!(reads.iter().all(|r| status_of(&d, r) == SENTINEL));
    // The cancelled reads took no data: the next read gets it.
    d.init(ALL).unwrap();
    d.setup_queue(0, 16);
    d.driver_ok();
    let r = submit(&mut d, 0, 0, VIRTIO_BLK_T_IN, 0, Data::In(512));
    d.kick(0);
    peer.send(&[9; 512]).unwrap();
    d.wait_used(0, 0, 1);
    assert_eq!(status_of(&d, &r), OK);
    assert_eq!(d.read_guest(r.data, 512), vec![9; 512]);
    assert!(reads.iter().all(|r| status_of(&d, r) == SENTINEL));
}

#[test]
fn dropping_the_device_with_requests_in_flight_cancels_them() {
    let (mut d, disk, _peer) = socket_driver(16);
    for i in 0..4 {
        submit(&mut d, 0, i * 3, VIRTIO_BLK_T_IN, 0, Data::In(512));
    }
    d.kick(0);
    stays(&d, 0);
    let start = Instant::now();
    drop(d);
    assert!(start.elapsed() < Duration::from_secs(2));
    // Only the test holds the disk now: nothing of the device is left.
    assert_eq!(Arc::strong_count(&disk), 1);
}

#[test]
fn short_and_failed_transfers() {
    let (mut d, _, peer) = socket_driver(16);
    // A datagram shorter than the read: the rest comes from the
    // synchronous path.
    let r = submit(&mut d, 0, 0, VIRTIO_BLK_T_IN, 0, Data::In(2048));
    d.kick(0);
    peer.send(&[7; 512]).unwrap();
    let used = d.wait_used(0, 0, 1);
    assert_eq!(used, vec![(0, 2049)]);
    assert_eq!(status_of(&d, &r), OK);
    let got = d.read_guest(r.data, 2048);
    assert_eq!(&got[..512], &[7; 512]);
    assert!(got[512..].iter().all(|&b| b == SYNC_FILL));
    // The kernel refuses (a socket has no offset 4096): IOERR, and the
    // queue goes on.
    let r = submit(&mut d, 0, 3, VIRTIO_BLK_T_IN, 8, Data::In(512));
    d.kick(0);
    d.wait_used(0, 1, 2);
    assert_eq!(status_of(&d, &r), IOERR);
    assert_eq!(d.read_guest(r.data, 512), vec![SENTINEL; 512]);
    let r = submit(&mut d, 0, 6, VIRTIO_BLK_T_IN, 0, Data::In(512));
    d.kick(0);
    peer.send(&[8; 512]).unwrap();
    d.wait_used(0, 2, 3);
    assert_eq!(status_of(&d, &r), OK);
    assert_eq!(d.status() & S_NEEDS_RESET, 0);
}

/// A mixed workload on a raw file: 48 writes at once, reads of them back
/// at once, a flush, a read past the end; the file's bytes, the statuses
/// and the counters.
fn mixed_workload(io_uring: bool) -> (Vec<u8>, [u64; 8]) {
    let dir = TempDir::new("mixed");
    let disk = raw_disk(&dir, 1 << 20, false);
    let stats = Arc::new(BlockStats::default());
    let opts = BlockOptions {
        io_uring,
        ..BlockOptions::new("mixed")
    };
    let block = Block::with_stats(disk, opts, stats.clone()).unwrap();
    let engine = if io_uring {
        IoEngine::IoUring
    } else {
        IoEngine::Sync
    };
    assert_eq!(block.io_engine(), engine);
    let mut d = TestDriver::new(Box::new(block));
    d.enable_msix();
    d.init(ALL | RING_EVENT_IDX).unwrap();
    d.setup_queue(0, 256);
    d.driver_ok();
    let n = 48u16;
    let writes: Vec<Req> = (0..n)
        .map(|i| {
            let data = pattern(4096 + 512 * usize::from(i % 3), i as u8);
            submit(
                &mut d,
                0,
                i * 3,
                VIRTIO_BLK_T_OUT,
                u64::from(i) * 16,
                Data::Out(&data),
            )
        })
        .collect();
    d.kick(0);
    d.wait_used(0, 0, n);
    assert!(writes.iter().all(|r| status_of(&d, r) == OK));
    let reads: Vec<Req> = (0..n)
        .map(|i| {
            let len = 4096 + 512 * u32::from(i % 3);
            submit(
                &mut d,
                0,
                i * 3,
                VIRTIO_BLK_T_IN,
                u64::from(i) * 16,
                Data::In(len),
            )
        })
        .collect();
    let flush = submit(&mut d, 0, n * 3, VIRTIO_BLK_T_FLUSH, 0, Data::None);
    let past = submit(&mut d, 0, n * 3 + 3, VIRTIO_BLK_T_IN, 2048, Data::In(512));
    d.kick(0);
    d.wait_used(0, n, 2 * n + 2);
    for (i, r) in reads.iter().enumerate() {
        assert_eq!(status_of(&d, r), OK);
        let want = pattern(r.data_len as usize, i as u8);
        assert_eq!(d.read_guest(r.data, r.data_len as usize), want, "read {i}");
    }
    assert_eq!((status_of(&d, &flush), status_of(&d, &past)), (OK, IOERR));
    let s = &stats;
    let counters = [
        s.read_ops.load(Ordering::Relaxed),
        s.read_bytes.load(Ordering::Relaxed),
        s.write_ops.load(Ordering::Relaxed),
        s.write_bytes.load(Ordering::Relaxed),
        s.flush_ops.load(Ordering::Relaxed),
        s.discard_ops.load(Ordering::Relaxed),
        s.write_zeroes_ops.load(Ordering::Relaxed),
        s.errors.load(Ordering::Relaxed),
    ];
    drop(d);
    (std::fs::read(dir.path("disk.raw")).unwrap(), counters)
}

#[test]
fn both_engines_give_the_same_disk_and_counters() {
    let (uring_file, uring_stats) = mixed_workload(true);
    let (sync_file, sync_stats) = mixed_workload(false);
    assert!(uring_file == sync_file, "the engines wrote different bytes");
    let bytes: u64 = (0..48u64).map(|i| 4096 + 512 * (i % 3)).sum();
    assert_eq!(uring_stats, [48, bytes, 48, bytes, 1, 0, 0, 1]);
    assert_eq!(sync_stats, uring_stats);
}
