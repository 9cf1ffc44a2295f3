use super::*;
use crate::config::BarChange;

/// A device with a 32-bit BAR 0 (4 KiB), an I/O BAR 1 (32 bytes) and a
/// 64-bit BAR 2 (16 KiB); BAR accesses are recorded, reads return the
/// offset.
struct TestDevice {
    config: PciConfig,
    accesses: Vec<(u8, u64, usize)>,
    changes: Vec<BarChange>,
}

impl TestDevice {
    fn new() -> Self {
        let mut config = PciConfig::new(PciIds {
            vendor: 0x1af4,
            device: 0x1041,
            class: 0x02,
            ..PciIds::default()
        });
        config.add_bar(0, 0x1000, BarKind::Mmio32, false).unwrap();
        config.add_bar(1, 0x20, BarKind::Io, false).unwrap();
        config.add_bar(2, 0x4000, BarKind::Mmio64, true).unwrap();
        TestDevice {
            config,
            accesses: Vec::new(),
            changes: Vec::new(),
        }
    }
}

impl PciDevice for TestDevice {
    fn read_config(&mut self, reg: u16) -> u32 {
        self.config.read_config(reg)
    }
    fn write_config(&mut self, reg: u16, offset: u8, data: &[u8]) {
        let changes = self.config.write_config(reg, offset, data);
        self.changes.extend(changes);
    }
    fn read_bar(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        self.accesses.push((bar, offset, data.len()));
        data.fill(offset as u8);
    }
    fn write_bar(&mut self, bar: u8, offset: u64, data: &[u8]) {
        self.accesses.push((bar, offset, data.len()));
    }
    fn bars(&self) -> Vec<Bar> {
        self.config.bars()
    }
}

const MMIO: Range<u64> = 0xc000_0000..0xe000_0000;
const IO: Range<u64> = 0xc000..0x1_0000;

fn root() -> PciRoot {
    PciRoot::new(PciWindows { mmio: MMIO, io: IO })
}

