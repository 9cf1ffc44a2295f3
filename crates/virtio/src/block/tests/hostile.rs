//! Hostile chains and requests, on both engines: each gets the status a
//! well-behaved device gives it, nothing outside its own buffers is
//! touched, and the device goes on serving.

use super::*;

/// One hostile chain: its buffers (address, length, flags without NEXT),
/// the status a well-behaved device gives it (`None`: returned with
/// nothing written), and whether its header is a good IN request.
struct Hostile {
    name: &'static str,
    bufs: Vec<(u64, u32, u16)>,
    status: Option<u8>,
}

#[test]
fn hostile_requests_get_the_right_status_and_touch_nothing_else() {
    let mock = MockDisk::new(1 << 20, false);
    let m = mock.clone();
    hostile_requests(mock, &move || m.data.lock().unwrap().clone());
}

#[test]
fn hostile_requests_through_io_uring() {
    let dir = TempDir::new("hostile");
    let disk = raw_disk(&dir, 1 << 20, false);
    let path = dir.path("disk.raw");
    hostile_requests(disk, &move || std::fs::read(&path).unwrap());
}

/// Every hostile chain against `disk`, whose bytes `contents` reads.
pub(super) fn hostile_requests(disk: Arc<dyn DiskImage>, contents: &dyn Fn() -> Vec<u8>) {
    let size = 16u16;
    let mut d = driver(disk, BlockOptions::new("disk0"), ALL, size);
    let mem_end = TEST_MEM_SIZE as u64;
    // Headers for each request type, at fixed places.
    let hdr = |d: &mut TestDriver, kind: u32, sector: u64| {
        let a = d.alloc(16);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        d.mem.write_slice(&h, GuestAddress(a)).unwrap();
        a
    };
    let capacity = (1u64 << 20) / 512;
    let read0 = hdr(&mut d, VIRTIO_BLK_T_IN, 0);
    let write0 = hdr(&mut d, VIRTIO_BLK_T_OUT, 0);
    let past_end = hdr(&mut d, VIRTIO_BLK_T_IN, capacity);
    let straddle = hdr(&mut d, VIRTIO_BLK_T_IN, capacity - 1);
    let overflow = hdr(&mut d, VIRTIO_BLK_T_IN, u64::MAX / 512 + 1);
    let huge = hdr(&mut d, VIRTIO_BLK_T_IN, u64::MAX);
    let unknown = hdr(&mut d, 0x1234, 0);
    let data = d.alloc(8192);
    let status = d.alloc(64);
    let area = (data, 8192 + 64 + 16);
    let cases = vec![
        Hostile {
            name: "read past the end",
            bufs: vec![(past_end, 16, 0), (data, 512, WRITE), (status, 1, WRITE)],
            status: Some(IOERR),
        },
        Hostile {
            name: "read straddling the end",
            bufs: vec![(straddle, 16, 0), (data, 1024, WRITE), (status, 1, WRITE)],
            status: Some(IOERR),
        },
        Hostile {
            name: "sector * 512 overflows",
            bufs: vec![(overflow, 16, 0), (data, 512, WRITE), (status, 1, WRITE)],
            status: Some(IOERR),
        },
        Hostile {
            name: "sector u64::MAX",
            bufs: vec![(huge, 16, 0), (data, 512, WRITE), (status, 1, WRITE)],
            status: Some(IOERR),
        },
        Hostile {
            name: "no status descriptor (all readable)",
            bufs: vec![(write0, 16, 0), (data, 512, 0)],
            status: None,
        },
        Hostile {
            name: "status descriptor device-readable after data",
            bufs: vec![(write0, 16, 0), (data, 512, 0), (status, 1, 0)],
            status: None,
        },
        Hostile {
            name: "zero-length status",
            bufs: vec![(write0, 16, 0), (data, 512, 0), (status, 0, WRITE)],
            status: None,
        },
        Hostile {
            name: "header of 8 bytes",
            bufs: vec![(read0, 8, 0), (status, 1, WRITE)],
            status: Some(IOERR),
        },
        Hostile {
            name: "header device-writable",
            bufs: vec![(read0, 16, WRITE), (data, 512, WRITE), (status, 1, WRITE)],
            status: Some(IOERR),
        },
        Hostile {
            name: "header outside guest memory",
            bufs: vec![(mem_end - 8, 16, 0), (status, 1, WRITE)],
            status: Some(IOERR),
        },
        Hostile {
            name: "read data not a multiple of 512",
            bufs: vec![(read0, 16, 0), (data, 100, WRITE), (status, 1, WRITE)],
            status: Some(IOERR),
        },
        Hostile {
            name: "write data not a multiple of 512",
            bufs: vec![(write0, 16, 0), (data, 1000, 0), (status, 1, WRITE)],
            status: Some(IOERR),
        },
        Hostile {
            name: "write with writable data",
            bufs: vec![(write0, 16, 0), (data, 512, WRITE), (status, 1, WRITE)],
            status: Some(IOERR),
        },
        Hostile {
            name: "unknown type",
            bufs: vec![(unknown, 16, 0), (status, 1, WRITE)],
            status: Some(UNSUPP),
        },
        Hostile {
            name: "data outside guest memory",
            bufs: vec![
                (read0, 16, 0),
                (mem_end - 256, 512, WRITE),
                (status, 1, WRITE),
            ],
            status: Some(IOERR),
        },
        Hostile {
            name: "status outside guest memory",
            bufs: vec![(read0, 16, 0), (data, 512, WRITE), (mem_end, 1, WRITE)],
            status: None,
        },
        Hostile {
            name: "readable after writable",
            bufs: vec![
                (read0, 16, 0),
                (data, 512, WRITE),
                (write0, 16, 0),
                (status, 1, WRITE),
            ],
            status: Some(IOERR),
        },
    ];
    let mut idx = 0u16;
    for case in &cases {
        d.fill_guest(area.0, area.1 as usize, SENTINEL);
        d.fill_guest(status, 64, SENTINEL);
        let before = contents();
        d.add_chain(0, 0, &case.bufs);
        d.kick(0);
        let used = d.wait_used(0, idx, idx + 1);
        idx += 1;
        let name = case.name;
        match case.status {
            Some(s) => {
                // The status is the chain's last writable byte.
                let (addr, len, _) = *case.bufs.iter().rev().find(|b| b.2 & WRITE != 0).unwrap();
                let at = addr + u64::from(len) - 1;
                assert_eq!(d.read_guest(at, 1)[0], s, "{name}: status");
                let writable: u32 = case
                    .bufs
                    .iter()
                    .filter(|b| b.2 & WRITE != 0)
                    .map(|b| b.1)
                    .sum();
                assert_eq!(used, vec![(0, writable)], "{name}: used length");
                if at != status {
                    assert_eq!(d.read_guest(status, 64), vec![SENTINEL; 64], "{name}");
                }
            }
            None => {
                assert_eq!(used, vec![(0, 0)], "{name}: used length");
                assert_eq!(d.read_guest(status, 64), vec![SENTINEL; 64], "{name}");
            }
        }
        // Data buffers untouched (the status may be their last byte).
        let got = d.read_guest(area.0, 8192);
        let changed = got.iter().filter(|&&b| b != SENTINEL).count();
        assert!(changed <= 1, "{name}: {changed} data bytes written");
        assert!(contents() == before, "{name}: disk changed");
        assert_eq!(d.status() & S_NEEDS_RESET, 0, "{name}: device broke");
        // The device still serves a good request.
        let r = submit(&mut d, 0, 8, VIRTIO_BLK_T_IN, 0, Data::In(512));
        d.kick(0);
        d.wait_used(0, idx, idx + 1);
        idx += 1;
        assert_eq!(status_of(&d, &r), OK, "{name}: next request");
    }
}

