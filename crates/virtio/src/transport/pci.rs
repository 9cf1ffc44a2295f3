//! The virtio-pci modern transport (virtio 1.x section 4.1): a PCI function
//! (vendor 0x1af4, device 0x1040 + type) with one 64-bit memory BAR:
//!
//! ```text
//!   BAR 0 (32 KiB)
//!   0x0000 common configuration   (VIRTIO_PCI_CAP_COMMON_CFG)
//!   0x1000 ISR status             (VIRTIO_PCI_CAP_ISR_CFG)
//!   0x2000 device configuration   (VIRTIO_PCI_CAP_DEVICE_CFG)
//!   0x3000 notifications          (VIRTIO_PCI_CAP_NOTIFY_CFG, 4 bytes per queue; KVM ioeventfds)
//!   0x4000 MSI-X table            (one vector per queue + one for configuration)
//!   0x6000 MSI-X PBA
//! ```
//!
//! plus a VIRTIO_PCI_CAP_PCI_CFG window for firmware. The configuration
//! header and MSI-X are `pci::PciConfig` and `pci::MsixConfig`; the device
//! status machine lives in [`common_cfg`]; interrupt delivery in [`interrupt`].

mod common_cfg;
mod interrupt;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use devices::{IoEvents, IrqLine, MsiRoutes};
use pci::config::COMMAND_INTX_DISABLE;
use pci::{Bar, BarKind, MsixConfig, MsixError, PciConfig, PciConfigError, PciDevice, PciIds};
use virtio_bindings::virtio_ids;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::device::{Activation, VirtioDevice, VirtioInterrupt, TRANSPORT_FEATURES};
use crate::features;
use crate::queue::VirtQueue;

pub use common_cfg::{CommonConfigState, QueueConfig, NO_VECTOR};

use common_cfg::{CommonAction, CommonConfig, ReadContext};
use interrupt::PciInterrupt;

/// The size of BAR 0.
pub const BAR_SIZE: u64 = 0x8000;
/// The most queues a device may have (one MSI-X vector each, plus one).
pub const MAX_QUEUES: usize = 511;
/// PCI vendor ID of virtio devices.
pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Modern device IDs are this plus the virtio device type.
pub const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;
/// The multiplier of `queue_notify_off` in the notify region.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;

const COMMON_CFG: u64 = 0x0000;
const ISR_CFG: u64 = 0x1000;
const DEVICE_CFG: u64 = 0x2000;
const NOTIFY_CFG: u64 = 0x3000;
const MSIX_TABLE: u64 = 0x4000;
const MSIX_PBA: u64 = 0x6000;
const REGION_SIZE: u64 = 0x1000;
const MSIX_TABLE_SIZE: u64 = 0x2000;

const COMMAND: usize = 0x04;
const CAP_VENDOR: u8 = 0x09;
const CAP_COMMON_CFG: u8 = 1;
const CAP_NOTIFY_CFG: u8 = 2;
const CAP_ISR_CFG: u8 = 3;
const CAP_DEVICE_CFG: u8 = 4;
const CAP_PCI_CFG: u8 = 5;

