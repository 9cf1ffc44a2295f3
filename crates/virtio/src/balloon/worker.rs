//! virtio-balloon queue handling, and the pure functions it is built from
//! (page-number and statistics parsing, discarding guest RAM), which the
//! fuzz targets drive directly.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use vm_memory::{
    Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::device::{GuestStats, Shared};
use super::features::{REPORTING, STATS_VQ};
use crate::chain::{self, ChainInfo};
use crate::queue::{Chain, QueueError, VirtQueue};
use crate::worker::{QueueHandler, WorkerContext};

/// The balloon's page size: page frame numbers are in 4 KiB units
/// (VIRTIO_BALLOON_PFN_SHIFT), whatever the guest's own page size.
pub const PAGE_SIZE: u64 = 4096;
/// The most page numbers read from one inflate/deflate buffer (Linux sends
/// at most 256); the rest of a larger buffer is ignored.
pub const MAX_PFNS_PER_CHAIN: usize = 16 * 1024;
/// The most statistics entries read from one stats buffer.
pub const MAX_STATS: usize = 64;
/// The size of one `struct virtio_balloon_stat` (le16 tag, le64 value).
pub const STAT_SIZE: usize = 10;

/// Worker token of the stats request EventFd.
const TOKEN_STATS_REQUEST: u64 = 0;

/// Why a range of guest RAM could not be discarded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscardError {
    #[error("Range {addr:#x}+{len:#x} is not in guest RAM")]
    OutsideRam { addr: u64, len: u64 },
    #[error("madvise(MADV_DONTNEED) failed: errno {0}")]
    Madvise(i32),
}

/// Gives the host pages behind guest range `[addr, addr + len)` back to the
/// host kernel (`MADV_DONTNEED`: the next guest access reads zeros). The
/// range must be 4 KiB aligned and lie entirely in guest RAM (possibly
/// across regions); nothing is discarded otherwise.
pub fn discard(mem: &GuestMemoryMmap, addr: u64, len: u64) -> Result<(), DiscardError> {
    for (host, n) in ram_pieces(mem, addr, len)? {
        // SAFETY: `host..host + n` lies inside one mapping of guest RAM that
        // `mem` keeps alive (checked against its region by `ram_pieces`) and
        // is page aligned (regions start page aligned; `addr` and `len` are
        // 4 KiB multiples). MADV_DONTNEED on this private anonymous mapping
        // only replaces the guest's data with zero pages; no Rust object
        // lives there and every VMM access to guest memory is volatile.
        let rc = unsafe { libc::madvise(host.cast(), n, libc::MADV_DONTNEED) };
        if rc != 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            return Err(DiscardError::Madvise(errno));
        }
    }
    Ok(())
}

/// The host mappings behind guest range `[addr, addr + len)`, one piece per
/// region it crosses; an error unless the range is 4 KiB aligned and lies
/// entirely in guest RAM.
fn ram_pieces(
    mem: &GuestMemoryMmap,
    addr: u64,
    len: u64,
) -> Result<Vec<(*mut u8, usize)>, DiscardError> {
    let outside = || DiscardError::OutsideRam { addr, len };
    let mut pieces = Vec::new();
    if len == 0 {
        return Ok(pieces);
    }
    let end = addr.checked_add(len).ok_or_else(outside)?;
    if !addr.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
        return Err(outside());
    }
    let mut cur = addr;
    while cur < end {
        let region = mem.find_region(GuestAddress(cur)).ok_or_else(outside)?;
        let start = region.start_addr().raw_value();
        let region_end = start.saturating_add(region.len());
        let piece_end = end.min(region_end);
        let host = region
            .get_host_address(MemoryRegionAddress(cur - start))
            .map_err(|_| outside())?;
        pieces.push((host, (piece_end - cur) as usize));
        cur = piece_end;
    }
    Ok(pieces)
}

