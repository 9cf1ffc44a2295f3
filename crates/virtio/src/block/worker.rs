//! virtio-blk request handling on a queue's worker thread: every chain the
//! driver made available is checked and parsed ([`super::request`]) before
//! anything touches the disk, then served, counted in the disk's
//! [`BlockStats`] and completed. After each step that completed requests
//! (one served on the spot, a batch that finished in the kernel) the driver
//! is interrupted if it asked to be (EVENT_IDX: it does not ask again until
//! it has looked at the used ring), so it refills the queue while the rest
//! is being served.
//!
//! Two engines:
//! - io_uring (where the kernel allows it): reads and writes the image can
//!   place in its file (raw: all; qcow2: those within allocated clusters)
//!   are queued to the kernel ([`super::uring`]), up to the queue's size at
//!   once, and completed in the order they finish, when the ring's EventFd
//!   fires. Everything else (qcow2 allocating writes and backing reads,
//!   flush, discard, write-zeroes, GET_ID, errors) is served on the spot.
//!   A flush waits until the reads and writes in flight are done (no chain
//!   is taken meanwhile), then `fdatasync`s: what completed before it is
//!   durable when it completes. Discards and write-zeroes wait the same
//!   way: they may free qcow2 clusters that requests in flight were given
//!   (and the image waits for the other queues' requests itself).
//! - synchronous (no io_uring): each request is served in turn with
//!   `preadv`/`pwritev` straight into guest memory.
//!
//! Pause finishes and completes what is in flight; stop (reset, drop)
//! cancels it and waits for the kernel, without answering.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use storage::{DiskImage, StorageError};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, VolatileSlice};
use vmm_sys_util::epoll::EventSet;

use super::device::BlockStats;
use super::request::{self, Buffer, Limits, Range, Request, Span, ID_BYTES};
use super::uring::{Dir, Io, PushError, Uring};
use crate::chain::{self, ChainError, ChainInfo};
use crate::device::VirtioInterrupt;
use crate::queue::{Chain, QueueError, VirtQueue};
use crate::worker::{QueueHandler, WorkerContext};

/// Host I/O errors logged per queue before the log goes quiet.
const MAX_LOGGED_ERRORS: u32 = 8;
/// Requests queued for io_uring before they are handed to the kernel in
/// one system call (what is left at the end of a batch of chains goes
/// then): fewer syscalls per request, while a long batch still starts its
/// first requests early.
const SUBMIT_BATCH: usize = 16;
/// The worker's epoll token for the io_uring completion EventFd.
const URING_TOKEN: u64 = 1;
const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

/// A flush, discard or write-zeroes taken off the ring while requests were
/// in flight: it runs once they are done.
struct Held {
    head: u16,
    status: GuestAddress,
    used_len: u32,
    req: Request,
}

/// What became of a chain taken off the ring.
enum Taken {
    /// Answered: put it on the used ring with this length.
    Done(u32),
    /// Handed to io_uring.
    InFlight,
    /// A request that must wait for the requests in flight.
    Held(Held),
}

/// Serves one queue of one disk (`ctx.queues[0]`: each worker has one).
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
    /// The io_uring engine; `None`: synchronous.
    uring: Option<Uring>,
    /// Chains are left on the ring until a slot frees up.
    backlog: bool,
    /// A request waiting for the requests in flight; no chain is taken
    /// meanwhile.
    held: Option<Held>,
    /// Reused: completions being answered.
    reaped: Vec<(usize, i32)>,
}

impl BlockHandler {
    pub(crate) fn new(
        disk: Arc<dyn DiskImage>,
        limits: Limits,
        id: [u8; ID_BYTES],
        name: String,
        stats: Arc<BlockStats>,
        uring: Option<Uring>,
    ) -> Self {
        Self {
            disk,
            limits,
            id,
            name,
            stats,
            bufs: Vec::with_capacity(64),
            host_errors: 0,
            uring,
            backlog: false,
            held: None,
            reaped: Vec::new(),
        }
    }