/// Errors of creating a virtio-pci function, and (logged) of activating it.
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    #[error("Device has {0} queues; 1 to 511 are supported")]
    QueueCount(usize),
    #[error("Queue {index} maximum size {size} is not a power of two up to 32768")]
    QueueMaxSize { index: usize, size: u16 },
    #[error("Cannot describe the PCI function")]
    Config(#[source] PciConfigError),
    #[error("Cannot set up MSI-X")]
    Msix(#[source] MsixError),
    #[error("Cannot create a queue notification EventFd")]
    EventFd(#[source] std::io::Error),
    #[error("Queue {index} is unusable")]
    QueueSetup {
        index: usize,
        #[source]
        source: virtio_queue::Error,
    },
    #[error("Queue {0} does not lie in guest memory")]
    QueueOutsideMemory(usize),
    #[error("Device did not start")]
    Activate(#[source] crate::device::ActivateError),
}

/// What the transport holds about a function, as plain data (for snapshots;
/// restoring is for later, as is the MSI-X table, which `pci::MsixConfig`
/// keeps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioPciState {
    pub common: CommonConfigState,
    /// The first 256 bytes of configuration space, as the guest reads them.
    pub config_space: Vec<u8>,
    pub needs_reset: bool,
    pub config_generation: u8,
    pub isr: u8,
    pub active: bool,
}

/// A virtio device on the PCI bus.
pub struct VirtioPciDevice {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    config: PciConfig,
    common: CommonConfig,
    msix: Arc<MsixConfig>,
    pci_cfg_cap: usize,
    interrupt: Arc<PciInterrupt>,
    ioevents: Arc<dyn IoEvents>,
    /// One per queue; KVM signals it on a notify write (ioeventfd).
    kicks: Vec<EventFd>,
    /// The BAR address the ioeventfds are registered at.
    ioevents_at: Option<u64>,
    active: bool,
}

impl VirtioPciDevice {
    /// Puts `device` on PCI: MSI-X vectors from `msi`, notifications through
    /// `ioevents`, `irq` as its INTA line. BAR 0 starts unplaced and not
    /// decoding: `pci::PciRoot::add` places it, as firmware would.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        msi: Arc<dyn MsiRoutes>,
        ioevents: Arc<dyn IoEvents>,
        irq: Arc<dyn IrqLine>,
    ) -> Result<Self, VirtioPciError> {
        let max_sizes = device.queue_max_sizes().to_vec();
        if max_sizes.is_empty() || max_sizes.len() > MAX_QUEUES {
            return Err(VirtioPciError::QueueCount(max_sizes.len()));
        }
        for (index, &size) in max_sizes.iter().enumerate() {
            if !size.is_power_of_two() || size > 32768 {
                return Err(VirtioPciError::QueueMaxSize { index, size });
            }
        }
        // At most 512 vectors: the table fits its 8 KiB region.
        let nvec = max_sizes.len() as u16 + 1;
        let msix = Arc::new(
            MsixConfig::new(nvec, (0, MSIX_TABLE), (0, MSIX_PBA), msi)
                .map_err(VirtioPciError::Msix)?,
        );
        let kicks = (0..max_sizes.len())
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(VirtioPciError::EventFd)?;
        let device_type = device.device_type();
        let (config, pci_cfg_cap) = build_config(device_type, msix.clone(), max_sizes.len())
            .map_err(VirtioPciError::Config)?;
        let interrupt = Arc::new(PciInterrupt::new(msix.clone(), max_sizes.len(), irq));
        let offered = (device.features() | TRANSPORT_FEATURES)
            & !(features::ACCESS_PLATFORM | features::RING_PACKED);
        let common = CommonConfig::new(offered, &max_sizes, nvec);
        Ok(Self {
            device,
            mem,
            config,
            common,
            msix,
            pci_cfg_cap,
            interrupt,
            ioevents,
            kicks,
            ioevents_at: None,
            active: false,
        })
    }

    /// The device's one-line description, with where it sits.
    pub fn describe(&self) -> String {
        format!(
            "{} (virtio-pci, BAR 0 at {:#x})",
            self.device.describe(),
            self.config.bar_address(0)
        )
    }

    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        self.device.as_mut()
    }

    /// The transport's state, for snapshots and status.
    pub fn state(&self) -> VirtioPciState {
        VirtioPciState {
            common: self.common.state.clone(),
            config_space: (0..64u16)
                .flat_map(|r| self.config.read_config(r).to_le_bytes())
                .collect(),
            needs_reset: self.interrupt.needs_reset.load(Ordering::SeqCst),
            config_generation: self.interrupt.config_generation.load(Ordering::SeqCst),
            isr: self.interrupt.isr.load(Ordering::SeqCst),
            active: self.active,
        }
    }

    /// Pauses the device's worker (VM pause, snapshot).
    pub fn pause(&mut self) -> Result<(), crate::device::ActivateError> {
        self.device.pause()
    }

    pub fn resume(&mut self) -> Result<(), crate::device::ActivateError> {
        self.device.resume()
    }

    /// Stops the device (VM shutdown): its worker exits.
    pub fn shutdown(&mut self) {
        self.device.reset();
        self.active = false;
    }

    fn read_common(&self, offset: u64, data: &mut [u8]) {
        let ctx = ReadContext {
            needs_reset: self.interrupt.needs_reset.load(Ordering::SeqCst),
            config_generation: self.interrupt.config_generation.load(Ordering::SeqCst),
        };
        self.common.read(offset, data, ctx);
    }

    fn write_common(&mut self, offset: u64, data: &[u8]) {
        match self.common.write(offset, data) {
            CommonAction::None => {}
            CommonAction::Reset => self.reset(),
            CommonAction::Activate => self.activate(),
            CommonAction::ConfigVector(v) => {
                self.interrupt.config_vector.store(v, Ordering::SeqCst)
            }
            CommonAction::QueueVector { queue, vector } => {
                if let Some(q) = self.interrupt.queue_vectors.get(usize::from(queue)) {
                    q.store(vector, Ordering::SeqCst);
                }
            }
        }
    }

    /// DRIVER_OK: hands the enabled queues to the device.
    fn activate(&mut self) {
        if let Err(e) = self.try_activate() {
            eprintln!(
                "keel-vmm: {}: {}; the device needs a reset",
                self.device.describe(),
                crate::error_chain(&e)
            );
            self.interrupt.set_needs_reset();
        }
    }

    fn try_activate(&mut self) -> Result<(), VirtioPciError> {
        let features = self.common.state.driver_features;
        let event_idx = features & features::RING_EVENT_IDX != 0;
        let mut queues = Vec::new();
        for (index, qc) in self.common.state.queues.iter().enumerate() {
            if !qc.enabled {
                continue;
            }
            let queue = build_queue(qc, event_idx)
                .map_err(|source| VirtioPciError::QueueSetup { index, source })?;
            if !queue.is_valid(&self.mem) {
                return Err(VirtioPciError::QueueOutsideMemory(index));
            }
            let kick = self.kicks[index]
                .try_clone()
                .map_err(VirtioPciError::EventFd)?;
            queues.push(VirtQueue::new(index as u16, queue, kick));
        }
        let interrupt: Arc<dyn VirtioInterrupt> = self.interrupt.clone();
        self.device
            .activate(Activation {
                mem: self.mem.clone(),
                features,
                queues,
                interrupt,
            })
            .map_err(VirtioPciError::Activate)?;
        self.active = true;
        Ok(())
    }

    /// Device reset (status 0): stops the device, forgets the driver.
    fn reset(&mut self) {
        self.device.reset();
        self.active = false;
        self.common.reset();
        self.interrupt.reset();
        for k in &self.kicks {
            // Forget notifications meant for the old rings.
            let _ = k.read();
        }
    }

    /// Moves the queues' ioeventfds to where BAR 0 now decodes (`None`:
    /// decoding off).
    fn move_ioevents(&mut self, bar: Option<u64>) {
        if bar == self.ioevents_at {
            return;
        }
        if let Some(old) = self.ioevents_at.take() {
            for (i, k) in self.kicks.iter().enumerate() {
                let _ = self.ioevents.unregister(notify_addr(old, i), k);
            }
        }
        if let Some(new) = bar {
            for (i, k) in self.kicks.iter().enumerate() {
                if let Err(e) = self.ioevents.register(notify_addr(new, i), k) {
                    // Notify writes still arrive through write_bar.
                    eprintln!(
                        "keel-vmm: {}: no ioeventfd for queue {i} (fd {}): {e}",
                        self.device.describe(),
                        k.as_raw_fd()
                    );
                }
            }
        }
        self.ioevents_at = bar;
    }

    /// The VIRTIO_PCI_CAP_PCI_CFG window: (BAR offset, length) when the
    /// driver set it up validly for BAR 0.
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let mut cap = [0u8; 16];
        self.config.read_raw(self.pci_cfg_cap, &mut cap);
        let bar = cap[4];
        let offset = u64::from(u32::from_le_bytes([cap[8], cap[9], cap[10], cap[11]]));
        let len = u32::from_le_bytes([cap[12], cap[13], cap[14], cap[15]]) as usize;
        (bar == 0 && matches!(len, 1 | 2 | 4) && offset.is_multiple_of(len as u64))
            .then_some((offset, len))
    }

    fn pci_cfg_data(&self) -> Range<usize> {
        self.pci_cfg_cap + 16..self.pci_cfg_cap + 20
    }
}