#[test]
fn broken_chains_are_answered_where_possible() {
    let mock = MockDisk::new(1 << 20, false);
    let size = 16u16;
    let mut d = driver(
        mock.clone(),
        BlockOptions::new("disk0"),
        ALL | RING_INDIRECT_DESC,
        size,
    );
    let q = d.queues[&0];
    let data = d.alloc(4096);
    let status = d.alloc(16);
    let r = submit(&mut d, 0, 0, VIRTIO_BLK_T_IN, 0, Data::In(512));
    let mut idx = 0u16;
    d.kick(0);
    d.wait_used(0, idx, idx + 1);
    idx += 1;
    // A loop: header → data → status → data → ...
    d.fill_guest(status, 16, SENTINEL);
    d.fill_guest(data, 4096, SENTINEL);
    q.write_desc(&d.mem, 0, DescSpec::new(r.header, 16, NEXT, 1));
    q.write_desc(&d.mem, 1, DescSpec::new(data, 512, WRITE | NEXT, 2));
    q.write_desc(&d.mem, 2, DescSpec::new(status, 1, WRITE | NEXT, 1));
    q.publish(&d.mem, 0);
    d.kick(0);
    let used = d.wait_used(0, idx, idx + 1);
    idx += 1;
    assert_eq!(used[0].0, 0);
    // The answer lands in the last writable byte the walk reached (the
    // status or the data buffer's last byte), and nothing else is touched.
    let mut touched: Vec<u8> = d.read_guest(data, 4096);
    touched.extend(d.read_guest(status, 16));
    let changed: Vec<u8> = touched.into_iter().filter(|&b| b != SENTINEL).collect();
    assert_eq!(changed, vec![IOERR], "loop answered IOERR once");
    // An indirect table longer than the queue.
    let table = d.alloc(16 * 32);
    for i in 0..32u16 {
        let (flags, addr, len) = match i {
            0 => (NEXT, r.header, 16),
            31 => (WRITE, status, 1),
            _ => (WRITE | NEXT, data, 512),
        };
        DescSpec::new(addr, len, flags, i + 1)
            .write_at(&d.mem, GuestAddress(table + 16 * u64::from(i)));
    }
    d.fill_guest(status, 16, SENTINEL);
    q.write_desc(&d.mem, 3, DescSpec::new(table, 16 * 32, INDIRECT, 0));
    q.publish(&d.mem, 3);
    d.kick(0);
    let used = d.wait_used(0, idx, idx + 1);
    idx += 1;
    assert_eq!(used[0].0, 3);
    assert_ne!(d.read_guest(status, 1)[0], OK, "too-long chain not served");
    // A head outside the table breaks the ring: the device asks for a reset.
    q.publish(&d.mem, size);
    d.kick(0);
    d.wait_needs_reset();
    let _ = idx;
}
