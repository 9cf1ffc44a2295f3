//! The root bus: up to 32 single-function devices (slot 0 is the host
//! bridge), BAR placement when a device is added, and the configuration
//! space front ends the VMM puts on its buses: mechanism #1 (ports
//! 0xCF8/0xCFC) and ECAM.
//!
//! Locking: the slot table sits behind an `RwLock`; a configuration write
//! holds it for writing while it updates the device and then the table's
//! copy of the device's BARs, so BAR routing never sees a stale order of
//! moves. BAR accesses take it for reading only long enough to find the
//! device. The order is always slot table, then device.

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use devices::BusDevice;

use crate::config::{PciConfig, PciIds, COMMAND_IO, COMMAND_MEMORY};
use crate::window::BarWindow;
use crate::{Bar, BarKind, PciDevice};

/// Slots on the root bus.
pub const NUM_SLOTS: usize = 32;
/// The host bridge's vendor and device IDs (those Cloud Hypervisor's host
/// bridge uses; no Linux quirk matches them) and class (bridge / host).
pub const HOST_BRIDGE_VENDOR: u16 = 0x8086;
pub const HOST_BRIDGE_DEVICE: u16 = 0x0d57;
const CLASS_BRIDGE: u8 = 0x06;
const SUBCLASS_HOST_BRIDGE: u8 = 0x00;

/// The smallest alignment for memory BARs: a page, so no two devices share
/// one.
const MIN_MMIO_ALIGN: u64 = 0x1000;
const BAR_REG0: u16 = 4;

/// Errors from adding a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciRootError {
    #[error("The PCI bus is full ({NUM_SLOTS} slots)")]
    NoSlot,
    #[error("No room for a {size:#x}-byte {kind:?} BAR in the PCI window")]
    NoSpace { kind: BarKind, size: u64 },
    #[error("BAR {0} of the device reads as a 64-bit BAR in the last register")]
    BadBar(u8),
}

/// Where BARs are placed: guest-physical MMIO and I/O port ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciWindows {
    pub mmio: Range<u64>,
    pub io: Range<u64>,
}

/// A simple aligned bump allocator.
#[derive(Clone, Debug)]
struct Allocator {
    next: u64,
    end: u64,
}

impl Allocator {
    fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        let addr = self.next.checked_next_multiple_of(align)?;
        let end = addr.checked_add(size).filter(|e| *e <= self.end)?;
        self.next = end;
        Some(addr)
    }
}

pub(crate) type SharedDevice = Arc<Mutex<dyn PciDevice>>;

pub(crate) struct Slot {
    pub(crate) device: SharedDevice,
    pub(crate) bars: Vec<Bar>,
}

/// The slot table, shared by the root and its front ends.
#[derive(Default)]
pub(crate) struct Slots {
    slots: Vec<Option<Slot>>,
}

pub(crate) type SharedSlots = Arc<RwLock<Slots>>;

pub(crate) fn lock_device(dev: &SharedDevice) -> MutexGuard<'_, dyn PciDevice + 'static> {
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn read_slots(s: &SharedSlots) -> RwLockReadGuard<'_, Slots> {
    s.read().unwrap_or_else(|e| e.into_inner())
}

fn write_slots(s: &SharedSlots) -> RwLockWriteGuard<'_, Slots> {
    s.write().unwrap_or_else(|e| e.into_inner())
}

impl Slots {
    /// The device of (bus 0) `slot`, function `func` (functions other than
    /// 0 do not exist).
    fn get(&self, bus: u8, slot: u8, func: u8) -> Option<&Slot> {
        if bus != 0 || func != 0 {
            return None;
        }
        self.slots.get(usize::from(slot))?.as_ref()
    }

    /// The device and BAR that decode `[addr, addr + len)` of `mmio` space
    /// (else I/O space).
    pub(crate) fn find_bar(&self, mmio: bool, addr: u64, len: u64) -> Option<(SharedDevice, Bar)> {
        self.slots.iter().flatten().find_map(|s| {
            s.bars
                .iter()
                .find(|b| b.kind.is_mmio() == mmio && b.contains(addr, len))
                .map(|b| (s.device.clone(), *b))
        })
    }
}