impl Drop for VirtioPciDevice {
    fn drop(&mut self) {
        self.device.reset();
        self.move_ioevents(None);
    }
}

impl PciDevice for VirtioPciDevice {
    fn read_config(&mut self, reg: u16) -> u32 {
        if usize::from(reg) * 4 == self.pci_cfg_data().start {
            let mut word = [0u8; 4];
            if let Some((offset, len)) = self.pci_cfg_window() {
                self.read_bar(0, offset, &mut word[..len]);
            }
            return u32::from_le_bytes(word);
        }
        self.config.read_config(reg)
    }

    fn write_config(&mut self, reg: u16, offset: u8, data: &[u8]) {
        for change in self.config.write_config(reg, offset, data) {
            if change.index == 0 {
                self.move_ioevents(change.new.map(|b| b.addr));
            }
        }
        let start = usize::from(reg) * 4 + usize::from(offset);
        let touched = start..start + data.len();
        let overlaps = |r: Range<usize>| touched.start < r.end && r.start < touched.end;
        if overlaps(COMMAND..COMMAND + 2) {
            let disabled = self.config.command() & COMMAND_INTX_DISABLE != 0;
            self.interrupt.set_intx_disabled(disabled);
        }
        if overlaps(self.pci_cfg_data()) {
            if let Some((bar_offset, len)) = self.pci_cfg_window() {
                let mut word = [0u8; 4];
                self.config.read_raw(self.pci_cfg_data().start, &mut word);
                self.write_bar(0, bar_offset, &word[..len]);
            }
        }
    }

