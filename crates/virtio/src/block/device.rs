//! The virtio-blk device: identity, features, configuration space,
//! lifecycle (one worker thread per queue).

use std::mem::offset_of;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use storage::DiskImage;
use virtio_bindings::virtio_blk::{
    virtio_blk_config, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH,
    VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;

use super::request::{Limits, ID_BYTES, SECTOR_SHIFT, SECTOR_SIZE};
use super::uring::Uring;
use super::worker::BlockHandler;
use crate::device::{read_config_bytes, ActivateError, Activation, VirtioDevice};
use crate::worker::{self, WorkerHandle};

/// The queue size the device offers (Linux uses it as the queue depth).
pub const QUEUE_SIZE: u16 = 256;
/// The most queues a disk offers (VIRTIO_BLK_F_MQ).
pub const MAX_QUEUES: u16 = 16;
/// Most sectors in one discard or write-zeroes range (1 GiB).
pub const MAX_RANGE_SECTORS: u32 = (1 << 30) >> SECTOR_SHIFT;
/// Most ranges in one discard or write-zeroes request.
pub const MAX_RANGES: u32 = 32;

/// Feature bits as masks.
pub mod features {
    use super::*;
    pub const SEG_MAX: u64 = 1 << VIRTIO_BLK_F_SEG_MAX;
    pub const RO: u64 = 1 << VIRTIO_BLK_F_RO;
    pub const BLK_SIZE: u64 = 1 << VIRTIO_BLK_F_BLK_SIZE;
    pub const FLUSH: u64 = 1 << VIRTIO_BLK_F_FLUSH;
    pub const MQ: u64 = 1 << VIRTIO_BLK_F_MQ;
    pub const DISCARD: u64 = 1 << VIRTIO_BLK_F_DISCARD;
    pub const WRITE_ZEROES: u64 = 1 << VIRTIO_BLK_F_WRITE_ZEROES;
}

/// Bytes of the configuration space we fill (up to `unused1`; the secure
/// erase and zoned fields belong to features we never offer).
pub const CONFIG_LEN: usize = offset_of!(virtio_blk_config, max_secure_erase_sectors);

/// Errors building a [`Block`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockError {
    #[error("Disk serial {0:?} is longer than 20 bytes")]
    SerialTooLong(String),
    #[error("Disk serial {0:?} has characters other than printable ASCII")]
    SerialCharacters(String),
    #[error("Disk queue count {0} is outside 1..={MAX_QUEUES}")]
    Queues(u16),
}

/// How a [`Block`] presents its disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockOptions {
    /// A name for threads and logs (`disk0`).
    pub name: String,
    /// What GET_ID answers (`/sys/block/vdX/serial`), at most 20 printable
    /// ASCII bytes; none reads as empty.
    pub serial: Option<String>,
    /// Request queues (VIRTIO_BLK_F_MQ when more than one), each served by
    /// its own worker thread.
    pub num_queues: u16,
    /// Serve reads and writes through io_uring, many at a time, where the
    /// kernel allows it and the image can place them in its file (raw: all;
    /// qcow2: within allocated clusters); the rest one at a time,
    /// synchronously.
    pub io_uring: bool,
}

impl BlockOptions {
    /// One queue, no serial, io_uring where possible.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            serial: None,
            num_queues: 1,
            io_uring: true,
        }
    }
}

/// How a disk's queues move data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoEngine {
    /// io_uring: up to a queue's size of reads and writes in flight,
    /// completed as they finish.
    IoUring,
    /// One request at a time per queue, `preadv`/`pwritev` on the worker.
    Sync,
}

/// Checks a disk serial: at most 20 bytes of printable ASCII (no spaces
/// at all, so it survives sysfs and shell scripts unchanged).
pub fn check_serial(serial: &str) -> Result<[u8; ID_BYTES], BlockError> {
    if serial.len() > ID_BYTES {
        return Err(BlockError::SerialTooLong(serial.to_string()));
    }
    if !serial.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BlockError::SerialCharacters(serial.to_string()));
    }
    let mut id = [0u8; ID_BYTES];
    id[..serial.len()].copy_from_slice(serial.as_bytes());
    Ok(id)
}

