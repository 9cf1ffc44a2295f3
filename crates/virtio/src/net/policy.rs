//! Per-NIC policies the device applies on its worker, as ESXi's port
//! groups have them: forged transmits, promiscuous mode, traffic shaping,
//! link state.
//!
//! - Forged transmits ([`NetPolicy::reject_forged`]): a frame from the guest
//!   whose Ethernet source address is not the NIC's MAC is dropped and
//!   counted (`tx_forged`): a 6-byte compare per frame.
//! - Promiscuous mode ([`NetPolicy::reject_promiscuous`]): a frame from the
//!   backend whose Ethernet destination is a unicast address other than the
//!   NIC's MAC is dropped and counted (`rx_filtered`); broadcast and
//!   multicast frames pass. The frame is read into host memory and checked
//!   before any of it reaches guest memory (a guest can read its receive
//!   buffers at any time), so this costs one copy per received frame.
//! - Traffic shaping ([`Shaping`]): a token bucket per direction (average
//!   rate, burst size) and optionally a second one for the peak rate. A
//!   frame may go while both buckets hold tokens; it then takes its bytes,
//!   which may leave a bucket in debt (so a 64 KiB TSO frame passes even a
//!   small bucket, and the average still holds). An empty bucket stops the
//!   direction — TX takes no more chains from the ring, RX reads no more
//!   from the TAP (frames wait in its queue) — and arms a timerfd in the
//!   worker's epoll for when tokens are back. The worker never sleeps.
//! - Link state ([`NetLink`]): `VIRTIO_NET_S_LINK_UP` in the configuration
//!   space, changed at run time with a configuration interrupt. While the
//!   link is down the device drops what the guest sends and what arrives
//!   for it (read from the TAP and dropped, as a NIC without carrier loses
//!   it), counting both as drops.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use crate::device::VirtioInterrupt;

/// Nanoseconds per second, the scale of a bucket's level.
const NS: i128 = 1_000_000_000;
/// The smallest peak bucket, in bytes: one full-size Ethernet frame.
const PEAK_MIN_CAP: u64 = 1514;

/// What a NIC's policy allows, fixed for the VMM's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetPolicy {
    /// Drop frames from the guest whose source MAC is not the NIC's.
    pub reject_forged: bool,
    /// Drop frames for the guest whose destination MAC is a unicast
    /// address other than the NIC's (promiscuous mode rejected).
    pub reject_promiscuous: bool,
    /// Shaping of what the guest receives.
    pub rx: Option<Shaping>,
    /// Shaping of what the guest sends.
    pub tx: Option<Shaping>,
}

/// One direction's traffic shaping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shaping {
    /// The average rate, in bits per second (Ethernet frames, virtio-net
    /// header excluded).
    pub average_bps: u64,
    /// How many bytes may go at once above the average: the bucket's size.
    pub burst_bytes: u64,
    /// The highest rate, in bits per second, even within a burst.
    pub peak_bps: Option<u64>,
}

/// Shaping values that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShapingError {
    #[error("the average rate must be at least 8 bits/s")]
    RateTooLow,
    #[error("the peak rate ({peak} bits/s) is below the average rate ({average} bits/s)")]
    PeakBelowAverage { peak: u64, average: u64 },
    #[error("the burst size must be at least 1 byte")]
    NoBurst,
}

impl Shaping {
    /// Shaping at `average_bps` with the default burst: 100 ms of the
    /// average rate, at least 64 KiB (one TSO frame).
    pub fn new(average_bps: u64) -> Self {
        Shaping {
            average_bps,
            burst_bytes: Self::default_burst(average_bps),
            peak_bps: None,
        }
    }

    /// The burst a rate gets when none is given.
    pub fn default_burst(average_bps: u64) -> u64 {
        (average_bps / 8 / 10).max(64 * 1024)
    }

    /// Checks the values.
    pub fn check(&self) -> Result<(), ShapingError> {
        if self.average_bps < 8 {
            return Err(ShapingError::RateTooLow);
        }
        if self.burst_bytes == 0 {
            return Err(ShapingError::NoBurst);
        }
        if let Some(peak) = self.peak_bps {
            if peak < self.average_bps {
                return Err(ShapingError::PeakBelowAverage {
                    peak,
                    average: self.average_bps,
                });
            }
        }
        Ok(())
    }
}

/// A token bucket; its level is in bits times nanoseconds per second, so
/// refilling is exact integer arithmetic.
#[derive(Debug)]
struct Bucket {
    /// Bits per second.
    rate: i128,
    /// The most the level reaches.
    cap: i128,
    level: i128,
    last: Instant,
}