/// Mechanism #1 read of a dword.
fn cf8_read(cfg: &mut ConfigIo, slot: u8, reg: u8) -> u32 {
    let addr = 0x8000_0000 | u32::from(slot) << 11 | u32::from(reg) << 2;
    cfg.write(0, &addr.to_le_bytes());
    let mut b = [0u8; 4];
    cfg.read(4, &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn host_bridge_answers_at_slot_0_and_other_slots_are_empty() {
    let root = root();
    let mut cfg = root.config_io();
    assert_eq!(
        cf8_read(&mut cfg, 0, 0),
        u32::from(HOST_BRIDGE_DEVICE) << 16 | u32::from(HOST_BRIDGE_VENDOR)
    );
    assert_eq!(
        cf8_read(&mut cfg, 0, 2) >> 16,
        0x0600,
        "class bridge / host"
    );
    for slot in 1..32 {
        assert_eq!(cf8_read(&mut cfg, slot, 0), u32::MAX, "slot {slot}");
    }
    // Function 1 of slot 0 and bus 1 do not exist.
    cfg.write(0, &0x8000_0100u32.to_le_bytes());
    let mut b = [0u8; 4];
    cfg.read(4, &mut b);
    assert_eq!(b, [0xff; 4]);
    cfg.write(0, &0x8001_0000u32.to_le_bytes());
    cfg.read(4, &mut b);
    assert_eq!(b, [0xff; 4]);
}

#[test]
fn linux_type1_probe_works() {
    // arch/x86/pci/direct.c pci_check_type1: a byte write to 0xCFB, then
    // the address register must read back what was written.
    let root = root();
    let mut cfg = root.config_io();
    cfg.write(3, &[0x01]);
    cfg.write(0, &0x8000_0000u32.to_le_bytes());
    let mut b = [0u8; 4];
    cfg.read(0, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x8000_0000);
    // Without the enable bit the data port reads all-ones.
    cfg.write(0, &0u32.to_le_bytes());
    cfg.read(4, &mut b);
    assert_eq!(b, [0xff; 4]);
}

#[test]
fn byte_and_word_accesses_at_cfd_cfe_cff() {
    let root = root();
    let mut cfg = root.config_io();
    cfg.write(0, &0x8000_0000u32.to_le_bytes());
    let mut byte = [0u8; 1];
    let vendor = HOST_BRIDGE_VENDOR.to_le_bytes();
    let device = HOST_BRIDGE_DEVICE.to_le_bytes();
    for (port, want) in [
        (4, vendor[0]),
        (5, vendor[1]),
        (6, device[0]),
        (7, device[1]),
    ] {
        cfg.read(port, &mut byte);
        assert_eq!(byte[0], want, "port 0xcf8 + {port}");
    }
    let mut word = [0u8; 2];
    cfg.read(6, &mut word);
    assert_eq!(u16::from_le_bytes(word), HOST_BRIDGE_DEVICE);
    // A word write at 0xCFE of register 1 (the status) changes nothing;
    // a word write at 0xCFC sets the command.
    cfg.write(0, &0x8000_0004u32.to_le_bytes());
    cfg.write(4, &[0x06, 0x00]);
    cfg.read(4, &mut word);
    assert_eq!(u16::from_le_bytes(word), 0x0006);
    // Crossing the end of the data window: all-ones, no panic.
    cfg.read(7, &mut word);
    assert_eq!(word, [0xff; 2]);
    cfg.write(7, &[0; 2]);
    let mut bad = [0u8; 3];
    cfg.read(4, &mut bad);
    cfg.write(4, &bad);
    let mut big = [0u8; 8];
    cfg.read(0, &mut big);
    assert_eq!(big, [0xff; 8]);
}

#[test]
fn add_places_bars_in_the_windows_and_enables_decoding() {
    let mut root = root();
    let dev = Arc::new(Mutex::new(TestDevice::new()));
    let slot = root.add(dev.clone()).unwrap();
    assert_eq!(slot, 1);
    let d = dev.lock().unwrap();
    let bars = d.config.bars();
    assert_eq!(bars.len(), 3);
    for b in &bars {
        let window = if b.kind == BarKind::Io { &IO } else { &MMIO };
        assert!(
            window.contains(&b.addr) && b.addr + b.size <= window.end,
            "{b:?}"
        );
        assert_eq!(b.addr % b.size, 0, "{b:?} aligned");
    }
    // Largest first: the 64-bit BAR at the start of the window.
    assert_eq!(d.config.bar_address(2), 0xc000_0000);
    assert_eq!(d.config.bar_address(0), 0xc000_4000);
    assert_eq!(d.config.bar_address(1), 0xc000);
    assert_eq!(d.config.command() & 0x3, 0x3);
    drop(d);

    // The next device goes in slot 2, after the first one's BARs.
    let dev2 = Arc::new(Mutex::new(TestDevice::new()));
    assert_eq!(root.add(dev2.clone()).unwrap(), 2);
    assert_eq!(dev2.lock().unwrap().config.bar_address(2), 0xc000_8000);
    assert_eq!(dev2.lock().unwrap().config.bar_address(1), 0xc020);
    let mut cfg = root.config_io();
    assert_eq!(cf8_read(&mut cfg, 2, 0), 0x1041_1af4);
}

#[test]
fn a_device_that_starts_decoding_sees_no_sizing_moves() {
    let mut root = root();
    let mut dev = TestDevice::new();
    dev.write_config(4, 0, &0x1000_0000u32.to_le_bytes());
    dev.write_config(1, 0, &[0x03, 0x04]);
    dev.changes.clear();
    let dev = Arc::new(Mutex::new(dev));
    assert_eq!(root.free_slot(), Some(1));
    assert_eq!(root.add(dev.clone()).unwrap(), 1);
    assert_eq!(root.free_slot(), Some(2));
    let d = dev.lock().unwrap();
    let finals: Vec<Option<Bar>> = (0..6).map(|i| d.config.bar(i)).collect();
    for ch in &d.changes {
        assert!(
            ch.new.is_none() || ch.new == finals[usize::from(ch.index)],
            "transient move {ch:?}"
        );
    }
    assert_eq!(d.changes[0].old.map(|b| b.addr), Some(0x1000_0000));
    assert_eq!(d.config.bar_address(0), 0xc000_4000);
    assert_eq!(d.config.command(), 0x0403, "other command bits are kept");
}

#[test]
fn bar_window_routes_by_current_bar_and_follows_moves() {
    let mut root = root();
    let dev = Arc::new(Mutex::new(TestDevice::new()));
    root.add(dev.clone()).unwrap();
    let mut mmio = root.mmio_bars(MMIO.start);
    let mut io = root.io_bars(0);

    let mut b = [0u8; 4];
    mmio.read(0x4010, &mut b);
    assert_eq!(b, [0x10; 4]);
    io.write(0xc004, &[1, 2]);
    mmio.write(0x3ffc, &[0; 4]);
    assert_eq!(
        dev.lock().unwrap().accesses,
        vec![(0, 0x10, 4), (1, 4, 2), (2, 0x3ffc, 4)]
    );
    // Unclaimed: between BARs, straddling a BAR's end, and past them.
    mmio.read(0x5000, &mut b);
    assert_eq!(b, [0xff; 4]);
    mmio.read(0x4ffe, &mut b);
    assert_eq!(b, [0xff; 4]);
    io.read(0xd000, &mut b);
    assert_eq!(b, [0xff; 4]);

    // The guest moves BAR 0 through ECAM (slot 1: offset 1 << 15).
    let mut ecam = root.ecam();
    ecam.write(1 << 15 | 0x10, &0xd000_0000u32.to_le_bytes());
    dev.lock().unwrap().accesses.clear();
    mmio.read(0x4010, &mut b);
    assert_eq!(b, [0xff; 4], "the old place is empty");
    mmio.read(0x1000_0020, &mut b);
    assert_eq!(b, [0x20; 4]);
    assert_eq!(dev.lock().unwrap().accesses, vec![(0, 0x20, 4)]);
    let change = dev.lock().unwrap().changes.last().copied().unwrap();
    assert_eq!(change.index, 0);
    assert_eq!(change.old.unwrap().addr, 0xc000_4000);
    assert_eq!(change.new.unwrap().addr, 0xd000_0000);

    // Memory decoding off: nothing answers.
    ecam.write(1 << 15 | 0x4, &[0x01, 0x00]);
    mmio.read(0x1000_0020, &mut b);
    assert_eq!(b, [0xff; 4]);
    io.read(0xc000, &mut b);
    assert_eq!(b, [0; 4], "I/O decoding still on");
}

#[test]
fn ecam_reads_and_writes_like_cf8() {
    let mut root = root();
    root.add(Arc::new(Mutex::new(TestDevice::new()))).unwrap();
    let mut ecam = root.ecam();
    let mut b = [0u8; 4];
    ecam.read(0, &mut b);
    assert_eq!(
        u32::from_le_bytes(b),
        u32::from(HOST_BRIDGE_DEVICE) << 16 | u32::from(HOST_BRIDGE_VENDOR)
    );
    let mut w = [0u8; 2];
    ecam.read(1 << 15 | 2, &mut w);
    assert_eq!(u16::from_le_bytes(w), 0x1041);
    let mut byte = [0u8; 1];
    ecam.read(1 << 15 | 0xb, &mut byte);
    assert_eq!(byte[0], 0x02, "class");
    // Missing slots and functions, misaligned and odd accesses.
    ecam.read(5 << 15, &mut b);
    assert_eq!(b, [0xff; 4]);
    ecam.read(1 << 15 | 1 << 12, &mut b);
    assert_eq!(b, [0xff; 4]);
    ecam.read(1 << 15 | 2, &mut b);
    assert_eq!(b, [0xff; 4]);
    let mut q = [0u8; 8];
    ecam.read(0, &mut q);
    assert_eq!(q, [0xff; 8]);
    ecam.write(1 << 15 | 0x12, &[0xff; 4]);
    ecam.write(1 << 20, &[0xff; 4]);
    // Extended configuration space of a present function reads as empty.
    ecam.read(1 << 15 | 0x100, &mut b);
    assert_eq!(b, [0; 4]);
}

#[test]
fn full_bus_and_full_window_are_errors_that_change_nothing() {
    let mut root = PciRoot::new(PciWindows {
        mmio: 0xc000_0000..0xc000_8000,
        io: IO,
    });
    let first = Arc::new(Mutex::new(TestDevice::new()));
    root.add(first).unwrap();
    let second = Arc::new(Mutex::new(TestDevice::new()));
    assert_eq!(
        root.add(second.clone()),
        Err(PciRootError::NoSpace {
            kind: BarKind::Mmio64,
            size: 0x4000
        })
    );
    assert_eq!(second.lock().unwrap().config.bar_address(2), 0);
    let mut cfg = root.config_io();
    assert_eq!(cf8_read(&mut cfg, 2, 0), u32::MAX, "not added");

    let mut root = PciRoot::new(PciWindows {
        mmio: 0..0,
        io: 0..0,
    });
    struct NoBars(PciConfig);
    impl PciDevice for NoBars {
        fn read_config(&mut self, reg: u16) -> u32 {
            self.0.read_config(reg)
        }
        fn write_config(&mut self, reg: u16, offset: u8, data: &[u8]) {
            self.0.write_config(reg, offset, data);
        }
        fn read_bar(&mut self, _: u8, _: u64, _: &mut [u8]) {}
        fn write_bar(&mut self, _: u8, _: u64, _: &[u8]) {}
        fn bars(&self) -> Vec<Bar> {
            Vec::new()
        }
    }
    for slot in 1..32 {
        let dev = Arc::new(Mutex::new(NoBars(PciConfig::new(PciIds::default()))));
        assert_eq!(root.add(dev), Ok(slot));
    }
    let dev = Arc::new(Mutex::new(NoBars(PciConfig::new(PciIds::default()))));
    assert_eq!(root.add(dev), Err(PciRootError::NoSlot));
}

#[test]
fn a_device_that_panicked_does_not_take_the_bus_down() {
    struct Panics;
    impl PciDevice for Panics {
        fn read_config(&mut self, _: u16) -> u32 {
            0
        }
        fn write_config(&mut self, reg: u16, _: u8, _: &[u8]) {
            if reg == 0x20 {
                panic!("device bug");
            }
        }
        fn read_bar(&mut self, _: u8, _: u64, _: &mut [u8]) {}
        fn write_bar(&mut self, _: u8, _: u64, _: &[u8]) {}
        fn bars(&self) -> Vec<Bar> {
            Vec::new()
        }
    }
    let mut root = root();
    root.add(Arc::new(Mutex::new(Panics))).unwrap();
    let slots = root.slots.clone();
    let _ = std::thread::spawn(move || {
        let mut ecam = Ecam { slots };
        ecam.write(1 << 15 | 0x80, &[0; 4]);
    })
    .join();
    let mut cfg = root.config_io();
    assert_eq!(cf8_read(&mut cfg, 1, 0), 0);
    assert_ne!(cf8_read(&mut cfg, 0, 0), u32::MAX);
}
