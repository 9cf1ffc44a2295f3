//! Transport tests, through the test driver and a device that records
//! what the transport does to it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use pci::{BarKind, PciDevice};

use super::*;
use crate::device::{read_config_bytes, ActivateError, Activation, VirtioDevice, VirtioInterrupt};
use crate::features::{RING_EVENT_IDX, VERSION_1};
use crate::testing::*;

#[derive(Default)]
struct Record {
    activations: Vec<(u64, Vec<u16>)>,
    resets: usize,
    interrupt: Option<Arc<dyn VirtioInterrupt>>,
    config: [u8; 8],
}

/// Two queues (256 and 64), 8 bytes of writable config, offers bit 0.
struct Recorder(Arc<Mutex<Record>>);

impl VirtioDevice for Recorder {
    fn device_type(&self) -> u32 {
        virtio_ids::VIRTIO_ID_BALLOON
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 64]
    }
    fn features(&self) -> u64 {
        1 | features::ACCESS_PLATFORM
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.0.lock().unwrap().config, offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut r = self.0.lock().unwrap();
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = r.config.get_mut(offset as usize + i) {
                *slot = *b;
            }
        }
    }
    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        let mut r = self.0.lock().unwrap();
        r.activations
            .push((a.features, a.queues.iter().map(|q| q.index()).collect()));
        r.interrupt = Some(a.interrupt);
        Ok(())
    }
    fn reset(&mut self) {
        let mut r = self.0.lock().unwrap();
        r.resets += 1;
        r.interrupt = None;
    }
    fn pause(&mut self) -> Result<(), ActivateError> {
        Ok(())
    }
    fn resume(&mut self) -> Result<(), ActivateError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "recorder".into()
    }
}

fn recorder() -> (TestDriver, Arc<Mutex<Record>>) {
    let rec = Arc::new(Mutex::new(Record::default()));
    (TestDriver::new(Box::new(Recorder(rec.clone()))), rec)
}

fn interrupt(rec: &Arc<Mutex<Record>>) -> Arc<dyn VirtioInterrupt> {
    rec.lock().unwrap().interrupt.clone().unwrap()
}

#[test]
fn function_is_a_modern_virtio_device_with_all_capabilities() {
    let (mut d, _) = recorder();
    assert_eq!(
        d.cfg_read32(0),
        0x1045_1af4,
        "vendor 0x1af4, device 0x1040 + 5"
    );
    assert_eq!(d.cfg_read32(8) & 0xff, 1, "revision 1");
    assert_eq!(d.cfg_read32(0x2c), 0x1100_1af4);
    let c = d.caps;
    assert_eq!(
        (c.common, c.isr, c.device, c.notify),
        (0, 0x1000, 0x2000, 0x3000)
    );
    assert_eq!(c.notify_multiplier, 4);
    assert_eq!(c.notify_len, 8, "two queues");
    assert_ne!(c.pci_cfg, 0);
    assert_eq!(c.msix_size, 3, "one vector per queue plus configuration");
    assert_eq!((c.msix_table, c.msix_pba), (0x4000, 0x6000));
    assert_eq!(d.queue_notify_off(1), 1);
    assert_eq!(
        d.dev().bars(),
        vec![Bar {
            index: 0,
            addr: TEST_MMIO_WINDOW.start,
            size: BAR_SIZE,
            kind: BarKind::Mmio64
        }]
    );
    // Every vector got a GSI, and the device never offers ACCESS_PLATFORM.
    assert_eq!(d.msi.irqfds.lock().unwrap().len(), 3);
    let f = d.device_features();
    assert_eq!(f & features::ACCESS_PLATFORM, 0);
    assert_eq!(f & (VERSION_1 | 1), VERSION_1 | 1);
}

