//! virtio-blk end to end through the transport, in process: real raw and
//! qcow2 images, a mock disk for host failures, and hostile chains.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use storage::{DiskImage, Format, StorageError};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::features::{RING_EVENT_IDX, RING_INDIRECT_DESC, VERSION_1};
use crate::testing::*;
use crate::VirtioDevice;

const WRITE: u16 = VRING_DESC_F_WRITE as u16;
const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;
const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
const SENTINEL: u8 = 0x5a;
const ALL: u64 = u64::MAX;

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("keel-blk-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn raw_disk(dir: &TempDir, size: u64, read_only: bool) -> Arc<dyn DiskImage> {
    let path = dir.path("disk.raw");
    if !path.exists() {
        storage::create_raw(&path, size).unwrap();
    }
    storage::open(&path, Format::Raw, read_only).unwrap().into()
}

/// A disk in memory that counts calls and fails on demand.
#[derive(Debug)]
struct MockDisk {
    data: Mutex<Vec<u8>>,
    read_only: bool,
    flushes: AtomicU32,
    fail: AtomicBool,
    ops: Mutex<Vec<String>>,
}

impl MockDisk {
    fn new(size: usize, read_only: bool) -> Arc<Self> {
        Arc::new(Self {
            data: Mutex::new(vec![0; size]),
            read_only,
            flushes: AtomicU32::new(0),
            fail: AtomicBool::new(false),
            ops: Mutex::new(Vec::new()),
        })
    }

    fn check(&self, offset: u64, len: u64, write: bool) -> Result<(), StorageError> {
        if write && self.read_only {
            return Err(StorageError::ReadOnly);
        }
        storage::check_range(offset, len, self.size())?;
        if self.fail.load(Ordering::SeqCst) {
            return Err(StorageError::Read {
                offset,
                len,
                source: std::io::Error::from_raw_os_error(libc::EIO),
            });
        }
        Ok(())
    }
}