    fn in_flight(&self) -> usize {
        self.uring.as_ref().map_or(0, Uring::in_flight)
    }
}

impl QueueHandler for BlockHandler {
    fn start(&mut self, ctx: &mut WorkerContext) -> io::Result<()> {
        if let Some(u) = &self.uring {
            ctx.watch(u.event().as_raw_fd(), URING_TOKEN, EventSet::IN)?;
        }
        Ok(())
    }

    fn process_queue(&mut self, ctx: &mut WorkerContext, _queue: usize) -> Result<(), QueueError> {
        self.serve(ctx)
    }

    fn handle_event(
        &mut self,
        ctx: &mut WorkerContext,
        token: u64,
        _events: EventSet,
    ) -> Result<(), QueueError> {
        if token == URING_TOKEN {
            self.serve(ctx)
        } else {
            Ok(())
        }
    }

    fn pause(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
        self.drain(ctx)
    }

    fn stop(&mut self, _ctx: &mut WorkerContext) {
        if let Some(u) = &mut self.uring {
            if !u.abandon() {
                eprintln!(
                    "keel-vmm: {}: cannot wait for the requests in flight",
                    self.name
                );
            }
        }
        self.held = None;
    }
}

impl BlockHandler {
    /// Answers what completed, takes what the driver made available and
    /// hands it to the kernel, answering what completes on the way; until
    /// nothing more can move. After each step that answered something the
    /// driver is interrupted if it wants to be (EVENT_IDX): it can refill
    /// the queue while the rest is still being served.
    fn serve(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
        let WorkerContext {
            mem,
            queues,
            interrupt,
            ..
        } = ctx;
        let mem = &*mem;
        let irq = &**interrupt;
        let Some(q) = queues.get_mut(0) else {
            return Ok(());
        };
        loop {
            if let Some(u) = &self.uring {
                u.clear_event();
            }
            let n = self.reap(mem, q)?;
            notify(mem, q, irq, n)?;
            self.intake(mem, q, irq)?;
            let now = self.reap(mem, q)?;
            notify(mem, q, irq, now)?;
            // Taking chains stopped for lack of room or for a flush, and
            // some finished: take more.
            let blocked = self.backlog || self.held.is_some();
            if now == 0 || !blocked {
                return Ok(());
            }
        }
    }