/// Reads a configuration register of bus `bus`; missing functions read as
/// all-ones.
fn config_read(slots: &SharedSlots, bus: u8, slot: u8, func: u8, reg: u16) -> u32 {
    let table = read_slots(slots);
    match table.get(bus, slot, func) {
        Some(s) => lock_device(&s.device).read_config(reg),
        None => u32::MAX,
    }
}

/// Writes a configuration register and refreshes the device's BARs.
fn config_write(
    slots: &SharedSlots,
    bus: u8,
    slot: u8,
    func: u8,
    reg: u16,
    offset: u8,
    data: &[u8],
) {
    let mut table = write_slots(slots);
    if table.get(bus, slot, func).is_none() {
        return;
    }
    if let Some(Some(s)) = table.slots.get_mut(usize::from(slot)) {
        let mut dev = lock_device(&s.device);
        dev.write_config(reg, offset, data);
        s.bars = dev.bars();
    }
}

/// The host bridge at 00:00.0: a header and nothing else.
struct HostBridge(PciConfig);

impl PciDevice for HostBridge {
    fn read_config(&mut self, reg: u16) -> u32 {
        self.0.read_config(reg)
    }
    fn write_config(&mut self, reg: u16, offset: u8, data: &[u8]) {
        self.0.write_config(reg, offset, data);
    }
    fn read_bar(&mut self, _bar: u8, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn write_bar(&mut self, _bar: u8, _offset: u64, _data: &[u8]) {}
    fn bars(&self) -> Vec<Bar> {
        self.0.bars()
    }
}

/// PCI bus 0 of the board.
pub struct PciRoot {
    slots: SharedSlots,
    mmio: Allocator,
    io: Allocator,
}

/// A BAR found by sizing it through configuration space.
struct SizedBar {
    index: u8,
    kind: BarKind,
    size: u64,
}

impl PciRoot {
    /// An empty bus 0 with its host bridge in slot 0; BARs of devices added
    /// later go in `windows`.
    pub fn new(windows: PciWindows) -> Self {
        let bridge = HostBridge(PciConfig::new(PciIds {
            vendor: HOST_BRIDGE_VENDOR,
            device: HOST_BRIDGE_DEVICE,
            class: CLASS_BRIDGE,
            subclass: SUBCLASS_HOST_BRIDGE,
            ..PciIds::default()
        }));
        let mut slots = Slots::default();
        slots.slots.resize_with(NUM_SLOTS, || None);
        slots.slots[0] = Some(Slot {
            device: Arc::new(Mutex::new(bridge)),
            bars: Vec::new(),
        });
        PciRoot {
            slots: Arc::new(RwLock::new(slots)),
            mmio: Allocator {
                next: windows.mmio.start,
                end: windows.mmio.end,
            },
            io: Allocator {
                next: windows.io.start,
                end: windows.io.end,
            },
        }
    }

