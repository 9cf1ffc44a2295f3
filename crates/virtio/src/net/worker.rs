//! virtio-net frame handling on the device's worker thread.
//!
//! Receive: the backend fd is watched edge-triggered. On readiness (or an
//! RX kick) the handler takes free buffers from the RX ring — enough for
//! the largest frame the guest may get, with MRG_RXBUF; one chain without —
//! and `readv`s one frame straight into them, until the backend has no more
//! frames, the budget is spent (the queue then kicks itself so TX gets a
//! turn) or the guest has no buffers left. In that last case it stops
//! reading, asks for a notification and waits for the guest's RX kick;
//! frames meanwhile wait in the TAP's queue. While the guest's ring holds
//! less than the largest frame (it has not refilled yet), a frame is read
//! into host memory first and waits there for room instead of being lost.
//!
//! Transmit: each chain's header is checked ([`check_tx_frame`]) and its
//! readable buffers `writev`n to the backend as one frame. A backend that
//! cannot take a frame (`EAGAIN`) keeps it pending until the fd is writable.
//!
//! Policies ([`super::policy`]): with forged transmits rejected, a frame
//! whose source MAC is not the NIC's is dropped; with shaping, a direction
//! whose bucket is empty stops (TX takes no chains, RX reads no frames)
//! until its timerfd fires; with the link down, TX chains are dropped and
//! frames from the backend are read and dropped. A link change wakes the
//! worker through an EventFd.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use super::backend::{NetBackend, IOV_MAX};
use super::device::NetStats;
use super::features::{self, effective};
use super::header::{check_tx_frame, TxFrameError, HDR_LEN, MAX_FRAME_LEN, MIN_FRAME_LEN};
use super::mac::MacAddr;
use super::policy::{source_is, NetLink, NetPolicy, Shaper};
use crate::chain::{self, ChainError, ChainInfo};
use crate::queue::{Chain, QueueError};
use crate::worker::{QueueHandler, WorkerContext};

/// The receive queue's index.
pub(crate) const RX_QUEUE: u16 = 0;
/// The transmit queue's index.
pub(crate) const TX_QUEUE: u16 = 1;
/// The backend fd's token.
const TOKEN_BACKEND: u64 = 1;
/// The link change EventFd's token.
const TOKEN_LINK: u64 = 2;
/// The shaping timers' tokens.
const TOKEN_TX_TIMER: u64 = 3;
const TOKEN_RX_TIMER: u64 = 4;
/// Frames received per call before other events get a turn.
const RX_BUDGET: usize = 256;
/// The receive room (header included) gathered from mergeable buffers
/// before a frame is read: the largest frame there is, whatever the
/// offloads (the host side may have a jumbo MTU).
const RX_ROOM: usize = HDR_LEN + MAX_FRAME_LEN;

/// The `TUN_F_*` offloads the guest's receive side takes, from the
/// features it accepted.
pub fn tun_offloads(acked: u64) -> u32 {
    let f = effective(acked);
    let mut t = 0;
    for (feature, flag) in [
        (features::GUEST_CSUM, libc::TUN_F_CSUM),
        (features::GUEST_TSO4, libc::TUN_F_TSO4),
        (features::GUEST_TSO6, libc::TUN_F_TSO6),
        (features::GUEST_ECN, libc::TUN_F_TSO_ECN),
        (features::GUEST_UFO, libc::TUN_F_UFO),
    ] {
        if f & feature != 0 {
            t |= flag;
        }
    }
    t
}

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
struct RxBuf {
    head: u16,
    descs: Vec<(GuestAddress, u32)>,
    len: usize,
}

/// A frame the backend could not take yet.
struct PendingTx {
    head: u16,
    descs: Vec<(GuestAddress, u32)>,
    len: usize,
}

/// iovecs into guest memory, rebuilt right before each system call.
struct IoVecs(Vec<libc::iovec>);

// SAFETY: the raw pointers are addresses in the guest memory mapping the
// worker's context keeps alive; they are only handed to the kernel, never
// dereferenced by Rust code, and rebuilt for every call.
unsafe impl Send for IoVecs {}

impl IoVecs {
    /// Fills with the host addresses of `descs` (at most `IOV_MAX`
    /// entries), stopping once `limit` bytes are covered; returns how many
    /// bytes they cover.
    fn build<'a>(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: impl IntoIterator<Item = &'a (GuestAddress, u32)>,
        limit: usize,
    ) -> usize {
        let mut bytes = 0;
        for &(addr, len) in descs {
            if bytes >= limit {
                break;
            }
            for slice in GuestMemoryBackend::get_slices(mem, addr, len as usize) {
                // Ranges were checked by chain::validate; a failure just
                // ends the list (the frame is then short of room).
                let Ok(slice) = slice else {
                    return bytes;
                };
                if self.0.len() == IOV_MAX {
                    return bytes;
                }
                self.0.push(libc::iovec {
                    iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                    iov_len: slice.len(),
                });
                bytes += slice.len();
            }
        }
        bytes
    }
}

