//! The VM's devices beyond the legacy board: PCI bus 0 and the virtio devices
//! on it. Adding a device kind means writing the device in `crates/virtio`
//! and one `attach_*` function here that builds it from its configuration.

use std::sync::{Arc, Mutex};

use arch::layout;
use devices::IrqLine;
use kvm_ioctls::VmFd;
use pci::PciRootError;
use virtio::{VirtioDevice, VirtioPciDevice, VirtioPciError};
use vm_memory::GuestMemoryMmap;

use crate::config::VmConfig;
use crate::pci_bus::PciBus;
use crate::vm::KvmIrq;

/// Errors from attaching devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("No free PCI slot for {0}")]
    NoSlot(String),
    #[error("Cannot create {what}")]
    Transport {
        what: String,
        #[source]
        source: VirtioPciError,
    },
    #[error("Cannot plug {what} into PCI bus 0")]
    Plug {
        what: String,
        #[source]
        source: PciRootError,
    },
}

/// What building a device needs from the VM.
pub struct AttachContext<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub vm: &'a Arc<VmFd>,
}

/// The devices of one boot of a VM.
pub struct DeviceManager {
    pci: PciBus,
    virtio: Vec<Arc<Mutex<VirtioPciDevice>>>,
}

impl DeviceManager {
    pub fn new(pci: PciBus) -> Self {
        DeviceManager {
            pci,
            virtio: Vec::new(),
        }
    }

    /// Attaches every device `config` asks for, in a stable order (so a
    /// device keeps its PCI slot from boot to boot).
    pub fn attach_all(
        &mut self,
        config: &VmConfig,
        ctx: &AttachContext<'_>,
    ) -> Result<(), DeviceError> {
        if config.rng {
            self.add_virtio(Box::new(virtio::rng::Rng::new()), ctx)?;
        }
        Ok(())
    }

    /// Wraps `device` in the virtio-pci transport and plugs it into the next
    /// free slot, its INTx pin A wired as the DSDT's `_PRT` says.
    fn add_virtio(
        &mut self,
        device: Box<dyn VirtioDevice>,
        ctx: &AttachContext<'_>,
    ) -> Result<(), DeviceError> {
        let what = device.describe();
        let slot = self
            .pci
            .free_slot()
            .ok_or_else(|| DeviceError::NoSlot(what.clone()))?;
        let irq: Arc<dyn IrqLine> = Arc::new(KvmIrq {
            vm: ctx.vm.clone(),
            gsi: layout::pci_intx_gsi(slot, 0),
        });
        let transport = VirtioPciDevice::new(
            device,
            ctx.mem.clone(),
            self.pci.msi_routes(),
            self.pci.io_events(),
            irq,
        )
        .map_err(|source| DeviceError::Transport {
            what: what.clone(),
            source,
        })?;
        let transport = Arc::new(Mutex::new(transport));
        self.pci
            .add(transport.clone())
            .map_err(|source| DeviceError::Plug { what, source })?;
        self.virtio.push(transport);
        Ok(())
    }
}
