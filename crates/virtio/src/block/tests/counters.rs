//! The disk's request counters ([`BlockStats`]) after known traffic.

use super::*;

fn snapshot(s: &BlockStats) -> [u64; 8] {
    [
        s.read_ops.load(Ordering::Relaxed),
        s.read_bytes.load(Ordering::Relaxed),
        s.write_ops.load(Ordering::Relaxed),
        s.write_bytes.load(Ordering::Relaxed),
        s.flush_ops.load(Ordering::Relaxed),
        s.discard_ops.load(Ordering::Relaxed),
        s.write_zeroes_ops.load(Ordering::Relaxed),
        s.errors.load(Ordering::Relaxed),
    ]
}

/// A driver on a device that counts in `stats`.
fn counted(disk: Arc<dyn DiskImage>, opts: BlockOptions, stats: &Arc<BlockStats>) -> TestDriver {
    let queues = opts.num_queues;
    let dev = Block::with_stats(disk, opts, stats.clone()).unwrap();
    let mut d = TestDriver::new(Box::new(dev));
    d.enable_msix();
    d.init(ALL).unwrap();
    for q in 0..queues {
        d.setup_queue(q, 16);
    }
    d.driver_ok();
    d
}

#[test]
fn every_kind_of_request_is_counted_once_with_its_bytes() {
    let mock = MockDisk::new(1 << 20, false);
    let stats = Arc::new(BlockStats::default());
    let mut d = counted(mock.clone(), BlockOptions::new("disk0"), &stats);
    assert_eq!(snapshot(&stats), [0; 8]);
    let mut idx = 0;
    let data = pattern(8192, 3);
    let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_OUT, 8, Data::Out(&data));
    assert_eq!(s, OK);
    for len in [4096, 512] {
        let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_IN, 0, Data::In(len));
        assert_eq!(s, OK);
    }
    let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_FLUSH, 0, Data::None);
    assert_eq!(s, OK);
    let ranges = [(0, 8, 0), (16, 8, 0)];
    let (_, s, _) = one(
        &mut d,
        &mut idx,
        VIRTIO_BLK_T_DISCARD,
        0,
        Data::Ranges(&ranges),
    );
    assert_eq!(s, OK);
    let (_, s, _) = one(
        &mut d,
        &mut idx,
        VIRTIO_BLK_T_WRITE_ZEROES,
        0,
        Data::Ranges(&[(4, 4, 1)]),
    );
    assert_eq!(s, OK);
    // GET_ID is not I/O: not counted.
    let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_GET_ID, 0, Data::In(20));
    assert_eq!(s, OK);
    assert_eq!(snapshot(&stats), [2, 4608, 1, 8192, 1, 1, 1, 0]);

    // Failures count as errors only, whatever their cause: off the disk,
    // an unknown type, a host I/O error, no status byte at all.
    let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_IN, 1 << 20, Data::In(512));
    assert_eq!(s, IOERR);
    let (_, s, _) = one(&mut d, &mut idx, 99, 0, Data::None);
    assert_eq!(s, UNSUPP);
    mock.fail.store(true, Ordering::SeqCst);
    let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_IN, 0, Data::In(512));
    assert_eq!(s, IOERR);
    let (_, s, _) = one(
        &mut d,
        &mut idx,
        VIRTIO_BLK_T_OUT,
        0,
        Data::Out(&data[..512]),
    );
    assert_eq!(s, IOERR);
    mock.fail.store(false, Ordering::SeqCst);
    let header = d.alloc(16);
    d.add_chain(0, 0, &[(header, 16, 0)]);
    d.kick(0);
    d.wait_used(0, idx, idx.wrapping_add(1));
    assert_eq!(snapshot(&stats), [2, 4608, 1, 8192, 1, 1, 1, 5]);
}

#[test]
fn queues_share_the_counters_and_they_outlive_resets_and_devices() {
    let dir = TempDir::new("counters");
    let disk = raw_disk(&dir, 1 << 20, false);
    let stats = Arc::new(BlockStats::default());
    let opts = BlockOptions {
        num_queues: 2,
        ..BlockOptions::new("disk0")
    };
    let mut d = counted(disk.clone(), opts.clone(), &stats);
    for q in 0..2u16 {
        let r = submit(&mut d, q, 0, VIRTIO_BLK_T_IN, 0, Data::In(1024));
        d.kick(q);
        d.wait_used(q, 0, 1);
        assert_eq!(status_of(&d, &r), OK);
    }
    assert_eq!(stats.read_ops.load(Ordering::Relaxed), 2);
    assert_eq!(stats.read_bytes.load(Ordering::Relaxed), 2048);
    // A reset and a new driver: the device's counters go on.
    d.reset();
    d.init(ALL).unwrap();
    d.setup_queue(0, 16);
    d.driver_ok();
    let mut idx = 0;
    let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_IN, 0, Data::In(512));
    assert_eq!(s, OK);
    assert_eq!(stats.read_bytes.load(Ordering::Relaxed), 2560);
    drop(d);
    // The next boot's device counts in the same ones (as keel-vmm does).
    let mut d = counted(disk, BlockOptions::new("disk0"), &stats);
    let mut idx = 0;
    let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_OUT, 0, Data::Out(&[1; 512]));
    assert_eq!(s, OK);
    assert_eq!(snapshot(&stats), [3, 2560, 1, 512, 0, 0, 0, 0]);
    // A device of its own starts from zero.
    let own = Block::new(MockDisk::new(4096, false), BlockOptions::new("x")).unwrap();
    assert_eq!(snapshot(&own.stats()), [0; 8]);
}
