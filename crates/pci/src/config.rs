//! A type-0 configuration header that devices embed: IDs, command and
//! status, six BARs with their size masks, a capability list, the interrupt
//! line and pin. Everything else reads as the device set it and ignores
//! guest writes.
//!
//! BARs behave as hardware does: a register keeps only the address bits its
//! size allows, so the guest's sizing write of all-ones reads back the size
//! mask (with the type bits), and a 64-bit BAR spans two registers. A write
//! that moves a decoded BAR, or turns decoding on or off, comes back from
//! [`PciConfig::write_config`] as [`BarChange`]s so the owner can move its
//! ioeventfds.

use std::sync::Arc;

use crate::msix::{MsixConfig, MSIX_CAP_ID};
use crate::{Bar, BarKind};

/// Command register: I/O space decoding.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command register: memory space decoding.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: the function may master the bus (DMA, MSI writes).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register: INTx is disabled.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Status register: there is a capability list.
pub const STATUS_CAP_LIST: u16 = 1 << 4;

/// The size of a function's configuration space (ECAM reaches all of it).
pub const CONFIG_SPACE_SIZE: usize = 4096;
/// Registers (32-bit) in a function's configuration space.
pub const CONFIG_REGS: u16 = (CONFIG_SPACE_SIZE / 4) as u16;

const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
const BAR0: usize = 0x10;
const NUM_BARS: usize = 6;
const CAP_POINTER: usize = 0x34;
const INTERRUPT_LINE: usize = 0x3c;
const INTERRUPT_PIN: usize = 0x3d;
/// Capabilities live between the header and the end of legacy space.
const CAP_START: usize = 0x40;
const CAP_END: usize = 0x100;

/// BAR type bits (the low bits of the lower register).
const BAR_IO: u32 = 0b01;
const BAR_MEM64: u32 = 0b100;
const BAR_PREFETCH: u32 = 0b1000;

/// What identifies a function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
}

/// Errors from describing a function (programming errors of the device
/// model, never guest input).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciConfigError {
    #[error(
        "BAR {0} does not exist (a function has BARs 0 to 5; a 64-bit BAR also takes the next)"
    )]
    NoSuchBar(u8),
    #[error("BAR {0} is already in use")]
    BarInUse(u8),
    #[error("BAR {index} size {size:#x} is not a power of two between {min:#x} and {max:#x}")]
    BadBarSize {
        index: u8,
        size: u64,
        min: u64,
        max: u64,
    },
    #[error("An I/O BAR cannot be prefetchable")]
    PrefetchableIo,
    #[error("No room for a {len}-byte capability in the configuration header")]
    NoCapabilityRoom { len: usize },
    #[error("The capability's writable mask has {mask} bytes for {len} bytes of capability")]
    MaskLength { mask: usize, len: usize },
    #[error("Interrupt pin {0} is neither 0 (none) nor 1 to 4 (INTA to INTD)")]
    BadInterruptPin(u8),
    #[error("The function already has an MSI-X capability")]
    MsixTwice,
}

/// A BAR the guest moved, or whose decoding it turned on or off. `old` and
/// `new` are where the BAR decoded before and after (`None`: not decoded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarChange {
    pub index: u8,
    pub old: Option<Bar>,
    pub new: Option<Bar>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BarReg {
    Unused,
    /// The (lower) register of a BAR.
    Base {
        kind: BarKind,
        size: u64,
        prefetchable: bool,
    },
    /// The upper half of the 64-bit BAR in the register before.
    Upper,
}

/// A type-0 configuration header, embedded by a device.
pub struct PciConfig {
    bytes: Box<[u8; CONFIG_SPACE_SIZE]>,
    /// Bits the guest may change, per byte (BARs are handled apart).
    writable: Box<[u8; CONFIG_SPACE_SIZE]>,
    bars: [BarReg; NUM_BARS],
    /// BAR registers as programmed: address bits only.
    bar_values: [u32; NUM_BARS],
    next_cap: usize,
    last_cap: Option<usize>,
    msix: Option<(usize, Arc<MsixConfig>)>,
}