    fn read_bar(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if bar != 0 || data.is_empty() || data.len() > 8 {
            return;
        }
        let Some((base, local)) = region(offset, data.len()) else {
            return;
        };
        match base {
            COMMON_CFG => self.read_common(local, data),
            ISR_CFG if local == 0 => data[0] = self.interrupt.read_isr(),
            DEVICE_CFG => self.device.read_config(local, data),
            MSIX_TABLE | MSIX_PBA => {
                self.msix.read_bar(0, offset, data);
            }
            _ => {}
        }
    }

    fn write_bar(&mut self, bar: u8, offset: u64, data: &[u8]) {
        if bar != 0 || data.is_empty() || data.len() > 8 {
            return;
        }
        let Some((base, local)) = region(offset, data.len()) else {
            return;
        };
        match base {
            COMMON_CFG => self.write_common(local, data),
            DEVICE_CFG => self.device.write_config(local, data),
            // Reaches here when the ioeventfd is not (yet) registered.
            NOTIFY_CFG if local.is_multiple_of(u64::from(NOTIFY_OFF_MULTIPLIER)) => {
                let queue = (local / u64::from(NOTIFY_OFF_MULTIPLIER)) as usize;
                if let Some(k) = self.kicks.get(queue) {
                    let _ = k.write(1);
                }
            }
            MSIX_TABLE | MSIX_PBA => {
                self.msix.write_bar(0, offset, data);
            }
            _ => {}
        }
    }

    fn bars(&self) -> Vec<Bar> {
        self.config.bars()
    }
}

/// The region of BAR 0 an access falls in, and the offset inside it;
/// `None` for an access that crosses a region's end.
fn region(offset: u64, len: usize) -> Option<(u64, u64)> {
    let (base, size) = match offset {
        o if o < ISR_CFG => (COMMON_CFG, REGION_SIZE),
        o if o < DEVICE_CFG => (ISR_CFG, REGION_SIZE),
        o if o < NOTIFY_CFG => (DEVICE_CFG, REGION_SIZE),
        o if o < MSIX_TABLE => (NOTIFY_CFG, REGION_SIZE),
        o if o < MSIX_PBA => (MSIX_TABLE, MSIX_TABLE_SIZE),
        o if o < MSIX_PBA + REGION_SIZE => (MSIX_PBA, REGION_SIZE),
        _ => return None,
    };
    let local = offset - base;
    (local + len as u64 <= size).then_some((base, local))
}