    /// Takes every available chain (at most two rounds of the ring, then
    /// the queue kicks itself so other events get a turn); stops early when
    /// io_uring is full or a request must wait for those in flight (see
    /// [`Held`]). The requests queued for the
    /// kernel go to it together, in one system call per [`SUBMIT_BATCH`]
    /// and one at the end; what is answered on the spot goes on the used
    /// ring at once.
    fn intake(
        &mut self,
        mem: &GuestMemoryMmap,
        q: &mut VirtQueue,
        irq: &dyn VirtioInterrupt,
    ) -> Result<(), QueueError> {
        if let Some(h) = self.held.take() {
            if self.in_flight() > 0 {
                self.held = Some(h);
                return Ok(());
            }
            let head = h.head;
            let len = self.run_held(mem, h);
            q.add_used(mem, head, len)?;
            notify(mem, q, irq, 1)?;
        }
        let size = q.size();
        let budget = usize::from(size) * 2;
        let mut served = 0usize;
        let mut queued = 0usize;
        let mut more = false;
        self.backlog = false;
        'ring: loop {
            q.disable_notification(mem)?;
            loop {
                if self.uring.as_ref().is_some_and(|u| !u.has_room()) {
                    self.backlog = true;
                    break 'ring;
                }
                let Some(chain) = q.pop(mem)? else { break };
                let head = chain.head_index();
                let checked = chain::validate(&chain, size);
                let answered = match self.take(mem, chain, checked, usize::from(size)) {
                    Taken::Done(len) => {
                        q.add_used(mem, head, len)?;
                        1
                    }
                    Taken::InFlight => {
                        queued += 1;
                        if queued < SUBMIT_BATCH {
                            0
                        } else {
                            queued = 0;
                            self.submit(mem, q)?
                        }
                    }
                    Taken::Held(h) => {
                        self.held = Some(h);
                        break 'ring;
                    }
                };
                notify(mem, q, irq, answered)?;
                served += 1;
                if served >= budget {
                    more = true;
                    break 'ring;
                }
            }
            if !q.enable_notification(mem)? {
                break;
            }
        }
        if queued > 0 {
            let n = self.submit(mem, q)?;
            notify(mem, q, irq, n)?;
        }
        if more {
            // Come back to this queue after the other ready events.
            let _ = q.kick().write(1);
        }
        Ok(())
    }

    /// Hands the queued requests to the kernel and answers those that
    /// completed at once (page-cache hits usually do); how many.
    fn submit(&mut self, mem: &GuestMemoryMmap, q: &mut VirtQueue) -> Result<usize, QueueError> {
        let Some(u) = &mut self.uring else {
            return Ok(0);
        };
        if let Err(e) = u.submit() {
            // The requests stay queued for the next submit.
            self.log(&format!("cannot submit to io_uring: {e}"));
        }
        self.reap(mem, q)
    }

    /// Checks, parses and serves (or queues) one chain.
    fn take(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: Chain<'_>,
        checked: Result<ChainInfo, ChainError>,
        max_descriptors: usize,
    ) -> Taken {
        let head = chain.head_index();
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
            return Taken::Done(0);
        };
        let used_len = parsed.writable_len;
        let req = match (checked, parsed.request) {
            // A broken chain is answered with an error where its last
            // writable byte is, and not served.
            (Err(_), _) => return Taken::Done(self.answer(mem, status_at, IOERR, used_len)),
            (Ok(_), Err(e)) => {
                return Taken::Done(self.answer(mem, status_at, e.status(), used_len))
            }
            (Ok(_), Ok(req)) => req,
        };
        let io = |dir, offset, span| Io {
            head,
            status: status_at,
            used_len,
            dir,
            offset,
            span,
        };
        let wait = match (&self.uring, &req) {
            (Some(u), Request::Flush) => !self.limits.read_only && u.in_flight() > 0,
            // They may free qcow2 clusters the requests in flight were given:
            // the image would wait for those leases, and they come back only
            // when this worker answers them.
            (Some(u), Request::Discard(_) | Request::WriteZeroes(_)) => u.in_flight() > 0,
            _ => false,
        };
        if wait {
            return Taken::Held(Held {
                head,
                status: status_at,
                used_len,
                req,
            });
        }
        let queued = match (&mut self.uring, &req) {
            (Some(u), Request::Read { offset, data }) => {
                Some(u.push(mem, io(Dir::Read, *offset, *data), &self.bufs))
            }
            (Some(u), Request::Write { offset, data }) => {
                Some(u.push(mem, io(Dir::Write, *offset, *data), &self.bufs))
            }
            _ => None,
        };
        match queued {
            Some(Ok(())) => return Taken::InFlight,
            Some(Err(PushError::Memory)) => {
                return Taken::Done(self.answer(mem, status_at, IOERR, used_len))
            }
            // Too many pieces for one readv, or too much to bounce: served
            // synchronously.
            Some(Err(PushError::Synchronous)) | None => {}
        }
        let kind = Counted::of(&req);
        let status = self.execute(mem, req);
        self.record(kind, status);
        Taken::Done(answer(mem, status_at, status, used_len))
    }

    /// Counts a request answered on the spot and writes its status.
    fn answer(&mut self, mem: &GuestMemoryMmap, at: GuestAddress, status: u8, len: u32) -> u32 {
        self.record(Counted::Not, status);
        answer(mem, at, status, len)
    }

    /// Answers every request io_uring finished; how many went on the used
    /// ring. Every finished slot is released, even when the ring breaks.
    fn reap(&mut self, mem: &GuestMemoryMmap, q: &mut VirtQueue) -> Result<usize, QueueError> {
        let Some(u) = &mut self.uring else {
            return Ok(0);
        };
        let mut reaped = std::mem::take(&mut self.reaped);
        reaped.clear();
        u.reap(&mut reaped);
        let mut result = Ok(0);
        for &(k, res) in &reaped {
            let Some((head, len)) = self.complete(mem, k, res) else {
                continue;
            };
            match (&mut result, q.add_used(mem, head, len)) {
                (Ok(n), Ok(())) => *n += 1,
                (Ok(_), Err(e)) => result = Err(e),
                (Err(_), _) => {}
            }
        }
        self.reaped = reaped;
        result
    }

    /// Answers the request in slot `k` that finished with `res` (bytes or
    /// -errno) and releases the slot; its head and used length.
    fn complete(&mut self, mem: &GuestMemoryMmap, k: usize, res: i32) -> Option<(u16, u32)> {
        let u = self.uring.as_mut()?;
        let (io, bufs) = u.slot(k)?;
        // A bounced read's data is in the slot's buffer until copied out.
        let copied = u64::try_from(res).map_or(true, |done| u.copy_back(mem, k, done));
        let outcome = match u64::try_from(res) {
            Ok(_) if !copied => Err(transfer_error(
                &io,
                io.offset,
                io.span.len,
                io::Error::new(io::ErrorKind::InvalidInput, "guest buffers out of memory"),
            )),
            Ok(done) if done >= io.span.len => Ok(()),
            // A short transfer (e.g. the file shrank): the rest synchronously.
            Ok(done) => finish_sync(&*self.disk, mem, bufs, &io, done),
            Err(_) => {
                let source = io::Error::from_raw_os_error(res.saturating_neg());
                match source.kind() {
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => {
                        finish_sync(&*self.disk, mem, bufs, &io, 0)
                    }
                    _ => Err(transfer_error(&io, io.offset, io.span.len, source)),
                }
            }
        };
        u.release(k);
        let status = match outcome {
            Ok(()) => OK,
            Err(e) => {
                self.log_error(&e);
                IOERR
            }
        };
        let kind = match io.dir {
            Dir::Read => Counted::Read(io.span.len),
            Dir::Write => Counted::Write(io.span.len),
        };
        self.record(kind, status);
        Some((io.head, answer(mem, io.status, status, io.used_len)))
    }

    /// Waits for everything in flight and answers it (and a request held
    /// for it), for a pause.
    fn drain(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
        let WorkerContext {
            mem,
            queues,
            interrupt,
            ..
        } = ctx;
        let mem = &*mem;
        let Some(q) = queues.get_mut(0) else {
            return Ok(());
        };
        let mut answered = 0;
        let mut result = Ok(());
        while let Some(u) = &mut self.uring {
            if u.in_flight() == 0 {
                break;
            }
            if let Err(e) = u.wait() {
                eprintln!(
                    "keel-vmm: {}: cannot wait for the requests in flight: {e}",
                    self.name
                );
                break;
            }
            match self.reap(mem, q) {
                Ok(n) => answered += n,
                Err(e) => result = Err(e),
            }
        }
        let idle = self.in_flight() == 0;
        if let Some(h) = self.held.take_if(|_| idle) {
            let head = h.head;
            let len = self.run_held(mem, h);
            match q.add_used(mem, head, len) {
                Ok(()) => answered += 1,
                Err(e) => result = Err(e),
            }
        }
        notify(mem, q, &**interrupt, answered)?;
        result
    }

    /// Runs a held request now that nothing is in flight; its used length.
    fn run_held(&mut self, mem: &GuestMemoryMmap, h: Held) -> u32 {
        let kind = Counted::of(&h.req);
        let status = self.execute(mem, h.req);
        self.record(kind, status);
        answer(mem, h.status, status, h.used_len)
    }

    /// Runs a well-formed request against the disk synchronously; its
    /// status byte (see [`Self::record`] for the counters).
    fn execute(&mut self, mem: &GuestMemoryMmap, req: Request) -> u8 {
        let res = match req {
            Request::Read { offset, data } => {
                let mut slices: Vec<VolatileSlice<'_>> = Vec::new();
                match request::span_slices(mem, &self.bufs, data, &mut slices) {
                    Ok(()) => self.disk.read_vectored_at(&slices, offset),
                    Err(_) => return IOERR,
                }
            }
            Request::Write { offset, data } => {
                let mut slices: Vec<VolatileSlice<'_>> = Vec::new();
                match request::span_slices(mem, &self.bufs, data, &mut slices) {
                    Ok(()) => self.disk.write_vectored_at(&slices, offset),
                    Err(_) => return IOERR,
                }
            }
            Request::Flush => self.disk.flush(),
            Request::GetId { data } => {
                let n = data.len as usize;
                return match request::write_span(mem, &self.bufs, data.start, &self.id[..n]) {
                    Ok(()) => OK,
                    Err(_) => IOERR,
                };
            }
            Request::Discard(ranges) => self.each_range(&ranges, |d, r| d.discard(r.offset, r.len)),
            Request::WriteZeroes(ranges) => {
                self.each_range(&ranges, |d, r| d.write_zeroes(r.offset, r.len, r.unmap))
            }
        };
        match res {
            Ok(()) => OK,
            Err(e) => {
                self.log_error(&e);
                IOERR
            }
        }
    }

    /// Counts a request that got `status`: its kind and bytes when it
    /// succeeded, an error otherwise.
    fn record(&self, kind: Counted, status: u8) {
        let s = &self.stats;
        if status != OK {
            count(&s.errors, 1);
            return;
        }
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
        self.log(&crate::error_chain(e));
    }

    /// Logs a host problem, the first few times only.
    fn log(&mut self, what: &str) {
        self.host_errors = self.host_errors.saturating_add(1);
        if self.host_errors <= MAX_LOGGED_ERRORS {
            eprintln!(
                "keel-vmm: {}: {}{}",
                self.name,
                what,
                if self.host_errors == MAX_LOGGED_ERRORS {
                    " (further I/O errors are not logged)"
                } else {
                    ""
                }
            );
        }
    }
}

