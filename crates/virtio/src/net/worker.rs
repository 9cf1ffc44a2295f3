//! virtio-net frame handling on the device's worker thread: the event
//! loop. The receive path is in [`rx`], the transmit path in [`tx`].
//!
//! Events: the backend fd is watched edge-triggered for both directions
//! (readable: frames for the guest; writable: a pending transmit frame can
//! go), each queue's kick, a link change EventFd and, with shaping, one
//! timerfd per direction. Each event runs the direction it concerns; a
//! direction that spent its budget kicks its own queue so the other gets a
//! turn.
//!
//! Policies ([`super::policy`]): with forged transmits rejected, a frame
//! whose source MAC is not the NIC's is dropped; with promiscuous mode
//! rejected, a frame for another unicast MAC is not delivered; with shaping, a direction
//! whose bucket is empty stops (TX takes no chains, RX reads no frames)
//! until its timerfd fires; with the link down, TX chains are dropped and
//! frames from the backend are read and dropped. A link change wakes the
//! worker through an EventFd.

mod rx;
mod tx;

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use super::backend::{NetBackend, IOV_MAX};
use super::device::NetStats;
use super::features::{self, effective};
use super::header::TxFrameError;
use super::mac::MacAddr;
use super::policy::{NetLink, NetPolicy, Shaper};
use crate::chain::ChainError;
use crate::queue::QueueError;
use crate::worker::{QueueHandler, WorkerContext};

pub use rx::{check_rx_chain, split_frame};
pub use tx::check_tx_chain;

use rx::RxBuf;
use tx::PendingTx;

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
    /// hold the largest frame, or checked before it reaches the guest
    /// (see [`NetHandler::read_via_host`]).
    bounce: Vec<u8>,
    /// The length of the frame waiting in `bounce`.
    stashed: Option<usize>,
    /// The NIC's MAC, for the forged transmit and promiscuous checks.
    mac: [u8; 6],
    reject_forged: bool,
    reject_promiscuous: bool,
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
            reject_promiscuous: false,
            link: NetLink::default(),
            link_wake: None,
            tx_shaper: None,
            rx_shaper: None,
            tx_timer: None,
            rx_timer: None,
        }
    }

    /// Applies the NIC's policy: its MAC (forged transmits, promiscuous
    /// mode), shaping, and the link state with the EventFd that signals
    /// its changes.
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
        self.reject_promiscuous = policy.reject_promiscuous;
        self.tx_shaper = policy.tx.map(|s| Shaper::new(&s, now));
        self.rx_shaper = policy.rx.map(|s| Shaper::new(&s, now));
        self.link = link;
        self.link_wake = Some(wake);
        self
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
