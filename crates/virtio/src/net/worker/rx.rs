//! The receive path (backend → guest).
//!
//! The backend fd is watched edge-triggered. On readiness (or an RX kick)
//! the handler takes free buffers from the RX ring — enough for the largest
//! frame the guest may get, with MRG_RXBUF; one chain without — and
//! `readv`s one frame straight into them, until the backend has no more
//! frames, the budget is spent (the queue then kicks itself so TX gets a
//! turn) or the guest has no buffers left. In that last case it stops
//! reading, asks for a notification and waits for the guest's RX kick;
//! frames meanwhile wait in the TAP's queue. While the guest's ring holds
//! less than the largest frame (it has not refilled yet), a frame is read
//! into host memory first and waits there for room instead of being lost.
//!
//! With promiscuous mode rejected every frame is read into host memory
//! first, and a frame whose destination is another unicast MAC is dropped
//! (`rx_filtered`) before any of it reaches guest memory: the guest can
//! read its receive buffers at any time, so checking the frame after
//! reading it into them would let it see other NICs' traffic.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Instant;

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::super::backend::IOV_MAX;
use super::super::features;
use super::super::header::{HDR_LEN, MAX_FRAME_LEN, MIN_FRAME_LEN};
use super::super::policy::destination_allowed;
use super::{arm, NetChainError, NetHandler};
use crate::chain::{self, ChainError, ChainInfo};
use crate::queue::{Chain, QueueError};
use crate::worker::WorkerContext;

/// Frames received per call before other events get a turn.
const RX_BUDGET: usize = 256;
/// The receive room (header included) gathered from mergeable buffers
/// before a frame is read: the largest frame there is, whatever the
/// offloads (the host side may have a jumbo MTU).
const RX_ROOM: usize = HDR_LEN + MAX_FRAME_LEN;

/// Spreads a received frame of `len` bytes (header included) over buffers
/// of `capacities`, in order: how many buffers it takes and how many bytes
/// land in the last one; `None` when they cannot hold it.
pub fn split_frame(
    len: usize,
    capacities: impl IntoIterator<Item = usize>,
) -> Option<(usize, usize)> {
    let mut left = len;
    let mut count = 0usize;
    for cap in capacities {
        if left == 0 {
            break;
        }
        count += 1;
        if left <= cap {
            return Some((count, left));
        }
        left -= cap;
    }
    None
}

/// A receive chain taken from the ring and not yet used.
pub(super) struct RxBuf {
    head: u16,
    descs: Vec<(GuestAddress, u32)>,
    len: usize,
}

/// Checks a receive chain (`checked` is [`chain::validate`]'s verdict):
/// device-writable buffers only, at least a header (and, without mergeable
/// buffers, an Ethernet header) of room. Its non-empty buffers are left in
/// `descs`; returns their total length.
pub fn check_rx_chain(
    chain: &Chain<'_>,
    checked: Result<ChainInfo, ChainError>,
    mrg: bool,
    descs: &mut Vec<(GuestAddress, u32)>,
) -> Result<usize, NetChainError> {
    let info = checked?;
    if info.readable > 0 {
        return Err(NetChainError::Readable);
    }
    let min_len = if mrg {
        HDR_LEN
    } else {
        HDR_LEN + MIN_FRAME_LEN
    };
    if (info.writable as usize) < min_len {
        return Err(NetChainError::TooSmall(info.writable));
    }
    descs.clear();
    descs.extend(
        chain
            .clone()
            .filter(|d| d.len() > 0)
            .map(|d| (d.addr(), d.len())),
    );
    Ok(info.writable as usize)
}

/// Writes `bytes` at byte `offset` of the buffers `descs`.
fn write_at(mem: &GuestMemoryMmap, descs: &[(GuestAddress, u32)], offset: usize, bytes: &[u8]) {
    let mut skip = offset;
    let mut rest = bytes;
    for &(addr, len) in descs {
        let len = len as usize;
        if rest.is_empty() {
            return;
        }
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(rest.len());
        let Some(at) = addr.checked_add(skip as u64) else {
            return;
        };
        if mem.write_slice(&rest[..n], at).is_err() {
            return;
        }
        rest = &rest[n..];
        skip = 0;
    }
}

/// What reading one frame gave.
enum RxRead {
    /// Delivered into this many buffers, with this many bytes in the last.
    Frame(usize, usize),
    /// A frame waits for the guest to post more buffers.
    Wait,
    /// Lost: longer than the room gathered, or shorter than a header.
    Dropped,
    /// Not for this NIC (promiscuous mode rejected): dropped unseen.
    Filtered,
    /// The backend has nothing (more) to give.
    Empty,
}

