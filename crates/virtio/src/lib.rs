//! virtio devices (block, net, rng, console, vsock, balloon) and the
//! virtio-pci transport.
//!
//! ```text
//!   vCPU thread                                  device worker thread
//!   ───────────                                  ────────────────────
//!   BAR access ─▶ transport::pci::VirtioPciDevice
//!                 │ common config, status machine
//!                 │ DRIVER_OK ─▶ VirtioDevice::activate ─▶ worker::Worker::spawn
//!   notify write ─(KVM ioeventfd)──────────────────▶ kick EventFd
//!                                                     │ QueueHandler::process_queue
//!                                                     │ guest memory, used ring
//!   vCPU ◀──(KVM irqfd)─── VirtioInterrupt::signal_queue
//! ```
//!
//! A device is written against [`VirtioDevice`] (its identity, queues,
//! features, configuration space and lifecycle) and, for its I/O, against
//! [`worker::QueueHandler`]; the transport and the generic worker do the
//! rest. Every value read from the guest is checked: a malformed request is
//! answered with an error or returned unused, a broken ring marks the device
//! DEVICE_NEEDS_RESET, and nothing the guest does panics the VMM.

pub mod balloon;
pub mod block;
pub mod chain;
pub mod console;
pub mod device;
pub mod net;
pub mod queue;
pub mod rng;
pub mod transport;
pub mod unix;
pub mod vsock;
pub mod worker;

#[cfg(test)]
pub(crate) mod stream_testing;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use device::{
    read_config_bytes, ActivateError, Activation, VirtioDevice, VirtioInterrupt, TRANSPORT_FEATURES,
};
pub use queue::{QueueError, VirtQueue};
pub use transport::pci::{VirtioPciDevice, VirtioPciError, VirtioPciState};

/// Formats an error with its whole `source()` chain on one line, for the
/// log lines devices and workers print (`A: B: C`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Feature bits as masks (the bindings give bit numbers).
pub mod features {
    use virtio_bindings::virtio_config as cfg;
    use virtio_bindings::virtio_ring as ring;

    /// The device is a virtio 1.x device (always offered; modern only).
    pub const VERSION_1: u64 = 1 << cfg::VIRTIO_F_VERSION_1;
    /// The device sits behind a platform IOMMU (never offered).
    pub const ACCESS_PLATFORM: u64 = 1 << cfg::VIRTIO_F_ACCESS_PLATFORM;
    /// Packed virtqueues (not supported).
    pub const RING_PACKED: u64 = 1 << cfg::VIRTIO_F_RING_PACKED;
    /// Indirect descriptor tables.
    pub const RING_INDIRECT_DESC: u64 = 1 << ring::VIRTIO_RING_F_INDIRECT_DESC;
    /// `used_event` / `avail_event` notification suppression.
    pub const RING_EVENT_IDX: u64 = 1 << ring::VIRTIO_RING_F_EVENT_IDX;
}
