//! The MSI-X capability: a vector table and a pending-bit array (PBA) in a
//! device's BARs, and the message control bits (enable, function mask) in
//! its configuration space.
//!
//! Every table entry owns one [`MsiVector`] (a GSI with an irqfd) from the
//! VMM's [`MsiRoutes`], allocated up front. Whenever the guest changes the
//! table or the control bits, the KVM route of each affected vector follows:
//! routed to its message while MSI-X is enabled and neither the function nor
//! the entry is masked, unrouted otherwise. [`MsixConfig::signal`] writes
//! the vector's irqfd when it is routed, and sets its pending bit otherwise;
//! the interrupt is delivered when the vector is unmasked.
//!
//! A device shares one `Arc<MsixConfig>` between its configuration path
//! ([`crate::PciConfig::add_msix`], BAR accesses through
//! [`MsixConfig::read_bar`] / [`MsixConfig::write_bar`]) and its I/O worker
//! (which calls `signal`). Table accesses other than aligned 4- or 8-byte
//! ones are ignored, as are vector numbers out of range.

use std::sync::{Arc, Mutex, MutexGuard};

use devices::{MsiMessage, MsiRoutes, MsiVector};

/// The MSI-X capability ID.
pub const MSIX_CAP_ID: u8 = 0x11;
/// The most vectors a function can have.
pub const MAX_VECTORS: u16 = 2048;
/// Bytes per table entry.
pub const TABLE_ENTRY_SIZE: u64 = 16;

/// Message control: MSI-X enable.
const CONTROL_ENABLE: u16 = 1 << 15;
/// Message control: function mask.
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control: the entry is masked.
const VECTOR_MASKED: u32 = 1;

