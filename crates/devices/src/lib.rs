//! The legacy PC devices of the Keel board and the bus they sit on.
//!
//! Devices here know nothing of KVM: they see reads and writes at an offset
//! inside their own range, raise interrupts through [`IrqLine`] and report
//! guest power requests through a [`PowerHandler`].

use std::sync::Arc;

pub mod bus;
pub mod i8042;
pub mod pm;
pub mod rtc;
pub mod serial;

pub use bus::{Bus, BusDevice, BusError};

/// A power request the guest made through a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerEvent {
    /// ACPI S5 (soft off).
    PowerOff,
    /// A platform reset (keyboard controller pulse, reset register).
    Reset,
}

/// Where devices report [`PowerEvent`]s (the VMM's control loop).
pub type PowerHandler = Arc<dyn Fn(PowerEvent) + Send + Sync>;

/// An interrupt line into the VM's interrupt controller (an ISA IRQ / GSI).
pub trait IrqLine: Send + Sync {
    /// Drives the line high or low (level-triggered sources).
    fn set_level(&self, high: bool);

    /// Raises and lowers the line (edge-triggered sources).
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// An MSI message: what a device writes, and where, to interrupt a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MsiMessage {
    pub addr: u64,
    pub data: u32,
}

/// One interrupt vector a device can signal without a VM exit: an eventfd
/// the VMM registered with KVM (irqfd) for a GSI of its own.
#[derive(Debug)]
pub struct MsiVector {
    pub gsi: u32,
    pub irqfd: vmm_sys_util::eventfd::EventFd,
}

/// What the VMM offers devices that raise message-signalled interrupts
/// (implemented on KVM's GSI routing and irqfds).
pub trait MsiRoutes: Send + Sync {
    /// Allocates a GSI and an irqfd for it (masked until routed).
    fn allocate(&self) -> std::io::Result<MsiVector>;
    /// Points the vector's GSI at `msg`, or masks it (`None`).
    fn route(&self, gsi: u32, msg: Option<MsiMessage>) -> std::io::Result<()>;
    /// Gives the vector back.
    fn release(&self, vector: MsiVector);
}

/// What the VMM offers devices whose doorbell writes should not stop a vCPU
/// (implemented on KVM ioeventfds): a guest write to `addr` signals `fd`.
pub trait IoEvents: Send + Sync {
    fn register(&self, addr: u64, fd: &vmm_sys_util::eventfd::EventFd) -> std::io::Result<()>;
    fn unregister(&self, addr: u64, fd: &vmm_sys_util::eventfd::EventFd) -> std::io::Result<()>;
}
