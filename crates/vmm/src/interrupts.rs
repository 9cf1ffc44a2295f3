//! What the VMM offers devices for interrupts and doorbells without the vCPU
//! thread: MSI routes over KVM's GSI routing with irqfds
//! ([`KvmMsiRoutes`]), and ioeventfds on MMIO addresses ([`KvmIoEvents`]).
//!
//! KVM's `KVM_SET_GSI_ROUTING` replaces the whole routing table, so every
//! change sends the complete table: the routes KVM installs by default for
//! the in-kernel PIC and IOAPIC (GSIs 0..24), then one MSI route per routed
//! vector. Vectors get GSIs from 24 up, above the IOAPIC's pins.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use devices::{IoEvents, MsiMessage, MsiRoutes, MsiVector};
use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
    kvm_irq_routing_msi, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_MAX_IRQ_ROUTES,
};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The IOAPIC's inputs: GSIs below this are the irqchip's.
pub const IOAPIC_PINS: u32 = 24;
/// The first GSI handed to MSI vectors.
pub const FIRST_MSI_GSI: u32 = IOAPIC_PINS;
/// KVM accepts GSIs below this.
const GSI_LIMIT: u32 = KVM_MAX_IRQ_ROUTES as u32;

/// A GSI allocator and the MSI routes of the VM.
#[derive(Debug)]
struct Routing {
    next: u32,
    free: Vec<u32>,
    msi: BTreeMap<u32, MsiMessage>,
}

impl Routing {
    fn allocate(&mut self) -> Option<u32> {
        if let Some(gsi) = self.free.pop() {
            return Some(gsi);
        }
        (self.next < GSI_LIMIT).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// The whole table KVM must hold: the default irqchip routes (as KVM
    /// sets them up when the irqchip is created: PIC and IOAPIC for GSIs
    /// 0..16, IOAPIC alone for 16..24), then the MSI routes.
    fn table(&self) -> Vec<kvm_irq_routing_entry> {
        let irqchip = |gsi: u32, chip: u32, pin: u32| kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_IRQCHIP,
            u: kvm_irq_routing_entry__bindgen_ty_1 {
                irqchip: kvm_irq_routing_irqchip { irqchip: chip, pin },
            },
            ..Default::default()
        };
        let mut table = Vec::with_capacity(40 + self.msi.len());
        for gsi in 0..IOAPIC_PINS {
            table.push(irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
            if gsi < 16 {
                let pic = if gsi < 8 {
                    KVM_IRQCHIP_PIC_MASTER
                } else {
                    KVM_IRQCHIP_PIC_SLAVE
                };
                table.push(irqchip(gsi, pic, gsi % 8));
            }
        }
        for (&gsi, msg) in &self.msi {
            table.push(kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_MSI,
                u: kvm_irq_routing_entry__bindgen_ty_1 {
                    msi: kvm_irq_routing_msi {
                        address_lo: msg.addr as u32,
                        address_hi: (msg.addr >> 32) as u32,
                        data: msg.data,
                        ..Default::default()
                    },
                },
                ..Default::default()
            });
        }
        table
    }
}

/// [`MsiRoutes`] on KVM: GSIs from 24, `KVM_SET_GSI_ROUTING`, irqfds.
pub struct KvmMsiRoutes {
    vm: Arc<VmFd>,
    routing: Mutex<Routing>,
}

impl KvmMsiRoutes {
    pub fn new(vm: Arc<VmFd>) -> Self {
        KvmMsiRoutes {
            vm,
            routing: Mutex::new(Routing {
                next: FIRST_MSI_GSI,
                free: Vec::new(),
                msi: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Routing> {
        self.routing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the whole table to KVM (with the lock held, so tables reach
    /// KVM in the order they were made).
    fn commit(&self, routing: &Routing) -> io::Result<()> {
        let table = KvmIrqRouting::from_entries(&routing.table())
            .map_err(|e| io::Error::other(format!("GSI routing table: {e:?}")))?;
        self.vm
            .set_gsi_routing(&table)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}

impl MsiRoutes for KvmMsiRoutes {
    fn allocate(&self) -> io::Result<MsiVector> {
        let irqfd = EventFd::new(EFD_NONBLOCK)?;
        let gsi = self
            .lock()
            .allocate()
            .ok_or_else(|| io::Error::other("no GSI left for an MSI vector"))?;
        // Without a route the GSI goes nowhere: the vector starts masked.
        if let Err(e) = self.vm.register_irqfd(&irqfd, gsi) {
            self.lock().free.push(gsi);
            return Err(io::Error::from_raw_os_error(e.errno()));
        }
        Ok(MsiVector { gsi, irqfd })
    }

    fn route(&self, gsi: u32, msg: Option<MsiMessage>) -> io::Result<()> {
        if !(FIRST_MSI_GSI..GSI_LIMIT).contains(&gsi) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("GSI {gsi} is not an MSI vector's"),
            ));
        }
        let mut routing = self.lock();
        let old = match msg {
            Some(m) => routing.msi.insert(gsi, m),
            None => routing.msi.remove(&gsi),
        };
        if old == msg {
            return Ok(());
        }
        let result = self.commit(&routing);
        if result.is_err() {
            // KVM kept the previous table: so do we.
            match old {
                Some(m) => routing.msi.insert(gsi, m),
                None => routing.msi.remove(&gsi),
            };
        }
        result
    }

    fn release(&self, vector: MsiVector) {
        // Fails only if the VM is being torn down.
        let _ = self.vm.unregister_irqfd(&vector.irqfd, vector.gsi);
        let mut routing = self.lock();
        if routing.msi.remove(&vector.gsi).is_some() {
            let _ = self.commit(&routing);
        }
        routing.free.push(vector.gsi);
    }
}

/// [`IoEvents`] on KVM ioeventfds: a guest write of any size to an MMIO
/// address signals the eventfd without leaving the kernel.
pub struct KvmIoEvents {
    vm: Arc<VmFd>,
}

impl KvmIoEvents {
    pub fn new(vm: Arc<VmFd>) -> Self {
        KvmIoEvents { vm }
    }
}

impl IoEvents for KvmIoEvents {
    fn register(&self, addr: u64, fd: &EventFd) -> io::Result<()> {
        self.vm
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }

    fn unregister(&self, addr: u64, fd: &EventFd) -> io::Result<()> {
        self.vm
            .unregister_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}

#[cfg(test)]
mod tests;
