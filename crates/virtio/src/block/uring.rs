//! The io_uring engine of one virtio-blk queue: reads and writes go to the
//! kernel as `IORING_OP_READV`/`IORING_OP_WRITEV` straight between the image
//! file and guest memory, many at a time, and complete in whatever order the
//! kernel finishes them. Where in the file is the image's answer
//! ([`DiskImage::map_direct`]): a raw image's byte for byte, a qcow2 image's
//! allocated clusters under a lease that the slot keeps until completion
//! (discards wait for it); a request the image cannot place in one piece
//! (a qcow2 cluster not allocated yet, backing data) is served
//! synchronously by the image instead. Completions are signalled
//! through an EventFd registered with the ring, which the queue's worker
//! watches in its epoll loop.
//!
//! ```text
//!   push() ── slot k taken: the chain's buffers + iovecs ── SQE (user_data k)
//!   submit() ────────────────────────────────────────────▶ kernel
//!   EventFd ◀── CQE (user_data k, result) ◀──────────────── kernel
//!   reap() → (k, result) → the worker answers the chain → release(k)
//! ```
//!
//! A slot is busy from `push` to `release`: its iovecs and the guest
//! buffers they point into stay valid until the kernel is done with them
//! (the engine holds a clone of the guest memory, so the mappings outlive
//! any request). Each SQE yields exactly one CQE, and only busy slots are
//! reported, so no chain is answered twice. Dropping the engine cancels
//! what is in flight and waits for it.
//!
//! With `cache=none` the image file is `O_DIRECT`: a request whose guest
//! buffers are not all aligned as the file needs (address, and length in
//! whole sectors) moves through an aligned bounce buffer owned by its slot:
//! a write is copied into it before submission, a read copied out of it on
//! completion ([`Uring::copy_back`]). Bounces are bounded (a request of at
//! most [`MAX_BOUNCE`] bytes, [`BOUNCE_BUDGET`] bytes per queue in flight);
//! beyond that the request is served synchronously, where the image bounces
//! it in pieces.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring, Probe};
use storage::{copy_from_slices, copy_to_slices, AlignedBuf, DirectIo, DiskImage, Lease};
use vm_memory::{GuestAddress, GuestMemoryMmap, VolatileSlice};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::request::{self, Buffer, Span};

/// Most iovecs one readv/writev takes (Linux's `UIO_MAXIOV`); a request
/// with more pieces is served synchronously.
pub(crate) const IOV_MAX: usize = 1024;

/// Most bytes of one request bounced through an aligned buffer on the
/// io_uring path (`cache=none`, unaligned guest buffers).
pub(crate) const MAX_BOUNCE: u64 = 1 << 20;

/// Most bytes of bounce buffers in flight on one queue.
pub(crate) const BOUNCE_BUDGET: usize = 8 << 20;

/// `user_data` of cancel requests (slots are numbered from 0).
const CANCEL_TAG: u64 = u64::MAX;

/// Why a disk's queue cannot use io_uring (it is then served synchronously).
#[derive(Debug, thiserror::Error)]
pub enum UringError {
    #[error("Cannot set up an io_uring instance")]
    Setup(#[source] io::Error),
    #[error("Cannot register the completion EventFd with io_uring")]
    Register(#[source] io::Error),
    #[error("The kernel's io_uring has no vectored reads and writes")]
    NoVectoredIo,
    #[error("The image has no file to place requests in")]
    NotRaw,
}

/// Whether a read fills guest memory or a write empties it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    Read,
    Write,
}

/// A checked read or write and where its answer goes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Io {
    /// The chain's head, for the used ring.
    pub head: u16,
    /// The chain's status byte.
    pub status: GuestAddress,
    /// The used length once the status is written.
    pub used_len: u32,
    pub dir: Dir,
    /// Byte offset on the disk (checked against its size).
    pub offset: u64,
    /// The data in the chain's buffers.
    pub span: Span,
}

/// Why [`Uring::push`] did not queue a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The data is not all in guest memory: answer IOERR.
    Memory,
    /// Serve it synchronously: more than [`IOV_MAX`] pieces, or a bounce
    /// buffer that is too big or over the queue's budget.
    Synchronous,
}

