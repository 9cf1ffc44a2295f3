//! virtio-blk (block device, virtio 1.x section 5.2) over a
//! [`storage::DiskImage`] (raw or qcow2, with backing chains).
//!
//! Features: SEG_MAX, BLK_SIZE (512), FLUSH (→ `DiskImage::flush`, i.e.
//! fdatasync: what the guest flushed survives a host crash), RO for
//! read-only disks, DISCARD and WRITE_ZEROES for writable ones, MQ when
//! more than one queue is asked for; GET_ID answers the serial.
//!
//! ```text
//!   queue k ── kick ──▶ worker thread `blk-<name>` / `blk-<name>-q<k>`
//!                        pop every chain → chain::validate + request::parse_request
//!                        io_uring: readv/writev queued to the kernel where the
//!                          image places them (raw: all; qcow2: allocated clusters),
//!                          up to the queue size in flight ── completion EventFd ─┐
//!                        otherwise: preadv/pwritev on the worker; flush, discard, │
//!                          write-zeroes, GET_ID on the worker                     │
//!                        → status byte → used ring (any order) ◀──────────────────┘
//!                        interrupt after each batch of completions (EVENT_IDX aware)
//! ```
//!
//! With `cache=none` ([`storage::CacheMode::None`]) a raw image's file is
//! `O_DIRECT`: requests whose guest buffers are aligned as the file needs
//! go to the kernel as they are; the others move through an aligned bounce
//! buffer (io_uring: one per request in flight, bounded; synchronously: the
//! image bounces them itself). qcow2 images do the same, their own file
//! `O_DIRECT` too.
//!
//! A malformed request never panics and never touches memory outside the
//! guest's own buffers: it is answered VIRTIO_BLK_S_IOERR (or
//! VIRTIO_BLK_S_UNSUPP for what the device does not do) in its last
//! writable byte, or returned with nothing written if it has none.

mod device;
pub mod request;
mod uring;
mod worker;

pub use device::{
    check_serial, features, Block, BlockError, BlockOptions, BlockStats, IoEngine, CONFIG_LEN,
    MAX_QUEUES, MAX_RANGES, MAX_RANGE_SECTORS, QUEUE_SIZE,
};
pub use request::{parse_request, Buffer, Limits, Parsed, Request, RequestError};

#[cfg(test)]
mod tests;