impl DiskImage for MockDisk {
    fn format(&self) -> Format {
        Format::Raw
    }
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn discard_alignment(&self) -> u64 {
        4096
    }
    fn describe(&self) -> String {
        "mock".into()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError> {
        self.check(offset, buf.len() as u64, false)?;
        let o = offset as usize;
        buf.copy_from_slice(&self.data.lock().unwrap()[o..o + buf.len()]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), StorageError> {
        self.check(offset, buf.len() as u64, true)?;
        let o = offset as usize;
        self.data.lock().unwrap()[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), StorageError> {
        self.check(offset, len, true)?;
        self.ops
            .lock()
            .unwrap()
            .push(format!("discard {offset} {len}"));
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<(), StorageError> {
        self.check(offset, len, true)?;
        self.ops
            .lock()
            .unwrap()
            .push(format!("zeroes {offset} {len} {may_unmap}"));
        let o = offset as usize;
        self.data.lock().unwrap()[o..o + len as usize].fill(0);
        Ok(())
    }
}

/// A driver with an active virtio-blk and its queues of `size`.
fn driver(disk: Arc<dyn DiskImage>, opts: BlockOptions, wants: u64, size: u16) -> TestDriver {
    let queues = opts.num_queues;
    let mut d = TestDriver::new(Box::new(Block::new(disk, opts).unwrap()));
    d.enable_msix();
    d.init(wants).unwrap();
    for q in 0..queues {
        d.setup_queue(q, size);
    }
    d.driver_ok();
    d
}

/// A request laid out the way Linux does it.
struct Req {
    header: u64,
    data: u64,
    data_len: u32,
    status: u64,
}

enum Data<'a> {
    None,
    In(u32),
    Out(&'a [u8]),
    /// Discard / write-zeroes ranges: (sector, sectors, flags).
    Ranges(&'a [(u64, u32, u32)]),
}

/// Writes header, data and status buffers, offers the chain at table slot
/// `slot` of `queue` (without kicking).
fn submit(d: &mut TestDriver, queue: u16, slot: u16, kind: u32, sector: u64, data: Data) -> Req {
    let header = d.alloc(16);
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    d.mem.write_slice(&h, GuestAddress(header)).unwrap();
    let status = d.alloc(16);
    d.fill_guest(status, 16, SENTINEL);
    let mut bufs = vec![(header, 16, 0)];
    let (addr, len) = match data {
        Data::None => (0, 0),
        Data::In(len) => {
            let a = d.alloc(u64::from(len) + 64);
            d.fill_guest(a, len as usize + 64, SENTINEL);
            bufs.push((a, len, WRITE));
            (a, len)
        }
        Data::Out(bytes) => {
            let a = d.alloc(bytes.len() as u64);
            d.mem.write_slice(bytes, GuestAddress(a)).unwrap();
            bufs.push((a, bytes.len() as u32, 0));
            (a, bytes.len() as u32)
        }
        Data::Ranges(ranges) => {
            let a = d.alloc(16 * ranges.len() as u64);
            for (i, &(sector, n, flags)) in ranges.iter().enumerate() {
                let mut b = [0u8; 16];
                b[0..8].copy_from_slice(&sector.to_le_bytes());
                b[8..12].copy_from_slice(&n.to_le_bytes());
                b[12..16].copy_from_slice(&flags.to_le_bytes());
                d.mem
                    .write_slice(&b, GuestAddress(a + 16 * i as u64))
                    .unwrap();
            }
            bufs.push((a, 16 * ranges.len() as u32, 0));
            (a, 16 * ranges.len() as u32)
        }
    };
    bufs.push((status, 1, WRITE));
    d.add_chain(queue, slot, &bufs);
    Req {
        header,
        data: addr,
        data_len: len,
        status,
    }
}

fn status_of(d: &TestDriver, r: &Req) -> u8 {
    d.read_guest(r.status, 1)[0]
}

/// Submits one request on queue 0, kicks, waits; returns (status, used len).
fn one(d: &mut TestDriver, idx: &mut u16, kind: u32, sector: u64, data: Data) -> (Req, u8, u32) {
    let r = submit(d, 0, 0, kind, sector, data);
    d.kick(0);
    let used = d.wait_used(0, *idx, idx.wrapping_add(1));
    *idx = idx.wrapping_add(1);
    assert_eq!(used[0].0, 0);
    let s = status_of(d, &r);
    (r, s, used[0].1)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn offers_features_and_configuration() {
    let dir = TempDir::new("cfg");
    let disk = raw_disk(&dir, 8 << 20, false);
    let align = disk.discard_alignment();
    let mut d = TestDriver::new(Box::new(
        Block::new(disk, BlockOptions::new("disk0")).unwrap(),
    ));
    let f = d.device_features();
    for bit in [
        VERSION_1,
        features::SEG_MAX,
        features::BLK_SIZE,
        features::FLUSH,
        features::DISCARD,
        features::WRITE_ZEROES,
    ] {
        assert_ne!(f & bit, 0, "feature {bit:#x} missing from {f:#x}");
    }
    assert_eq!(f & (features::RO | features::MQ), 0);
    let cfg = d.caps.device;
    assert_eq!(d.bar_read(cfg, 8), (8 << 20) / 512, "capacity");
    assert_eq!(
        d.bar_read(cfg + 12, 4),
        u64::from(QUEUE_SIZE - 2),
        "seg_max"
    );
    assert_eq!(d.bar_read(cfg + 20, 4), 512, "blk_size");
    assert_eq!(d.bar_read(cfg + 34, 2), 1, "num_queues");
    assert_eq!(d.bar_read(cfg + 36, 4), u64::from(MAX_RANGE_SECTORS));
    assert_eq!(d.bar_read(cfg + 40, 4), u64::from(MAX_RANGES));
    assert_eq!(d.bar_read(cfg + 44, 4), align / 512, "discard alignment");
    assert_eq!(d.bar_read(cfg + 48, 4), u64::from(MAX_RANGE_SECTORS));
    assert_eq!(d.bar_read(cfg + 52, 4), u64::from(MAX_RANGES));
    assert_eq!(d.bar_read(cfg + 56, 1), 1, "write_zeroes_may_unmap");
    assert_eq!(d.bar_read(cfg + 60, 4), 0, "past the end reads as zero");
    // The PCI device ID is 0x1040 + 2.
    assert_eq!(d.cfg_read16(2), 0x1042);
}

#[test]
fn reads_what_was_written_and_flushes_to_the_file() {
    let dir = TempDir::new("rw");
    let disk = raw_disk(&dir, 1 << 20, false);
    let mut d = driver(disk.clone(), BlockOptions::new("disk0"), ALL, 16);
    let mut idx = 0;
    let data = pattern(8192, 7);
    let (_, s, used) = one(&mut d, &mut idx, VIRTIO_BLK_T_OUT, 8, Data::Out(&data));
    assert_eq!((s, used), (OK, 1));
    d.wait_queue_irq(0);
    let (r, s, used) = one(&mut d, &mut idx, VIRTIO_BLK_T_IN, 8, Data::In(8192));
    assert_eq!((s, used), (OK, 8193));
    assert_eq!(d.read_guest(r.data, 8192), data);
    assert_eq!(d.read_guest(r.data + 8192, 64), vec![SENTINEL; 64]);
    let (_, s, used) = one(&mut d, &mut idx, VIRTIO_BLK_T_FLUSH, 0, Data::None);
    assert_eq!((s, used), (OK, 1));
    // The bytes are in the file, at sector 8.
    let file = std::fs::read(dir.path("disk.raw")).unwrap();
    assert_eq!(&file[4096..4096 + 8192], &data[..]);
    assert!(file[..4096].iter().all(|&b| b == 0));
}

#[test]
fn flush_reaches_the_disk() {
    let mock = MockDisk::new(1 << 20, false);
    let mut d = driver(mock.clone(), BlockOptions::new("disk0"), ALL, 16);
    let mut idx = 0;
    for _ in 0..3 {
        let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_FLUSH, 0, Data::None);
        assert_eq!(s, OK);
    }
    assert_eq!(mock.flushes.load(Ordering::SeqCst), 3);
}

#[test]
fn qcow2_overlay_serves_the_base_and_keeps_it_unchanged() {
    let dir = TempDir::new("qcow2");
    let base = dir.path("base.qcow2");
    storage::create_qcow2(&base, 4 << 20, None).unwrap();
    let base_data = pattern(4096, 3);
    {
        let b = storage::open(&base, Format::Qcow2, false).unwrap();
        b.write_at(&base_data, 65536).unwrap();
        b.flush().unwrap();
    }
    let before = std::fs::read(&base).unwrap();
    let top = dir.path("top.qcow2");
    storage::create_qcow2(&top, 4 << 20, Some(Path::new("base.qcow2"))).unwrap();
    let disk: Arc<dyn DiskImage> = storage::open(&top, Format::Auto, false).unwrap().into();
    assert_eq!(disk.format(), Format::Qcow2);
    let mut d = driver(disk, BlockOptions::new("disk0"), ALL, 16);
    let mut idx = 0;
    let (r, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_IN, 128, Data::In(4096));
    assert_eq!(s, OK);
    assert_eq!(
        d.read_guest(r.data, 4096),
        base_data,
        "reads fall through to the base"
    );
    let new = pattern(4096, 99);
    let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_OUT, 128, Data::Out(&new));
    assert_eq!(s, OK);
    let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_FLUSH, 0, Data::None);
    assert_eq!(s, OK);
    let (r, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_IN, 128, Data::In(4096));
    assert_eq!(s, OK);
    assert_eq!(d.read_guest(r.data, 4096), new);
    assert_eq!(
        std::fs::read(&base).unwrap(),
        before,
        "the base file changed"
    );
}

#[test]
fn discard_and_write_zeroes() {
    let dir = TempDir::new("dz");
    let disk = raw_disk(&dir, 1 << 20, false);
    let mut d = driver(disk.clone(), BlockOptions::new("disk0"), ALL, 16);
    let mut idx = 0;
    let data = pattern(16384, 1);
    let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_OUT, 0, Data::Out(&data));
    assert_eq!(s, OK);
    // Zero sectors 2..4 (keeping the allocation) and 10..12 (unmapping).
    let ranges = [(2, 2, 0), (10, 2, 1)];
    let (_, s, used) = one(
        &mut d,
        &mut idx,
        VIRTIO_BLK_T_WRITE_ZEROES,
        0,
        Data::Ranges(&ranges),
    );
    assert_eq!((s, used), (OK, 1));
    let (r, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_IN, 0, Data::In(16384));
    assert_eq!(s, OK);
    let got = d.read_guest(r.data, 16384);
    for (i, chunk) in got.chunks(512).enumerate() {
        let zero = (2..4).contains(&i) || (10..12).contains(&i);
        if zero {
            assert!(chunk.iter().all(|&b| b == 0), "sector {i} not zeroed");
        } else {
            assert_eq!(chunk, &data[i * 512..(i + 1) * 512], "sector {i} changed");
        }
    }
    // A discard of the whole first 8 KiB: accepted.
    let (_, s, _) = one(
        &mut d,
        &mut idx,
        VIRTIO_BLK_T_DISCARD,
        0,
        Data::Ranges(&[(0, 16, 0)]),
    );
    assert_eq!(s, OK);
}

#[test]
fn discard_and_write_zeroes_reach_the_disk_with_their_flags() {
    let mock = MockDisk::new(1 << 20, false);
    let mut d = driver(mock.clone(), BlockOptions::new("disk0"), ALL, 16);
    let mut idx = 0;
    let ranges = [(8, 8, 0), (64, 1, 0)];
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
        Data::Ranges(&[(1, 2, 1)]),
    );
    assert_eq!(s, OK);
    assert_eq!(
        *mock.ops.lock().unwrap(),
        vec![
            "discard 4096 4096".to_string(),
            "discard 32768 512".to_string(),
            "zeroes 512 1024 true".to_string()
        ]
    );
    // The unmap flag on a discard is refused before anything happens.
    let (_, s, _) = one(
        &mut d,
        &mut idx,
        VIRTIO_BLK_T_DISCARD,
        0,
        Data::Ranges(&[(1, 1, 1)]),
    );
    assert_eq!(s, UNSUPP);
    // So is a list where one range is bad: none of it runs.
    let bad = [(0, 1, 0), (u64::MAX - 1, 4, 0)];
    let (_, s, _) = one(
        &mut d,
        &mut idx,
        VIRTIO_BLK_T_DISCARD,
        0,
        Data::Ranges(&bad),
    );
    assert_eq!(s, IOERR);
    let too_many: Vec<_> = (0..=u64::from(MAX_RANGES)).map(|i| (i, 1, 0)).collect();
    let (_, s, _) = one(
        &mut d,
        &mut idx,
        VIRTIO_BLK_T_DISCARD,
        0,
        Data::Ranges(&too_many),
    );
    assert_eq!(s, IOERR);
    assert_eq!(mock.ops.lock().unwrap().len(), 3);
}

#[test]
fn discard_and_write_zeroes_need_their_features() {
    let mock = MockDisk::new(1 << 20, false);
    let wants = ALL & !(features::DISCARD | features::WRITE_ZEROES);
    let mut d = driver(mock.clone(), BlockOptions::new("disk0"), wants, 16);
    let mut idx = 0;
    for kind in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
        let (_, s, _) = one(&mut d, &mut idx, kind, 0, Data::Ranges(&[(0, 1, 0)]));
        assert_eq!(s, UNSUPP);
    }
    assert!(mock.ops.lock().unwrap().is_empty());
}