/// One request's room in the engine.
struct Slot {
    busy: bool,
    io: Io,
    /// The chain's buffers (for a short transfer's rest).
    bufs: Vec<Buffer>,
    /// What the kernel reads the buffers from; kept until completion.
    iovecs: Vec<libc::iovec>,
    /// The aligned buffer the data moves through instead of the guest's
    /// (direct I/O, unaligned guest buffers); kept until completion.
    bounce: Option<AlignedBuf>,
    /// Keeps the request's place in the file from moving (qcow2) until
    /// completion.
    lease: Option<Lease>,
}

/// An io_uring instance serving one queue of a disk.
pub(crate) struct Uring {
    ring: IoUring,
    event: EventFd,
    fd: RawFd,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// SQEs pushed but not yet submitted.
    unsubmitted: usize,
    /// The image file's direct I/O needs (`cache=none`).
    direct: Option<DirectIo>,
    /// Bytes of the bounce buffers of busy slots.
    bounce_bytes: usize,
    /// Places requests in its file ([`DiskImage::map_direct`]). Kept, with
    /// the guest memory (its mappings), alive for as long as requests may
    /// be in flight: the engine is dropped after they are finished.
    disk: Arc<dyn DiskImage>,
    mem: GuestMemoryMmap,
}

// SAFETY: the raw pointers in the iovecs point into guest memory, which is
// shared by every thread of the VMM anyway (GuestMemoryMmap is Send + Sync);
// they are only handed to the kernel, never dereferenced by this code.
unsafe impl Send for Uring {}

/// Whether the ring can do what the engine needs (5.1+ has readv/writev;
/// kernels before 5.6 cannot be probed and are taken at their word).
fn probe(ring: &IoUring) -> bool {
    let mut probe = Probe::new();
    if ring.submitter().register_probe(&mut probe).is_err() {
        return true;
    }
    probe.is_supported(opcode::Readv::CODE) && probe.is_supported(opcode::Writev::CODE)
}

impl Uring {
    /// An engine for `disk` (one with a file to place requests in) with
    /// room for `entries` requests in flight. Fails where io_uring is
    /// unavailable: an old kernel, a seccomp filter,
    /// `kernel.io_uring_disabled`, a memlock limit.
    pub(crate) fn new(
        disk: &Arc<dyn DiskImage>,
        mem: &GuestMemoryMmap,
        entries: u16,
    ) -> Result<Self, UringError> {
        let fd = disk.raw_fd().ok_or(UringError::NotRaw)?.as_raw_fd();
        let entries = entries.clamp(1, 4096);
        let ring = IoUring::new(u32::from(entries)).map_err(UringError::Setup)?;
        if !probe(&ring) {
            return Err(UringError::NoVectoredIo);
        }
        let event = EventFd::new(EFD_NONBLOCK).map_err(UringError::Register)?;
        ring.submitter()
            .register_eventfd(event.as_raw_fd())
            .map_err(UringError::Register)?;
        let slots = (0..usize::from(entries))
            .map(|_| Slot {
                busy: false,
                io: Io {
                    head: 0,
                    status: GuestAddress(0),
                    used_len: 0,
                    dir: Dir::Read,
                    offset: 0,
                    span: Span {
                        writable: true,
                        start: 0,
                        len: 0,
                    },
                },
                bufs: Vec::new(),
                iovecs: Vec::new(),
                bounce: None,
                lease: None,
            })
            .collect();
        Ok(Self {
            ring,
            event,
            fd,
            slots,
            free: (0..usize::from(entries)).rev().collect(),
            unsubmitted: 0,
            direct: disk.direct_io(),
            bounce_bytes: 0,
            disk: disk.clone(),
            mem: mem.clone(),
        })
    }

    /// Whether io_uring can be set up here at all (a small probe ring): for
    /// choosing the engine when a device is built.
    pub(crate) fn available() -> Result<(), UringError> {
        let ring = IoUring::new(4).map_err(UringError::Setup)?;
        if probe(&ring) {
            Ok(())
        } else {
            Err(UringError::NoVectoredIo)
        }
    }

    /// Readable when requests completed (register it with the worker).
    pub(crate) fn event(&self) -> &EventFd {
        &self.event
    }

