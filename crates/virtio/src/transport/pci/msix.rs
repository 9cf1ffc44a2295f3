//! The MSI-X capability, table and PBA of a virtio-pci function (vCPU side).
//!
//! Kept behind this small interface so the PCI root's shared `MsixConfig`
//! can replace it; delivery itself goes through [`PciInterrupt`], which the
//! worker threads share.

use std::sync::Arc;

use devices::{MsiMessage, MsiRoutes};

use super::interrupt::PciInterrupt;

pub const MSIX_CAP_ID: u8 = 0x11;
pub const ENTRY_SIZE: usize = 16;
const CTRL_ENABLE: u16 = 1 << 15;
const CTRL_FUNCTION_MASK: u16 = 1 << 14;
const VECTOR_MASKED: u32 = 1;

/// One table entry as the guest wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixEntry {
    pub addr_lo: u32,
    pub addr_hi: u32,
    pub data: u32,
    pub ctrl: u32,
}

impl Default for MsixEntry {
    fn default() -> Self {
        Self {
            addr_lo: 0,
            addr_hi: 0,
            data: 0,
            ctrl: VECTOR_MASKED,
        }
    }
}

impl MsixEntry {
    fn bytes(&self) -> [u8; ENTRY_SIZE] {
        let mut b = [0u8; ENTRY_SIZE];
        for (i, v) in [self.addr_lo, self.addr_hi, self.data, self.ctrl]
            .iter()
            .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    fn from_bytes(b: &[u8; ENTRY_SIZE]) -> Self {
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Self {
            addr_lo: w(0),
            addr_hi: w(4),
            data: w(8),
            ctrl: w(12) & VECTOR_MASKED,
        }
    }

    fn message(&self) -> MsiMessage {
        MsiMessage {
            addr: (u64::from(self.addr_hi) << 32) | u64::from(self.addr_lo),
            data: self.data,
        }
    }
}

/// MSI-X state (plain data, for snapshots).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MsixState {
    pub table: Vec<MsixEntry>,
    pub enabled: bool,
    pub function_masked: bool,
    pub pending: Vec<bool>,
}

pub struct Msix {
    table: Vec<MsixEntry>,
    enabled: bool,
    function_masked: bool,
    /// The message each vector's GSI currently routes to.
    routed: Vec<Option<MsiMessage>>,
    interrupt: Arc<PciInterrupt>,
    msi: Arc<dyn MsiRoutes>,
    route_errors: u32,
}

impl Msix {
    /// A table of as many entries as `interrupt` has vectors.
    pub fn new(interrupt: Arc<PciInterrupt>, msi: Arc<dyn MsiRoutes>) -> Self {
        let n = interrupt.vectors.len();
        Self {
            table: vec![MsixEntry::default(); n],
            enabled: false,
            function_masked: false,
            routed: vec![None; n],
            interrupt,
            msi,
            route_errors: 0,
        }
    }

    /// The capability's Message Control word.
    pub fn control(&self) -> u16 {
        let mut c = (self.table.len() as u16).saturating_sub(1) & 0x7ff;
        if self.enabled {
            c |= CTRL_ENABLE;
        }
        if self.function_masked {
            c |= CTRL_FUNCTION_MASK;
        }
        c
    }

    /// The guest wrote Message Control.
    pub fn set_control(&mut self, control: u16) {
        let enabled = control & CTRL_ENABLE != 0;
        let function_masked = control & CTRL_FUNCTION_MASK != 0;
        if enabled == self.enabled && function_masked == self.function_masked {
            return;
        }
        self.enabled = enabled;
        self.function_masked = function_masked;
        self.interrupt
            .msix_enabled
            .store(enabled, std::sync::atomic::Ordering::SeqCst);
        for v in 0..self.table.len() {
            self.refresh(v);
        }
    }

    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some((v, at)) = self.locate(offset, data.len()) else {
            return;
        };
        data.copy_from_slice(&self.table[v].bytes()[at..at + data.len()]);
    }

    pub fn write_table(&mut self, offset: u64, data: &[u8]) {
        let Some((v, at)) = self.locate(offset, data.len()) else {
            return;
        };
        let mut b = self.table[v].bytes();
        b[at..at + data.len()].copy_from_slice(data);
        self.table[v] = MsixEntry::from_bytes(&b);
        self.refresh(v);
    }

    /// The Pending Bit Array: bit `v` of the array is vector `v`'s pending bit.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = 0;
            let Some(first) = offset
                .checked_add(i as u64)
                .and_then(|b| b.checked_mul(8))
                .and_then(|b| usize::try_from(b).ok())
            else {
                continue;
            };
            for bit in 0..8 {
                let pending = self
                    .interrupt
                    .vectors
                    .get(first + bit)
                    .is_some_and(|sv| sv.pending.load(std::sync::atomic::Ordering::SeqCst));
                if pending {
                    *byte |= 1 << bit;
                }
            }
        }
    }

    pub fn state(&self) -> MsixState {
        MsixState {
            table: self.table.clone(),
            enabled: self.enabled,
            function_masked: self.function_masked,
            pending: self
                .interrupt
                .vectors
                .iter()
                .map(|sv| sv.pending.load(std::sync::atomic::Ordering::SeqCst))
                .collect(),
        }
    }

    /// Entry and offset inside it of an access that stays within one entry.
    fn locate(&self, offset: u64, len: usize) -> Option<(usize, usize)> {
        let v = usize::try_from(offset / ENTRY_SIZE as u64).ok()?;
        let at = (offset % ENTRY_SIZE as u64) as usize;
        (v < self.table.len() && len > 0 && at + len <= ENTRY_SIZE).then_some((v, at))
    }

    /// Brings vector `v`'s KVM route and delivery state in line with the table.
    fn refresh(&mut self, v: usize) {
        let e = self.table[v];
        let deliverable = self.enabled && !self.function_masked && e.ctrl & VECTOR_MASKED == 0;
        if !deliverable {
            // The route stays: a signal racing with the mask still arrives.
            self.interrupt.masked(v);
            return;
        }
        let msg = e.message();
        if self.routed[v] != Some(msg) {
            let gsi = self.interrupt.vectors[v].vector.gsi;
            match self.msi.route(gsi, Some(msg)) {
                Ok(()) => self.routed[v] = Some(msg),
                Err(err) => {
                    self.route_errors += 1;
                    if self.route_errors <= 3 {
                        eprintln!("keel-vmm: cannot route MSI-X vector {v} (GSI {gsi}): {err}");
                    }
                }
            }
        }
        self.interrupt.unmasked(v);
    }
}