    /// Puts `device` in the first free slot: sizes its BARs through its
    /// configuration space, places them in the windows, turns on the
    /// decoding they need (as firmware does) and returns the slot (the
    /// device is then `0000:00:<slot>.0`). On error nothing has changed.
    pub fn add(&mut self, device: SharedDevice) -> Result<u8, PciRootError> {
        let mut table = write_slots(&self.slots);
        let slot = table
            .slots
            .iter()
            .position(|s| s.is_none())
            .ok_or(PciRootError::NoSlot)?;
        let bars = {
            let mut dev = lock_device(&device);
            // As Linux does: decoding off while the BARs are sized and
            // placed, so a device that starts out decoding never sees its
            // BARs at the sizing pattern: it sees them stop decoding, then
            // decode at their new place.
            let command = dev.read_config(1) as u16;
            let off = command & !(COMMAND_IO | COMMAND_MEMORY);
            if off != command {
                dev.write_config(1, 0, &off.to_le_bytes());
            }
            let sized = size_bars(&mut *dev);
            let mut sized = match sized {
                Ok(s) => s,
                Err(e) => {
                    dev.write_config(1, 0, &command.to_le_bytes());
                    return Err(e);
                }
            };
            // Largest first: the least lost to alignment.
            sized.sort_by_key(|b| std::cmp::Reverse(b.size));
            let (mut mmio, mut io) = (self.mmio.clone(), self.io.clone());
            let mut placed = Vec::new();
            for bar in &sized {
                let addr = match bar.kind {
                    BarKind::Io => io.alloc(bar.size, bar.size),
                    _ => mmio.alloc(bar.size, bar.size.max(MIN_MMIO_ALIGN)),
                }
                .ok_or(PciRootError::NoSpace {
                    kind: bar.kind,
                    size: bar.size,
                });
                match addr {
                    Ok(addr) => placed.push((bar, addr)),
                    Err(e) => {
                        dev.write_config(1, 0, &command.to_le_bytes());
                        return Err(e);
                    }
                }
            }
            (self.mmio, self.io) = (mmio, io);
            let mut command = command;
            for (bar, addr) in placed {
                let reg = BAR_REG0 + u16::from(bar.index);
                dev.write_config(reg, 0, &(addr as u32).to_le_bytes());
                if bar.kind == BarKind::Mmio64 {
                    dev.write_config(reg + 1, 0, &((addr >> 32) as u32).to_le_bytes());
                }
                command |= if bar.kind == BarKind::Io {
                    COMMAND_IO
                } else {
                    COMMAND_MEMORY
                };
            }
            dev.write_config(1, 0, &command.to_le_bytes());
            dev.bars()
        };
        // The position came from a free slot below NUM_SLOTS = 32.
        table.slots[slot] = Some(Slot { device, bars });
        Ok(slot as u8)
    }

    /// The slot the next [`PciRoot::add`] will use, if the bus has room
    /// (e.g. to wire a device's INTx before adding it).
    pub fn free_slot(&self) -> Option<u8> {
        let table = read_slots(&self.slots);
        // Below NUM_SLOTS = 32.
        table
            .slots
            .iter()
            .position(|s| s.is_none())
            .map(|s| s as u8)
    }

    /// The front end for ports 0xCF8..0xD00 (insert it at 0xCF8, length 8).
    pub fn config_io(&self) -> ConfigIo {
        ConfigIo {
            slots: self.slots.clone(),
            address: 0,
        }
    }

    /// The ECAM front end for bus 0 (insert it at the ECAM base, length
    /// 1 MiB).
    pub fn ecam(&self) -> Ecam {
        Ecam {
            slots: self.slots.clone(),
        }
    }

    /// The front end for memory BARs: insert it at `base` on the MMIO bus
    /// (covering at least the MMIO window).
    pub fn mmio_bars(&self, base: u64) -> BarWindow {
        BarWindow::new(self.slots.clone(), true, base)
    }