#[test]
fn get_id_returns_the_serial_padded_with_zeroes() {
    let mock = MockDisk::new(1 << 20, false);
    let opts = BlockOptions {
        serial: Some("KEEL-SERIAL-1".into()),
        ..BlockOptions::new("disk0")
    };
    let mut d = driver(mock.clone(), opts, ALL, 16);
    let mut idx = 0;
    let (r, s, used) = one(&mut d, &mut idx, VIRTIO_BLK_T_GET_ID, 0, Data::In(20));
    assert_eq!((s, used), (OK, 21));
    let mut want = b"KEEL-SERIAL-1".to_vec();
    want.resize(20, 0);
    assert_eq!(d.read_guest(r.data, 20), want);
    // A bigger buffer gets 20 bytes, the rest is untouched.
    let (r, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_GET_ID, 0, Data::In(64));
    assert_eq!(s, OK);
    assert_eq!(d.read_guest(r.data, 20), want);
    assert_eq!(d.read_guest(r.data + 20, 44), vec![SENTINEL; 44]);
    // A smaller one gets what fits.
    let (r, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_GET_ID, 0, Data::In(4));
    assert_eq!(s, OK);
    assert_eq!(d.read_guest(r.data, 4), b"KEEL");
    assert_eq!(d.read_guest(r.data + 4, 4), vec![SENTINEL; 4]);
    assert!(d.dev().state().active);
}

