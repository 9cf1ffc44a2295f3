//! The PCI root complex of the Keel board: one bus (bus 0), configuration
//! space through ports 0xCF8/0xCFC and through ECAM, BAR placement and the
//! MSI-X capability that devices embed.

/// The kind of address space a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mmio32,
    Mmio64,
}

/// Where a BAR currently sits (as the guest programmed it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    pub index: u8,
    pub addr: u64,
    pub size: u64,
    pub kind: BarKind,
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