/// The page frame numbers in an inflate/deflate buffer (le32 each; a
/// trailing partial entry is ignored), at most [`MAX_PFNS_PER_CHAIN`].
pub fn parse_pfns(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .take(MAX_PFNS_PER_CHAIN)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Groups page numbers into runs of consecutive pages, in order:
/// `[5, 6, 7, 9]` → `[(5, 3), (9, 1)]`.
pub fn pfn_runs(pfns: &[u32]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &pfn in pfns {
        let pfn = u64::from(pfn);
        match runs.last_mut() {
            Some((start, count)) if *start + *count == pfn => *count += 1,
            _ => runs.push((pfn, 1)),
        }
    }
    runs
}

/// Parses a stats buffer (packed `{le16 tag, le64 val}` entries). Unknown
/// tags and a trailing partial entry are ignored; a later entry with the
/// same tag wins.
pub fn parse_stats(bytes: &[u8]) -> GuestStats {
    let mut s = GuestStats::default();
    for e in bytes.chunks_exact(STAT_SIZE).take(MAX_STATS) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let mut v = [0u8; 8];
        v.copy_from_slice(&e[2..10]);
        let val = Some(u64::from_le_bytes(v));
        match tag {
            0 => s.swap_in = val,
            1 => s.swap_out = val,
            2 => s.major_faults = val,
            3 => s.minor_faults = val,
            4 => s.free_memory = val,
            5 => s.total_memory = val,
            6 => s.available_memory = val,
            7 => s.disk_caches = val,
            8 => s.hugetlb_allocations = val,
            9 => s.hugetlb_failures = val,
            _ => {}
        }
    }
    s
}

/// What each activated queue is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Inflate,
    Deflate,
    Stats,
    Reporting,
    Unused,
}

/// Which queue index serves which role, from the negotiated features:
/// inflate 0, deflate 1, then stats and reporting when negotiated.
fn role_of(index: u16, features: u64) -> Role {
    let mut next = 2u16;
    let mut stats = None;
    let mut reporting = None;
    if features & STATS_VQ != 0 {
        stats = Some(next);
        next += 1;
    }
    if features & REPORTING != 0 {
        reporting = Some(next);
    }
    match index {
        0 => Role::Inflate,
        1 => Role::Deflate,
        i if Some(i) == stats => Role::Stats,
        i if Some(i) == reporting => Role::Reporting,
        _ => Role::Unused,
    }
}

pub(crate) struct BalloonHandler {
    shared: Arc<Shared>,
    /// By position in the activated queues.
    roles: Vec<Role>,
    /// The stats buffer the device holds until it wants fresh numbers.
    stats_head: Option<u16>,
    stats_request: EventFd,
}

impl BalloonHandler {
    pub(crate) fn new(
        shared: Arc<Shared>,
        features: u64,
        queues: &[VirtQueue],
        stats_request: EventFd,
    ) -> Self {
        let roles = queues
            .iter()
            .map(|q| role_of(q.index(), features))
            .collect();
        BalloonHandler {
            shared,
            roles,
            stats_head: None,
            stats_request,
        }
    }

    fn stats_position(&self) -> Option<usize> {
        self.roles.iter().position(|r| *r == Role::Stats)
    }

    /// Inflate or deflate: every page number is checked against guest RAM.
    fn pages(&self, ctx: &mut WorkerContext, pos: usize, inflate: bool) -> Result<(), QueueError> {
        let shared = &self.shared;
        ctx.process_chains(pos, |mem, chain, checked| {
            let Ok(info) = checked else { return 0 };
            let pfns = parse_pfns(&read_readable(mem, chain, info, MAX_PFNS_PER_CHAIN * 4));
            let mut done = 0u64;
            let mut rejected = 0u64;
            for (pfn, count) in pfn_runs(&pfns) {
                let (addr, len) = (pfn * PAGE_SIZE, count * PAGE_SIZE);
                let ok = if inflate {
                    discard(mem, addr, len).is_ok()
                } else {
                    in_ram(mem, addr, len)
                };
                if ok {
                    done += count;
                } else {
                    rejected += count;
                }
            }
            let counter = if inflate {
                &shared.inflated
            } else {
                &shared.deflated
            };
            counter.fetch_add(done, Ordering::Relaxed);
            shared.rejected.fetch_add(rejected, Ordering::Relaxed);
            0
        })
    }