    /// Whether another request can be pushed.
    pub(crate) fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    /// Requests pushed and not yet released.
    pub(crate) fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Queues `io` (its data in `bufs`, a parsed chain); [`Uring::submit`]
    /// hands it to the kernel.
    pub(crate) fn push(
        &mut self,
        mem: &GuestMemoryMmap,
        io: Io,
        bufs: &[Buffer],
    ) -> Result<(), PushError> {
        let Some(&k) = self.free.last() else {
            return Err(PushError::Synchronous);
        };
        // Where the bytes are in the file; not in one piece there (a qcow2
        // cluster not allocated yet, say): the image serves it.
        let map = self
            .disk
            .map_direct(io.offset, io.span.len, io.dir == Dir::Write)
            .ok_or(PushError::Synchronous)?;
        let mut slices = Vec::new();
        request::span_slices(mem, bufs, io.span, &mut slices).map_err(|_| PushError::Memory)?;
        let mut bounce = self.bounce_for(&io, map.offset, &slices)?;
        if bounce.is_none() && slices.len() > IOV_MAX {
            return Err(PushError::Synchronous);
        }
        let slot = &mut self.slots[k];
        slot.iovecs.clear();
        match &mut bounce {
            Some(b) => slot.iovecs.push(libc::iovec {
                iov_base: b.as_mut_slice().as_mut_ptr().cast(),
                iov_len: b.len(),
            }),
            None => {
                slot.iovecs.extend(
                    slices
                        .iter()
                        .filter(|s| !s.is_empty())
                        .map(|s| libc::iovec {
                            iov_base: s.ptr_guard_mut().as_ptr().cast(),
                            iov_len: s.len(),
                        }),
                )
            }
        }
        self.bounce_bytes += bounce.as_ref().map_or(0, AlignedBuf::len);
        // The buffer's heap memory stays where it is when it moves here.
        slot.bounce = bounce;
        slot.lease = map.lease;
        slot.bufs.clear();
        slot.bufs.extend_from_slice(bufs);
        slot.io = io;
        // At most IOV_MAX iovecs: fits u32.
        let count = slot.iovecs.len() as u32;
        let fd = types::Fd(self.fd);
        let entry = match io.dir {
            Dir::Read => opcode::Readv::new(fd, slot.iovecs.as_ptr(), count)
                .offset(map.offset)
                .build(),
            Dir::Write => opcode::Writev::new(fd, slot.iovecs.as_ptr(), count)
                .offset(map.offset)
                .build(),
        }
        .user_data(k as u64);
        self.push_entry(&entry);
        self.slots[k].busy = true;
        self.free.pop();
        Ok(())
    }

