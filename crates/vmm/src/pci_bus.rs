//! The VM's PCI bus 0: the root (host bridge at 00:00.0) from `crates/pci`,
//! its front ends on the port and MMIO buses, and the interrupt and doorbell
//! services (KVM irqfds, ioeventfds) that devices on it use.
//!
//! ```text
//!  port bus:  0xCF8..0xD00         configuration mechanism #1
//!             0x0D00..0x10000      I/O BARs (placed from 0xC000)
//!  MMIO bus:  0xC000_0000 +512 MiB memory BARs
//!             0xE000_0000 +1 MiB   ECAM (bus 0)
//! ```

use std::sync::{Arc, Mutex};

use arch::layout;
use devices::{Bus, BusError, IoEvents, MsiRoutes};
use kvm_ioctls::VmFd;
use pci::{PciDevice, PciRoot, PciRootError, PciWindows};

use crate::interrupts::{KvmIoEvents, KvmMsiRoutes};

/// The end (exclusive) of the I/O port space.
const IO_END: u64 = 0x1_0000;

/// PCI bus 0 of a VM and what its devices need from the VMM.
pub struct PciBus {
    root: PciRoot,
    msi: Arc<KvmMsiRoutes>,
    ioevents: Arc<KvmIoEvents>,
}

impl PciBus {
    /// Builds bus 0 with its host bridge and puts its front ends on `pio`
    /// and `mmio`.
    pub fn attach(vm: Arc<VmFd>, pio: &mut Bus, mmio: &mut Bus) -> Result<Self, BusError> {
        let root = PciRoot::new(PciWindows {
            mmio: layout::PCI_MMIO_START..layout::PCI_MMIO_START + layout::PCI_MMIO_SIZE,
            io: u64::from(layout::PCI_IO_BAR_START)..IO_END,
        });
        let io_start = u64::from(layout::PCI_IO_START);
        pio.insert(
            u64::from(layout::PCI_CONFIG_PORT),
            u64::from(layout::PCI_CONFIG_PORT_LEN),
            Arc::new(Mutex::new(root.config_io())),
        )?;
        pio.insert(
            io_start,
            IO_END - io_start,
            Arc::new(Mutex::new(root.io_bars(io_start))),
        )?;
        mmio.insert(
            layout::PCI_ECAM_START,
            layout::PCI_ECAM_SIZE,
            Arc::new(Mutex::new(root.ecam())),
        )?;
        mmio.insert(
            layout::PCI_MMIO_START,
            layout::PCI_MMIO_SIZE,
            Arc::new(Mutex::new(root.mmio_bars(layout::PCI_MMIO_START))),
        )?;
        Ok(PciBus {
            root,
            msi: Arc::new(KvmMsiRoutes::new(vm.clone())),
            ioevents: Arc::new(KvmIoEvents::new(vm)),
        })
    }

    /// Plugs `device` into the next free slot (its BARs placed and
    /// decoding); returns the slot: the device is `0000:00:<slot>.0`.
    pub fn add(&mut self, device: Arc<Mutex<dyn PciDevice>>) -> Result<u8, PciRootError> {
        self.root.add(device)
    }

    /// The slot the next [`PciBus::add`] will use. A device's INTx pin
    /// (1 = INTA .. 4 = INTD) in that slot is wired to GSI
    /// `layout::pci_intx_gsi(slot, pin - 1)`, as the DSDT's `_PRT` says.
    pub fn free_slot(&self) -> Option<u8> {
        self.root.free_slot()
    }

    /// MSI vectors (GSI + irqfd) for devices' MSI-X capabilities.
    pub fn msi_routes(&self) -> Arc<dyn MsiRoutes> {
        self.msi.clone()
    }

    /// ioeventfds for devices' doorbells.
    pub fn io_events(&self) -> Arc<dyn IoEvents> {
        self.ioevents.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bridge_is_reachable_through_ports_and_ecam() {
        let vm = match kvm_ioctls::Kvm::new().and_then(|k| k.create_vm()) {
            Ok(vm) => Arc::new(vm),
            Err(e) => {
                assert_ne!(std::env::var("KEEL_REQUIRE_KVM").as_deref(), Ok("1"));
                eprintln!("SKIPPED (/dev/kvm is unusable: {e})");
                return;
            }
        };
        let (mut pio, mut mmio) = (Bus::new(), Bus::new());
        let pci = PciBus::attach(vm, &mut pio, &mut mmio).unwrap();
        assert_eq!(pci.free_slot(), Some(1));

        assert!(pio.write(0xcf8, &0x8000_0000u32.to_le_bytes()));
        let mut id = [0u8; 4];
        assert!(pio.read(0xcfc, &mut id));
        assert_eq!(u32::from_le_bytes(id), 0x0d57_8086);
        let mut class = [0u8; 2];
        assert!(mmio.read(layout::PCI_ECAM_START + 0xa, &mut class));
        assert_eq!(u16::from_le_bytes(class), 0x0600);
        // Slot 1 is empty.
        assert!(mmio.read(layout::PCI_ECAM_START + (1 << 15), &mut id));
        assert_eq!(id, [0xff; 4]);
        // The BAR windows answer, with nothing in them.
        assert!(mmio.read(layout::PCI_MMIO_START, &mut id));
        assert_eq!(id, [0xff; 4]);
        assert!(pio.read(0xc000, &mut id));
        assert_eq!(id, [0xff; 4]);
    }
}