#[test]
fn serials_are_checked() {
    assert!(check_serial("12345678901234567890").is_ok());
    assert_eq!(
        check_serial("123456789012345678901"),
        Err(BlockError::SerialTooLong("123456789012345678901".into()))
    );
    for bad in ["a b", "é", "x\n", "tab\t"] {
        assert!(
            matches!(check_serial(bad), Err(BlockError::SerialCharacters(_))),
            "{bad:?}"
        );
    }
    let mock = MockDisk::new(4096, false);
    let opts = BlockOptions {
        num_queues: 0,
        ..BlockOptions::new("d")
    };
    assert_eq!(Block::new(mock, opts).err(), Some(BlockError::Queues(0)));
}

#[test]
fn read_only_disk_offers_ro_and_refuses_writes() {
    let dir = TempDir::new("ro");
    let path = dir.path("disk.raw");
    storage::create_raw(&path, 1 << 20).unwrap();
    std::fs::write(&path, pattern(1 << 20, 5)).unwrap();
    let before = std::fs::read(&path).unwrap();
    let disk: Arc<dyn DiskImage> = storage::open(&path, Format::Raw, true).unwrap().into();
    let mut d = TestDriver::new(Box::new(Block::new(disk, BlockOptions::new("ro")).unwrap()));
    let f = d.device_features();
    assert_ne!(f & features::RO, 0);
    assert_eq!(f & (features::DISCARD | features::WRITE_ZEROES), 0);
    d.enable_msix();
    d.init(ALL).unwrap();
    d.setup_queue(0, 16);
    d.driver_ok();
    let mut idx = 0;
    let (r, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_IN, 2, Data::In(1024));
    assert_eq!(s, OK);
    assert_eq!(d.read_guest(r.data, 1024), &before[1024..2048]);
    let junk = vec![0xee; 4096];
    let (_, s, used) = one(&mut d, &mut idx, VIRTIO_BLK_T_OUT, 0, Data::Out(&junk));
    assert_eq!((s, used), (IOERR, 1));
    // Discard and write-zeroes were not offered: unsupported.
    for kind in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
        let (_, s, _) = one(&mut d, &mut idx, kind, 0, Data::Ranges(&[(0, 8, 0)]));
        assert_eq!(s, UNSUPP);
    }
    // Flush is harmless.
    let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_FLUSH, 0, Data::None);
    assert_eq!(s, OK);
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn read_only_refuses_writes_even_when_the_driver_ignores_ro() {
    let mock = MockDisk::new(1 << 20, true);
    let mut d = driver(
        mock.clone(),
        BlockOptions::new("ro"),
        ALL & !features::RO,
        16,
    );
    let mut idx = 0;
    let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_OUT, 0, Data::Out(&[1; 512]));
    assert_eq!(s, IOERR);
    assert!(mock.data.lock().unwrap().iter().all(|&b| b == 0));
}

