//! A type-0 PCI configuration header with one 64-bit memory BAR and a
//! capability list, as much of PCI as a virtio-pci function needs.
//!
//! Kept behind this small interface so the PCI root's shared `PciConfig`
//! helper can replace it without touching the transport.

use std::ops::Range;

/// The conventional configuration space (extended space reads as 0).
pub const CONFIG_SIZE: usize = 256;

pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
const REVISION: usize = 0x08;
const CACHE_LINE: usize = 0x0c;
const LATENCY: usize = 0x0d;
pub const BAR0: usize = 0x10;
const SUBSYSTEM_VENDOR: usize = 0x2c;
const CAP_POINTER: usize = 0x34;
const INTERRUPT_LINE: usize = 0x3c;
const INTERRUPT_PIN: usize = 0x3d;
const FIRST_CAP: usize = 0x40;

pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// I/O, memory, bus master, parity, SERR, INTx disable.
const COMMAND_WRITABLE: u16 = 0x0547;
const STATUS_CAP_LIST: u16 = 1 << 4;
/// BAR flags: memory, 64-bit, not prefetchable (ISR reads have effects).
const BAR_FLAGS_MEM64: u32 = 0b0100;

/// What identifies the function.
#[derive(Clone, Copy, Debug)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
    pub revision: u8,
    /// Class (23:16), subclass (15:8), programming interface (7:0).
    pub class: u32,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

#[derive(Clone, Debug)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SIZE],
    wmask: [u8; CONFIG_SIZE],
    bar_size: u64,
    last_cap: Option<usize>,
    next_cap: usize,
}

impl ConfigSpace {
    /// A header with BAR 0/1 (64-bit, `bar_size` bytes, a power of two) at
    /// `bar_addr`, memory decoding on (the VMM plays firmware) and INTA.
    pub fn new(ids: PciIds, bar_size: u64, bar_addr: u64) -> Self {
        let mut c = Self {
            bytes: [0; CONFIG_SIZE],
            wmask: [0; CONFIG_SIZE],
            bar_size,
            last_cap: None,
            next_cap: FIRST_CAP,
        };
        c.set_u16(0, ids.vendor);
        c.set_u16(2, ids.device);
        c.set_u16(COMMAND, COMMAND_MEMORY);
        c.set_u16(STATUS, STATUS_CAP_LIST);
        c.set_u32(REVISION, (ids.class << 8) | u32::from(ids.revision));
        c.set_u16(SUBSYSTEM_VENDOR, ids.subsystem_vendor);
        c.set_u16(SUBSYSTEM_VENDOR + 2, ids.subsystem);
        c.bytes[INTERRUPT_PIN] = 1;
        c.wmask_u16(COMMAND, COMMAND_WRITABLE);
        c.wmask[CACHE_LINE] = 0xff;
        c.wmask[LATENCY] = 0xff;
        c.wmask[INTERRUPT_LINE] = 0xff;
        let size_mask = !(bar_size - 1);
        c.wmask_u32(BAR0, (size_mask as u32) & !0xf);
        c.wmask_u32(BAR0 + 4, (size_mask >> 32) as u32);
        c.set_bar_addr(bar_addr);
        c
    }

    /// Appends a capability: `body` starts with the capability ID and has
    /// room for the next pointer (byte 1, filled in here); `writable` are
    /// byte ranges of `body` the guest may write. Returns its offset.
    pub fn add_capability(&mut self, body: &[u8], writable: &[(Range<usize>, u8)]) -> usize {
        let off = self.next_cap;
        assert!(
            off + body.len() <= CONFIG_SIZE,
            "capabilities overflow config space"
        );
        self.bytes[off..off + body.len()].copy_from_slice(body);
        self.bytes[off + 1] = 0;
        for (range, mask) in writable {
            for b in &mut self.wmask[off + range.start..off + range.end] {
                *b = *mask;
            }
        }
        match self.last_cap {
            None => self.bytes[CAP_POINTER] = off as u8,
            Some(prev) => self.bytes[prev + 1] = off as u8,
        }
        self.last_cap = Some(off);
        self.next_cap = (off + body.len() + 3) & !3;
        off
    }

    /// Reads 32-bit register `reg`.
    pub fn read_reg(&self, reg: u16) -> u32 {
        let off = usize::from(reg) * 4;
        if off + 4 > CONFIG_SIZE {
            return 0;
        }
        self.u32_at(off)
    }

    /// Writes `data` at byte `offset` of register `reg` through the write
    /// masks; returns the byte range touched (empty if none).
    pub fn write(&mut self, reg: u16, offset: u8, data: &[u8]) -> Range<usize> {
        let start = usize::from(reg) * 4 + usize::from(offset);
        if data.is_empty() || data.len() > 4 || usize::from(offset) + data.len() > 4 {
            return 0..0;
        }
        if start + data.len() > CONFIG_SIZE {
            return 0..0;
        }
        for (i, &v) in data.iter().enumerate() {
            let a = start + i;
            let m = self.wmask[a];
            self.bytes[a] = (self.bytes[a] & !m) | (v & m);
        }
        start..start + data.len()
    }

