//! The device model: what every virtio device implements, whatever its
//! transport.
//!
//! A device's lifecycle, driven by the transport from the driver's writes to
//! `device_status`:
//!
//! ```text
//!            new()                       activate(Activation)
//!   ───────▶ Idle ─────────────────────────────────────────▶ Active (worker thread runs)
//!             ▲                                                 │   ▲
//!             │ reset() (status 0, VM shutdown, drop)           │   │ resume()
//!             └─────────────────────────────────────────────────┤   │
//!                                                       pause() ▼   │
//!                                                           Paused ─┘
//! ```
//!
//! `reset()` from Paused is allowed too. A device never sees guest memory or
//! queues outside Active/Paused.

use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use crate::features;
use crate::queue::VirtQueue;

/// Transport-level features the transport offers on top of a device's own
/// ([`VirtioDevice::features`]): virtio 1.x, indirect descriptors and event
/// index suppression, all handled by `virtio-queue` and the generic worker.
pub const TRANSPORT_FEATURES: u64 =
    features::VERSION_1 | features::RING_INDIRECT_DESC | features::RING_EVENT_IDX;

/// How a device talks back to the driver. Implemented by the transport;
/// cheap and lock-free enough to call from a worker thread for every batch.
pub trait VirtioInterrupt: Send + Sync {
    /// The device put buffers on queue `index`'s used ring.
    fn signal_queue(&self, index: u16);
    /// The device configuration space changed (the transport bumps
    /// `config_generation` and raises the configuration interrupt).
    fn signal_config(&self);
    /// The device met a broken ring (or cannot go on for any other reason):
    /// sets DEVICE_NEEDS_RESET in the device status and raises the
    /// configuration interrupt, as virtio 1.x section 2.1.2 says.
    fn set_needs_reset(&self);
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    /// The guest's memory (every access is bounds-checked by vm-memory).
    pub mem: GuestMemoryMmap,
    /// The features the driver accepted (a subset of what was offered,
    /// including [`TRANSPORT_FEATURES`] bits).
    pub features: u64,
    /// The queues the driver enabled, in index order ([`VirtQueue::index`]
    /// tells which is which; a queue the driver left disabled is absent).
    /// Each has been checked to lie in guest memory and carries the
    /// EventFd the driver's notifications signal.
    pub queues: Vec<VirtQueue>,
    /// Where to signal used buffers and configuration changes.
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

/// Errors of [`VirtioDevice::activate`] and the device lifecycle.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("Device needs queue {0}, which the driver did not enable")]
    MissingQueue(u16),
    #[error("Device is already active")]
    AlreadyActive,
    #[error("Cannot start the device worker")]
    Worker(#[source] crate::worker::WorkerError),
    #[error("Device backend failed")]
    Backend(#[source] std::io::Error),
}

/// A virtio device, independent of its transport.
///
/// The transport owns the device (on vCPU threads, behind the PCI root's
/// lock); the device's I/O runs on its own worker thread started by
/// [`activate`](Self::activate) (see [`crate::worker`]).
pub trait VirtioDevice: Send {
    /// The virtio device type (`virtio_bindings::virtio_ids::VIRTIO_ID_*`).
    fn device_type(&self) -> u32;

    /// The maximum size of each queue (a power of two, at most 32768); the
    /// length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// The device-specific feature bits the device offers. The transport
    /// adds [`TRANSPORT_FEATURES`] and strips transport bits it does not
    /// support (ACCESS_PLATFORM, RING_PACKED, ...).
    fn features(&self) -> u64;

    /// Reads the device configuration space at `offset`. Bytes past the end
    /// of the configuration read as zero (see [`read_config_bytes`]).
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes the device configuration space; the default ignores writes
    /// (read-only configuration).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }

    /// Starts the device: called once per driver initialization, at
    /// DRIVER_OK. On error the transport sets DEVICE_NEEDS_RESET.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;

    /// Stops the device (its worker exits and the queues are dropped) and
    /// returns it to the state it had before `activate`. Called when the
    /// driver writes 0 to `device_status`, and at VM shutdown. Must be
    /// harmless on an idle device.
    fn reset(&mut self);

    /// Stops processing queues without losing anything (for snapshots and
    /// VM pause); kicks that arrive meanwhile are handled on `resume`.
    /// Harmless on an idle device.
    fn pause(&mut self) -> Result<(), ActivateError>;

    /// Undoes [`pause`](Self::pause).
    fn resume(&mut self) -> Result<(), ActivateError>;

    /// One line naming the device and its backend, for logs and status
    /// (e.g. `virtio-blk disk0: /var/lib/disk.qcow2 (qcow2, read-only)`).
    fn describe(&self) -> String;
}

/// Copies the part of `config` that `offset..offset + data.len()` covers
/// into `data`; bytes outside `config` read as zero. For devices whose
/// configuration space is a plain byte image.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_bytes_are_clipped_and_zero_filled() {
        let config = [1u8, 2, 3, 4];
        let mut d = [0xffu8; 4];
        read_config_bytes(&config, 2, &mut d);
        assert_eq!(d, [3, 4, 0, 0]);
        read_config_bytes(&config, 4, &mut d);
        assert_eq!(d, [0; 4]);
        read_config_bytes(&config, u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
        read_config_bytes(&config, 0, &mut d);
        assert_eq!(d, [1, 2, 3, 4]);
    }

    #[test]
    fn transport_features_are_modern_only() {
        assert_ne!(TRANSPORT_FEATURES & features::VERSION_1, 0);
        assert_eq!(TRANSPORT_FEATURES & features::ACCESS_PLATFORM, 0);
        assert_eq!(TRANSPORT_FEATURES & features::RING_PACKED, 0);
    }
}