impl PciConfig {
    /// A header with these IDs, no BARs, no capabilities, no interrupt pin.
    pub fn new(ids: PciIds) -> Self {
        let mut c = PciConfig {
            bytes: Box::new([0; CONFIG_SPACE_SIZE]),
            writable: Box::new([0; CONFIG_SPACE_SIZE]),
            bars: [BarReg::Unused; NUM_BARS],
            bar_values: [0; NUM_BARS],
            next_cap: CAP_START,
            last_cap: None,
            msix: None,
        };
        c.put(0x00, &ids.vendor.to_le_bytes());
        c.put(0x02, &ids.device.to_le_bytes());
        c.put(0x08, &[ids.revision, ids.prog_if, ids.subclass, ids.class]);
        c.put(0x2c, &ids.subsystem_vendor.to_le_bytes());
        c.put(0x2e, &ids.subsystem.to_le_bytes());
        let command = COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
        c.writable[COMMAND..COMMAND + 2].copy_from_slice(&command.to_le_bytes());
        // Cache line size, latency timer, interrupt line: plain storage.
        c.writable[0x0c] = 0xff;
        c.writable[0x0d] = 0xff;
        c.writable[INTERRUPT_LINE] = 0xff;
        c
    }

    fn put(&mut self, offset: usize, data: &[u8]) {
        self.bytes[offset..offset + data.len()].copy_from_slice(data);
    }