impl NetHandler {
    /// With the link down: reads frames from the backend and drops them
    /// (a NIC without carrier loses them), with the frame waiting for
    /// room, if any.
    fn drain_rx(&mut self, ctx: &mut WorkerContext, pos: usize) {
        if self.stashed.take().is_some() {
            self.stats.rx_dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.bounce.resize(RX_ROOM, 0);
        for _ in 0..RX_BUDGET {
            let iov = [libc::iovec {
                iov_base: self.bounce.as_mut_ptr().cast(),
                iov_len: self.bounce.len(),
            }];
            // SAFETY: the iovec covers `bounce`, which this handler owns
            // and nothing else touches during the call.
            match unsafe { self.backend.read_frame(&iov) } {
                Ok(n) if n > 0 => {
                    self.stats.rx_dropped.fetch_add(1, Ordering::Relaxed);
                }
                _ => return,
            }
        }
        // Come back after the other ready events.
        let _ = ctx.queues[pos].kick().write(1);
    }

    fn mrg(&self) -> bool {
        self.features & features::MRG_RXBUF != 0
    }

    /// Takes receive chains from the ring until there is room for a frame
    /// or the ring is empty (notifications are then enabled). Returns
    /// whether chains were returned unused. A guest that keeps offering
    /// malformed chains gets two rounds of the ring per call; the queue
    /// then kicks itself so other events get a turn.
    fn fill_rx(&mut self, ctx: &mut WorkerContext, pos: usize) -> Result<bool, QueueError> {
        let mrg = self.mrg();
        let mem = &ctx.mem;
        let q = &mut ctx.queues[pos];
        let mut returned = false;
        let mut bad = 0usize;
        loop {
            if bad >= 2 * usize::from(q.size()) {
                let _ = q.kick().write(1);
                return Ok(returned);
            }
            let enough = if mrg {
                self.rx_room >= RX_ROOM || self.rx_descs >= IOV_MAX / 2
            } else {
                !self.rx_bufs.is_empty()
            };
            if enough {
                return Ok(returned);
            }
            let Some(chain) = q.pop(mem)? else {
                if self.rx_notify {
                    return Ok(returned);
                }
                self.rx_notify = true;
                if q.enable_notification(mem)? {
                    continue;
                }
                return Ok(returned);
            };
            if self.rx_notify {
                q.disable_notification(mem)?;
                self.rx_notify = false;
            }
            let head = chain.head_index();
            let checked = chain::validate(&chain, q.size());
            let mut descs = Vec::new();
            match check_rx_chain(&chain, checked, mrg, &mut descs) {
                Ok(len) => {
                    self.rx_room += len;
                    self.rx_descs += descs.len();
                    self.rx_bufs.push_back(RxBuf { head, descs, len });
                }
                Err(e) => {
                    self.stats.bad_rx_chains.fetch_add(1, Ordering::Relaxed);
                    self.log_drop("returned a receive buffer unused", &e);
                    q.add_used(mem, head, 0)?;
                    returned = true;
                    bad += 1;
                }
            }
        }
    }

    /// Reads one frame from the backend into the gathered buffers.
    fn read_frame(&mut self, mem: &GuestMemoryMmap) -> io::Result<RxRead> {
        self.iovs.0.clear();
        let room = if self.mrg() {
            self.iovs.build(
                mem,
                self.rx_bufs.iter().flat_map(|b| b.descs.iter()),
                RX_ROOM,
            )
        } else {
            match self.rx_bufs.front() {
                Some(b) => self.iovs.build(mem, b.descs.iter(), usize::MAX),
                None => 0,
            }
        };
        if self.iovs.0.is_empty() {
            return Ok(RxRead::Empty);
        }
        // SAFETY: the iovecs were just built from buffers the guest gave
        // the device (validated to lie in guest memory, which the worker's
        // context keeps mapped) and that no one else writes until they are
        // returned on the used ring.
        let r = unsafe { self.backend.read_frame(&self.iovs.0) };
        self.iovs.0.clear();
        let n = match r {
            Ok(0) => return Ok(RxRead::Empty),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(RxRead::Empty),
            Err(e) => return Err(e),
        };
        if n < HDR_LEN || n > room {
            return Ok(RxRead::Dropped);
        }
        let split = if self.mrg() {
            split_frame(n, self.rx_bufs.iter().map(|b| b.len))
        } else {
            split_frame(n, self.rx_bufs.front().map(|b| b.len))
        };
        Ok(split.map_or(RxRead::Dropped, |(count, last)| RxRead::Frame(count, last)))
    }

    /// Reads a frame into host memory first, then copies it into the
    /// gathered buffers. Used in two cases:
    ///
    /// - With mergeable buffers, when the buffers gathered (the guest has
    ///   not refilled its ring yet) may be too small for the frame: one
    ///   that does not fit is not lost but waits for more buffers —
    ///   dropping it would make TCP back off for seconds each time a slow
    ///   guest falls behind. It is dropped only when it cannot fit although
    ///   the guest gave at least half its ring (`half_ring` chains). Small
    ///   frames still go out at once; the copy is only paid while the guest
    ///   is short of buffers.
    /// - With promiscuous mode rejected, for every frame: a frame for
    ///   another unicast MAC is [`RxRead::Filtered`] before it touches
    ///   guest memory. Without mergeable buffers a frame that does not fit
    ///   the first chain is dropped, as [`Self::read_frame`] does.
    fn read_via_host(&mut self, mem: &GuestMemoryMmap, half_ring: usize) -> io::Result<RxRead> {
        let n = match self.stashed {
            Some(n) => n,
            None => {
                self.bounce.resize(RX_ROOM, 0);
                let iov = [libc::iovec {
                    iov_base: self.bounce.as_mut_ptr().cast(),
                    iov_len: self.bounce.len(),
                }];
                // SAFETY: the iovec covers `bounce`, which this handler owns
                // and nothing else touches during the call.
                let r = unsafe { self.backend.read_frame(&iov) };
                let n = match r {
                    Ok(0) => return Ok(RxRead::Empty),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(RxRead::Empty),
                    Err(e) => return Err(e),
                };
                if !(HDR_LEN..=RX_ROOM).contains(&n) {
                    return Ok(RxRead::Dropped);
                }
                if self.reject_promiscuous
                    && !destination_allowed(&self.bounce[HDR_LEN..n], &self.mac)
                {
                    return Ok(RxRead::Filtered);
                }
                n
            }
        };
        let mrg = self.mrg();
        let split = if mrg {
            split_frame(n, self.rx_bufs.iter().map(|b| b.len))
        } else {
            split_frame(n, self.rx_bufs.front().map(|b| b.len))
        };
        match split {
            Some((count, last)) => {
                self.stashed = None;
                let mut at = 0;
                for (i, buf) in self.rx_bufs.iter().take(count).enumerate() {
                    let take = if i + 1 == count { last } else { buf.len };
                    write_at(mem, &buf.descs, 0, &self.bounce[at..at + take]);
                    at += take;
                }
                Ok(RxRead::Frame(count, last))
            }
            None if !mrg || self.rx_bufs.len() >= half_ring || self.rx_descs >= IOV_MAX / 2 => {
                self.stashed = None;
                Ok(RxRead::Dropped)
            }
            None => {
                self.stashed = Some(n);
                Ok(RxRead::Wait)
            }
        }
    }

    pub(super) fn process_rx(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
        let Some(pos) = self.rx_pos else {
            return Ok(());
        };
        if !self.link.is_up() {
            self.drain_rx(ctx, pos);
            return Ok(());
        }
        let mut used = false;
        let mut frames = 0;
        loop {
            if frames == RX_BUDGET {
                // Come back after the other ready events.
                let _ = ctx.queues[pos].kick().write(1);
                break;
            }
            if let Some(wait) = self
                .rx_shaper
                .as_mut()
                .and_then(|s| s.check(Instant::now()))
            {
                // Frames wait in the backend until the timer fires.
                arm(&mut self.rx_timer, wait);
                break;
            }
            used |= self.fill_rx(ctx, pos)?;
            if self.rx_bufs.is_empty() {
                // Wait for the guest's kick.
                break;
            }
            let little_room = self.mrg()
                && (self.stashed.is_some()
                    || (self.rx_room < RX_ROOM && self.rx_descs < IOV_MAX / 2));
            let read = if little_room || self.reject_promiscuous {
                let half_ring = usize::from(ctx.queues[pos].size()) / 2;
                self.read_via_host(&ctx.mem, half_ring)
            } else {
                self.read_frame(&ctx.mem)
            };
            let read = match read {
                Ok(r) => r,
                Err(e) => {
                    self.log_drop("cannot read from the backend", &e);
                    break;
                }
            };
            frames += 1;
            let (count, last) = match read {
                RxRead::Empty | RxRead::Wait => break,
                RxRead::Dropped => {
                    self.stats.rx_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                RxRead::Filtered => {
                    self.stats.rx_filtered.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                RxRead::Frame(count, last) => (count, last),
            };
            self.complete_rx(ctx, pos, count, last)?;
            used = true;
        }
        if used {
            ctx.signal_used(pos)?;
        }
        Ok(())
    }

    /// Fixes the header of a frame spread over the first `count` buffers
    /// and returns them to the guest.
    fn complete_rx(
        &mut self,
        ctx: &mut WorkerContext,
        pos: usize,
        count: usize,
        last: usize,
    ) -> Result<(), QueueError> {
        let mem = &ctx.mem;
        let q = &mut ctx.queues[pos];
        if let Some(first) = self.rx_bufs.front() {
            // num_buffers (the TAP leaves it alone) ...
            write_at(mem, &first.descs, 10, &(count as u16).to_le_bytes());
            // ... and no checksum flags for a driver that did not ask.
            if self.features & features::GUEST_CSUM == 0 {
                write_at(mem, &first.descs, 0, &[0]);
            }
        }
        let mut bytes = 0;
        for i in 0..count {
            let Some(buf) = self.rx_bufs.pop_front() else {
                break;
            };
            let len = if i + 1 == count { last } else { buf.len };
            self.rx_room -= buf.len;
            self.rx_descs -= buf.descs.len();
            bytes += len;
            q.add_used(mem, buf.head, len as u32)?;
        }
        self.stats.rx_frames.fetch_add(1, Ordering::Relaxed);
        let frame = bytes.saturating_sub(HDR_LEN);
        self.stats
            .rx_bytes
            .fetch_add(frame as u64, Ordering::Relaxed);
        if let Some(s) = &mut self.rx_shaper {
            s.take(frame);
        }
        Ok(())
    }
}
