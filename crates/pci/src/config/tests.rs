use super::*;

fn ids() -> PciIds {
    PciIds {
        vendor: 0x1af4,
        device: 0x1042,
        subsystem_vendor: 0x1af4,
        subsystem: 0x0002,
        class: 0x01,
        subclass: 0x00,
        prog_if: 0x00,
        revision: 0x01,
    }
}

/// A function with what a virtio device has: a 64-bit prefetchable memory
/// BAR at 4 (and 5), a 32-bit one at 0, an I/O BAR at 2.
fn device() -> PciConfig {
    let mut c = PciConfig::new(ids());
    c.add_bar(0, 0x1000, BarKind::Mmio32, false).unwrap();
    c.add_bar(2, 0x20, BarKind::Io, false).unwrap();
    c.add_bar(4, 0x4000, BarKind::Mmio64, true).unwrap();
    c
}

fn write32(c: &mut PciConfig, reg: u16, v: u32) -> Vec<BarChange> {
    c.write_config(reg, 0, &v.to_le_bytes())
}

/// Linux's __pci_read_base: save, write all-ones, read, restore.
fn size_reg(c: &mut PciConfig, reg: u16) -> u32 {
    let old = c.read_config(reg);
    write32(c, reg, u32::MAX);
    let v = c.read_config(reg);
    write32(c, reg, old);
    v
}

#[test]
fn ids_class_and_header_type() {
    let c = device();
    assert_eq!(c.read_config(0), 0x1042_1af4);
    assert_eq!(
        c.read_config(2),
        0x0100_0001,
        "class, subclass, prog-if, revision"
    );
    assert_eq!(
        c.read_config(3) >> 16 & 0xff,
        0,
        "header type 0, one function"
    );
    assert_eq!(c.read_config(11), 0x0002_1af4, "subsystem");
    assert_eq!(c.read_config(12), 0, "no expansion ROM");
}

#[test]
fn ids_are_read_only() {
    let mut c = device();
    write32(&mut c, 0, 0xdead_beef);
    write32(&mut c, 2, 0xdead_beef);
    c.write_config(11, 2, &[0xaa, 0xbb]);
    assert_eq!(c.read_config(0), 0x1042_1af4);
    assert_eq!(c.read_config(2), 0x0100_0001);
    assert_eq!(c.read_config(11), 0x0002_1af4);
    // The expansion ROM BAR sizes to nothing.
    write32(&mut c, 12, u32::MAX);
    assert_eq!(c.read_config(12), 0);
}

#[test]
fn bar_sizing_as_linux_does_it() {
    let mut c = device();
    assert_eq!(
        size_reg(&mut c, 4),
        0xffff_f000,
        "4 KiB, 32-bit, non-prefetchable"
    );
    assert_eq!(size_reg(&mut c, 5), 0, "BAR 1 unused");
    assert_eq!(size_reg(&mut c, 6), 0xffff_ffe1, "32 bytes of I/O");
    assert_eq!(size_reg(&mut c, 7), 0, "BAR 3 unused");
    assert_eq!(
        size_reg(&mut c, 8),
        0xffff_c00c,
        "16 KiB, 64-bit, prefetchable"
    );
    assert_eq!(
        size_reg(&mut c, 9),
        0xffff_ffff,
        "upper half: all address bits"
    );
    // Restoring left the BARs where they were (at 0).
    assert_eq!(c.bar_address(0), 0);
    assert_eq!(c.bar_address(4), 0);
}

#[test]
fn sixty_four_bit_bar_spans_two_registers() {
    let mut c = device();
    write32(&mut c, 8, 0x2345_6000);
    write32(&mut c, 9, 0x0000_0001);
    assert_eq!(
        c.read_config(8),
        0x2345_400c,
        "low bits under the size are zero"
    );
    assert_eq!(c.read_config(9), 1);
    assert_eq!(c.bar_address(4), 0x1_2345_4000);
    assert_eq!(c.bar_address(5), 0, "BAR 5 is the upper half, not a BAR");
}

#[test]
fn huge_sixty_four_bit_bar_sizes_in_the_upper_register() {
    let mut c = PciConfig::new(ids());
    c.add_bar(0, 8 << 30, BarKind::Mmio64, true).unwrap();
    assert_eq!(size_reg(&mut c, 4), 0x0000_000c);
    assert_eq!(size_reg(&mut c, 5), 0xffff_fffe);
}

