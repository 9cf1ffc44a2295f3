//! The devices' I/O counters, for the control socket's `counters`.
//!
//! The counters are atomics the device workers add to ([`BlockStats`],
//! [`NetStats`]); they are created once per VMM process with the
//! [`Backends`](super::Backends) and handed to every boot's devices, so
//! they count across guest reboots. [`IoCounters`] holds them with their
//! names and reads them from any thread — the control socket answers
//! `counters` on its connection thread, without the control loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio::block::BlockStats;
use virtio::net::{NetLink, NetStats, Tap};
use vmm_api::{DiskCounters, NicCounters, VmCounters};

/// One disk's counters and names.
#[derive(Clone, Debug)]
pub struct DiskSource {
    /// `disk0`, … (the device's name).
    pub id: String,
    pub serial: Option<String>,
    pub stats: Arc<BlockStats>,
}

/// One NIC's counters and names.
#[derive(Clone, Debug)]
pub struct NicSource {
    /// `net0`, …
    pub id: String,
    pub mac: String,
    pub stats: Arc<NetStats>,
    /// Its TAP, whose queue drops count as the guest's receive drops.
    pub tap: Option<Arc<Tap>>,
    /// The TAP's queue drops when keel-vmm opened it (a TAP that existed
    /// before keel-vmm may have dropped frames for someone else).
    pub tap_drops_at_open: u64,
    /// Its link state (shown in `counters`, set by `nic-link`).
    pub link: NetLink,
}

/// Every device's counters, cheap to clone and read from any thread.
#[derive(Clone, Debug, Default)]
pub struct IoCounters {
    pub disks: Vec<DiskSource>,
    pub nics: Vec<NicSource>,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl NicSource {
    /// The NIC of `tap`, counting from the TAP's drops now.
    pub fn new(
        id: String,
        mac: String,
        stats: Arc<NetStats>,
        tap: Arc<Tap>,
        link: NetLink,
    ) -> Self {
        let tap_drops_at_open = tap.queue_drops().unwrap_or(0);
        NicSource {
            id,
            mac,
            stats,
            tap: Some(tap),
            tap_drops_at_open,
            link,
        }
    }

    /// Frames for the guest the TAP's queue dropped since it was opened.
    fn tap_drops(&self) -> u64 {
        self.tap
            .as_ref()
            .and_then(|t| t.queue_drops())
            .map_or(0, |now| now.saturating_sub(self.tap_drops_at_open))
    }
}

impl IoCounters {
    /// The counters as the control socket shows them.
    pub fn snapshot(&self) -> VmCounters {
        VmCounters {
            disks: self
                .disks
                .iter()
                .map(|d| {
                    let s = &d.stats;
                    DiskCounters {
                        id: d.id.clone(),
                        serial: d.serial.clone(),
                        read_ops: get(&s.read_ops),
                        read_bytes: get(&s.read_bytes),
                        write_ops: get(&s.write_ops),
                        write_bytes: get(&s.write_bytes),
                        flush_ops: get(&s.flush_ops),
                        discard_ops: get(&s.discard_ops),
                        write_zeroes_ops: get(&s.write_zeroes_ops),
                        errors: get(&s.errors),
                    }
                })
                .collect(),
            nics: self
                .nics
                .iter()
                .map(|n| {
                    let s = &n.stats;
                    NicCounters {
                        id: n.id.clone(),
                        mac: n.mac.clone(),
                        tap: n
                            .tap
                            .as_ref()
                            .map(|t| t.name().to_string())
                            .unwrap_or_default(),
                        rx_packets: get(&s.rx_frames),
                        rx_bytes: get(&s.rx_bytes),
                        tx_packets: get(&s.tx_frames),
                        tx_bytes: get(&s.tx_bytes),
                        rx_dropped: get(&s.rx_dropped).saturating_add(n.tap_drops()),
                        tx_errors: get(&s.tx_dropped),
                        tx_forged: get(&s.tx_forged),
                        rx_filtered: get(&s.rx_filtered),
                        link_up: n.link.is_up(),
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_every_counter_under_its_wire_name() {
        let disk = Arc::new(BlockStats::default());
        for (i, c) in [
            &disk.read_ops,
            &disk.read_bytes,
            &disk.write_ops,
            &disk.write_bytes,
            &disk.flush_ops,
            &disk.discard_ops,
            &disk.write_zeroes_ops,
            &disk.errors,
        ]
        .into_iter()
        .enumerate()
        {
            c.store(i as u64 + 1, Ordering::Relaxed);
        }
        let nic = Arc::new(NetStats::default());
        for (i, c) in [
            &nic.rx_frames,
            &nic.rx_bytes,
            &nic.tx_frames,
            &nic.tx_bytes,
            &nic.rx_dropped,
            &nic.tx_dropped,
            &nic.tx_forged,
            &nic.rx_filtered,
        ]
        .into_iter()
        .enumerate()
        {
            c.store(10 * (i as u64 + 1), Ordering::Relaxed);
        }
        let counters = IoCounters {
            disks: vec![DiskSource {
                id: "disk0".into(),
                serial: Some("S1".into()),
                stats: disk.clone(),
            }],
            nics: vec![NicSource {
                id: "net0".into(),
                mac: "02:6b:65:00:00:01".into(),
                stats: nic,
                tap: None,
                tap_drops_at_open: 0,
                link: NetLink::new(false),
            }],
        };
        let clone = counters.clone();
        let s = clone.snapshot();
        assert_eq!(
            s.disks,
            vec![DiskCounters {
                id: "disk0".into(),
                serial: Some("S1".into()),
                read_ops: 1,
                read_bytes: 2,
                write_ops: 3,
                write_bytes: 4,
                flush_ops: 5,
                discard_ops: 6,
                write_zeroes_ops: 7,
                errors: 8,
            }]
        );
        assert_eq!(
            s.nics,
            vec![NicCounters {
                id: "net0".into(),
                mac: "02:6b:65:00:00:01".into(),
                tap: String::new(),
                rx_packets: 10,
                rx_bytes: 20,
                tx_packets: 30,
                tx_bytes: 40,
                rx_dropped: 50,
                tx_errors: 60,
                tx_forged: 70,
                rx_filtered: 80,
                link_up: false,
            }]
        );
        // Clones read the same counters.
        disk.read_bytes.fetch_add(100, Ordering::Relaxed);
        assert_eq!(counters.snapshot().disks[0].read_bytes, 102);
    }
}