#[test]
fn host_io_errors_become_ioerr_and_the_device_goes_on() {
    let mock = MockDisk::new(1 << 20, false);
    let mut d = driver(mock.clone(), BlockOptions::new("disk0"), ALL, 16);
    let mut idx = 0;
    mock.fail.store(true, Ordering::SeqCst);
    for _ in 0..12 {
        let (_, s, used) = one(&mut d, &mut idx, VIRTIO_BLK_T_IN, 0, Data::In(512));
        assert_eq!((s, used), (IOERR, 513));
    }
    mock.fail.store(false, Ordering::SeqCst);
    let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_IN, 0, Data::In(512));
    assert_eq!(s, OK);
    assert_eq!(d.status() & S_NEEDS_RESET, 0);
}

#[test]
fn a_batch_of_32_is_served_with_few_interrupts() {
    let dir = TempDir::new("batch");
    let disk = raw_disk(&dir, 4 << 20, false);
    let mut d = driver(disk, BlockOptions::new("disk0"), ALL | RING_EVENT_IDX, 128);
    let reqs: Vec<Req> = (0..32u16)
        .map(|i| {
            submit(
                &mut d,
                0,
                i * 3,
                VIRTIO_BLK_T_OUT,
                u64::from(i) * 8,
                Data::Out(&pattern(4096, i as u8)),
            )
        })
        .collect();
    d.kick(0);
    let used = d.wait_used(0, 0, 32);
    assert_eq!(used.len(), 32);
    assert!(reqs.iter().all(|r| status_of(&d, r) == OK));
    let irqs = d.msi.take_irqs(MSI_DATA_BASE + 1);
    assert!((1..=32).contains(&irqs), "{irqs} interrupts");
    let reads: Vec<Req> = (0..32u16)
        .map(|i| {
            submit(
                &mut d,
                0,
                i * 3,
                VIRTIO_BLK_T_IN,
                u64::from(i) * 8,
                Data::In(4096),
            )
        })
        .collect();
    d.kick(0);
    d.wait_used(0, 32, 64);
    for (i, r) in reads.iter().enumerate() {
        assert_eq!(status_of(&d, r), OK);
        assert_eq!(
            d.read_guest(r.data, 4096),
            pattern(4096, i as u8),
            "request {i}"
        );
        assert_eq!(r.data_len, 4096);
    }
}