/// Errors from creating the capability (device-model bugs or a VMM that
/// cannot allocate interrupts; never guest input).
#[derive(Debug, thiserror::Error)]
pub enum MsixError {
    #[error("{0} MSI-X vectors requested; a function has 1 to 2048")]
    VectorCount(u16),
    #[error("BAR {0} does not exist")]
    NoSuchBar(u8),
    #[error("MSI-X {what} offset {offset:#x} is not 8-byte aligned or too large")]
    BadOffset { what: &'static str, offset: u64 },
    #[error("The MSI-X table and PBA overlap")]
    Overlap,
    #[error("Cannot allocate an interrupt vector")]
    Allocate(#[source] std::io::Error),
}

/// The size of the table for `vectors` entries.
pub fn table_size(vectors: u16) -> u64 {
    u64::from(vectors) * TABLE_ENTRY_SIZE
}

/// The size of the PBA for `vectors` entries (whole qwords).
pub fn pba_size(vectors: u16) -> u64 {
    u64::from(vectors).div_ceil(64) * 8
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    control: u32,
}

impl Entry {
    fn word(&self, i: u64) -> u32 {
        match i {
            0 => self.addr_lo,
            1 => self.addr_hi,
            2 => self.data,
            _ => self.control,
        }
    }

    fn set_word(&mut self, i: u64, value: u32) {
        match i {
            0 => self.addr_lo = value,
            1 => self.addr_hi = value,
            2 => self.data = value,
            // Only the mask bit exists; the rest is reserved (reads 0).
            _ => self.control = value & VECTOR_MASKED,
        }
    }

    fn message(&self) -> MsiMessage {
        MsiMessage {
            addr: u64::from(self.addr_lo) | (u64::from(self.addr_hi) << 32),
            data: self.data,
        }
    }
}

struct State {
    enabled: bool,
    function_masked: bool,
    entries: Vec<Entry>,
    pending: Vec<u64>,
    /// What KVM routes each vector's GSI to now (`None`: unrouted).
    routed: Vec<Option<MsiMessage>>,
    vectors: Vec<MsiVector>,
}

/// An MSI-X capability with its table and PBA.
pub struct MsixConfig {
    table_bar: u8,
    table_offset: u64,
    pba_bar: u8,
    pba_offset: u64,
    count: u16,
    routes: Arc<dyn MsiRoutes>,
    state: Mutex<State>,
}

impl MsixConfig {
    /// `vectors` entries, the table at `table` (BAR, offset) and the PBA at
    /// `pba`; allocates one interrupt vector per entry from `routes`. The
    /// device must size those BARs to hold [`table_size`] and [`pba_size`]
    /// bytes at those offsets.
    pub fn new(
        vectors: u16,
        table: (u8, u64),
        pba: (u8, u64),
        routes: Arc<dyn MsiRoutes>,
    ) -> Result<Self, MsixError> {
        if vectors == 0 || vectors > MAX_VECTORS {
            return Err(MsixError::VectorCount(vectors));
        }
        for (what, (bar, offset)) in [("table", table), ("PBA", pba)] {
            if bar > 5 {
                return Err(MsixError::NoSuchBar(bar));
            }
            // The offset shares a dword with the BAR number (BIR).
            if !offset.is_multiple_of(8) || offset > u64::from(!7u32) {
                return Err(MsixError::BadOffset { what, offset });
            }
        }
        let table_end = table.1 + table_size(vectors);
        let pba_end = pba.1 + pba_size(vectors);
        if table.0 == pba.0 && table.1 < pba_end && pba.1 < table_end {
            return Err(MsixError::Overlap);
        }
        let mut allocated = Vec::with_capacity(usize::from(vectors));
        for _ in 0..vectors {
            match routes.allocate() {
                Ok(v) => allocated.push(v),
                Err(e) => {
                    for v in allocated {
                        routes.release(v);
                    }
                    return Err(MsixError::Allocate(e));
                }
            }
        }
        let n = usize::from(vectors);
        let state = State {
            enabled: false,
            function_masked: false,
            entries: vec![
                Entry {
                    control: VECTOR_MASKED,
                    ..Entry::default()
                };
                n
            ],
            pending: vec![0; n.div_ceil(64)],
            routed: vec![None; n],
            vectors: allocated,
        };
        Ok(MsixConfig {
            table_bar: table.0,
            table_offset: table.1,
            pba_bar: pba.0,
            pba_offset: pba.1,
            count: vectors,
            routes,
            state: Mutex::new(state),
        })
    }

    /// The number of vectors.
    pub fn vectors(&self) -> u16 {
        self.count
    }

    /// The capability's bytes after its ID and next pointer (message
    /// control, table offset/BIR, PBA offset/BIR), and the bits of them the
    /// guest may write (enable and function mask).
    pub fn capability(&self) -> ([u8; 10], [u8; 10]) {
        let mut body = [0u8; 10];
        body[0..2].copy_from_slice(&(self.count - 1).to_le_bytes());
        // Offsets are 8-byte aligned and below 4 GiB (checked in new).
        let table = self.table_offset as u32 | u32::from(self.table_bar);
        let pba = self.pba_offset as u32 | u32::from(self.pba_bar);
        body[2..6].copy_from_slice(&table.to_le_bytes());
        body[6..10].copy_from_slice(&pba.to_le_bytes());
        let mut writable = [0u8; 10];
        writable[1] = ((CONTROL_ENABLE | CONTROL_FUNCTION_MASK) >> 8) as u8;
        (body, writable)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when the guest has enabled MSI-X.
    pub fn enabled(&self) -> bool {
        self.lock().enabled
    }

    /// True when `vector` cannot be delivered now (disabled, function or
    /// entry masked, or out of range).
    pub fn masked(&self, vector: u16) -> bool {
        let st = self.lock();
        st.routed
            .get(usize::from(vector))
            .is_none_or(|r| r.is_none())
    }

    /// True when `vector` has an interrupt waiting for it to be unmasked.
    pub fn pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        self.lock()
            .pending
            .get(v / 64)
            .is_some_and(|w| w & (1 << (v % 64)) != 0)
    }

    /// Raises `vector`: writes its irqfd, or sets its pending bit while it
    /// is masked. Out-of-range vectors are ignored.
    pub fn signal(&self, vector: u16) {
        let mut st = self.lock();
        let v = usize::from(vector);
        match st.routed.get(v) {
            Some(Some(_)) => {
                // Fails only if the counter would overflow: it is then
                // already signalled.
                let _ = st.vectors[v].irqfd.write(1);
            }
            Some(None) => st.pending[v / 64] |= 1 << (v % 64),
            None => {}
        }
    }

    /// Applies the message control register the guest wrote (from
    /// [`crate::PciConfig`]).
    pub fn set_control(&self, control: u16) {
        let mut st = self.lock();
        let enabled = control & CONTROL_ENABLE != 0;
        let function_masked = control & CONTROL_FUNCTION_MASK != 0;
        if (enabled, function_masked) == (st.enabled, st.function_masked) {
            return;
        }
        st.enabled = enabled;
        st.function_masked = function_masked;
        for v in 0..st.entries.len() {
            self.update(&mut st, v);
        }
    }

    /// Routes or unroutes vector `v` to match the table and control bits,
    /// and delivers its pending interrupt once it is routed.
    fn update(&self, st: &mut State, v: usize) {
        let entry = st.entries[v];
        let want = (st.enabled && !st.function_masked && entry.control & VECTOR_MASKED == 0)
            .then(|| entry.message());
        if want != st.routed[v] {
            match self.routes.route(st.vectors[v].gsi, want) {
                Ok(()) => st.routed[v] = want,
                Err(e) => {
                    eprintln!(
                        "keel-vmm: cannot route MSI-X vector {v} (GSI {}): {e}",
                        st.vectors[v].gsi
                    );
                    return;
                }
            }
        }
        let bit = 1u64 << (v % 64);
        if want.is_some() && st.pending[v / 64] & bit != 0 {
            st.pending[v / 64] &= !bit;
            let _ = st.vectors[v].irqfd.write(1);
        }
    }

    /// Offset of an access inside the table, if it is in it.
    fn in_table(&self, bar: u8, offset: u64) -> Option<u64> {
        let rel = offset.checked_sub(self.table_offset)?;
        (bar == self.table_bar && rel < table_size(self.count)).then_some(rel)
    }

    fn in_pba(&self, bar: u8, offset: u64) -> Option<u64> {
        let rel = offset.checked_sub(self.pba_offset)?;
        (bar == self.pba_bar && rel < pba_size(self.count)).then_some(rel)
    }

    /// Serves a read of BAR `bar` at `offset` if it falls in the table or
    /// the PBA (returns false otherwise, leaving `data` alone). Accesses that
    /// are not aligned 4- or 8-byte ones read as all-ones.
    pub fn read_bar(&self, bar: u8, offset: u64, data: &mut [u8]) -> bool {
        if let Some(rel) = self.in_table(bar, offset) {
            let st = self.lock();
            match aligned_words(rel, data.len(), table_size(self.count)) {
                Some(words) => {
                    for (k, w) in (0..words).enumerate() {
                        let word = rel / 4 + w;
                        let entry = &st.entries[(word / 4) as usize];
                        data[k * 4..k * 4 + 4].copy_from_slice(&entry.word(word % 4).to_le_bytes());
                    }
                }
                None => data.fill(0xff),
            }
            return true;
        }
        if let Some(rel) = self.in_pba(bar, offset) {
            let st = self.lock();
            match aligned_words(rel, data.len(), pba_size(self.count)) {
                Some(words) => {
                    for (k, w) in (0..words).enumerate() {
                        let word = rel / 4 + w;
                        let qword = st.pending[(word / 2) as usize];
                        let half = (qword >> (32 * (word % 2))) as u32;
                        data[k * 4..k * 4 + 4].copy_from_slice(&half.to_le_bytes());
                    }
                }
                None => data.fill(0xff),
            }
            return true;
        }
        false
    }

    /// Serves a write of BAR `bar` at `offset` if it falls in the table or
    /// the PBA (returns false otherwise). The PBA is read-only; accesses
    /// that are not aligned 4- or 8-byte ones are dropped.
    pub fn write_bar(&self, bar: u8, offset: u64, data: &[u8]) -> bool {
        if let Some(rel) = self.in_table(bar, offset) {
            let Some(words) = aligned_words(rel, data.len(), table_size(self.count)) else {
                return true;
            };
            let mut st = self.lock();
            let v = (rel / TABLE_ENTRY_SIZE) as usize;
            for (k, w) in (0..words).enumerate() {
                let word = rel / 4 + w;
                let mut value = [0u8; 4];
                value.copy_from_slice(&data[k * 4..k * 4 + 4]);
                st.entries[v].set_word(word % 4, u32::from_le_bytes(value));
            }
            self.update(&mut st, v);
            return true;
        }
        self.in_pba(bar, offset).is_some()
    }
}

/// For an access of `len` bytes at `rel` inside a region of `size` bytes:
/// the number of dwords it covers when it is an aligned 4- or 8-byte access
/// inside the region.
fn aligned_words(rel: u64, len: usize, size: u64) -> Option<u64> {
    let len = len as u64;
    (matches!(len, 4 | 8) && rel.is_multiple_of(len) && rel + len <= size).then_some(len / 4)
}

impl Drop for MsixConfig {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for v in st.vectors.drain(..) {
            self.routes.release(v);
        }
    }
}

#[cfg(test)]
mod tests;