/// Request counters of one disk, shared with whoever reads them (the
/// control socket's `counters`, tests). The queue workers update them with
/// relaxed atomic adds when a request completes; they outlive the device
/// when the owner keeps the `Arc` (keel-vmm keeps them across reboots).
#[derive(Debug, Default)]
pub struct BlockStats {
    /// Reads served, and the bytes read into the guest.
    pub read_ops: AtomicU64,
    pub read_bytes: AtomicU64,
    /// Writes served, and the bytes written to the disk.
    pub write_ops: AtomicU64,
    pub write_bytes: AtomicU64,
    pub flush_ops: AtomicU64,
    /// Discard and write-zeroes requests served (one per request, whatever
    /// its number of ranges).
    pub discard_ops: AtomicU64,
    pub write_zeroes_ops: AtomicU64,
    /// Requests answered with an error status (VIRTIO_BLK_S_IOERR or
    /// VIRTIO_BLK_S_UNSUPP: host I/O errors, malformed or refused
    /// requests), or returned without one (no room for a status byte).
    pub errors: AtomicU64,
}

/// A virtio block device over a [`DiskImage`].
pub struct Block {
    disk: Arc<dyn DiskImage>,
    stats: Arc<BlockStats>,
    opts: BlockOptions,
    id: [u8; ID_BYTES],
    config: [u8; CONFIG_LEN],
    queue_sizes: Vec<u16>,
    avail_features: u64,
    /// The engine chosen when the device was built.
    engine: IoEngine,
    workers: Vec<WorkerHandle<BlockHandler>>,
}

impl Block {
    /// A device with counters of its own (see [`Block::with_stats`]).
    pub fn new(disk: Arc<dyn DiskImage>, opts: BlockOptions) -> Result<Self, BlockError> {
        Self::with_stats(disk, opts, Arc::default())
    }

    /// A device that counts its requests in `stats` (which may outlive it:
    /// the next boot's device can go on counting in the same ones).
    pub fn with_stats(
        disk: Arc<dyn DiskImage>,
        opts: BlockOptions,
        stats: Arc<BlockStats>,
    ) -> Result<Self, BlockError> {
        let id = match &opts.serial {
            Some(s) => check_serial(s)?,
            None => [0; ID_BYTES],
        };
        if opts.num_queues == 0 || opts.num_queues > MAX_QUEUES {
            return Err(BlockError::Queues(opts.num_queues));
        }
        let mut avail = features::SEG_MAX | features::BLK_SIZE | features::FLUSH;
        if disk.read_only() {
            avail |= features::RO;
        } else {
            avail |= features::DISCARD | features::WRITE_ZEROES;
        }
        if opts.num_queues > 1 {
            avail |= features::MQ;
        }
        let config = build_config(&*disk, opts.num_queues);
        let engine = if opts.io_uring && disk.raw_fd().is_some() {
            match Uring::available() {
                Ok(()) => IoEngine::IoUring,
                Err(e) => {
                    eprintln!(
                        "keel-vmm: {}: {}; requests are served one at a time",
                        opts.name,
                        crate::error_chain(&e)
                    );
                    IoEngine::Sync
                }
            }
        } else {
            IoEngine::Sync
        };
        Ok(Self {
            engine,
            disk,
            stats,
            id,
            config,
            queue_sizes: vec![QUEUE_SIZE; usize::from(opts.num_queues)],
            avail_features: avail,
            workers: Vec::new(),
            opts,
        })
    }

    /// The disk this device serves.
    pub fn disk(&self) -> &Arc<dyn DiskImage> {
        &self.disk
    }

    /// How the disk's requests are served.
    pub fn io_engine(&self) -> IoEngine {
        self.engine
    }

    /// The device's request counters (they survive resets).
    pub fn stats(&self) -> Arc<BlockStats> {
        self.stats.clone()
    }

    /// What the device accepts given the negotiated `features`.
    fn limits(&self, features: u64) -> Limits {
        let read_only = self.disk.read_only();
        Limits {
            capacity: self.disk.size() >> SECTOR_SHIFT,
            read_only,
            discard: !read_only && features & features::DISCARD != 0,
            write_zeroes: !read_only && features & features::WRITE_ZEROES != 0,
            max_discard_sectors: MAX_RANGE_SECTORS,
            max_discard_seg: MAX_RANGES,
            max_write_zeroes_sectors: MAX_RANGE_SECTORS,
            max_write_zeroes_seg: MAX_RANGES,
        }
    }

