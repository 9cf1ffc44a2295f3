//! The PCI root complex of the Keel board: one bus (bus 0), configuration
//! space through ports 0xCF8/0xCFC and through ECAM, BAR placement and the
//! MSI-X capability that devices embed.
//!
//! ```text
//!  vCPU exits ──► ConfigIo (0xCF8/0xCFC) ─┐
//!             ──► Ecam (MMIO, bus 0)     ─┼─► PciRoot slots 0..32 ──► dyn PciDevice
//!             ──► BarWindow (MMIO / I/O) ─┘    (slot 0: host bridge)     ├─ PciConfig (header, BARs, caps)
//!                                                                          └─ MsixConfig ──► MsiRoutes (irqfd)
//! ```
//!
//! A device embeds a [`PciConfig`] for its configuration header and, for
//! MSI-X, an `Arc<`[`MsixConfig`]`>` linked into it with
//! [`PciConfig::add_msix`]. [`PciRoot::add`] places its BARs in the windows
//! (as firmware would: by sizing them through configuration space) and turns
//! decoding on; the guest may move them later, which
//! [`PciConfig::write_config`] reports as [`BarChange`]s.

pub mod config;
pub mod msix;
pub mod root;
mod window;

pub use config::{BarChange, PciConfig, PciConfigError, PciIds};
pub use msix::{MsixConfig, MsixError};
pub use root::{ConfigIo, Ecam, PciRoot, PciRootError, PciWindows};
pub use window::BarWindow;

/// The kind of address space a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mmio32,
    Mmio64,
}

impl BarKind {
    /// True for memory BARs (32- or 64-bit).
    pub fn is_mmio(self) -> bool {
        !matches!(self, BarKind::Io)
    }
}

/// Where a BAR currently sits (as the guest programmed it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    pub index: u8,
    pub addr: u64,
    pub size: u64,
    pub kind: BarKind,
}

impl Bar {
    /// True when `[addr, addr + len)` lies inside this BAR.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        if len == 0 || self.size == 0 || addr < self.addr {
            return false;
        }
        // Compare last bytes, so a BAR that ends at the top of the address
        // space works and nothing overflows.
        match (
            addr.checked_add(len - 1),
            self.addr.checked_add(self.size - 1),
        ) {
            (Some(last), Some(bar_last)) => last <= bar_last,
            _ => false,
        }
    }
}

/// A function on the root bus. Accesses come already split: configuration
/// registers by 32-bit register index, BAR accesses by BAR and offset.
/// Nothing a guest writes may make a device panic.
pub trait PciDevice: Send {
    /// Reads configuration register `reg` (byte offset / 4; 0..1024).
    fn read_config(&mut self, reg: u16) -> u32;
    /// Writes `data` (1, 2 or 4 bytes) at byte `offset` (0..4) of register `reg`.
    fn write_config(&mut self, reg: u16, offset: u8, data: &[u8]);
    /// Reads at `offset` inside BAR `bar`.
    fn read_bar(&mut self, bar: u8, offset: u64, data: &mut [u8]);
    /// Writes at `offset` inside BAR `bar`.
    fn write_bar(&mut self, bar: u8, offset: u64, data: &[u8]);
    /// The BARs as currently programmed (memory decoding enabled or not is
    /// the device's business: a disabled BAR is left out).
    fn bars(&self) -> Vec<Bar>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_contains_checks_both_ends_without_overflow() {
        let bar = Bar {
            index: 0,
            addr: 0x1000,
            size: 0x100,
            kind: BarKind::Mmio32,
        };
        assert!(bar.contains(0x1000, 4));
        assert!(bar.contains(0x10fc, 4));
        assert!(!bar.contains(0x10fd, 4));
        assert!(!bar.contains(0xffc, 8));
        assert!(!bar.contains(u64::MAX, 2));
        let top = Bar {
            addr: u64::MAX - 0xff,
            ..bar
        };
        assert!(top.contains(u64::MAX - 3, 4));
        assert!(!top.contains(u64::MAX - 3, 5));
    }
}
