//! The PCI host bridge in ACPI: the MCFG table (ECAM for bus 0) and the
//! DSDT's `\_SB.PCI0` with its resources and interrupt routing.

use acpi_tables::aml::{
    self, AddressSpace, AddressSpaceCacheable, EISAName, Name, Package, PackageBuilder, Path,
    ResourceTemplate,
};
use acpi_tables::mcfg::MCFG;

use super::{aml_bytes, io, OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout;

/// Slots on the root bus and INTx pins per slot, for `_PRT`.
const PCI_SLOTS: u8 = 32;
const INTX_PINS: u8 = 4;

const _: () = assert!(layout::PCI_MMIO_START + layout::PCI_MMIO_SIZE <= u32::MAX as u64 + 1);
const _: () = assert!(layout::PCI_CONFIG_PORT_LEN <= u8::MAX as u16);

/// The MCFG: one ECAM region, segment 0, bus 0 only.
pub(super) fn mcfg() -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(layout::PCI_ECAM_START, 0, 0, 0);
    aml_bytes(&mcfg)
}

/// `\_SB.PCI0`: a PCI Express host bridge (PNP0A08, compatible with PCI's
/// PNP0A03) for segment 0, bus 0. Its `_CRS` hands the guest bus 0, the
/// I/O ports around the configuration ports (which it consumes itself) and
/// the 32-bit BAR window; its `_PRT` wires INTx of every slot to the IOAPIC
/// (see [`layout::pci_intx_gsi`]).
pub(super) fn pci0() -> Vec<u8> {
    let hid = EISAName::new("PNP0A08");
    let hid = Name::new(Path::new("_HID"), &hid);
    let cid = EISAName::new("PNP0A03");
    let cid = Name::new(Path::new("_CID"), &cid);
    let seg = Name::new(Path::new("_SEG"), &aml::ZERO);
    let bbn = Name::new(Path::new("_BBN"), &aml::ZERO);
    let uid = Name::new(Path::new("_UID"), &aml::ZERO);

    let buses = AddressSpace::<u16>::new_bus_number(0, 0);
    let config_ports = io(layout::PCI_CONFIG_PORT, layout::PCI_CONFIG_PORT_LEN as u8);
    let io_low = AddressSpace::<u16>::new_io(0, layout::PCI_CONFIG_PORT - 1, None);
    let io_high = AddressSpace::<u16>::new_io(layout::PCI_IO_START, u16::MAX, None);
    // Checked above: the window ends at or below 4 GiB.
    let mmio = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        layout::PCI_MMIO_START as u32,
        (layout::PCI_MMIO_START + layout::PCI_MMIO_SIZE - 1) as u32,
        None,
    );
    let crs = ResourceTemplate::new(vec![&buses, &config_ports, &io_low, &io_high, &mmio]);
    let crs = Name::new(Path::new("_CRS"), &crs);

    let prt = prt();
    let prt = Name::new(Path::new("_PRT"), &prt);

    aml_bytes(&aml::Device::new(
        Path::new("PCI0"),
        vec![&hid, &cid, &seg, &bbn, &uid, &crs, &prt],
    ))
}

/// `_PRT`: for every slot and pin, `Package {0xSSSSFFFF, pin, 0, GSI}` (the
/// source 0 means the last field is a GSI; such interrupts are
/// level-triggered, active low).
fn prt() -> PackageBuilder {
    let mut prt = PackageBuilder::new();
    for slot in 0..PCI_SLOTS {
        for pin in 0..INTX_PINS {
            let address = (u32::from(slot) << 16) | 0xffff;
            let gsi = layout::pci_intx_gsi(slot, pin);
            prt.add_element(&Package::new(vec![&address, &pin, &aml::ZERO, &gsi]));
        }
    }
    prt
}

#[cfg(test)]
mod tests {
    use super::*;
    use acpi_tables::Aml;

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn mcfg_has_one_ecam_entry_for_bus_0() {
        let t = mcfg();
        assert_eq!(&t[0..4], b"MCFG");
        assert_eq!(
            u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize,
            t.len()
        );
        assert_eq!(t.len(), 36 + 8 + 16);
        assert_eq!(t.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let e = &t[44..60];
        assert_eq!(
            u64::from_le_bytes(e[0..8].try_into().unwrap()),
            layout::PCI_ECAM_START
        );
        assert_eq!(&e[8..12], &[0, 0, 0, 0], "segment 0, buses 0 to 0");
    }

    #[test]
    fn pci0_resources() {
        let d = pci0();
        assert!(find(&d, b"PCI0").is_some());
        // _HID PNP0A08, _CID PNP0A03 as EISA IDs (DWordConst).
        let hid = find(&d, b"_HID").unwrap();
        assert_eq!(&d[hid + 4..hid + 9], &[0x0c, 0x41, 0xd0, 0x0a, 0x08]);
        let cid = find(&d, b"_CID").unwrap();
        assert_eq!(&d[cid + 4..cid + 9], &[0x0c, 0x41, 0xd0, 0x0a, 0x03]);
        for name in [b"_SEG", b"_BBN", b"_UID"] {
            let at = find(&d, name).unwrap();
            assert_eq!(d[at + 4], 0x00, "{name:?} is Zero");
        }
        // WordBusNumber 0..0: type 2, min 0, max 0, length 1.
        let bus = [0x88, 0x0d, 0, 2, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert!(find(&d, &bus).is_some(), "bus range");
        // IO (Decode16, 0xCF8, 0xCF8, 1, 8).
        assert!(find(&d, &[0x47, 1, 0xf8, 0x0c, 0xf8, 0x0c, 1, 8]).is_some());
        // WordIO 0x0000-0x0CF7 and 0x0D00-0xFFFF (min, max at +8, +10).
        let word_io = |min: u16, max: u16| {
            let mut v = vec![0x88, 0x0d, 0, 1, 0x0c, 3, 0, 0];
            v.extend_from_slice(&min.to_le_bytes());
            v.extend_from_slice(&max.to_le_bytes());
            v
        };
        assert!(find(&d, &word_io(0, 0xcf7)).is_some());
        assert!(find(&d, &word_io(0xd00, 0xffff)).is_some());
        // DWordMemory 0xC0000000-0xDFFFFFFF, read/write.
        let mut mem = vec![0x87, 0x17, 0, 0, 0x0c, 1, 0, 0, 0, 0];
        mem.extend_from_slice(&0xc000_0000u32.to_le_bytes());
        mem.extend_from_slice(&0xdfff_ffffu32.to_le_bytes());
        assert!(find(&d, &mem).is_some(), "BAR window");
    }

    #[test]
    fn prt_routes_every_slot_and_pin() {
        let mut bytes = Vec::new();
        prt().to_aml_bytes(&mut bytes);
        // PackageOp, a 2-byte PkgLength, 128 elements.
        assert_eq!(bytes[0], 0x12);
        assert_eq!(bytes[3], 128);
        // Slot 3 pin B (1) → GSI 16 + (3 + 1) % 8 = 20: {0x0003FFFF, One, Zero, 20}.
        let entry = [0x12, 0x0b, 4, 0x0c, 0xff, 0xff, 3, 0, 0x01, 0x00, 0x0a, 20];
        assert!(find(&bytes, &entry).is_some());
        // Slot 0 pin A: address 0xFFFF is a WordConst.
        let entry = [0x12, 0x09, 4, 0x0b, 0xff, 0xff, 0x00, 0x00, 0x0a, 16];
        assert!(find(&bytes, &entry).is_some());
    }
}
