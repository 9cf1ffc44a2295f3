//! The VM's devices beyond the legacy board: PCI bus 0 and the virtio devices
//! on it. Adding a device kind means writing the device in `crates/virtio`
//! and one `attach_*` function here that builds it from its configuration.
//! Host resources that must outlive a guest reboot (disk images) are opened
//! once, before the first boot, into [`Backends`], with the devices' I/O
//! counters ([`IoCounters`]), which every boot's devices count in.

pub mod balloon;
pub mod block;
pub mod console;
pub mod counters;
pub mod net;
pub mod vsock;

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
pub use counters::{DiskSource, IoCounters, NicSource};

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
    #[error("Cannot create the virtio-balloon device")]
    Balloon(#[source] virtio::balloon::BalloonError),
    #[error("Cannot create the virtio-vsock device")]
    Vsock(#[source] virtio::vsock::VsockError),
    #[error("Cannot create the virtio-blk device of disk {index}")]
    Block {
        index: usize,
        #[source]
        source: virtio::block::BlockError,
    },
}

/// Errors opening host resources before the first boot: the user's input
/// (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Disk(#[from] block::DiskError),
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error(transparent)]
    Console(#[from] virtio::console::ConsoleError),
    #[error(transparent)]
    Vsock(#[from] virtio::vsock::VsockError),
}

/// Host resources opened once per VMM process, before the first boot, and
/// kept across guest reboots (a disk image is probed and locked once).
#[derive(Debug, Default)]
pub struct Backends {
    /// One per `config.disks`, in order.
    pub disks: Vec<Arc<dyn storage::DiskImage>>,
    /// One per `config.nets`, in order: the TAPs (a TAP keel-vmm created
    /// lives as long as the process).
    pub nets: Vec<net::OpenNet>,
    /// The console ports' sockets (their clients do not outlive a boot).
    pub console: Option<virtio::console::ConsoleSockets>,
    /// The vsock device's listening socket.
    pub vsock: Option<Arc<virtio::unix::SocketListener>>,
    /// The disks' and NICs' I/O counters, for the whole process.
    pub counters: IoCounters,
}

impl Backends {
    /// Opens what `config` names.
    pub fn open(config: &VmConfig) -> Result<Self, BackendError> {
        let disks = block::open_disks(&config.disks)?;
        let nets = net::open_nets(&config.nets)?;
        let counters = IoCounters {
            disks: config
                .disks
                .iter()
                .enumerate()
                .map(|(index, d)| DiskSource {
                    id: block::disk_name(index),
                    serial: d.serial.clone(),
                    stats: Arc::default(),
                })
                .collect(),
            nics: nets
                .iter()
                .enumerate()
                .map(|(index, n)| {
                    NicSource::new(
                        format!("net{index}"),
                        n.mac.to_string(),
                        n.stats.clone(),
                        n.tap.clone(),
                        n.link.clone(),
                    )
                })
                .collect(),
        };
        Ok(Backends {
            disks,
            nets,
            console: console::bind_console_ports(&config.console_ports)?,
            vsock: vsock::bind_vsock(config.vsock.as_ref())?,
            counters,
        })
    }
}

/// What building a device needs from the VM.
pub struct AttachContext<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub vm: &'a Arc<VmFd>,
    pub backends: &'a Backends,
}

/// The devices of one boot of a VM.
pub struct DeviceManager {
    pci: PciBus,
    virtio: Vec<Arc<Mutex<VirtioPciDevice>>>,
    /// The balloon's control handle (`--balloon`).
    balloon: Option<virtio::balloon::BalloonHandle>,
}

impl DeviceManager {
    pub fn new(pci: PciBus) -> Self {
        DeviceManager {
            pci,
            virtio: Vec::new(),
            balloon: None,
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
        for (index, (disk, image)) in config.disks.iter().zip(&ctx.backends.disks).enumerate() {
            let stats = ctx
                .backends
                .counters
                .disks
                .get(index)
                .map(|d| d.stats.clone());
            let dev = block::block_device(index, disk, image.clone(), config.cpus, stats)
                .map_err(|source| DeviceError::Block { index, source })?;
            self.add_virtio(Box::new(dev), ctx)?;
        }
        for open in &ctx.backends.nets {
            self.add_virtio(Box::new(net::net_device(open)), ctx)?;
        }
        if let Some(sockets) = &ctx.backends.console {
            self.add_virtio(Box::new(console::console_device(sockets)), ctx)?;
        }
        if let (Some(cfg), Some(listener)) = (&config.vsock, &ctx.backends.vsock) {
            let dev = vsock::vsock_device(cfg, listener).map_err(DeviceError::Vsock)?;
            self.add_virtio(Box::new(dev), ctx)?;
        }
        // Last of all: the balloon.
        if let Some(opts) = &config.balloon {
            self.attach_balloon(opts, config.memory, ctx)?;
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

/// Pausing, for VM pause (and snapshots later).
impl DeviceManager {
    /// Pauses every virtio device's worker, in attach order; stops at the
    /// first failure (the caller resumes).
    pub fn pause_all(&self) -> Result<(), String> {
        for dev in &self.virtio {
            let mut dev = dev.lock().unwrap_or_else(|e| e.into_inner());
            dev.pause()
                .map_err(|e| format!("{}: {e}", dev.device().describe()))?;
        }
        Ok(())
    }

    /// Resumes every virtio device's worker; tries them all and reports the
    /// first failure.
    pub fn resume_all(&self) -> Result<(), String> {
        let mut first = Ok(());
        for dev in &self.virtio {
            let mut dev = dev.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = dev.resume() {
                if first.is_ok() {
                    first = Err(format!("{}: {e}", dev.device().describe()));
                }
            }
        }
        first
    }

    /// The balloon's control handle, when the VM has one.
    pub fn balloon(&self) -> Option<&virtio::balloon::BalloonHandle> {
        self.balloon.as_ref()
    }
}