fn notify_addr(bar: u64, queue: usize) -> u64 {
    bar + NOTIFY_CFG + queue as u64 * u64::from(NOTIFY_OFF_MULTIPLIER)
}

fn build_queue(qc: &QueueConfig, event_idx: bool) -> Result<Queue, virtio_queue::Error> {
    let mut q = Queue::new(qc.max_size)?;
    q.try_set_size(qc.size)?;
    q.try_set_desc_table_address(GuestAddress(qc.desc))?;
    q.try_set_avail_ring_address(GuestAddress(qc.driver))?;
    q.try_set_used_ring_address(GuestAddress(qc.device))?;
    q.set_event_idx(event_idx);
    q.set_ready(true);
    Ok(q)
}

/// PCI class, subclass by virtio device type (as QEMU presents them).
fn class_code(device_type: u32) -> (u8, u8) {
    match device_type {
        virtio_ids::VIRTIO_ID_NET => (0x02, 0x00),
        virtio_ids::VIRTIO_ID_BLOCK => (0x01, 0x80),
        virtio_ids::VIRTIO_ID_CONSOLE | virtio_ids::VIRTIO_ID_VSOCK => (0x07, 0x80),
        _ => (0xff, 0x00),
    }
}

/// The configuration header: IDs, INTA, BAR 0 (64-bit, not prefetchable:
/// reading ISR has effects), MSI-X and the virtio capabilities. Returns it
/// and the offset of the PCI_CFG capability.
fn build_config(
    device_type: u32,
    msix: Arc<MsixConfig>,
    queues: usize,
) -> Result<(PciConfig, usize), PciConfigError> {
    let (class, subclass) = class_code(device_type);
    let mut config = PciConfig::new(PciIds {
        vendor: VIRTIO_PCI_VENDOR,
        device: VIRTIO_PCI_DEVICE_BASE.wrapping_add(device_type as u16),
        subsystem_vendor: VIRTIO_PCI_VENDOR,
        subsystem: 0x1100,
        class,
        subclass,
        prog_if: 0,
        revision: 1,
    });
    config.set_interrupt_pin(1)?;
    config.add_bar(0, BAR_SIZE, BarKind::Mmio64, false)?;
    config.add_msix(msix)?;
    // struct virtio_pci_cap after its ID and next bytes: cap_len,
    // cfg_type, bar, id, padding[2], offset, length; then `extra`.
    let vcap = |cfg_type: u8, offset: u64, length: u32, extra: &[u8]| {
        let mut c = vec![16 + extra.len() as u8, cfg_type, 0, 0, 0, 0];
        c.extend_from_slice(&(offset as u32).to_le_bytes());
        c.extend_from_slice(&length.to_le_bytes());
        c.extend_from_slice(extra);
        c
    };
    let region = REGION_SIZE as u32;
    config.add_capability(
        CAP_VENDOR,
        &vcap(CAP_COMMON_CFG, COMMON_CFG, region, &[]),
        &[],
    )?;
    let notify_len = queues as u32 * NOTIFY_OFF_MULTIPLIER;
    let multiplier = NOTIFY_OFF_MULTIPLIER.to_le_bytes();
    config.add_capability(
        CAP_VENDOR,
        &vcap(CAP_NOTIFY_CFG, NOTIFY_CFG, notify_len, &multiplier),
        &[],
    )?;
    config.add_capability(CAP_VENDOR, &vcap(CAP_ISR_CFG, ISR_CFG, region, &[]), &[])?;
    config.add_capability(
        CAP_VENDOR,
        &vcap(CAP_DEVICE_CFG, DEVICE_CFG, region, &[]),
        &[],
    )?;
    // The driver writes bar, offset, length and the data window.
    let mut writable = [0u8; 18];
    writable[2] = 0xff;
    writable[6..18].fill(0xff);
    let pci_cfg =
        config.add_capability(CAP_VENDOR, &vcap(CAP_PCI_CFG, 0, 0, &[0; 4]), &writable)?;
    Ok((config, usize::from(pci_cfg)))
}