    fn u16_at(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.bytes[offset], self.bytes[offset + 1]])
    }

    /// Sets the interrupt pin register: 0 none, 1..=4 INTA..INTD.
    pub fn set_interrupt_pin(&mut self, pin: u8) -> Result<(), PciConfigError> {
        if pin > 4 {
            return Err(PciConfigError::BadInterruptPin(pin));
        }
        self.bytes[INTERRUPT_PIN] = pin;
        Ok(())
    }

    /// Declares BAR `index`: `size` bytes (a power of two; at least 16 for
    /// memory, 4 to 256 for I/O). A 64-bit BAR also takes register
    /// `index + 1`. `prefetchable` only for memory BARs.
    pub fn add_bar(
        &mut self,
        index: u8,
        size: u64,
        kind: BarKind,
        prefetchable: bool,
    ) -> Result<(), PciConfigError> {
        let i = usize::from(index);
        let regs = if kind == BarKind::Mmio64 { 2 } else { 1 };
        if i + regs > NUM_BARS {
            return Err(PciConfigError::NoSuchBar(index));
        }
        if self.bars[i..i + regs].iter().any(|b| *b != BarReg::Unused) {
            return Err(PciConfigError::BarInUse(index));
        }
        let (min, max) = match kind {
            BarKind::Io => (4, 256),
            BarKind::Mmio32 => (16, 1 << 31),
            BarKind::Mmio64 => (16, 1 << 63),
        };
        if !size.is_power_of_two() || size < min || size > max {
            return Err(PciConfigError::BadBarSize {
                index,
                size,
                min,
                max,
            });
        }
        if kind == BarKind::Io && prefetchable {
            return Err(PciConfigError::PrefetchableIo);
        }
        self.bars[i] = BarReg::Base {
            kind,
            size,
            prefetchable,
        };
        if regs == 2 {
            self.bars[i + 1] = BarReg::Upper;
        }
        Ok(())
    }

    /// Appends a capability: `id`, then `body` (what follows the ID and
    /// next-pointer bytes). `writable` gives, per byte of `body`, the bits
    /// the guest may change (shorter than `body`: the rest is read-only).
    /// Returns the capability's offset in configuration space.
    pub fn add_capability(
        &mut self,
        id: u8,
        body: &[u8],
        writable: &[u8],
    ) -> Result<u8, PciConfigError> {
        if writable.len() > body.len() {
            return Err(PciConfigError::MaskLength {
                mask: writable.len(),
                len: body.len(),
            });
        }
        let len = 2 + body.len();
        let offset = self.next_cap;
        if offset + len > CAP_END {
            return Err(PciConfigError::NoCapabilityRoom { len });
        }
        self.bytes[offset] = id;
        self.bytes[offset + 1] = 0;
        self.put(offset + 2, body);
        self.writable[offset + 2..offset + 2 + writable.len()].copy_from_slice(writable);
        // offset < CAP_END = 0x100: it fits the 8-bit pointers.
        match self.last_cap {
            Some(prev) => self.bytes[prev + 1] = offset as u8,
            None => self.bytes[CAP_POINTER] = offset as u8,
        }
        let status = self.u16_at(STATUS) | STATUS_CAP_LIST;
        self.put(STATUS, &status.to_le_bytes());
        self.last_cap = Some(offset);
        self.next_cap = (offset + len).next_multiple_of(4);
        Ok(offset as u8)
    }

    /// Appends `msix`'s capability and links it: guest writes to its
    /// message control reach `msix`. Returns the capability's offset.
    pub fn add_msix(&mut self, msix: Arc<MsixConfig>) -> Result<u8, PciConfigError> {
        if self.msix.is_some() {
            return Err(PciConfigError::MsixTwice);
        }
        let (body, writable) = msix.capability();
        let offset = self.add_capability(MSIX_CAP_ID, &body, &writable)?;
        self.msix = Some((usize::from(offset), msix));
        Ok(offset)
    }

    /// The linked MSI-X capability, if any.
    pub fn msix(&self) -> Option<&Arc<MsixConfig>> {
        self.msix.as_ref().map(|(_, m)| m)
    }

    /// Reads bytes of configuration space as the device sees them (no
    /// guest rules); out-of-range bytes read as zero.
    pub fn read_raw(&self, offset: usize, data: &mut [u8]) {
        for (k, b) in data.iter_mut().enumerate() {
            *b = self.bytes.get(offset + k).copied().unwrap_or(0);
        }
    }

    /// Writes bytes of configuration space as the device (not the guest):
    /// e.g. a capability field the device updates. BAR registers and bytes
    /// past the end are left alone.
    pub fn write_raw(&mut self, offset: usize, data: &[u8]) {
        for (k, b) in data.iter().enumerate() {
            let at = offset + k;
            if at < CONFIG_SPACE_SIZE && !(BAR0..BAR0 + 4 * NUM_BARS).contains(&at) {
                self.bytes[at] = *b;
            }
        }
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.u16_at(COMMAND)
    }

    /// True when the guest allowed the function to master the bus (DMA).
    pub fn bus_master(&self) -> bool {
        self.command() & COMMAND_BUS_MASTER != 0
    }

    /// The guest's interrupt line register (informational on x86).
    pub fn interrupt_line(&self) -> u8 {
        self.bytes[INTERRUPT_LINE]
    }

    /// Reads configuration register `reg` as the guest sees it; registers
    /// past the end of configuration space read as all-ones.
    pub fn read_config(&self, reg: u16) -> u32 {
        let base = usize::from(reg) * 4;
        if base >= CONFIG_SPACE_SIZE {
            return u32::MAX;
        }
        if (BAR0..BAR0 + 4 * NUM_BARS).contains(&base) {
            return self.read_bar_reg((base - BAR0) / 4);
        }
        u32::from_le_bytes([
            self.bytes[base],
            self.bytes[base + 1],
            self.bytes[base + 2],
            self.bytes[base + 3],
        ])
    }

    fn read_bar_reg(&self, i: usize) -> u32 {
        match self.bars[i] {
            BarReg::Unused => 0,
            BarReg::Upper => self.bar_values[i],
            BarReg::Base {
                kind, prefetchable, ..
            } => self.bar_values[i] | type_bits(kind, prefetchable),
        }
    }

    /// Applies a guest write of `data` (1, 2 or 4 bytes) at byte `offset`
    /// of register `reg`; anything else is ignored. Returns the BARs whose
    /// decoded location changed.
    pub fn write_config(&mut self, reg: u16, offset: u8, data: &[u8]) -> Vec<BarChange> {
        let (offset, len) = (usize::from(offset), data.len());
        let base = usize::from(reg) * 4;
        if !matches!(len, 1 | 2 | 4) || offset + len > 4 || base >= CONFIG_SPACE_SIZE {
            return Vec::new();
        }
        let before = self.decoded_bars();
        if (BAR0..BAR0 + 4 * NUM_BARS).contains(&base) {
            self.write_bar_reg((base - BAR0) / 4, offset, data);
        } else {
            for (k, b) in data.iter().enumerate() {
                let at = base + offset + k;
                let mask = self.writable[at];
                self.bytes[at] = (self.bytes[at] & !mask) | (b & mask);
            }
            self.sync_msix(base + offset, len);
        }
        let after = self.decoded_bars();
        before
            .iter()
            .zip(after.iter())
            .enumerate()
            .filter(|(_, (old, new))| old != new)
            .map(|(i, (old, new))| BarChange {
                index: i as u8,
                old: *old,
                new: *new,
            })
            .collect()
    }

    fn write_bar_reg(&mut self, i: usize, offset: usize, data: &[u8]) {
        let mut value = self.read_bar_reg(i).to_le_bytes();
        value[offset..offset + data.len()].copy_from_slice(data);
        let value = u32::from_le_bytes(value);
        self.bar_values[i] = match self.bars[i] {
            BarReg::Unused => 0,
            BarReg::Base { kind, size, .. } => value & low_mask(kind, size),
            BarReg::Upper => match self.bars[i - 1] {
                BarReg::Base { size, .. } => value & ((!(size - 1)) >> 32) as u32,
                _ => 0,
            },
        };
    }

    /// Tells the linked MSI-X capability about a write that touched its
    /// message control.
    fn sync_msix(&self, at: usize, len: usize) {
        let Some((cap, msix)) = &self.msix else {
            return;
        };
        let control = cap + 2;
        if at < control + 2 && control < at + len {
            msix.set_control(self.u16_at(control));
        }
    }

    /// Where each BAR decodes now (`None`: unused or decoding off).
    fn decoded_bars(&self) -> [Option<Bar>; NUM_BARS] {
        let command = self.command();
        let mut out = [None; NUM_BARS];
        for (i, slot) in out.iter_mut().enumerate() {
            let BarReg::Base { kind, size, .. } = self.bars[i] else {
                continue;
            };
            let on = match kind {
                BarKind::Io => command & COMMAND_IO != 0,
                _ => command & COMMAND_MEMORY != 0,
            };
            if on {
                *slot = Some(Bar {
                    index: i as u8,
                    addr: self.bar_address(i as u8),
                    size,
                    kind,
                });
            }
        }
        out
    }

    /// The address BAR `index` is programmed with (decoding on or not; 0
    /// for an unused BAR).
    pub fn bar_address(&self, index: u8) -> u64 {
        let i = usize::from(index);
        match self.bars.get(i) {
            Some(BarReg::Base { kind, .. }) => {
                let low = u64::from(self.bar_values[i]);
                match kind {
                    BarKind::Mmio64 => low | (u64::from(self.bar_values[i + 1]) << 32),
                    _ => low,
                }
            }
            _ => 0,
        }
    }

    /// BAR `index` where it decodes now, if it does.
    pub fn bar(&self, index: u8) -> Option<Bar> {
        self.decoded_bars()
            .get(usize::from(index))
            .copied()
            .flatten()
    }

    /// The BARs that decode now (what [`crate::PciDevice::bars`] returns).
    pub fn bars(&self) -> Vec<Bar> {
        self.decoded_bars().into_iter().flatten().collect()
    }
}

fn type_bits(kind: BarKind, prefetchable: bool) -> u32 {
    let prefetch = if prefetchable { BAR_PREFETCH } else { 0 };
    match kind {
        BarKind::Io => BAR_IO,
        BarKind::Mmio32 => prefetch,
        BarKind::Mmio64 => BAR_MEM64 | prefetch,
    }
}

/// The address bits of a BAR's (lower) register.
fn low_mask(kind: BarKind, size: u64) -> u32 {
    let mask = !(size - 1) as u32;
    match kind {
        BarKind::Io => mask & !0x3,
        _ => mask & !0xf,
    }
}

#[cfg(test)]
mod tests;
