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
