//! virtio-balloon (traditional memory balloon, virtio 1.x section 5.5).
//!
//! The VMM sets a target (`num_pages` in the configuration space, 4 KiB
//! pages) through a [`BalloonHandle`]; the guest's driver inflates towards
//! it by sending page frame numbers on the inflate queue, which the device
//! gives back to the host with `madvise(MADV_DONTNEED)` on the guest-memory
//! mapping, and deflates (takes pages back) on the deflate queue. Optional
//! features, each a `--balloon` key:
//!
//! - `VIRTIO_BALLOON_F_STATS_VQ`: the guest's memory statistics, refreshed
//!   on request ([`BalloonHandle::request_stats`]).
//! - `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`: the guest may deflate under memory
//!   pressure (nothing for the device to do but offer it).
//! - `VIRTIO_BALLOON_F_REPORTING`: free page reporting — the guest reports
//!   free memory blocks, which are discarded like inflated pages but stay
//!   the guest's.
//!
//! Queue numbering: inflate 0, deflate 1, then stats and reporting in that
//! order, each only when negotiated (what Linux and QEMU do; the spec's
//! fixed numbers coincide whenever the features between them are taken).
//! Every page number and reported range is checked to lie in guest RAM;
//! anything else is counted as rejected and ignored.

mod device;
mod worker;

pub use device::{
    Balloon, BalloonConfig, BalloonError, BalloonHandle, BalloonInfo, GuestStats, QUEUE_SIZE,
};
pub use worker::{discard, parse_pfns, parse_stats, pfn_runs, DiscardError, PAGE_SIZE};

/// Feature bits (virtio 1.x 5.5.3).
pub mod features {
    pub const MUST_TELL_HOST: u64 = 1 << 0;
    pub const STATS_VQ: u64 = 1 << 1;
    pub const DEFLATE_ON_OOM: u64 = 1 << 2;
    pub const FREE_PAGE_HINT: u64 = 1 << 3;
    pub const PAGE_POISON: u64 = 1 << 4;
    pub const REPORTING: u64 = 1 << 5;
}

#[cfg(test)]
mod tests;
