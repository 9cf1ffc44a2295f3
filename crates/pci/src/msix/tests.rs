use std::collections::BTreeMap;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::config::{PciConfig, PciIds};
use crate::BarKind;

/// A fake VMM: records routes, hands out GSIs from 24, can be told to fail.
#[derive(Default)]
struct FakeRoutes {
    inner: Mutex<Fake>,
}

#[derive(Default)]
struct Fake {
    next_gsi: u32,
    routes: BTreeMap<u32, MsiMessage>,
    route_calls: usize,
    released: Vec<u32>,
    fail_allocate_after: Option<usize>,
    allocated: usize,
}

impl MsiRoutes for FakeRoutes {
    fn allocate(&self) -> std::io::Result<MsiVector> {
        let mut f = self.inner.lock().unwrap();
        if f.fail_allocate_after.is_some_and(|n| f.allocated >= n) {
            return Err(std::io::Error::other("out of GSIs"));
        }
        f.allocated += 1;
        let gsi = 24 + f.next_gsi;
        f.next_gsi += 1;
        Ok(MsiVector {
            gsi,
            irqfd: EventFd::new(EFD_NONBLOCK).unwrap(),
        })
    }
    fn route(&self, gsi: u32, msg: Option<MsiMessage>) -> std::io::Result<()> {
        let mut f = self.inner.lock().unwrap();
        f.route_calls += 1;
        match msg {
            Some(m) => f.routes.insert(gsi, m),
            None => f.routes.remove(&gsi),
        };
        Ok(())
    }
    fn release(&self, vector: MsiVector) {
        self.inner.lock().unwrap().released.push(vector.gsi);
    }
}

impl FakeRoutes {
    fn routes(&self) -> BTreeMap<u32, MsiMessage> {
        self.inner.lock().unwrap().routes.clone()
    }
    fn calls(&self) -> usize {
        self.inner.lock().unwrap().route_calls
    }
}

const ENABLE: u16 = 1 << 15;
const FMASK: u16 = 1 << 14;

/// 3 vectors: table at BAR 1 offset 0x800, PBA at BAR 1 offset 0xc00.
fn msix() -> (Arc<FakeRoutes>, MsixConfig) {
    let routes = Arc::new(FakeRoutes::default());
    let m = MsixConfig::new(3, (1, 0x800), (1, 0xc00), routes.clone()).unwrap();
    (routes, m)
}

fn w32(m: &MsixConfig, offset: u64, v: u32) -> bool {
    m.write_bar(1, offset, &v.to_le_bytes())
}

fn r32(m: &MsixConfig, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    assert!(m.read_bar(1, offset, &mut b));
    u32::from_le_bytes(b)
}

/// Programs entry `v` as Linux does: address, data, then unmask.
fn program(m: &MsixConfig, v: u64, addr: u64, data: u32) {
    let e = 0x800 + v * 16;
    w32(m, e, addr as u32);
    w32(m, e + 4, (addr >> 32) as u32);
    w32(m, e + 8, data);
    w32(m, e + 12, 0);
}

/// Reads an eventfd's counter (0 when nothing was written).
fn fired(m: &MsixConfig, v: usize) -> u64 {
    m.lock().vectors[v].irqfd.read().unwrap_or(0)
}