#[test]
fn several_queues_are_served_by_their_own_threads() {
    let dir = TempDir::new("mq");
    let disk = raw_disk(&dir, 1 << 20, false);
    let opts = BlockOptions {
        num_queues: 3,
        ..BlockOptions::new("disk0")
    };
    let mut d = TestDriver::new(Box::new(Block::new(disk, opts).unwrap()));
    assert_ne!(d.device_features() & features::MQ, 0);
    assert_eq!(d.bar_read(d.caps.device + 34, 2), 3, "num_queues");
    d.enable_msix();
    d.init(ALL).unwrap();
    for q in 0..3 {
        d.setup_queue(q, 16);
    }
    d.driver_ok();
    for q in 0..3u16 {
        let data = pattern(512, q as u8);
        let r = submit(
            &mut d,
            q,
            0,
            VIRTIO_BLK_T_OUT,
            u64::from(q),
            Data::Out(&data),
        );
        d.kick(q);
        d.wait_used(q, 0, 1);
        assert_eq!(status_of(&d, &r), OK);
        d.wait_queue_irq(q);
    }
    for q in 0..3u16 {
        let r = submit(
            &mut d,
            q,
            4,
            VIRTIO_BLK_T_IN,
            u64::from(2 - q),
            Data::In(512),
        );
        d.kick(q);
        d.wait_used(q, 1, 2);
        assert_eq!(d.read_guest(r.data, 512), pattern(512, 2 - q as u8));
    }
    // A driver that enables only queue 0 (no MQ) works too.
    d.init(ALL & !features::MQ).unwrap();
    d.setup_queue(0, 16);
    d.driver_ok();
    let r = submit(&mut d, 0, 0, VIRTIO_BLK_T_IN, 1, Data::In(512));
    d.kick(0);
    d.wait_used(0, 0, 1);
    assert_eq!(d.read_guest(r.data, 512), pattern(512, 1));
}

#[test]
fn pause_holds_requests_and_reset_stops_serving() {
    let mock = MockDisk::new(1 << 20, false);
    let mut d = driver(mock.clone(), BlockOptions::new("disk0"), ALL, 16);
    d.dev().pause().unwrap();
    let r = submit(&mut d, 0, 0, VIRTIO_BLK_T_FLUSH, 0, Data::None);
    d.kick(0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(d.queues[&0].used_idx(&d.mem), 0);
    d.dev().resume().unwrap();
    d.wait_used(0, 0, 1);
    assert_eq!(status_of(&d, &r), OK);
    d.reset();
    assert!(!d.dev().state().active);
    d.init(ALL).unwrap();
    d.setup_queue(0, 32);
    d.driver_ok();
    let mut idx = 0;
    let (_, s, _) = one(&mut d, &mut idx, VIRTIO_BLK_T_FLUSH, 0, Data::None);
    assert_eq!(s, OK);
    assert_eq!(mock.flushes.load(Ordering::SeqCst), 2);
}

#[test]
fn describe_names_the_disk_and_serial() {
    let mock = MockDisk::new(4096, false);
    let opts = BlockOptions {
        serial: Some("S1".into()),
        ..BlockOptions::new("disk3")
    };
    let b = Block::new(mock, opts).unwrap();
    assert_eq!(b.describe(), "virtio-blk disk3: mock, serial S1");
}

mod counters;
mod direct;
mod hostile;
mod inflight;
mod mapped;