#[test]
fn command_register_keeps_only_its_writable_bits() {
    let mut c = device();
    c.write_config(1, 0, &[0xff, 0xff]);
    assert_eq!(
        c.command(),
        COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE
    );
    assert!(c.bus_master());
    // Status is read-only: no capability bit without capabilities.
    c.write_config(1, 2, &[0xff, 0xff]);
    assert_eq!(c.read_config(1) >> 16, 0);
}

#[test]
fn bars_decode_only_when_enabled_and_changes_are_reported() {
    let mut c = device();
    write32(&mut c, 4, 0xc000_0000);
    write32(&mut c, 6, 0xc000);
    write32(&mut c, 8, 0xc000_4000);
    assert!(c.bars().is_empty(), "decoding is off after reset");

    let changes = c.write_config(1, 0, &COMMAND_MEMORY.to_le_bytes());
    let new: Vec<_> = changes
        .iter()
        .map(|ch| (ch.index, ch.old, ch.new.map(|b| b.addr)))
        .collect();
    assert_eq!(
        new,
        vec![(0, None, Some(0xc000_0000)), (4, None, Some(0xc000_4000))]
    );
    assert_eq!(
        c.bar(4),
        Some(Bar {
            index: 4,
            addr: 0xc000_4000,
            size: 0x4000,
            kind: BarKind::Mmio64
        })
    );

    let changes = c.write_config(1, 0, &(COMMAND_MEMORY | COMMAND_IO).to_le_bytes());
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].index, 2);
    assert_eq!(changes[0].new.unwrap().addr, 0xc000);
    assert_eq!(c.bars().len(), 3);

    // The guest moves BAR 4: low half, then high half, one change each.
    let ch = write32(&mut c, 8, 0xd000_0000);
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].old.unwrap().addr, 0xc000_4000);
    assert_eq!(ch[0].new.unwrap().addr, 0xd000_0000);
    let ch = write32(&mut c, 9, 2);
    assert_eq!(ch[0].new.unwrap().addr, 0x2_d000_0000);
    // Rewriting the same value is not a move.
    assert!(write32(&mut c, 9, 2).is_empty());

    // Turning memory decoding off removes the memory BARs.
    let ch = c.write_config(1, 0, &COMMAND_IO.to_le_bytes());
    assert_eq!(ch.iter().map(|c| c.index).collect::<Vec<_>>(), vec![0, 4]);
    assert!(ch.iter().all(|c| c.new.is_none()));
}

#[test]
fn partial_bar_writes_merge() {
    let mut c = device();
    write32(&mut c, 4, 0xc000_0000);
    c.write_config(4, 2, &[0x34, 0x12]);
    assert_eq!(c.bar_address(0), 0x1234_0000);
    c.write_config(4, 1, &[0xff]);
    assert_eq!(c.bar_address(0), 0x1234_f000);
}

/// Walks the capability list as Linux's pci_find_capability does.
fn walk(c: &PciConfig) -> Vec<(u8, u8)> {
    let mut out = Vec::new();
    assert_ne!(c.read_config(1) >> 16 & u32::from(STATUS_CAP_LIST), 0);
    let mut ptr = (c.read_config(0x34 / 4) & 0xfc) as u8;
    while ptr != 0 && out.len() < 48 {
        let reg = c.read_config(u16::from(ptr) / 4);
        out.push((ptr, reg as u8));
        ptr = ((reg >> 8) & 0xfc) as u8;
    }
    out
}

#[test]
fn capability_list_walks_and_respects_masks() {
    let mut c = device();
    assert_eq!(c.read_config(0x34 / 4) & 0xff, 0, "no capabilities yet");
    let a = c
        .add_capability(0x09, &[14, 1, 2, 3, 4, 5], &[0, 0, 0xff])
        .unwrap();
    let b = c.add_capability(0x05, &[0; 12], &[]).unwrap();
    assert_eq!(a, 0x40);
    assert_eq!(b, 0x48, "the next capability is dword aligned");
    assert_eq!(walk(&c), vec![(0x40, 0x09), (0x48, 0x05)]);

    // Body byte 2 (config byte 0x44) is writable, the others are not.
    c.write_config(0x44 / 4, 0, &[0xaa, 0xbb, 0xcc, 0xdd]);
    let mut raw = [0u8; 4];
    c.read_raw(0x44, &mut raw);
    assert_eq!(raw, [0xaa, 3, 4, 5]);
    // The ID and next pointer are read-only.
    c.write_config(0x40 / 4, 0, &[0, 0, 0, 0]);
    assert_eq!(walk(&c), vec![(0x40, 0x09), (0x48, 0x05)]);
    // The device itself may change read-only bytes.
    c.write_raw(0x45, &[9]);
    assert_eq!(c.read_config(0x44 / 4), 0x0504_09aa);
}

