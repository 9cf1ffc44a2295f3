//! The interrupt state a virtio-pci function shares between the vCPU side
//! (MSI-X table, ISR reads, common config) and the device's worker thread,
//! which signals through it without taking a lock.
//!
//! With MSI-X enabled, a signal writes the vector's irqfd (KVM injects the
//! MSI with no VMM round trip), or sets its pending bit while the vector is
//! masked; unmasking delivers what is pending. With MSI-X off, a signal sets
//! the ISR bit and raises the INTx line; reading ISR clears both.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, Ordering};
use std::sync::Arc;

use devices::{IrqLine, MsiRoutes, MsiVector};

use super::common_cfg::NO_VECTOR;
use crate::device::VirtioInterrupt;

/// ISR status bits.
pub const ISR_QUEUE: u8 = 1;
pub const ISR_CONFIG: u8 = 2;

/// One MSI-X vector: its KVM route and delivery state.
pub struct SharedVector {
    pub vector: MsiVector,
    /// Enabled, not function-masked, not masked: signals go straight out.
    pub deliverable: AtomicBool,
    /// Signalled while not deliverable (the PBA bit).
    pub pending: AtomicBool,
}

pub struct PciInterrupt {
    pub vectors: Vec<SharedVector>,
    pub msix_enabled: AtomicBool,
    pub queue_vectors: Vec<AtomicU16>,
    pub config_vector: AtomicU16,
    pub isr: AtomicU8,
    pub intx_disabled: AtomicBool,
    pub needs_reset: AtomicBool,
    pub config_generation: AtomicU8,
    irq: Arc<dyn IrqLine>,
    msi: Arc<dyn MsiRoutes>,
}

impl PciInterrupt {
    pub fn new(
        vectors: Vec<MsiVector>,
        queues: usize,
        irq: Arc<dyn IrqLine>,
        msi: Arc<dyn MsiRoutes>,
    ) -> Self {
        Self {
            vectors: vectors
                .into_iter()
                .map(|vector| SharedVector {
                    vector,
                    deliverable: AtomicBool::new(false),
                    pending: AtomicBool::new(false),
                })
                .collect(),
            msix_enabled: AtomicBool::new(false),
            queue_vectors: (0..queues).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
            config_vector: AtomicU16::new(NO_VECTOR),
            isr: AtomicU8::new(0),
            intx_disabled: AtomicBool::new(false),
            needs_reset: AtomicBool::new(false),
            config_generation: AtomicU8::new(0),
            irq,
            msi,
        }
    }

    /// Signals MSI-X vector `v` (or makes it pending).
    pub fn signal_vector(&self, v: u16) {
        let Some(sv) = self.vectors.get(usize::from(v)) else {
            return;
        };
        if sv.deliverable.load(Ordering::SeqCst) {
            let _ = sv.vector.irqfd.write(1);
            return;
        }
        sv.pending.store(true, Ordering::SeqCst);
        // The guest may have unmasked between the check and the store; the
        // unmasking side clears `pending` after setting `deliverable`, so
        // exactly one of us sends it.
        if sv.deliverable.load(Ordering::SeqCst) && sv.pending.swap(false, Ordering::SeqCst) {
            let _ = sv.vector.irqfd.write(1);
        }
    }

    /// Called on the vCPU side when vector `v` becomes deliverable (after
    /// its route is set): sends what was pending.
    pub fn unmasked(&self, v: usize) {
        let Some(sv) = self.vectors.get(v) else {
            return;
        };
        sv.deliverable.store(true, Ordering::SeqCst);
        if sv.pending.swap(false, Ordering::SeqCst) {
            let _ = sv.vector.irqfd.write(1);
        }
    }

    pub fn masked(&self, v: usize) {
        if let Some(sv) = self.vectors.get(v) {
            sv.deliverable.store(false, Ordering::SeqCst);
        }
    }

    fn raise_intx(&self, bit: u8) {
        self.isr.fetch_or(bit, Ordering::SeqCst);
        if !self.intx_disabled.load(Ordering::SeqCst) {
            self.irq.set_level(true);
        }
    }

    /// The ISR register read: returns and clears the bits, lowers INTx.
    pub fn read_isr(&self) -> u8 {
        let v = self.isr.swap(0, Ordering::SeqCst);
        if v != 0 {
            self.irq.set_level(false);
            // A signal that raced with the read stays visible.
            if self.isr.load(Ordering::SeqCst) != 0 && !self.intx_disabled.load(Ordering::SeqCst) {
                self.irq.set_level(true);
            }
        }
        v
    }

    /// Device reset: no vectors mapped, nothing pending in ISR.
    pub fn reset(&self) {
        for q in &self.queue_vectors {
            q.store(NO_VECTOR, Ordering::SeqCst);
        }
        self.config_vector.store(NO_VECTOR, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
        self.config_generation.store(0, Ordering::SeqCst);
        if self.isr.swap(0, Ordering::SeqCst) != 0 {
            self.irq.set_level(false);
        }
    }

    fn signal(&self, vector: u16, isr_bit: u8) {
        if self.msix_enabled.load(Ordering::SeqCst) {
            if vector != NO_VECTOR {
                self.signal_vector(vector);
            }
        } else {
            self.raise_intx(isr_bit);
        }
    }
}

impl VirtioInterrupt for PciInterrupt {
    fn signal_queue(&self, index: u16) {
        let Some(v) = self.queue_vectors.get(usize::from(index)) else {
            return;
        };
        self.signal(v.load(Ordering::Relaxed), ISR_QUEUE);
    }

    fn signal_config(&self) {
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        self.signal(self.config_vector.load(Ordering::Relaxed), ISR_CONFIG);
    }

    fn set_needs_reset(&self) {
        if !self.needs_reset.swap(true, Ordering::SeqCst) {
            self.signal(self.config_vector.load(Ordering::Relaxed), ISR_CONFIG);
        }
    }
}

impl Drop for PciInterrupt {
    fn drop(&mut self) {
        for sv in self.vectors.drain(..) {
            self.msi.release(sv.vector);
        }
    }
}