impl Bucket {
    fn new(rate_bps: u64, cap_bytes: u64, now: Instant) -> Self {
        let cap = i128::from(cap_bytes) * 8 * NS;
        Bucket {
            rate: i128::from(rate_bps.max(1)),
            cap,
            level: cap,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_nanos();
        self.last = now;
        let dt = i128::try_from(dt).unwrap_or(i128::MAX / 2);
        self.level = self
            .level
            .saturating_add(dt.saturating_mul(self.rate))
            .min(self.cap);
    }

    /// How long until the level is above 0 again (0 when it is).
    fn wait(&self) -> Duration {
        if self.level > 0 {
            return Duration::ZERO;
        }
        // The level rises by `rate` per nanosecond.
        let ns = (-self.level) / self.rate + 1;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// One direction's buckets, on the worker.
#[derive(Debug)]
pub(crate) struct Shaper {
    average: Bucket,
    peak: Option<Bucket>,
}

impl Shaper {
    pub(crate) fn new(s: &Shaping, now: Instant) -> Self {
        Shaper {
            average: Bucket::new(s.average_bps, s.burst_bytes, now),
            // The peak bucket holds 10 ms of the peak rate (at least a
            // full-size Ethernet frame): the rate may not go above the peak
            // for longer than that.
            peak: s
                .peak_bps
                .map(|p| Bucket::new(p, (p / 8 / 100).max(PEAK_MIN_CAP), now)),
        }
    }

    /// Refills; `None` when a frame may go, else how long to wait.
    pub(crate) fn check(&mut self, now: Instant) -> Option<Duration> {
        self.average.refill(now);
        let mut wait = self.average.wait();
        if let Some(p) = &mut self.peak {
            p.refill(now);
            wait = wait.max(p.wait());
        }
        (!wait.is_zero()).then_some(wait)
    }

    /// A frame of `bytes` went.
    pub(crate) fn take(&mut self, bytes: usize) {
        let bits = (bytes as i128) * 8 * NS;
        self.average.level -= bits;
        if let Some(p) = &mut self.peak {
            p.level -= bits;
        }
    }
}

/// Whether a frame (header excluded) was sent by `mac`: its Ethernet
/// source address, bytes 6..12.
pub(crate) fn source_is(frame_start: &[u8], mac: &[u8; 6]) -> bool {
    frame_start.get(6..12) == Some(&mac[..])
}

/// Whether a frame (header excluded) may reach a NIC with address `mac`
/// that does not see other NICs' traffic: its Ethernet destination, bytes
/// 0..6, is `mac` or a group (multicast, broadcast) address. A frame too
/// short to have a destination may not.
pub(crate) fn destination_allowed(frame_start: &[u8], mac: &[u8; 6]) -> bool {
    match frame_start.get(..6) {
        Some(dst) => dst[0] & 1 != 0 || dst == &mac[..],
        None => false,
    }
}

/// What the link handle reaches while a driver runs the device.
struct Active {
    /// Which activation attached it.
    generation: u64,
    interrupt: Arc<dyn VirtioInterrupt>,
    /// Wakes the worker to apply a change.
    wake: EventFd,
}

struct LinkShared {
    up: AtomicBool,
    generations: AtomicU64,
    active: Mutex<Option<Active>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A NIC's link state, shared by the control plane and every boot's
/// device (a guest reboot keeps a link down). Cheap to clone.
#[derive(Clone)]
pub struct NetLink(Arc<LinkShared>);

impl Default for NetLink {
    fn default() -> Self {
        NetLink::new(true)
    }
}

impl fmt::Debug for NetLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetLink")
            .field("up", &self.is_up())
            .finish()
    }
}

impl NetLink {
    pub fn new(up: bool) -> Self {
        NetLink(Arc::new(LinkShared {
            up: AtomicBool::new(up),
            generations: AtomicU64::new(0),
            active: Mutex::new(None),
        }))
    }

    pub fn is_up(&self) -> bool {
        self.0.up.load(Ordering::SeqCst)
    }

    /// Sets the link up or down; when that changes it and a driver runs
    /// the device, raises the configuration interrupt (the guest's driver
    /// reads the new status) and wakes the worker. Returns whether it
    /// changed.
    pub fn set_up(&self, up: bool) -> bool {
        // Under the lock, so a device being activated sees either the old
        // state and then the interrupt, or the new state.
        let active = lock(&self.0.active);
        if self.0.up.swap(up, Ordering::SeqCst) == up {
            return false;
        }
        if let Some(a) = active.as_ref() {
            let _ = a.wake.write(1);
            a.interrupt.signal_config();
        }
        true
    }

    /// A device's driver started: link changes reach it through
    /// `interrupt` and `wake` until [`detach`](Self::detach) with the
    /// returned generation.
    pub(crate) fn attach(&self, interrupt: Arc<dyn VirtioInterrupt>, wake: EventFd) -> u64 {
        let generation = self.0.generations.fetch_add(1, Ordering::SeqCst);
        *lock(&self.0.active) = Some(Active {
            generation,
            interrupt,
            wake,
        });
        generation
    }

    /// Undoes [`attach`](Self::attach) (not a later device's).
    pub(crate) fn detach(&self, generation: u64) {
        let mut active = lock(&self.0.active);
        if active.as_ref().map(|a| a.generation) == Some(generation) {
            *active = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_its_burst_go_then_the_rate() {
        let t0 = Instant::now();
        // 8 000 bits/s = 1 000 bytes/s, 1 500 bytes of burst.
        let s = Shaping {
            average_bps: 8_000,
            burst_bytes: 1_500,
            peak_bps: None,
        };
        let mut b = Shaper::new(&s, t0);
        assert_eq!(b.check(t0), None);
        b.take(1_000);
        assert_eq!(b.check(t0), None, "500 bytes left");
        b.take(1_000);
        // 500 bytes of debt: half a second.
        let w = b.check(t0).unwrap();
        assert!(
            w > Duration::from_millis(499) && w <= Duration::from_millis(501),
            "{w:?}"
        );
        assert!(b.check(t0 + Duration::from_millis(400)).is_some());
        assert_eq!(b.check(t0 + Duration::from_millis(501)), None);
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(100);
        assert_eq!(b.check(later), None);
        b.take(1_500);
        assert!(b.check(later).is_some());
    }

    #[test]
    fn the_peak_bucket_limits_a_burst() {
        let t0 = Instant::now();
        let s = Shaping {
            average_bps: 8_000,
            burst_bytes: 1_000_000,
            peak_bps: Some(80_000),
        };
        let mut b = Shaper::new(&s, t0);
        assert_eq!(b.check(t0), None);
        // The peak bucket holds 1 514 bytes (100 bytes is 10 ms of it).
        b.take(11_514);
        // 10 000 bytes of debt at 10 000 bytes/s.
        let w = b.check(t0).unwrap();
        assert!(w > Duration::from_millis(999) && w <= Duration::from_millis(1001));
    }

    #[test]
    fn bad_shaping_is_refused() {
        let mut s = Shaping::new(1_000_000);
        assert_eq!(s.burst_bytes, 64 * 1024);
        assert_eq!(s.check(), Ok(()));
        s.peak_bps = Some(999_999);
        assert!(matches!(
            s.check(),
            Err(ShapingError::PeakBelowAverage { .. })
        ));
        assert_eq!(Shaping::new(7).check(), Err(ShapingError::RateTooLow));
        assert_eq!(Shaping::new(1_000_000_000).burst_bytes, 12_500_000);
        let s = Shaping {
            burst_bytes: 0,
            ..Shaping::new(8)
        };
        assert_eq!(s.check(), Err(ShapingError::NoBurst));
    }

    #[test]
    fn source_mac_compare() {
        let mac = [2, 0x6b, 0x65, 0, 0, 9];
        let mut f = [0u8; 14];
        f[6..12].copy_from_slice(&mac);
        assert!(source_is(&f, &mac));
        f[11] = 8;
        assert!(!source_is(&f, &mac));
        assert!(!source_is(&f[..10], &mac));
    }

    #[test]
    fn destination_mac_filter() {
        let mac = [2, 0x6b, 0x65, 0, 0, 9];
        let mut f = [0u8; 14];
        f[..6].copy_from_slice(&mac);
        assert!(destination_allowed(&f, &mac), "its own");
        f[5] = 8;
        assert!(!destination_allowed(&f, &mac), "another unicast");
        // The source does not count.
        f[6..12].copy_from_slice(&mac);
        assert!(!destination_allowed(&f, &mac));
        f[..6].copy_from_slice(&[0xff; 6]);
        assert!(destination_allowed(&f, &mac), "broadcast");
        f[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 1]);
        assert!(destination_allowed(&f, &mac), "IPv4 multicast");
        f[..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
        assert!(destination_allowed(&f, &mac), "IPv6 multicast");
        assert!(!destination_allowed(&mac[..5], &mac), "too short");
        assert!(destination_allowed(&mac, &mac), "exactly a destination");
    }
}
