//! The transmit path (guest → backend).
//!
//! Each chain's header is checked ([`check_tx_frame`]) and its readable
//! buffers `writev`n to the backend as one frame. A backend that cannot
//! take a frame (`EAGAIN`) keeps it pending until the fd is writable.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Instant;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::super::backend::IOV_MAX;
use super::super::header::{check_tx_frame, HDR_LEN};
use super::super::policy::source_is;
use super::{arm, NetChainError, NetHandler};
use crate::chain::{self, ChainError, ChainInfo};
use crate::queue::{Chain, QueueError};
use crate::worker::WorkerContext;

/// A frame the backend could not take yet.
pub(super) struct PendingTx {
    head: u16,
    descs: Vec<(GuestAddress, u32)>,
    len: usize,
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

impl NetHandler {
    /// Whether the frame in `descs` (header first) comes from the NIC's
    /// own MAC.
    fn own_source(&self, mem: &GuestMemoryMmap, descs: &[(GuestAddress, u32)]) -> bool {
        let mut start = [0u8; HDR_LEN + 12];
        read_prefix(mem, descs, &mut start);
        source_is(&start[HDR_LEN..], &self.mac)
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

    pub(super) fn process_tx(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
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