    /// The bounce buffer `io` (at `at` in the file) needs (a write's data
    /// copied in), `None` when its guest buffers can go to the kernel as
    /// they are.
    fn bounce_for(
        &self,
        io: &Io,
        at: u64,
        slices: &[VolatileSlice<'_>],
    ) -> Result<Option<AlignedBuf>, PushError> {
        let Some(d) = self.direct else {
            return Ok(None);
        };
        // Requests are whole sectors at sector offsets (checked when they
        // were parsed); anything else is left to the image's own bouncing.
        if !at.is_multiple_of(d.block) || !io.span.len.is_multiple_of(d.block) {
            return Err(PushError::Synchronous);
        }
        if d.slices_ok(slices) {
            return Ok(None);
        }
        let len = usize::try_from(io.span.len)
            .ok()
            .filter(|&len| io.span.len <= MAX_BOUNCE && self.bounce_bytes + len <= BOUNCE_BUDGET)
            .ok_or(PushError::Synchronous)?;
        let mut b = AlignedBuf::new(len, d.buffer_align()).map_err(|_| PushError::Synchronous)?;
        if io.dir == Dir::Write && !copy_from_slices(slices, 0, b.as_mut_slice()) {
            return Err(PushError::Memory);
        }
        Ok(Some(b))
    }

    /// Copies the first `done` bytes a bounced read of slot `k` got into
    /// the guest's buffers; true when there was nothing to copy or it was
    /// copied, false when the buffers are not guest memory any more.
    pub(crate) fn copy_back(&self, mem: &GuestMemoryMmap, k: usize, done: u64) -> bool {
        let Some(s) = self.slots.get(k).filter(|s| s.busy) else {
            return true;
        };
        let (Some(b), Dir::Read) = (&s.bounce, s.io.dir) else {
            return true;
        };
        let done = usize::try_from(done).map_or(b.len(), |d| d.min(b.len()));
        let mut slices = Vec::new();
        request::span_slices(mem, &s.bufs, s.io.span, &mut slices).is_ok()
            && copy_to_slices(&slices, 0, &b.as_slice()[..done])
    }

    /// Puts one SQE on the submission ring, submitting first if it is full.
    fn push_entry(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: the SQE points at a slot's iovecs, which stay untouched
            // until the slot is released after its completion, and through
            // them at guest memory, which `self.mem` keeps mapped until every
            // request is finished (Drop waits for them). Cancel SQEs point at
            // nothing.
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                self.unsubmitted += 1;
                return;
            }
            // The submission ring holds at most as many entries as there
            // are slots, plus cancels pushed one by one: make room.
            if self.submit().is_err() {
                std::thread::yield_now();
            }
        }
    }

    /// Hands the queued requests to the kernel (some may complete at once).
    pub(crate) fn submit(&mut self) -> io::Result<()> {
        if self.unsubmitted == 0 {
            return Ok(());
        }
        loop {
            match self.ring.submit() {
                Ok(n) => {
                    self.unsubmitted = self.unsubmitted.saturating_sub(n);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The SQEs stay queued; the next submit tries again.
                Err(e) => return Err(e),
            }
        }
    }

    /// Clears the completion EventFd (before looking at the completion
    /// ring, so that nothing completed after the look is missed).
    pub(crate) fn clear_event(&self) {
        let _ = self.event.read();
    }

    /// Appends `(slot, result)` for every finished request to `out`: the
    /// result is the bytes moved or a negative errno. Each busy slot is
    /// reported until [`Uring::release`] frees it (the caller answers a slot
    /// only while [`Uring::slot`] still has it, then releases it).
    pub(crate) fn reap(&mut self, out: &mut Vec<(usize, i32)>) {
        for cqe in self.ring.completion() {
            let k = cqe.user_data();
            if k == CANCEL_TAG {
                continue;
            }
            let Ok(k) = usize::try_from(k) else { continue };
            if self.slots.get(k).is_some_and(|s| s.busy) {
                out.push((k, cqe.result()));
            }
        }
    }

    /// The request in slot `k`, and its chain's buffers.
    pub(crate) fn slot(&self, k: usize) -> Option<(Io, &[Buffer])> {
        let s = self.slots.get(k).filter(|s| s.busy)?;
        Some((s.io, &s.bufs))
    }

    /// Frees slot `k` once its request is answered.
    pub(crate) fn release(&mut self, k: usize) {
        if let Some(s) = self.slots.get_mut(k) {
            if s.busy {
                s.busy = false;
                s.iovecs.clear();
                if let Some(b) = s.bounce.take() {
                    self.bounce_bytes -= b.len();
                }
                s.lease = None;
                self.free.push(k);
            }
        }
    }

    /// Waits until at least one request completed (submitting what is
    /// queued). Only call it with requests in flight.
    pub(crate) fn wait(&mut self) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(n) => {
                    self.unsubmitted = self.unsubmitted.saturating_sub(n);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Cancels every request in flight and waits for all of them, without
    /// answering their chains (the device is being reset or dropped).
    /// Returns false if the kernel could not be waited for.
    pub(crate) fn abandon(&mut self) -> bool {
        if self.in_flight() == 0 {
            return true;
        }
        let _ = self.submit();
        let busy: Vec<usize> = (0..self.slots.len())
            .filter(|&k| self.slots[k].busy)
            .collect();
        for k in busy {
            let cancel = opcode::AsyncCancel::new(k as u64)
                .build()
                .user_data(CANCEL_TAG);
            self.push_entry(&cancel);
        }
        let mut done = Vec::new();
        while self.in_flight() > 0 {
            if self.wait().is_err() {
                return false;
            }
            done.clear();
            self.reap(&mut done);
            for &(k, _) in &done {
                self.release(k);
            }
        }
        true
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        if !self.abandon() {
            // The kernel may still write into guest memory and bounce
            // buffers: never unmap or free them.
            eprintln!("keel-vmm: virtio-blk: cannot wait for io_uring requests in flight");
            std::mem::forget(self.mem.clone());
            std::mem::forget(std::mem::take(&mut self.slots));
        }
    }
}
