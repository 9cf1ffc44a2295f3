use super::*;

fn routing() -> Routing {
    Routing {
        next: FIRST_MSI_GSI,
        free: Vec::new(),
        msi: BTreeMap::new(),
    }
}

/// (gsi, type, chip or address_lo, pin or data) of every entry.
fn entries(table: &[kvm_irq_routing_entry]) -> Vec<(u32, u32, u32, u32)> {
    table
        .iter()
        .map(|e| {
            // SAFETY: the member read is the one `type_` says was written.
            let (a, b) = unsafe {
                if e.type_ == KVM_IRQ_ROUTING_MSI {
                    (e.u.msi.address_lo, e.u.msi.data)
                } else {
                    (e.u.irqchip.irqchip, e.u.irqchip.pin)
                }
            };
            (e.gsi, e.type_, a, b)
        })
        .collect()
}

#[test]
fn table_keeps_kvms_default_irqchip_routes() {
    let t = entries(&routing().table());
    assert_eq!(t.len(), 24 + 16);
    let chip = KVM_IRQ_ROUTING_IRQCHIP;
    for gsi in 0..24 {
        assert!(
            t.contains(&(gsi, chip, KVM_IRQCHIP_IOAPIC, gsi)),
            "IOAPIC {gsi}"
        );
    }
    for gsi in 0..8 {
        assert!(t.contains(&(gsi, chip, KVM_IRQCHIP_PIC_MASTER, gsi)));
        assert!(t.contains(&(gsi + 8, chip, KVM_IRQCHIP_PIC_SLAVE, gsi)));
    }
}

#[test]
fn table_adds_msi_routes_after_the_irqchip() {
    let mut r = routing();
    r.msi.insert(
        25,
        MsiMessage {
            addr: 0x1_fee0_1000,
            data: 0x4041,
        },
    );
    let table = r.table();
    assert_eq!(table.len(), 41);
    let last = table[40];
    assert_eq!((last.gsi, last.type_), (25, KVM_IRQ_ROUTING_MSI));
    // SAFETY: an MSI entry.
    let msi = unsafe { last.u.msi };
    assert_eq!(
        (msi.address_lo, msi.address_hi, msi.data),
        (0xfee0_1000, 1, 0x4041)
    );
}

#[test]
fn gsis_start_above_the_ioapic_and_are_reused() {
    let mut r = routing();
    assert_eq!(r.allocate(), Some(24));
    assert_eq!(r.allocate(), Some(25));
    r.free.push(24);
    assert_eq!(r.allocate(), Some(24));
    assert_eq!(r.allocate(), Some(26));
    r.next = GSI_LIMIT - 1;
    assert_eq!(r.allocate(), Some(GSI_LIMIT - 1));
    assert_eq!(r.allocate(), None);
}

/// A KVM VM with the in-kernel irqchip, or None (printing SKIPPED) when
/// /dev/kvm cannot be used here.
fn kvm_vm() -> Option<Arc<VmFd>> {
    let vm = kvm_ioctls::Kvm::new()
        .and_then(|kvm| kvm.create_vm())
        .and_then(|vm| vm.create_irq_chip().map(|()| vm));
    match vm {
        Ok(vm) => Some(Arc::new(vm)),
        Err(e) => {
            assert_ne!(
                std::env::var("KEEL_REQUIRE_KVM").as_deref(),
                Ok("1"),
                "KEEL_REQUIRE_KVM=1 and /dev/kvm is unusable: {e}"
            );
            eprintln!("SKIPPED (/dev/kvm is unusable: {e})");
            None
        }
    }
}

#[test]
fn msi_routes_on_kvm() {
    let Some(vm) = kvm_vm() else {
        return;
    };
    let routes = KvmMsiRoutes::new(vm.clone());
    let a = routes.allocate().unwrap();
    let b = routes.allocate().unwrap();
    assert_eq!((a.gsi, b.gsi), (24, 25));
    let msg = MsiMessage {
        addr: 0xfee0_0000,
        data: 0x31,
    };
    routes.route(a.gsi, Some(msg)).unwrap();
    routes.route(b.gsi, Some(msg)).unwrap();
    routes.route(a.gsi, None).unwrap();
    assert_eq!(
        routes.lock().msi.keys().copied().collect::<Vec<_>>(),
        vec![25]
    );
    // Signalling a routed or unrouted vector is harmless without vCPUs.
    a.irqfd.write(1).unwrap();
    b.irqfd.write(1).unwrap();
    // The irqchip's own lines still work after the table was replaced.
    vm.set_irq_line(4, true).unwrap();
    vm.set_irq_line(4, false).unwrap();
    // Only MSI GSIs may be routed.
    assert!(routes.route(4, Some(msg)).is_err());
    assert!(routes.route(GSI_LIMIT, None).is_err());

    routes.release(b);
    assert!(routes.lock().msi.is_empty());
    let c = routes.allocate().unwrap();
    assert_eq!(c.gsi, 25, "a released GSI is reused");
    routes.release(a);
    routes.release(c);
}

#[test]
fn ioevents_on_kvm() {
    let Some(vm) = kvm_vm() else {
        return;
    };
    let events = KvmIoEvents::new(vm);
    let fd = EventFd::new(EFD_NONBLOCK).unwrap();
    events.register(0xc000_1000, &fd).unwrap();
    // The same fd at the same address twice is refused by KVM.
    assert!(events.register(0xc000_1000, &fd).is_err());
    events.unregister(0xc000_1000, &fd).unwrap();
    assert!(events.unregister(0xc000_1000, &fd).is_err());
}
