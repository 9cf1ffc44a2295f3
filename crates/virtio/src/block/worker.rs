//! virtio-blk request handling on a queue's worker thread: every chain the
//! driver made available is parsed ([`super::request`]), served
//! synchronously against the disk (vectored I/O straight between the file
//! and guest memory), counted in the disk's [`BlockStats`] and completed;
//! one interrupt per batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use storage::{DiskImage, StorageError};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};
use vm_memory::{Bytes, GuestMemoryMmap, VolatileSlice};

use super::device::BlockStats;
use super::request::{self, Buffer, Limits, Range, Request, ID_BYTES};
use crate::chain::{ChainError, ChainInfo};
use crate::queue::{Chain, QueueError};
use crate::worker::{QueueHandler, WorkerContext};

/// Host I/O errors logged per queue before the log goes quiet.
const MAX_LOGGED_ERRORS: u32 = 8;

/// Serves one queue of one disk.
pub(crate) struct BlockHandler {
    disk: Arc<dyn DiskImage>,
    limits: Limits,
    id: [u8; ID_BYTES],
    /// For log lines (the worker thread's name).
    name: String,
    /// The disk's counters (shared by its queues).
    stats: Arc<BlockStats>,
    /// Reused for every chain: its buffers.
    bufs: Vec<Buffer>,
    /// Host errors seen (only the first few are logged).
    host_errors: u32,
}

impl BlockHandler {
    pub(crate) fn new(
        disk: Arc<dyn DiskImage>,
        limits: Limits,
        id: [u8; ID_BYTES],
        name: String,
        stats: Arc<BlockStats>,
    ) -> Self {
        Self {
            disk,
            limits,
            id,
            name,
            stats,
            bufs: Vec::with_capacity(64),
            host_errors: 0,
        }
    }
}

impl QueueHandler for BlockHandler {
    fn process_queue(&mut self, ctx: &mut WorkerContext, queue: usize) -> Result<(), QueueError> {
        let max = ctx.queues.get(queue).map_or(0, |q| usize::from(q.size()));
        ctx.process_chains(queue, |mem, chain, checked| {
            self.serve_chain(mem, chain, checked, max)
        })
    }
}

impl BlockHandler {
    /// Serves one chain; returns the used length (the writable bytes once
    /// the status is written, 0 when there is nowhere to write it).
    fn serve_chain(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: Chain<'_>,
        checked: Result<ChainInfo, ChainError>,
        max_descriptors: usize,
    ) -> u32 {
        self.bufs.clear();
        self.bufs
            .extend(chain.take(max_descriptors).map(|d| Buffer {
                addr: d.addr(),
                len: d.len(),
                writable: d.is_write_only(),
            }));
        let parsed = request::parse_request(mem, &self.bufs, &self.limits);
        let Some(status_at) = parsed.status else {
            count(&self.stats.errors, 1);
            return 0;
        };
        let status = match (checked, parsed.request) {
            // A broken chain is answered with an error where its last
            // writable byte is, and not served.
            (Err(_), _) => VIRTIO_BLK_S_IOERR as u8,
            (Ok(_), Err(e)) => e.status(),
            (Ok(_), Ok(req)) => self.execute(mem, req),
        };
        if status != VIRTIO_BLK_S_OK as u8 {
            count(&self.stats.errors, 1);
        }
        match mem.write_obj(status, status_at) {
            Ok(()) => parsed.writable_len,
            Err(_) => 0,
        }
    }

    /// Runs a well-formed request against the disk and counts it when it
    /// succeeds; its status byte.
    fn execute(&mut self, mem: &GuestMemoryMmap, req: Request) -> u8 {
        let kind = Counted::of(&req);
        let status = self.run(mem, req);
        if status == VIRTIO_BLK_S_OK as u8 {
            let s = &self.stats;
            match kind {
                Counted::Read(n) => {
                    count(&s.read_ops, 1);
                    count(&s.read_bytes, n);
                }
                Counted::Write(n) => {
                    count(&s.write_ops, 1);
                    count(&s.write_bytes, n);
                }
                Counted::Flush => count(&s.flush_ops, 1),
                Counted::Discard => count(&s.discard_ops, 1),
                Counted::WriteZeroes => count(&s.write_zeroes_ops, 1),
                Counted::Not => {}
            }
        }
        status
    }

    /// Runs a well-formed request against the disk; its status byte.
    fn run(&mut self, mem: &GuestMemoryMmap, req: Request) -> u8 {
        let res = match req {
            Request::Read { offset, data } => {
                let mut slices: Vec<VolatileSlice<'_>> = Vec::new();
                match request::span_slices(mem, &self.bufs, data, &mut slices) {
                    Ok(()) => self.disk.read_vectored_at(&slices, offset),
                    Err(_) => return VIRTIO_BLK_S_IOERR as u8,
                }
            }
            Request::Write { offset, data } => {
                let mut slices: Vec<VolatileSlice<'_>> = Vec::new();
                match request::span_slices(mem, &self.bufs, data, &mut slices) {
                    Ok(()) => self.disk.write_vectored_at(&slices, offset),
                    Err(_) => return VIRTIO_BLK_S_IOERR as u8,
                }
            }
            Request::Flush => self.disk.flush(),
            Request::GetId { data } => {
                let n = data.len as usize;
                return match request::write_span(mem, &self.bufs, data.start, &self.id[..n]) {
                    Ok(()) => VIRTIO_BLK_S_OK as u8,
                    Err(_) => VIRTIO_BLK_S_IOERR as u8,
                };
            }
            Request::Discard(ranges) => self.each_range(&ranges, |d, r| d.discard(r.offset, r.len)),
            Request::WriteZeroes(ranges) => {
                self.each_range(&ranges, |d, r| d.write_zeroes(r.offset, r.len, r.unmap))
            }
        };
        match res {
            Ok(()) => VIRTIO_BLK_S_OK as u8,
            Err(e) => {
                self.log_error(&e);
                VIRTIO_BLK_S_IOERR as u8
            }
        }
    }

    fn each_range(
        &self,
        ranges: &[Range],
        op: impl Fn(&dyn DiskImage, &Range) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        ranges.iter().try_for_each(|r| op(&*self.disk, r))
    }

    /// Logs a host I/O failure (not the guest's own mistakes), the first
    /// few times only: a failing disk must not flood the log.
    fn log_error(&mut self, e: &StorageError) {
        if e.is_guest_error() {
            return;
        }
        self.host_errors = self.host_errors.saturating_add(1);
        if self.host_errors <= MAX_LOGGED_ERRORS {
            eprintln!(
                "keel-vmm: {}: {}{}",
                self.name,
                crate::error_chain(e),
                if self.host_errors == MAX_LOGGED_ERRORS {
                    " (further I/O errors are not logged)"
                } else {
                    ""
                }
            );
        }
    }
}

/// What a served request adds to the counters.
#[derive(Clone, Copy)]
enum Counted {
    /// Bytes read or written.
    Read(u64),
    Write(u64),
    Flush,
    Discard,
    WriteZeroes,
    /// GET_ID: not I/O.
    Not,
}

impl Counted {
    fn of(req: &Request) -> Self {
        match req {
            Request::Read { data, .. } => Counted::Read(data.len),
            Request::Write { data, .. } => Counted::Write(data.len),
            Request::Flush => Counted::Flush,
            Request::Discard(_) => Counted::Discard,
            Request::WriteZeroes(_) => Counted::WriteZeroes,
            Request::GetId { .. } => Counted::Not,
        }
    }
}

/// Adds `n` to a counter (relaxed: readers only want a recent value).
fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