    /// Free page reporting: each device-writable buffer is a free block
    /// the guest lends back for now; its whole pages are discarded.
    fn reporting(&self, ctx: &mut WorkerContext, pos: usize) -> Result<(), QueueError> {
        let shared = &self.shared;
        ctx.process_chains(pos, |mem, chain, checked| {
            if checked.is_err() {
                return 0;
            }
            for desc in chain.clone() {
                if !desc.is_write_only() {
                    continue;
                }
                let addr = desc.addr().raw_value();
                let start = addr.div_ceil(PAGE_SIZE) * PAGE_SIZE;
                let end = (addr + u64::from(desc.len())) / PAGE_SIZE * PAGE_SIZE;
                if end <= start {
                    continue;
                }
                match discard(mem, start, end - start) {
                    Ok(()) => shared.reported.fetch_add(end - start, Ordering::Relaxed),
                    Err(_) => shared
                        .rejected
                        .fetch_add((end - start) / PAGE_SIZE, Ordering::Relaxed),
                };
            }
            0
        })
    }

    /// The stats queue: the driver keeps one buffer in it; the device reads
    /// the numbers and holds the buffer until it wants fresh ones.
    fn stats(&mut self, ctx: &mut WorkerContext, pos: usize) -> Result<(), QueueError> {
        let mem = &ctx.mem;
        let Some(q) = ctx.queues.get_mut(pos) else {
            return Ok(());
        };
        let size = q.size();
        let mut returned = false;
        loop {
            q.disable_notification(mem)?;
            while let Some(chain) = q.pop(mem)? {
                let head = chain.head_index();
                let checked = chain::validate(&chain, size);
                // A driver sends one buffer at a time; an older one goes back.
                if let Some(old) = self.stats_head.take() {
                    q.add_used(mem, old, 0)?;
                    returned = true;
                }
                match checked {
                    Ok(info) => {
                        let bytes = read_readable(mem, chain, info, MAX_STATS * STAT_SIZE);
                        let stats = parse_stats(&bytes);
                        *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((stats, Instant::now()));
                        self.stats_head = Some(head);
                    }
                    Err(_) => {
                        q.add_used(mem, head, 0)?;
                        returned = true;
                    }
                }
            }
            if !q.enable_notification(mem)? {
                break;
            }
        }
        if returned {
            ctx.signal_used(pos)?;
        }
        Ok(())
    }

    /// Hands the held stats buffer back, so the driver refills it.
    fn refresh_stats(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
        let _ = self.stats_request.read();
        let (Some(pos), Some(head)) = (self.stats_position(), self.stats_head) else {
            return Ok(());
        };
        let Some(q) = ctx.queues.get_mut(pos) else {
            return Ok(());
        };
        self.stats_head = None;
        q.add_used(&ctx.mem, head, 0)?;
        ctx.signal_used(pos)
    }
}

/// True when `[addr, addr + len)` (4 KiB aligned) lies in guest RAM.
fn in_ram(mem: &GuestMemoryMmap, addr: u64, len: u64) -> bool {
    ram_pieces(mem, addr, len).is_ok()
}

