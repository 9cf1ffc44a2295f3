//! qcow2 through io_uring: reads and writes within allocated clusters go to
//! the kernel at the place the image gives ([`DiskImage::map_direct`]), the
//! rest (allocating writes, reads of unallocated clusters) through the
//! image; discards and write-zeroes in between, on two queues at once. What
//! the guest reads and what the image holds afterwards match a model.

use super::*;

const MIB: u64 = 1 << 20;
const CLUSTER: u64 = 65536;

/// A disk that counts the places it handed out for direct I/O.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn DiskImage>,
    mapped: AtomicU32,
}

impl DiskImage for Counting {
    fn format(&self) -> Format {
        self.inner.format()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn discard_alignment(&self) -> u64 {
        self.inner.discard_alignment()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn raw_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.inner.raw_fd()
    }
    fn map_direct(&self, offset: u64, len: u64, write: bool) -> Option<storage::DirectMap> {
        let m = self.inner.map_direct(offset, len, write);
        if m.is_some() {
            self.mapped.fetch_add(1, Ordering::SeqCst);
        }
        m
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), StorageError> {
        self.inner.write_at(buf, offset)
    }
    fn read_vectored_at(
        &self,
        bufs: &[vm_memory::VolatileSlice<'_>],
        offset: u64,
    ) -> Result<(), StorageError> {
        self.inner.read_vectored_at(bufs, offset)
    }
    fn write_vectored_at(
        &self,
        bufs: &[vm_memory::VolatileSlice<'_>],
        offset: u64,
    ) -> Result<(), StorageError> {
        self.inner.write_vectored_at(bufs, offset)
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), StorageError> {
        self.inner.discard(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<(), StorageError> {
        self.inner.write_zeroes(offset, len, may_unmap)
    }
}

/// One queue's requests of a round, and where its used ring stands.
struct Round {
    queue: u16,
    used: u16,
    slot: u16,
    reqs: Vec<(Req, Option<(u64, usize)>)>,
}

impl Round {
    fn new(queue: u16) -> Self {
        Self {
            queue,
            used: 0,
            slot: 0,
            reqs: Vec::new(),
        }
    }

    /// Offers a request; reads remember (offset, len) to check against the
    /// model.
    fn add(&mut self, d: &mut TestDriver, kind: u32, sector: u64, data: Data) {
        let read = match data {
            Data::In(len) => Some((sector * 512, len as usize)),
            _ => None,
        };
        let r = submit(d, self.queue, self.slot, kind, sector, data);
        self.slot += 3;
        self.reqs.push((r, read));
    }

    /// Waits for every request offered; checks statuses and what reads got.
    fn finish(&mut self, d: &mut TestDriver, model: &[u8]) {
        let n = self.reqs.len() as u16;
        d.wait_used(self.queue, self.used, self.used.wrapping_add(n));
        self.used = self.used.wrapping_add(n);
        for (i, (r, read)) in self.reqs.drain(..).enumerate() {
            assert_eq!(status_of(d, &r), OK, "queue {} request {i}", self.queue);
            if let Some((at, len)) = read {
                let want = &model[at as usize..at as usize + len];
                assert!(d.read_guest(r.data, len) == want, "read at {at}");
            }
        }
        self.slot = 0;
    }
}

#[test]
fn qcow2_through_io_uring_on_two_queues_matches_a_model() {
    let dir = TempDir::new("mapped");
    let path = dir.path("d.qcow2");
    storage::create_qcow2(&path, 2 * MIB, None).unwrap();
    let inner: Arc<dyn DiskImage> = storage::open(&path, Format::Qcow2, false).unwrap().into();
    let disk = Arc::new(Counting {
        inner,
        mapped: AtomicU32::new(0),
    });
    let opts = BlockOptions {
        num_queues: 2,
        ..BlockOptions::new("q")
    };
    let block = Block::new(disk.clone(), opts).unwrap();
    assert_eq!(block.io_engine(), IoEngine::IoUring);
    let mut d = TestDriver::new(Box::new(block));
    d.enable_msix();
    d.init(ALL | RING_EVENT_IDX).unwrap();
    d.setup_queue(0, 256);
    d.setup_queue(1, 256);
    d.driver_ok();
    let mut model = vec![0u8; (2 * MIB) as usize];
    let mut q = [Round::new(0), Round::new(1)];
    // Where piece i goes: 4 KiB, one cluster each (of the first 25).
    let at = |i: u64| i * 69_632;
    let n = 24u64;

    // 1. Allocating writes (through the image), both queues.
    for i in 0..n {
        let data = pattern(4096, i as u8);
        model[at(i) as usize..at(i) as usize + 4096].copy_from_slice(&data);
        q[(i % 2) as usize].add(&mut d, VIRTIO_BLK_T_OUT, at(i) / 512, Data::Out(&data));
    }
    d.kick(0);
    d.kick(1);
    q[0].finish(&mut d, &model);
    q[1].finish(&mut d, &model);
    let after_allocating = disk.mapped.load(Ordering::SeqCst);

    // 2. Reads back and rewrites in place (io_uring), reads of what is
    //    still unallocated (the image, zeroes), one queue each.
    for i in 0..n {
        q[0].add(&mut d, VIRTIO_BLK_T_IN, at(i) / 512, Data::In(4096));
    }
    d.kick(0);
    q[0].finish(&mut d, &model);
    for i in 0..n {
        let data = pattern(4096, 100 + i as u8);
        model[at(i) as usize..at(i) as usize + 4096].copy_from_slice(&data);
        q[1].add(&mut d, VIRTIO_BLK_T_OUT, at(i) / 512, Data::Out(&data));
    }
    for s in [28 * CLUSTER, 30 * CLUSTER + 512] {
        q[0].add(&mut d, VIRTIO_BLK_T_IN, s / 512, Data::In(4096));
    }
    d.kick(1);
    d.kick(0);
    q[1].finish(&mut d, &model);
    q[0].finish(&mut d, &model);
    let direct = disk.mapped.load(Ordering::SeqCst) - after_allocating;
    assert!(
        u64::from(direct) >= 2 * n,
        "only {direct} of {} requests went to io_uring",
        2 * n
    );

    // 3. Discards and write-zeroes on queue 1 while queue 0 reads and
    //    rewrites other clusters.
    for i in (0..n).step_by(4) {
        let c = at(i) & !(CLUSTER - 1);
        model[c as usize..(c + CLUSTER) as usize].fill(0);
        // Write-zeroes with UNMAP (flag 1): the clusters are freed too.
        let (kind, flags) = if i % 8 == 0 {
            (VIRTIO_BLK_T_DISCARD, 0)
        } else {
            (VIRTIO_BLK_T_WRITE_ZEROES, 1)
        };
        let sectors = (CLUSTER / 512) as u32;
        q[1].add(&mut d, kind, 0, Data::Ranges(&[(c / 512, sectors, flags)]));
    }
    // Each piece has a cluster of its own: these are not being discarded.
    for i in (0..n).filter(|i| i % 4 != 0) {
        if i % 2 == 0 {
            q[0].add(&mut d, VIRTIO_BLK_T_IN, at(i) / 512, Data::In(4096));
        } else {
            let data = pattern(4096, 200 + i as u8);
            model[at(i) as usize..at(i) as usize + 4096].copy_from_slice(&data);
            q[0].add(&mut d, VIRTIO_BLK_T_OUT, at(i) / 512, Data::Out(&data));
        }
    }
    d.kick(0);
    d.kick(1);
    q[0].finish(&mut d, &model);
    q[1].finish(&mut d, &model);

    // 4. Everything read back, flushed; the image holds the model.
    for i in 0..16u64 {
        q[(i % 2) as usize].add(&mut d, VIRTIO_BLK_T_IN, i * 256, Data::In(131_072));
    }
    q[0].add(&mut d, VIRTIO_BLK_T_FLUSH, 0, Data::None);
    d.kick(0);
    d.kick(1);
    q[0].finish(&mut d, &model);
    q[1].finish(&mut d, &model);
    assert_eq!(d.status() & S_NEEDS_RESET, 0);
    drop(d);
    drop(disk);
    let image = storage::open(&path, Format::Qcow2, true).unwrap();
    let mut all = vec![0u8; (2 * MIB) as usize];
    image.read_at(&mut all, 0).unwrap();
    assert!(all == model, "the image differs from the model");
}