#[test]
fn ioeventfds_follow_the_bar() {
    let (mut d, _) = recorder();
    let notify = |base: u64| vec![base + 0x3000, base + 0x3004];
    let registered = |d: &TestDriver| {
        let mut v: Vec<u64> = d
            .ioevents
            .registered
            .lock()
            .unwrap()
            .keys()
            .copied()
            .collect();
        v.sort();
        v
    };
    assert_eq!(registered(&d), notify(TEST_MMIO_WINDOW.start));
    // Linux turns decoding off while it sizes BARs.
    let cmd = d.cfg_read16(4);
    d.cfg_write(4, &(cmd & !2).to_le_bytes());
    assert!(registered(&d).is_empty());
    assert!(d.dev().bars().is_empty());
    d.cfg_write(0x10, &[0xff; 4]);
    d.cfg_write(0x14, &[0xff; 4]);
    assert_eq!(d.cfg_read32(0x10), 0xffff_8004);
    assert!(
        registered(&d).is_empty(),
        "nothing registered at the sizing pattern"
    );
    d.cfg_write(0x10, &0x0010_0000u32.to_le_bytes());
    d.cfg_write(0x14, &1u32.to_le_bytes());
    d.cfg_write(4, &(cmd | 2).to_le_bytes());
    assert_eq!(registered(&d), notify(0x1_0010_0000));
    assert_eq!(d.dev().bars()[0].addr, 0x1_0010_0000);
}

#[test]
fn feature_negotiation_refuses_unknown_features() {
    let (mut d, rec) = recorder();
    let refused = S_ACKNOWLEDGE | S_DRIVER;
    assert_eq!(d.negotiate_raw(VERSION_1 | 1 << 40), refused, "not offered");
    assert_eq!(
        d.negotiate_raw(VERSION_1 | features::ACCESS_PLATFORM),
        refused
    );
    assert_eq!(
        d.negotiate_raw(1),
        refused,
        "legacy driver without VERSION_1"
    );
    assert_eq!(d.negotiate_raw(VERSION_1 | 1), refused | S_FEATURES_OK);
    // DRIVER_OK without FEATURES_OK is ignored: nothing activates.
    d.negotiate_raw(VERSION_1 | 1 << 40);
    d.set_status(refused | S_DRIVER_OK);
    assert_eq!(d.status(), refused);
    assert!(rec.lock().unwrap().activations.is_empty());
}

#[test]
fn queue_size_must_be_a_power_of_two() {
    let (mut d, _) = recorder();
    d.init(VERSION_1).unwrap();
    d.common_write(0x16, 2, 1);
    for bad in [100u64, 0, 65, 128, 0xffff] {
        d.common_write(0x18, 2, bad);
        assert_eq!(d.common_read(0x18, 2), 64, "size {bad} must be refused");
    }
    d.common_write(0x18, 2, 8);
    assert_eq!(d.common_read(0x18, 2), 8);
}

#[test]
fn driver_ok_activates_with_the_negotiated_features_and_enabled_queues() {
    let (mut d, rec) = recorder();
    d.enable_msix();
    let f = d.init(VERSION_1 | RING_EVENT_IDX).unwrap();
    assert_eq!(f, VERSION_1 | RING_EVENT_IDX);
    // Only queue 1 is enabled: queue 0 stays out of the activation.
    d.setup_queue(1, 32);
    d.driver_ok();
    assert_eq!(
        d.status(),
        S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK
    );
    assert_eq!(rec.lock().unwrap().activations, vec![(f, vec![1])]);
    assert!(d.dev().state().active);
    d.reset();
    assert_eq!(rec.lock().unwrap().resets, 2, "init's reset and this one");
    assert!(!d.dev().state().active);
    assert!(!d.dev().state().common.queues[1].enabled);
}