    pub fn command(&self) -> u16 {
        self.u16_at(COMMAND)
    }

    pub fn memory_enabled(&self) -> bool {
        self.command() & COMMAND_MEMORY != 0
    }

    /// The address BAR 0/1 holds (possibly the sizing pattern).
    pub fn bar_addr(&self) -> u64 {
        (u64::from(self.u32_at(BAR0 + 4)) << 32) | u64::from(self.u32_at(BAR0) & !0xf)
    }

    fn set_bar_addr(&mut self, addr: u64) {
        let addr = addr & !(self.bar_size - 1);
        self.set_u32(BAR0, (addr as u32 & !0xf) | BAR_FLAGS_MEM64);
        self.set_u32(BAR0 + 4, (addr >> 32) as u32);
    }

    pub fn bytes(&self) -> &[u8; CONFIG_SIZE] {
        &self.bytes
    }

    pub fn u8_at(&self, off: usize) -> u8 {
        self.bytes[off]
    }

    pub fn u16_at(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.bytes[off], self.bytes[off + 1]])
    }

    pub fn u32_at(&self, off: usize) -> u32 {
        let b = &self.bytes[off..off + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Sets bytes regardless of the write mask (device-side updates).
    pub fn set_u16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn wmask_u16(&mut self, off: usize, v: u16) {
        self.wmask[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn wmask_u32(&mut self, off: usize, v: u32) {
        self.wmask[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> ConfigSpace {
        let ids = PciIds {
            vendor: 0x1af4,
            device: 0x1044,
            revision: 1,
            class: 0xff0000,
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
        };
        ConfigSpace::new(ids, 0x8000, 0xe000_0000)
    }

    #[test]
    fn header_identifies_the_function() {
        let c = space();
        assert_eq!(c.read_reg(0), 0x1044_1af4);
        assert_eq!(c.read_reg(2), 0xff00_0001);
        assert_eq!(c.read_reg(0x2c / 4), 0x1100_1af4);
        assert_eq!(c.read_reg(4), 0xe000_0004);
        assert_eq!(c.read_reg(5), 0);
        assert_eq!(c.read_reg(1) >> 16 & u32::from(STATUS_CAP_LIST), 0x10);
        assert_eq!(c.read_reg(0x3c / 4) >> 8 & 0xff, 1, "INTA");
        assert_eq!(c.read_reg(1023), 0);
    }

    #[test]
    fn bar_sizing_reports_the_size_and_keeps_flags() {
        let mut c = space();
        c.write(4, 0, &[0xff; 4]);
        c.write(5, 0, &[0xff; 4]);
        assert_eq!(c.read_reg(4), 0xffff_8004);
        assert_eq!(c.read_reg(5), 0xffff_ffff);
        c.write(4, 0, &0x1234_5678u32.to_le_bytes());
        c.write(5, 0, &1u32.to_le_bytes());
        assert_eq!(c.bar_addr(), 0x1_1234_0000);
    }

    #[test]
    fn only_writable_bits_change() {
        let mut c = space();
        c.write(0, 0, &[0; 4]);
        assert_eq!(c.read_reg(0), 0x1044_1af4);
        c.write(1, 0, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(c.command(), COMMAND_WRITABLE);
        assert_eq!(c.u16_at(STATUS), STATUS_CAP_LIST);
        c.write(1, 0, &[0, 0]);
        assert!(!c.memory_enabled());
        // Straddling a register or too long: ignored.
        assert!(c.write(1, 3, &[1, 1]).is_empty());
        assert!(c.write(1, 0, &[1; 5]).is_empty());
        assert!(c.write(64, 0, &[1]).is_empty());
    }

    #[test]
    fn capabilities_are_chained() {
        let mut c = space();
        let a = c.add_capability(&[0x11, 0, 0, 0, 0, 0], &[(2..4, 0xff)]);
        let b = c.add_capability(&[0x09, 0, 16, 1], &[]);
        assert_eq!(a, 0x40);
        assert_eq!(b, 0x48);
        assert_eq!(c.u8_at(0x34), 0x40);
        assert_eq!(c.u8_at(0x41), 0x48);
        assert_eq!(c.u8_at(0x49), 0);
        c.write(0x10, 2, &[0xaa, 0xbb]);
        assert_eq!(c.u16_at(0x42), 0xbbaa);
        c.write(0x12, 0, &[0xaa]);
        assert_eq!(c.u8_at(0x48), 0x09);
    }
}