    /// The front end for I/O BARs: insert it at `base` on the port bus
    /// (covering at least the I/O window).
    pub fn io_bars(&self, base: u64) -> BarWindow {
        BarWindow::new(self.slots.clone(), false, base)
    }
}

/// Sizes every BAR of `dev` the way firmware does (all-ones, read back,
/// restore).
fn size_bars(dev: &mut dyn PciDevice) -> Result<Vec<SizedBar>, PciRootError> {
    let mut out = Vec::new();
    let mut i = 0u8;
    while i < 6 {
        let reg = BAR_REG0 + u16::from(i);
        let low = probe(dev, reg);
        if low == 0 {
            i += 1;
            continue;
        }
        if low & 1 == 1 {
            let mask = u64::from(low & !0x3) | 0xffff_ffff_ffff_0000;
            out.push(SizedBar {
                index: i,
                kind: BarKind::Io,
                size: (!mask).wrapping_add(1),
            });
            i += 1;
            continue;
        }
        let is64 = (low >> 1) & 0b11 == 0b10;
        let (kind, mask) = if is64 {
            if i == 5 {
                return Err(PciRootError::BadBar(i));
            }
            let high = probe(dev, reg + 1);
            (
                BarKind::Mmio64,
                u64::from(low & !0xf) | (u64::from(high) << 32),
            )
        } else {
            (
                BarKind::Mmio32,
                u64::from(low & !0xf) | 0xffff_ffff_0000_0000,
            )
        };
        let size = (!mask).wrapping_add(1);
        if size != 0 && size.is_power_of_two() {
            out.push(SizedBar {
                index: i,
                kind,
                size,
            });
        }
        i += if is64 { 2 } else { 1 };
    }
    Ok(out)
}

/// Writes all-ones to a register, reads it back and restores it.
fn probe(dev: &mut dyn PciDevice, reg: u16) -> u32 {
    let old = dev.read_config(reg);
    dev.write_config(reg, 0, &u32::MAX.to_le_bytes());
    let value = dev.read_config(reg);
    dev.write_config(reg, 0, &old.to_le_bytes());
    value
}

/// Configuration mechanism #1: the address register at 0xCF8 (dword
/// accesses only) and the data window at 0xCFC..0xD00 (byte, word or dword
/// accesses at any offset inside it). Insert at 0xCF8 with length 8.
pub struct ConfigIo {
    slots: SharedSlots,
    address: u32,
}

const CONFIG_ENABLE: u32 = 1 << 31;

impl ConfigIo {
    /// (bus, slot, function, register) the address register selects.
    fn target(&self) -> Option<(u8, u8, u8, u16)> {
        let a = self.address;
        (a & CONFIG_ENABLE != 0).then_some({
            (
                (a >> 16) as u8,
                ((a >> 11) & 0x1f) as u8,
                ((a >> 8) & 0x7) as u8,
                ((a >> 2) & 0x3f) as u16,
            )
        })
    }
}

impl BusDevice for ConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let len = data.len() as u64;
        match offset {
            0..4 if offset + len <= 4 => {
                let bytes = self.address.to_le_bytes();
                data.copy_from_slice(&bytes[offset as usize..(offset + len) as usize]);
            }
            4..8 if offset + len <= 8 => {
                let Some((bus, slot, func, reg)) = self.target() else {
                    data.fill(0xff);
                    return;
                };
                let value = config_read(&self.slots, bus, slot, func, reg).to_le_bytes();
                let at = (offset - 4) as usize;
                data.copy_from_slice(&value[at..at + data.len()]);
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            // Bits 1:0 are reserved; 30:24 are reserved (AMD's extended
            // register bits are not offered).
            (0, 4) => {
                let mut v = [0u8; 4];
                v.copy_from_slice(data);
                self.address = u32::from_le_bytes(v) & 0x80ff_fffc;
            }
            (4..8, len @ (1 | 2 | 4)) if offset - 4 + len as u64 <= 4 => {
                if let Some((bus, slot, func, reg)) = self.target() {
                    config_write(&self.slots, bus, slot, func, reg, (offset - 4) as u8, data);
                }
            }
            // Byte writes to 0xCF8..0xCFB (e.g. Linux's type-1 probe writing
            // 0xCFB) and 0xCF9 (the PIIX reset register) do nothing here.
            _ => {}
        }
    }
}

/// ECAM for bus 0: offset = slot << 15 | function << 12 | register byte.
/// Insert at the ECAM base with length 1 MiB.
pub struct Ecam {
    slots: SharedSlots,
}

impl Ecam {
    /// (bus, slot, function, register, byte in register) of a valid
    /// access: 1, 2 or 4 bytes inside one register.
    fn decode(offset: u64, len: usize) -> Option<(u8, u8, u8, u16, u8)> {
        let byte = (offset & 3) as usize;
        if !matches!(len, 1 | 2 | 4) || byte + len > 4 {
            return None;
        }
        Some((
            (offset >> 20) as u8,
            ((offset >> 15) & 0x1f) as u8,
            ((offset >> 12) & 0x7) as u8,
            ((offset & 0xfff) >> 2) as u16,
            byte as u8,
        ))
    }
}

impl BusDevice for Ecam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match Self::decode(offset, data.len()) {
            // Only bus 0 is inserted; a larger range still answers bus 0 only.
            Some((bus, slot, func, reg, byte)) if offset >> 20 == u64::from(bus) => {
                let value = config_read(&self.slots, bus, slot, func, reg).to_le_bytes();
                let at = usize::from(byte);
                data.copy_from_slice(&value[at..at + data.len()]);
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((bus, slot, func, reg, byte)) = Self::decode(offset, data.len()) {
            if offset >> 20 == u64::from(bus) {
                config_write(&self.slots, bus, slot, func, reg, byte, data);
            }
        }
    }
}

#[cfg(test)]
mod tests;