/// Interrupts the driver for `q` if `answered` chains went on its used
/// ring and it wants to hear about them (EVENT_IDX aware).
fn notify(
    mem: &GuestMemoryMmap,
    q: &mut VirtQueue,
    irq: &dyn VirtioInterrupt,
    answered: usize,
) -> Result<(), QueueError> {
    if answered > 0 && q.needs_notification(mem)? {
        irq.signal_queue(q.index());
    }
    Ok(())
}

/// Writes a status byte; the used length (0 when it cannot be written).
fn answer(mem: &GuestMemoryMmap, at: GuestAddress, status: u8, len: u32) -> u32 {
    match mem.write_obj(status, at) {
        Ok(()) => len,
        Err(_) => 0,
    }
}

/// The error of a failed transfer of `len` bytes at `offset`.
fn transfer_error(io: &Io, offset: u64, len: u64, source: io::Error) -> StorageError {
    match io.dir {
        Dir::Read => StorageError::Read {
            offset,
            len,
            source,
        },
        Dir::Write => StorageError::Write {
            offset,
            len,
            source,
        },
    }
}

/// Moves the rest of `io` after its first `done` bytes synchronously.
fn finish_sync(
    disk: &dyn DiskImage,
    mem: &GuestMemoryMmap,
    bufs: &[Buffer],
    io: &Io,
    done: u64,
) -> Result<(), StorageError> {
    let rest = Span {
        writable: io.span.writable,
        start: io.span.start + done,
        len: io.span.len - done,
    };
    let offset = io.offset + done;
    let mut slices: Vec<VolatileSlice<'_>> = Vec::new();
    request::span_slices(mem, bufs, rest, &mut slices).map_err(|e| {
        let source = io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        transfer_error(io, offset, rest.len, source)
    })?;
    match io.dir {
        Dir::Read => disk.read_vectored_at(&slices, offset),
        Dir::Write => disk.write_vectored_at(&slices, offset),
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
    /// GET_ID, or a request refused before it ran: not I/O.
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