/// Why a chain is not used as it is (a receive chain goes back unused, a
/// transmit chain's frame is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetChainError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("Receive chain has device-readable buffers")]
    Readable,
    #[error("Receive chain of {0} bytes is too small")]
    TooSmall(u32),
    #[error("Transmit chain has device-writable buffers")]
    Writable,
    #[error(transparent)]
    Frame(#[from] TxFrameError),
}

/// Why a transmit chain's frame was dropped.
#[derive(Debug)]
enum TxDrop {
    Chain(NetChainError),
    Backend(io::Error),
}

impl std::fmt::Display for TxDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxDrop::Chain(e) => e.fmt(f),
            TxDrop::Backend(e) => write!(f, "The backend refused it: {e}"),
        }
    }
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

/// Checks a transmit chain (`checked` is [`chain::validate`]'s verdict):
/// device-readable buffers only, and a frame [`check_tx_frame`] accepts
/// under the features `acked`. Its non-empty buffers are left in `descs`;
/// returns the frame's length, header included.
pub fn check_tx_chain(
    mem: &GuestMemoryMmap,
    chain: &Chain<'_>,
    checked: Result<ChainInfo, ChainError>,
    acked: u64,
    descs: &mut Vec<(GuestAddress, u32)>,
) -> Result<usize, NetChainError> {
    let info = checked?;
    if info.writable > 0 {
        return Err(NetChainError::Writable);
    }
    descs.clear();
    descs.extend(
        chain
            .clone()
            .filter(|d| d.len() > 0)
            .map(|d| (d.addr(), d.len())),
    );
    let mut hdr = [0u8; HDR_LEN];
    read_prefix(mem, descs, &mut hdr);
    let len = info.readable as usize;
    check_tx_frame(&hdr, len, acked)?;
    Ok(len)
}

/// Copies the first bytes of a chain's readable buffers into `out`
/// (zeroes where the chain is shorter).
fn read_prefix(mem: &GuestMemoryMmap, descs: &[(GuestAddress, u32)], out: &mut [u8]) {
    out.fill(0);
    let mut at = 0;
    for &(addr, len) in descs {
        if at == out.len() {
            break;
        }
        let n = (len as usize).min(out.len() - at);
        if mem.read_slice(&mut out[at..at + n], addr).is_err() {
            return;
        }
        at += n;
    }
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
    /// The backend has nothing (more) to give.
    Empty,
}

/// The device's request handling (one per activation).
pub(crate) struct NetHandler {
    backend: Arc<dyn NetBackend>,
    name: String,
    features: u64,
    stats: Arc<NetStats>,
    rx_pos: Option<usize>,
    tx_pos: Option<usize>,
    rx_bufs: VecDeque<RxBuf>,
    rx_room: usize,
    rx_descs: usize,
    rx_notify: bool,
    pending_tx: Option<PendingTx>,
    tx_descs: Vec<(GuestAddress, u32)>,
    iovs: IoVecs,
    logged_drop: bool,
    /// Host memory for a frame read while the buffers gathered cannot
    /// hold the largest frame (see [`NetHandler::read_with_little_room`]).
    bounce: Vec<u8>,
    /// The length of the frame waiting in `bounce`.
    stashed: Option<usize>,
    /// The NIC's MAC, for the forged transmit check.
    mac: [u8; 6],
    reject_forged: bool,
    link: NetLink,
    /// Written when the link changes.
    link_wake: Option<EventFd>,
    tx_shaper: Option<Shaper>,
    rx_shaper: Option<Shaper>,
    tx_timer: Option<TimerFd>,
    rx_timer: Option<TimerFd>,
}

