//! The BAR window front end: a range of the MMIO (or port) bus where guest
//! accesses go to whichever device's BAR decodes the address now.

use devices::BusDevice;

use crate::root::{lock_device, read_slots, SharedSlots};

/// Routes accesses inside its bus range to the device whose current BAR
/// covers them; unclaimed reads return all-ones, unclaimed writes vanish.
pub struct BarWindow {
    slots: SharedSlots,
    mmio: bool,
    base: u64,
}

impl BarWindow {
    pub(crate) fn new(slots: SharedSlots, mmio: bool, base: u64) -> Self {
        BarWindow { slots, mmio, base }
    }

    fn find(&self, offset: u64, len: usize) -> Option<(crate::root::SharedDevice, u8, u64)> {
        let addr = self.base.checked_add(offset)?;
        // Found under the table's read lock, released before the device's.
        let (dev, bar) = read_slots(&self.slots).find_bar(self.mmio, addr, len as u64)?;
        Some((dev, bar.index, addr - bar.addr))
    }
}

impl BusDevice for BarWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self.find(offset, data.len()) {
            Some((dev, bar, at)) => lock_device(&dev).read_bar(bar, at, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((dev, bar, at)) = self.find(offset, data.len()) {
            lock_device(&dev).write_bar(bar, at, data);
        }
    }
}