#[test]
fn msix_vectors_route_mask_and_pend() {
    let (mut d, rec) = recorder();
    d.enable_msix();
    d.init(VERSION_1).unwrap();
    d.setup_queue(0, 16);
    d.driver_ok();
    let gsi_routes = d.msi.routes.lock().unwrap().clone();
    assert_eq!(gsi_routes.values().filter(|m| m.is_some()).count(), 3);
    let irq = interrupt(&rec);
    irq.signal_queue(0);
    assert_eq!(d.msi.take_irqs(MSI_DATA_BASE + 1), 1);
    // Mask vector 1: the signal pends (PBA bit 1) instead of firing.
    d.bar_write(d.caps.msix_table + 16 + 12, 4, 1);
    irq.signal_queue(0);
    assert_eq!(d.msi.take_irqs(MSI_DATA_BASE + 1), 0);
    assert_eq!(d.bar_read(d.caps.msix_pba, 8), 0b10);
    // Unmasking delivers it and clears the pending bit.
    d.bar_write(d.caps.msix_table + 16 + 12, 4, 0);
    assert_eq!(d.msi.take_irqs(MSI_DATA_BASE + 1), 1);
    assert_eq!(d.bar_read(d.caps.msix_pba, 8), 0);
    // Function mask holds every vector.
    let ctrl = d.cfg_read16(d.caps.msix + 2);
    d.cfg_write(d.caps.msix + 2, &(ctrl | 0x4000).to_le_bytes());
    irq.signal_config();
    assert_eq!(d.msi.take_irqs(MSI_DATA_BASE), 0);
    d.cfg_write(d.caps.msix + 2, &ctrl.to_le_bytes());
    assert_eq!(d.msi.take_irqs(MSI_DATA_BASE), 1);
    // A vector past the table reads back as NO_VECTOR.
    d.common_write(0x16, 2, 0);
    d.common_write(0x1a, 2, 3);
    assert_eq!(d.common_read(0x1a, 2), u64::from(NO_VECTOR));
    irq.signal_queue(0);
    assert_eq!(
        d.msi.take_irqs(MSI_DATA_BASE + 1),
        0,
        "NO_VECTOR: no interrupt"
    );
}

#[test]
fn intx_and_isr_without_msix() {
    let (mut d, rec) = recorder();
    d.init(VERSION_1).unwrap();
    d.setup_queue(0, 16);
    d.driver_ok();
    let irq = interrupt(&rec);
    irq.signal_queue(0);
    assert!(d.irq.level.load(Ordering::SeqCst));
    assert_eq!(d.bar_read(d.caps.isr, 1), 1);
    assert!(
        !d.irq.level.load(Ordering::SeqCst),
        "reading ISR lowers the line"
    );
    assert_eq!(d.bar_read(d.caps.isr, 1), 0);
    irq.signal_config();
    assert_eq!(d.bar_read(d.caps.isr, 1), 2);
    // INTx disabled in the command register: ISR still set, line quiet.
    let cmd = d.cfg_read16(4);
    d.cfg_write(4, &(cmd | 1 << 10).to_le_bytes());
    irq.signal_queue(0);
    assert!(!d.irq.level.load(Ordering::SeqCst));
    assert_eq!(d.bar_read(d.caps.isr, 1), 1);
}

#[test]
fn config_space_and_generation() {
    let (mut d, rec) = recorder();
    d.enable_msix();
    d.init(VERSION_1).unwrap();
    d.driver_ok();
    d.bar_write(d.caps.device + 2, 2, 0xbeef);
    assert_eq!(d.bar_read(d.caps.device, 4), 0xbeef_0000);
    assert_eq!(
        d.bar_read(d.caps.device + 8, 4),
        0,
        "past the device's config"
    );
    let generation = d.common_read(0x15, 1);
    interrupt(&rec).signal_config();
    d.wait_config_irq();
    assert_eq!(d.common_read(0x15, 1), generation + 1);
}