#[test]
fn capabilities_stop_at_the_end_of_legacy_space() {
    let mut c = PciConfig::new(ids());
    let mut n = 0;
    while c.add_capability(0x09, &[0; 14], &[]).is_ok() {
        n += 1;
    }
    assert_eq!(n, 12, "0x40..0x100 holds twelve 16-byte capabilities");
    assert_eq!(
        c.add_capability(0x09, &[0; 2], &[]),
        Err(PciConfigError::NoCapabilityRoom { len: 4 })
    );
    assert_eq!(walk(&c).len(), 12);
    assert!(matches!(
        c.add_capability(0x09, &[0; 2], &[0; 3]),
        Err(PciConfigError::MaskLength { .. })
    ));
}

#[test]
fn interrupt_line_is_writable_and_pin_is_not() {
    let mut c = device();
    c.set_interrupt_pin(1).unwrap();
    c.write_config(15, 0, &[0x0b, 0x04]);
    assert_eq!(c.read_config(15) & 0xffff, 0x010b);
    assert_eq!(c.interrupt_line(), 0x0b);
    assert_eq!(
        c.set_interrupt_pin(5),
        Err(PciConfigError::BadInterruptPin(5))
    );
}

#[test]
fn bad_bar_declarations_are_errors() {
    let mut c = PciConfig::new(ids());
    assert_eq!(
        c.add_bar(5, 0x1000, BarKind::Mmio64, false),
        Err(PciConfigError::NoSuchBar(5))
    );
    assert_eq!(
        c.add_bar(6, 0x1000, BarKind::Mmio32, false),
        Err(PciConfigError::NoSuchBar(6))
    );
    assert!(matches!(
        c.add_bar(0, 0x1800, BarKind::Mmio32, false),
        Err(PciConfigError::BadBarSize { .. })
    ));
    assert!(matches!(
        c.add_bar(0, 0x200, BarKind::Io, false),
        Err(PciConfigError::BadBarSize { .. })
    ));
    assert_eq!(
        c.add_bar(0, 0x10, BarKind::Io, true),
        Err(PciConfigError::PrefetchableIo)
    );
    c.add_bar(0, 0x1000, BarKind::Mmio64, false).unwrap();
    assert_eq!(
        c.add_bar(1, 0x1000, BarKind::Mmio32, false),
        Err(PciConfigError::BarInUse(1))
    );
}

#[test]
fn hostile_accesses_are_ignored() {
    let mut c = device();
    let before: Vec<u32> = (0..CONFIG_REGS).map(|r| c.read_config(r)).collect();
    // Lengths other than 1, 2, 4; accesses crossing the register; offsets
    // and registers past the end.
    assert!(c.write_config(1, 0, &[0xff; 3]).is_empty());
    assert!(c.write_config(1, 0, &[0xff; 8]).is_empty());
    assert!(c.write_config(1, 3, &[0xff, 0xff]).is_empty());
    assert!(c.write_config(1, 200, &[0xff]).is_empty());
    assert!(c.write_config(4, 2, &[0xff; 4]).is_empty());
    assert!(c.write_config(CONFIG_REGS, 0, &[0xff; 4]).is_empty());
    assert!(c.write_config(u16::MAX, 0, &[0xff; 4]).is_empty());
    assert!(c.write_config(1, 0, &[]).is_empty());
    let after: Vec<u32> = (0..CONFIG_REGS).map(|r| c.read_config(r)).collect();
    assert_eq!(before, after);
    assert_eq!(c.read_config(CONFIG_REGS), u32::MAX);
    assert_eq!(c.read_config(u16::MAX), u32::MAX);
    // Extended configuration space exists and is empty (no extended
    // capabilities).
    assert_eq!(c.read_config(0x100 / 4), 0);
    let mut raw = [1u8; 4];
    c.read_raw(CONFIG_SPACE_SIZE - 2, &mut raw);
    assert_eq!(raw, [0; 4]);
    c.write_raw(CONFIG_SPACE_SIZE - 2, &[1; 8]);
    c.write_raw(BAR0, &[0xff; 4]);
    assert_eq!(c.bar_address(0), 0, "write_raw leaves BARs alone");
}
