//! The interrupt state a virtio-pci function shares between the vCPU side
//! (common config, ISR reads) and the device's worker thread.
//!
//! With MSI-X enabled, a signal goes to the queue's (or configuration's)
//! vector through the function's [`MsixConfig`]: its irqfd, so KVM injects
//! the MSI with no VMM round trip, or its pending bit while masked. With
//! MSI-X off, a signal sets the ISR bit and raises the INTx line; reading
//! ISR clears both.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, Ordering};
use std::sync::Arc;

use devices::IrqLine;
use pci::MsixConfig;

use super::common_cfg::NO_VECTOR;
use crate::device::VirtioInterrupt;

/// ISR status bits.
pub const ISR_QUEUE: u8 = 1;
pub const ISR_CONFIG: u8 = 2;

pub struct PciInterrupt {
    pub msix: Arc<MsixConfig>,
    pub queue_vectors: Vec<AtomicU16>,
    pub config_vector: AtomicU16,
    pub isr: AtomicU8,
    pub intx_disabled: AtomicBool,
    pub needs_reset: AtomicBool,
    pub config_generation: AtomicU8,
    irq: Arc<dyn IrqLine>,
}

impl PciInterrupt {
    pub fn new(msix: Arc<MsixConfig>, queues: usize, irq: Arc<dyn IrqLine>) -> Self {
        Self {
            msix,
            queue_vectors: (0..queues).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
            config_vector: AtomicU16::new(NO_VECTOR),
            isr: AtomicU8::new(0),
            intx_disabled: AtomicBool::new(false),
            needs_reset: AtomicBool::new(false),
            config_generation: AtomicU8::new(0),
            irq,
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

    /// The guest set or cleared Interrupt Disable in the command register.
    pub fn set_intx_disabled(&self, disabled: bool) {
        self.intx_disabled.store(disabled, Ordering::SeqCst);
        if self.isr.load(Ordering::SeqCst) != 0 {
            self.irq.set_level(!disabled);
        }
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
        if self.msix.enabled() {
            if vector != NO_VECTOR {
                self.msix.signal(vector);
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