#[test]
fn queue_outside_guest_memory_needs_reset() {
    let (mut d, rec) = recorder();
    d.enable_msix();
    d.init(VERSION_1).unwrap();
    d.common_write(0x16, 2, 0);
    d.common_write(0x18, 2, 16);
    d.common_write(0x20, 4, (TEST_MEM_SIZE - 16) as u64);
    d.common_write(0x28, 4, 0x1000);
    d.common_write(0x30, 4, 0x2000);
    d.common_write(0x1c, 2, 1);
    d.driver_ok();
    assert_ne!(d.status() & S_NEEDS_RESET, 0);
    d.wait_config_irq();
    assert!(rec.lock().unwrap().activations.is_empty());
    // A reset clears it and a correct setup then works.
    d.init(VERSION_1).unwrap();
    assert_eq!(d.status() & S_NEEDS_RESET, 0);
    d.setup_queue(0, 16);
    d.driver_ok();
    assert_eq!(rec.lock().unwrap().activations.len(), 1);
}

#[test]
fn misaligned_ring_needs_reset() {
    let (mut d, rec) = recorder();
    d.init(VERSION_1).unwrap();
    d.common_write(0x16, 2, 0);
    d.common_write(0x20, 4, 0x1008); // descriptor table must be 16-byte aligned
    d.common_write(0x1c, 2, 1);
    d.driver_ok();
    assert_ne!(d.status() & S_NEEDS_RESET, 0);
    assert!(rec.lock().unwrap().activations.is_empty());
}

#[test]
fn pci_cfg_window_reaches_bar_registers() {
    let (mut d, _) = recorder();
    let cap = d.caps.pci_cfg;
    // Select device_feature_select = 1 through the window, then read
    // device_feature through it.
    d.cfg_write(cap + 4, &[0]);
    d.cfg_write(cap + 8, &0u32.to_le_bytes());
    d.cfg_write(cap + 12, &4u32.to_le_bytes());
    d.cfg_write(cap + 16, &1u32.to_le_bytes());
    d.cfg_write(cap + 8, &4u32.to_le_bytes());
    assert_eq!(d.cfg_read32(cap + 16), (VERSION_1 >> 32) as u32);
    // A misaligned or odd-sized window does nothing.
    d.cfg_write(cap + 8, &5u32.to_le_bytes());
    assert_eq!(d.cfg_read32(cap + 16), 0);
    d.cfg_write(cap + 12, &3u32.to_le_bytes());
    d.cfg_write(cap + 8, &4u32.to_le_bytes());
    assert_eq!(d.cfg_read32(cap + 16), 0);
}

#[test]
fn hostile_register_accesses_do_not_panic() {
    let (mut d, _) = recorder();
    d.enable_msix();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..50_000 {
        let r = next();
        let len = (r % 10) as usize;
        let offset = match (r >> 8) % 4 {
            0 => (r >> 16) % 0x80,
            1 => (r >> 16) % BAR_SIZE,
            2 => (r >> 16) % (BAR_SIZE * 2),
            _ => r,
        };
        let value = next();
        let mut buf = [0u8; 16];
        if r & (1 << 60) != 0 {
            d.dev().write_bar(
                (r >> 61) as u8 % 2,
                offset,
                &value.to_le_bytes().repeat(2)[..len],
            );
        } else {
            d.dev()
                .read_bar((r >> 61) as u8 % 2, offset, &mut buf[..len]);
        }
        let reg = ((value >> 8) % 1100) as u16;
        if value & 1 != 0 {
            d.dev().write_config(
                reg,
                (value >> 4) as u8 % 5,
                &value.to_le_bytes()[..len.min(8)],
            );
        } else {
            d.dev().read_config(reg);
        }
    }
    // Still a working function afterwards.
    assert_eq!(d.cfg_read32(0), 0x1045_1af4);
}

#[test]
fn drop_releases_vectors_and_ioeventfds() {
    let (d, rec) = recorder();
    let msi = d.msi.clone();
    let ioevents = d.ioevents.clone();
    drop(d);
    assert_eq!(msi.released.lock().unwrap().len(), 3);
    assert!(ioevents.registered.lock().unwrap().is_empty());
    assert_eq!(rec.lock().unwrap().resets, 1);
}