/// A non-blocking timerfd (a timer re-armed after epoll saw it fire reads
/// as empty).
fn timer() -> io::Result<TimerFd> {
    use std::os::fd::AsRawFd;
    let timer = TimerFd::new()?;
    // SAFETY: fcntl on a timerfd we own; no pointers involved.
    let r = unsafe { libc::fcntl(timer.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(timer)
}

/// Arms a shaping timer to fire once after `wait` (at least 1 ns).
fn arm(timer: &mut Option<TimerFd>, wait: Duration) {
    if let Some(t) = timer {
        let _ = t.reset(wait.max(Duration::from_nanos(1)), None);
    }
}

impl NetHandler {
    pub(crate) fn new(
        backend: Arc<dyn NetBackend>,
        name: String,
        acked: u64,
        stats: Arc<NetStats>,
    ) -> Self {
        NetHandler {
            backend,
            name,
            features: effective(acked),
            stats,
            rx_pos: None,
            tx_pos: None,
            rx_bufs: VecDeque::new(),
            rx_room: 0,
            rx_descs: 0,
            rx_notify: true,
            pending_tx: None,
            tx_descs: Vec::new(),
            iovs: IoVecs(Vec::with_capacity(IOV_MAX)),
            logged_drop: false,
            bounce: Vec::new(),
            stashed: None,
            mac: [0; 6],
            reject_forged: false,
            link: NetLink::default(),
            link_wake: None,
            tx_shaper: None,
            rx_shaper: None,
            tx_timer: None,
            rx_timer: None,
        }
    }

    /// Applies the NIC's policy: its MAC (forged transmits), shaping, and
    /// the link state with the EventFd that signals its changes.
    pub(crate) fn with_policy(
        mut self,
        mac: MacAddr,
        policy: &NetPolicy,
        link: NetLink,
        wake: EventFd,
    ) -> Self {
        let now = Instant::now();
        self.mac = mac.bytes();
        self.reject_forged = policy.reject_forged;
        self.tx_shaper = policy.tx.map(|s| Shaper::new(&s, now));
        self.rx_shaper = policy.rx.map(|s| Shaper::new(&s, now));
        self.link = link;
        self.link_wake = Some(wake);
        self
    }

    /// Whether the frame in `descs` (header first) comes from the NIC's
    /// own MAC.
    fn own_source(&self, mem: &GuestMemoryMmap, descs: &[(GuestAddress, u32)]) -> bool {
        let mut start = [0u8; HDR_LEN + 12];
        read_prefix(mem, descs, &mut start);
        source_is(&start[HDR_LEN..], &self.mac)
    }

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

    /// Logs the first dropped frame of this activation; later ones are
    /// only counted.
    fn log_drop(&mut self, what: &str, why: &dyn std::fmt::Display) {
        if !self.logged_drop {
            self.logged_drop = true;
            eprintln!(
                "keel-vmm: {}: {what}: {why} (further drops are only counted)",
                self.name
            );
        }
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

    /// Reads a frame when the buffers gathered (the guest has not refilled
    /// its ring yet) may be too small for it: into host memory first, so
    /// that a frame that does not fit is not lost but waits for more
    /// buffers — dropping it would make TCP back off for seconds each time
    /// a slow guest falls behind. It is dropped only when it cannot fit
    /// although the guest gave at least half its ring (`half_ring` chains).
    /// Small frames still go out at once; the copy is only paid while the
    /// guest is short of buffers.
    fn read_with_little_room(
        &mut self,
        mem: &GuestMemoryMmap,
        half_ring: usize,
    ) -> io::Result<RxRead> {
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
                n
            }
        };
        match split_frame(n, self.rx_bufs.iter().map(|b| b.len)) {
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
            None if self.rx_bufs.len() >= half_ring || self.rx_descs >= IOV_MAX / 2 => {
                self.stashed = None;
                Ok(RxRead::Dropped)
            }
            None => {
                self.stashed = Some(n);
                Ok(RxRead::Wait)
            }
        }
    }

    fn process_rx(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
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
            let read = if little_room {
                let half_ring = usize::from(ctx.queues[pos].size()) / 2;
                self.read_with_little_room(&ctx.mem, half_ring)
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

    /// Sends the frame in `descs`; `Ok(false)` when the backend would block.
    fn send(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: &[(GuestAddress, u32)],
        len: usize,
    ) -> Result<bool, TxDrop> {
        self.iovs.0.clear();
        if self.iovs.build(mem, descs, usize::MAX) != len {
            self.iovs.0.clear();
            return Err(TxDrop::Chain(ChainError::TooLong(IOV_MAX as u16).into()));
        }
        // SAFETY: the iovecs were just built from the readable buffers of a
        // validated chain in guest memory (kept mapped by the worker's
        // context); the backend only reads them.
        let r = unsafe { self.backend.write_frame(&self.iovs.0) };
        self.iovs.0.clear();
        match r {
            Ok(_) => {
                let frame = len.saturating_sub(HDR_LEN);
                self.stats.tx_frames.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .tx_bytes
                    .fetch_add(frame as u64, Ordering::Relaxed);
                if let Some(s) = &mut self.tx_shaper {
                    s.take(frame);
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.stats.tx_blocked.fetch_add(1, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(TxDrop::Backend(e)),
        }
    }

    fn drop_tx(&mut self, why: TxDrop) {
        self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
        self.log_drop("dropped a frame from the guest", &why);
    }

    fn process_tx(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
        let Some(pos) = self.tx_pos else {
            return Ok(());
        };
        let mut served = 0usize;
        let mut more = false;
        let link_up = self.link.is_up();
        {
            let mem = &ctx.mem;
            let q = &mut ctx.queues[pos];
            if let Some(p) = self.pending_tx.take() {
                if !link_up {
                    self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    match self.send(mem, &p.descs, p.len) {
                        Ok(false) => {
                            self.pending_tx = Some(p);
                            return Ok(());
                        }
                        Ok(true) => {}
                        Err(why) => self.drop_tx(why),
                    }
                }
                q.add_used(mem, p.head, 0)?;
                served += 1;
            }
            let size = q.size();
            let budget = usize::from(size) * 2;
            'ring: loop {
                q.disable_notification(mem)?;
                loop {
                    let throttled = match &mut self.tx_shaper {
                        Some(s) if link_up => s.check(Instant::now()),
                        _ => None,
                    };
                    if let Some(wait) = throttled {
                        // Chains wait in the ring (notifications stay off)
                        // until the timer fires.
                        arm(&mut self.tx_timer, wait);
                        break 'ring;
                    }
                    let Some(chain) = q.pop(mem)? else {
                        break;
                    };
                    let head = chain.head_index();
                    let checked = chain::validate(&chain, size);
                    let r = check_tx_chain(mem, &chain, checked, self.features, &mut self.tx_descs);
                    match r {
                        _ if !link_up => {
                            self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(why) => self.drop_tx(TxDrop::Chain(why)),
                        Ok(_) if self.reject_forged && !self.own_source(mem, &self.tx_descs) => {
                            self.stats.tx_forged.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(len) => {
                            let descs = std::mem::take(&mut self.tx_descs);
                            match self.send(mem, &descs, len) {
                                Ok(true) => self.tx_descs = descs,
                                Ok(false) => {
                                    // Wait for the backend to be writable.
                                    self.pending_tx = Some(PendingTx { head, descs, len });
                                    break 'ring;
                                }
                                Err(why) => {
                                    self.tx_descs = descs;
                                    self.drop_tx(why);
                                }
                            }
                        }
                    }
                    q.add_used(mem, head, 0)?;
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
            if more {
                // Come back to this queue after the other ready events.
                let _ = q.kick().write(1);
            }
        }
        if served > 0 {
            ctx.signal_used(pos)?;
        }
        Ok(())
    }
}

impl QueueHandler for NetHandler {
    fn start(&mut self, ctx: &mut WorkerContext) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        self.rx_pos = ctx.queues.iter().position(|q| q.index() == RX_QUEUE);
        self.tx_pos = ctx.queues.iter().position(|q| q.index() == TX_QUEUE);
        if let Some(w) = &self.link_wake {
            ctx.watch(w.as_raw_fd(), TOKEN_LINK, EventSet::IN)?;
        }
        if self.tx_shaper.is_some() {
            let t = timer()?;
            ctx.watch(t.as_raw_fd(), TOKEN_TX_TIMER, EventSet::IN)?;
            self.tx_timer = Some(t);
        }
        if self.rx_shaper.is_some() {
            let t = timer()?;
            ctx.watch(t.as_raw_fd(), TOKEN_RX_TIMER, EventSet::IN)?;
            self.rx_timer = Some(t);
        }
        ctx.watch(
            self.backend.fd(),
            TOKEN_BACKEND,
            EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED,
        )
    }

    fn process_queue(&mut self, ctx: &mut WorkerContext, queue: usize) -> Result<(), QueueError> {
        if Some(queue) == self.rx_pos {
            self.process_rx(ctx)
        } else if Some(queue) == self.tx_pos {
            self.process_tx(ctx)
        } else {
            Ok(())
        }
    }

    fn handle_event(
        &mut self,
        ctx: &mut WorkerContext,
        token: u64,
        events: EventSet,
    ) -> Result<(), QueueError> {
        match token {
            TOKEN_BACKEND => {}
            TOKEN_LINK => {
                if let Some(w) = &self.link_wake {
                    let _ = w.read();
                }
                self.process_tx(ctx)?;
                return self.process_rx(ctx);
            }
            TOKEN_TX_TIMER => {
                if let Some(t) = &mut self.tx_timer {
                    let _ = t.wait();
                }
                return self.process_tx(ctx);
            }
            TOKEN_RX_TIMER => {
                if let Some(t) = &mut self.rx_timer {
                    let _ = t.wait();
                }
                return self.process_rx(ctx);
            }
            _ => return Ok(()),
        }
        if events.intersects(EventSet::OUT | EventSet::ERROR | EventSet::HANG_UP)
            && self.pending_tx.is_some()
        {
            self.process_tx(ctx)?;
        }
        if events.intersects(EventSet::IN | EventSet::ERROR | EventSet::HANG_UP) {
            self.process_rx(ctx)?;
        }
        Ok(())
    }
}