    fn stop_workers(&mut self) {
        for w in self.workers.drain(..) {
            w.stop();
        }
    }
}

/// The configuration space (little endian, `struct virtio_blk_config`).
fn build_config(disk: &dyn DiskImage, num_queues: u16) -> [u8; CONFIG_LEN] {
    let mut c = [0u8; CONFIG_LEN];
    let mut put = |at: usize, bytes: &[u8]| c[at..at + bytes.len()].copy_from_slice(bytes);
    put(
        offset_of!(virtio_blk_config, capacity),
        &(disk.size() >> SECTOR_SHIFT).to_le_bytes(),
    );
    // Two descriptors of every chain are the header and the status.
    put(
        offset_of!(virtio_blk_config, seg_max),
        &u32::from(QUEUE_SIZE - 2).to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, blk_size),
        &(SECTOR_SIZE as u32).to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, num_queues),
        &num_queues.to_le_bytes(),
    );
    let alignment = (disk.discard_alignment() >> SECTOR_SHIFT).clamp(1, u64::from(u32::MAX));
    for (field, value) in [
        (
            offset_of!(virtio_blk_config, max_discard_sectors),
            MAX_RANGE_SECTORS,
        ),
        (offset_of!(virtio_blk_config, max_discard_seg), MAX_RANGES),
        (
            offset_of!(virtio_blk_config, discard_sector_alignment),
            alignment as u32,
        ),
        (
            offset_of!(virtio_blk_config, max_write_zeroes_sectors),
            MAX_RANGE_SECTORS,
        ),
        (
            offset_of!(virtio_blk_config, max_write_zeroes_seg),
            MAX_RANGES,
        ),
    ] {
        put(field, &value.to_le_bytes());
    }
    put(offset_of!(virtio_blk_config, write_zeroes_may_unmap), &[1]);
    c
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.avail_features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if !self.workers.is_empty() {
            return Err(ActivateError::AlreadyActive);
        }
        if activation.queues.iter().all(|q| q.index() != 0) {
            return Err(ActivateError::MissingQueue(0));
        }
        let limits = self.limits(activation.features);
        let single = activation.queues.len() == 1;
        for q in activation.queues {
            // Thread names show 15 characters: `blk-disk0`, `blk-disk0-q1`.
            let name = if single {
                format!("blk-{}", self.opts.name)
            } else {
                format!("blk-{}-q{}", self.opts.name, q.index())
            };
            let uring = match self.engine {
                IoEngine::IoUring => Uring::new(&self.disk, &activation.mem, q.size())
                    .map_err(|e| {
                        eprintln!(
                            "keel-vmm: {name}: {}; this queue is served one request at a time",
                            crate::error_chain(&e)
                        );
                    })
                    .ok(),
                IoEngine::Sync => None,
            };
            let handler = BlockHandler::new(
                self.disk.clone(),
                limits,
                self.id,
                name.clone(),
                self.stats.clone(),
                uring,
            );
            let one = Activation {
                mem: activation.mem.clone(),
                features: activation.features,
                queues: vec![q],
                interrupt: activation.interrupt.clone(),
            };
            match worker::spawn(&name, one, handler) {
                Ok(w) => self.workers.push(w),
                Err(e) => {
                    self.stop_workers();
                    return Err(ActivateError::Worker(e));
                }
            }
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.stop_workers();
    }

    fn pause(&mut self) -> Result<(), ActivateError> {
        for w in &mut self.workers {
            w.pause().map_err(ActivateError::Worker)?;
        }
        Ok(())
    }

    fn resume(&mut self) -> Result<(), ActivateError> {
        for w in &mut self.workers {
            w.resume().map_err(ActivateError::Worker)?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let mut s = format!("virtio-blk {}: {}", self.opts.name, self.disk.describe());
        if let Some(serial) = &self.opts.serial {
            s.push_str(&format!(", serial {serial}"));
        }
        if self.engine == IoEngine::IoUring {
            s.push_str(", io_uring");
        }
        s
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.stop_workers();
    }
}