#[test]
fn capability_bytes_describe_table_and_pba() {
    let (_, m) = msix();
    let (body, writable) = m.capability();
    assert_eq!(u16::from_le_bytes([body[0], body[1]]), 2, "table size N-1");
    assert_eq!(u32::from_le_bytes(body[2..6].try_into().unwrap()), 0x801);
    assert_eq!(u32::from_le_bytes(body[6..10].try_into().unwrap()), 0xc01);
    assert_eq!(writable, [0, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn entries_reset_masked_and_route_only_when_enabled_and_unmasked() {
    let (routes, m) = msix();
    for v in 0..3 {
        assert_eq!(
            r32(&m, 0x800 + v * 16 + 12),
            1,
            "vector {v} masked at reset"
        );
    }
    program(&m, 0, 0xfee0_0000, 0x41);
    assert!(routes.routes().is_empty(), "MSI-X is not enabled yet");
    m.set_control(ENABLE);
    let msg = MsiMessage {
        addr: 0xfee0_0000,
        data: 0x41,
    };
    assert_eq!(routes.routes(), BTreeMap::from([(24, msg)]));
    assert!(!m.masked(0));
    assert!(m.masked(1));

    // Function mask unroutes everything; clearing it routes again.
    m.set_control(ENABLE | FMASK);
    assert!(routes.routes().is_empty());
    m.set_control(ENABLE);
    assert_eq!(routes.routes().len(), 1);

    // Masking the entry unroutes it; a new message while masked is routed
    // when it is unmasked.
    w32(&m, 0x800 + 12, 1);
    assert!(routes.routes().is_empty());
    w32(&m, 0x800 + 8, 0x42);
    assert!(routes.routes().is_empty());
    w32(&m, 0x800 + 12, 0);
    assert_eq!(routes.routes()[&24].data, 0x42);

    // Disabling unroutes.
    m.set_control(0);
    assert!(routes.routes().is_empty());
}

#[test]
fn unchanged_state_does_not_reroute() {
    let (routes, m) = msix();
    program(&m, 0, 0xfee0_0000, 0x41);
    m.set_control(ENABLE);
    let calls = routes.calls();
    m.set_control(ENABLE);
    w32(&m, 0x800 + 8, 0x41);
    w32(&m, 0x800 + 12, 0);
    assert_eq!(routes.calls(), calls);
}

#[test]
fn signal_writes_the_irqfd_or_sets_pending_until_unmasked() {
    let (_, m) = msix();
    program(&m, 1, 0xfee0_0000, 0x51);
    m.set_control(ENABLE);
    m.signal(1);
    assert_eq!(fired(&m, 1), 1);
    assert!(!m.pending(1));

    // Vector 2 is still masked: pending, visible in the PBA.
    m.signal(2);
    assert_eq!(fired(&m, 2), 0);
    assert!(m.pending(2));
    assert_eq!(r32(&m, 0xc00), 0b100);
    // Unmasking delivers it and clears the bit.
    program(&m, 2, 0xfee0_1000, 0x52);
    assert_eq!(fired(&m, 2), 1);
    assert!(!m.pending(2));
    assert_eq!(r32(&m, 0xc00), 0);

    // Under the function mask: pending, delivered when it clears.
    m.set_control(ENABLE | FMASK);
    m.signal(1);
    assert_eq!(fired(&m, 1), 0);
    assert_eq!(r32(&m, 0xc00), 0b10);
    m.set_control(ENABLE);
    assert_eq!(fired(&m, 1), 1);
    assert_eq!(r32(&m, 0xc00), 0);
}

#[test]
fn table_reads_back_and_reserved_control_bits_read_zero() {
    let (_, m) = msix();
    program(&m, 2, 0x1_fee0_0000, 0xabcd);
    let e = 0x800 + 2 * 16;
    assert_eq!(r32(&m, e), 0xfee0_0000);
    assert_eq!(r32(&m, e + 4), 1);
    assert_eq!(r32(&m, e + 8), 0xabcd);
    w32(&m, e + 12, 0xffff_fffe);
    assert_eq!(r32(&m, e + 12), 0);
    // A qword access covers address low and high.
    let mut q = [0u8; 8];
    assert!(m.read_bar(1, e, &mut q));
    assert_eq!(u64::from_le_bytes(q), 0x1_fee0_0000);
    assert!(m.write_bar(1, e + 8, &0x0000_0001_0000_1234u64.to_le_bytes()));
    assert_eq!(r32(&m, e + 8), 0x1234);
    assert_eq!(r32(&m, e + 12), 1, "the qword write masked the entry");
}

#[test]
fn hostile_accesses_are_ignored() {
    let (routes, m) = msix();
    program(&m, 0, 0xfee0_0000, 0x41);
    m.set_control(ENABLE);
    let before = routes.routes();
    // Odd sizes and misaligned accesses: reads are all-ones, writes vanish.
    assert!(m.write_bar(1, 0x800 + 8, &[1, 2]));
    assert!(m.write_bar(1, 0x800 + 9, &[1, 2, 3, 4]));
    assert!(m.write_bar(1, 0x800 + 4, &[0; 8]));
    assert!(m.write_bar(1, 0x800 + 8, &[0; 3]));
    assert!(m.write_bar(1, 0x800, &[]));
    assert_eq!(routes.routes(), before);
    let mut b = [0u8; 2];
    assert!(m.read_bar(1, 0x800, &mut b));
    assert_eq!(b, [0xff; 2]);
    let mut b = [0u8; 4];
    assert!(m.read_bar(1, 0x802, &mut b));
    assert_eq!(b, [0xff; 4]);
    // An access straddling the end of the table.
    let mut q = [0u8; 8];
    assert!(m.read_bar(1, 0x800 + 3 * 16 - 4, &mut q));
    assert_eq!(q, [0xff; 8]);
    // The PBA is read-only.
    m.set_control(ENABLE | FMASK);
    m.signal(0);
    assert!(m.write_bar(1, 0xc00, &0u32.to_le_bytes()));
    assert!(m.pending(0));
    // Past the table and PBA, or another BAR: not MSI-X's.
    assert!(!m.write_bar(1, 0x800 + 3 * 16, &[0; 4]));
    assert!(!m.read_bar(1, 0xc08, &mut b));
    assert!(!m.read_bar(0, 0x800, &mut b));
    assert!(!m.read_bar(1, 0, &mut b));
    // Vector numbers out of range.
    m.signal(3);
    m.signal(u16::MAX);
    assert!(m.masked(3));
    assert!(!m.pending(u16::MAX));
}

#[test]
fn bad_geometry_is_an_error() {
    let routes: Arc<dyn MsiRoutes> = Arc::new(FakeRoutes::default());
    let new = |n, t, p| MsixConfig::new(n, t, p, routes.clone());
    assert!(matches!(
        new(0, (0, 0), (0, 0x100)),
        Err(MsixError::VectorCount(0))
    ));
    assert!(matches!(
        new(2049, (0, 0), (0, 0x10000)),
        Err(MsixError::VectorCount(2049))
    ));
    assert!(matches!(
        new(1, (6, 0), (0, 0x100)),
        Err(MsixError::NoSuchBar(6))
    ));
    assert!(matches!(
        new(1, (0, 4), (0, 0x100)),
        Err(MsixError::BadOffset { what: "table", .. })
    ));
    assert!(matches!(
        new(1, (0, 0), (0, 1 << 32)),
        Err(MsixError::BadOffset { what: "PBA", .. })
    ));
    assert!(matches!(new(8, (0, 0), (0, 0x70)), Err(MsixError::Overlap)));
    assert!(new(8, (0, 0), (0, 0x80)).is_ok());
    assert!(
        new(8, (0, 0), (1, 0)).is_ok(),
        "different BARs never overlap"
    );
}

#[test]
fn vectors_are_released_on_drop_and_on_failed_creation() {
    let routes = Arc::new(FakeRoutes::default());
    let m = MsixConfig::new(4, (0, 0), (0, 0x800), routes.clone()).unwrap();
    drop(m);
    assert_eq!(routes.inner.lock().unwrap().released, vec![24, 25, 26, 27]);

    let routes = Arc::new(FakeRoutes::default());
    routes.inner.lock().unwrap().fail_allocate_after = Some(2);
    let err = MsixConfig::new(4, (0, 0), (0, 0x800), routes.clone());
    assert!(matches!(err, Err(MsixError::Allocate(_))));
    assert_eq!(routes.inner.lock().unwrap().released, vec![24, 25]);
}

#[test]
fn message_control_written_through_config_space_reaches_msix() {
    let routes = Arc::new(FakeRoutes::default());
    let m = Arc::new(MsixConfig::new(3, (1, 0x800), (1, 0xc00), routes.clone()).unwrap());
    let mut c = PciConfig::new(PciIds::default());
    c.add_bar(1, 0x1000, BarKind::Mmio32, false).unwrap();
    let cap = c.add_msix(m.clone()).unwrap();
    assert!(matches!(
        c.add_msix(m.clone()),
        Err(crate::PciConfigError::MsixTwice)
    ));
    let reg = u16::from(cap) / 4;
    assert_eq!(c.read_config(reg) & 0xff, u32::from(MSIX_CAP_ID));
    assert_eq!(c.read_config(reg) >> 16, 2, "table size 3 - 1");
    assert_eq!(c.read_config(reg + 1), 0x801);
    assert_eq!(c.read_config(reg + 2), 0xc01);

    program(&m, 0, 0xfee0_0000, 0x41);
    // Linux sets enable with the function mask, then clears the mask, with
    // word writes at cap + 2.
    c.write_config(reg, 2, &(ENABLE | FMASK).to_le_bytes());
    assert!(m.enabled());
    assert!(routes.routes().is_empty());
    c.write_config(reg, 2, &ENABLE.to_le_bytes());
    assert_eq!(routes.routes().len(), 1);
    // The table size is read-only; a byte write to the low byte changes
    // nothing.
    c.write_config(reg, 2, &[0xff]);
    assert_eq!(c.read_config(reg) >> 16, u32::from(ENABLE) | 2);
    // A dword write over ID, next and control only changes control.
    c.write_config(reg, 0, &[0, 0, 0, 0]);
    assert!(!m.enabled());
    assert_eq!(c.read_config(reg) & 0xffff, u32::from(MSIX_CAP_ID));
}