/// Up to `max` bytes of a checked chain's device-readable buffers.
fn read_readable(mem: &GuestMemoryMmap, chain: Chain<'_>, info: ChainInfo, max: usize) -> Vec<u8> {
    let n = (info.readable as usize).min(max);
    let mut buf = vec![0u8; n];
    let Ok(mut reader) = chain.reader(mem) else {
        return Vec::new();
    };
    let mut got = 0;
    while got < n {
        match reader.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    buf.truncate(got);
    buf
}

impl QueueHandler for BalloonHandler {
    fn start(&mut self, ctx: &mut WorkerContext) -> std::io::Result<()> {
        if self.stats_position().is_some() {
            ctx.watch(
                self.stats_request.as_raw_fd(),
                TOKEN_STATS_REQUEST,
                EventSet::IN,
            )?;
        }
        Ok(())
    }

    fn process_queue(&mut self, ctx: &mut WorkerContext, queue: usize) -> Result<(), QueueError> {
        match self.roles.get(queue).copied().unwrap_or(Role::Unused) {
            Role::Inflate => self.pages(ctx, queue, true),
            Role::Deflate => self.pages(ctx, queue, false),
            Role::Stats => self.stats(ctx, queue),
            Role::Reporting => self.reporting(ctx, queue),
            // A queue no negotiated feature explains: its buffers go back.
            Role::Unused => ctx.process_chains(queue, |_, _, _| 0),
        }
    }

    fn handle_event(
        &mut self,
        ctx: &mut WorkerContext,
        token: u64,
        _events: EventSet,
    ) -> Result<(), QueueError> {
        if token == TOKEN_STATS_REQUEST {
            self.refresh_stats(ctx)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pfns_are_little_endian_and_bounded() {
        assert_eq!(
            parse_pfns(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 9]),
            vec![1, u32::MAX]
        );
        let big = vec![0u8; (MAX_PFNS_PER_CHAIN + 10) * 4];
        assert_eq!(parse_pfns(&big).len(), MAX_PFNS_PER_CHAIN);
    }

    #[test]
    fn runs_coalesce_consecutive_pages() {
        assert_eq!(pfn_runs(&[5, 6, 7, 9]), vec![(5, 3), (9, 1)]);
        assert_eq!(pfn_runs(&[9, 8]), vec![(9, 1), (8, 1)]);
        assert_eq!(
            pfn_runs(&[u32::MAX, 0]),
            vec![(u64::from(u32::MAX), 1), (0, 1)]
        );
        assert!(pfn_runs(&[]).is_empty());
    }

    #[test]
    fn stats_are_parsed_by_tag() {
        let mut b = Vec::new();
        for (tag, val) in [(4u16, 100u64), (5, 200), (6, 150), (99, 1), (4, 101)] {
            b.extend_from_slice(&tag.to_le_bytes());
            b.extend_from_slice(&val.to_le_bytes());
        }
        b.extend_from_slice(&[1, 2, 3]);
        let s = parse_stats(&b);
        assert_eq!(s.free_memory, Some(101));
        assert_eq!(s.total_memory, Some(200));
        assert_eq!(s.available_memory, Some(150));
        assert_eq!(s.swap_in, None);
        assert_eq!(parse_stats(&[]), GuestStats::default());
    }

    #[test]
    fn queue_roles_follow_negotiated_features() {
        assert_eq!(role_of(0, 0), Role::Inflate);
        assert_eq!(role_of(1, 0), Role::Deflate);
        assert_eq!(role_of(2, 0), Role::Unused);
        assert_eq!(role_of(2, STATS_VQ), Role::Stats);
        assert_eq!(role_of(2, REPORTING), Role::Reporting);
        assert_eq!(role_of(2, STATS_VQ | REPORTING), Role::Stats);
        assert_eq!(role_of(3, STATS_VQ | REPORTING), Role::Reporting);
        assert_eq!(role_of(4, STATS_VQ | REPORTING), Role::Unused);
    }

    #[test]
    fn discard_zeroes_ram_and_refuses_anything_else() {
        use vm_memory::Bytes;
        // Two regions with a hole between them, like low RAM and RAM above 4 GiB.
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x20000), 0x10000),
        ])
        .unwrap();
        mem.write_slice(&[0xaa; 0x3000], GuestAddress(0x1000))
            .unwrap();
        discard(&mem, 0x2000, 0x1000).unwrap();
        let mut b = [0u8; 0x3000];
        mem.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
        assert!(b[..0x1000].iter().all(|&x| x == 0xaa));
        assert!(b[0x1000..0x2000].iter().all(|&x| x == 0));
        assert!(b[0x2000..].iter().all(|&x| x == 0xaa));
        mem.write_slice(&[0xbb; 16], GuestAddress(0x2000)).unwrap();
        for (addr, len) in [
            (0xf000, 0x2000),    // runs off the first region into the hole
            (0x18000, 0x1000),   // in the hole
            (0x30000, 0x1000),   // past the end
            (0x1800, 0x1000),    // unaligned
            (0x2000, 0x800),     // partial page
            (!0xfffu64, 0x2000), // wraps
            (0x2000, !0xfffu64), // huge
        ] {
            assert!(discard(&mem, addr, len).is_err(), "{addr:#x}+{len:#x}");
        }
        // Nothing was discarded by the refused calls.
        let mut b = [0u8; 16];
        mem.read_slice(&mut b, GuestAddress(0x2000)).unwrap();
        assert_eq!(b, [0xbb; 16]);
        assert_eq!(discard(&mem, 0x2000, 0), Ok(()));
        assert!(in_ram(&mem, 0x20000, 0x10000));
        assert!(!in_ram(&mem, 0xf000, 0x12000));
        assert!(!in_ram(&mem, !0xfffu64, 0x2000));
    }
}
