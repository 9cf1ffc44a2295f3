//! ACPI tables for the Keel PC: a classic (not hardware-reduced) x86 board.
//!
//! The tables live in the BIOS area `[layout::ACPI_START, layout::ACPI_END)`,
//! where a guest that is not told where the RSDP is finds it by scanning:
//!
//! ```text
//! ACPI_START  RSDP (rev 2) ──► XSDT ──► FADT ──► FACS
//!                                  │        └──► DSDT (\_S5, \_SB.COM1, RTC_, KBD_, PCI0)
//!                                  ├──► MADT (LAPICs, IOAPIC, overrides, NMI)
//!                                  └──► MCFG (ECAM of PCI bus 0)
//! ```
//!
//! Every table is built with `acpi_tables`: its RSDP, XSDT, FADT and FACS
//! types, its `Sdt` for the MADT and the DSDT, and its `aml` module for the
//! DSDT's contents. Only what that crate lacks is written here: the MADT's
//! interrupt source override and local APIC NMI entries, and the AML
//! `IRQNoFlags` resource descriptor. The PCI host bridge and the MCFG are in
//! the `pci` submodule.

use acpi_tables::aml::{self, EISAName, Name, Package, Path, ResourceTemplate, Scope, IO};
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{Aml, AmlSink};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError};

use crate::layout;

mod pci;

/// The OEM ID in every table header.
pub const OEM_ID: [u8; 6] = *b"KEEL  ";
/// The OEM table ID in every table header (the FADT's must match the XSDT's).
pub const OEM_TABLE_ID: [u8; 8] = *b"KEELPC  ";
/// The OEM revision in every table header.
pub const OEM_REVISION: u32 = 1;

/// FADT IAPC_BOOT_ARCH: there are ISA devices (COM1, the RTC).
const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
/// FADT IAPC_BOOT_ARCH: an i8042 keyboard controller is present.
const IAPC_8042: u16 = 1 << 1;
/// FADT IAPC_BOOT_ARCH: no VGA.
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;

/// MADT flags: the board also has dual 8259 PICs.
const MADT_PCAT_COMPAT: u32 = 1 << 0;
/// MADT table revision (ACPI 6.3+).
const MADT_REVISION: u8 = 5;
/// DSDT revision: 2 means 64-bit AML integers.
const DSDT_REVISION: u8 = 2;
/// Size of the MADT header: the SDT header, the local APIC address, flags.
const MADT_HEADER_LEN: u32 = 44;
/// Size of an SDT header.
const SDT_HEADER_LEN: u32 = 36;

/// MPS INTI flags: polarity active high.
const MPS_POLARITY_HIGH: u16 = 0b01;
/// MPS INTI flags: trigger mode edge.
const MPS_TRIGGER_EDGE: u16 = 0b01 << 2;
/// MPS INTI flags: trigger mode level.
const MPS_TRIGGER_LEVEL: u16 = 0b11 << 2;

/// The PIT's ISA IRQ and the IOAPIC input it is wired to.
const PIT_IRQ: u8 = 0;
const PIT_GSI: u32 = 2;

const LAPIC_ADDR: u32 = layout::LAPIC_START as u32;
const IOAPIC_ADDR: u32 = layout::IOAPIC_START as u32;
const SCI_IRQ: u8 = layout::SCI_IRQ as u8;
const _: () = assert!(layout::LAPIC_START <= u32::MAX as u64);
const _: () = assert!(layout::IOAPIC_START <= u32::MAX as u64);
const _: () = assert!(layout::SCI_IRQ <= u8::MAX as u32);
const _: () = assert!(layout::ACPI_END <= u32::MAX as u64);

/// What the ACPI tables describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs: APIC IDs and ACPI processor UIDs are `0..num_cpus`.
    pub num_cpus: u8,
}

/// Errors building the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("Invalid vCPU count {0}: the board describes 1 to {max}", max = layout::MAX_VCPUS)]
    InvalidCpuCount(u8),
    #[error("ACPI table {table} ({len} bytes) does not fit below {end:#x}", end = layout::ACPI_END)]
    NoSpace { table: &'static str, len: usize },
    #[error("Cannot write ACPI table {table} at {addr:#x}")]
    Write {
        table: &'static str,
        addr: u64,
        #[source]
        source: GuestMemoryError,
    },
}

/// Writes the RSDP and every table it leads to into `mem`, inside
/// `[layout::ACPI_START, layout::ACPI_END)`, and returns the RSDP's address
/// (for `boot_params.acpi_rsdp_addr` and PVH `start_info.rsdp_paddr`).
pub fn create_acpi_tables<M: GuestMemory>(
    mem: &M,
    cfg: &AcpiConfig,
) -> Result<GuestAddress, AcpiError> {
    if cfg.num_cpus == 0 || cfg.num_cpus > layout::MAX_VCPUS {
        return Err(AcpiError::InvalidCpuCount(cfg.num_cpus));
    }

    let mut w = TableWriter::new(mem);
    let facs = w.write("FACS", &aml_bytes(&FACS::new()), 64)?;
    let dsdt = w.write("DSDT", &dsdt(), 8)?;
    let fadt = w.write("FACP", &fadt(facs, dsdt), 8)?;
    let madt = w.write("APIC", &madt(cfg.num_cpus), 8)?;
    let mcfg = w.write("MCFG", &pci::mcfg(), 8)?;

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for table in [fadt, madt, mcfg] {
        xsdt.add_entry(table);
    }
    let xsdt = w.write("XSDT", &aml_bytes(&xsdt), 8)?;

    let rsdp = aml_bytes(&Rsdp::new(OEM_ID, xsdt));
    w.write_at("RSDP", &rsdp, layout::ACPI_START)?;
    Ok(GuestAddress(layout::ACPI_START))
}

/// Places tables one after the other after the RSDP, each aligned.
struct TableWriter<'a, M> {
    mem: &'a M,
    next: u64,
}

impl<'a, M: GuestMemory> TableWriter<'a, M> {
    fn new(mem: &'a M) -> Self {
        // The RSDP goes first, at ACPI_START (16-byte aligned, as required).
        TableWriter {
            mem,
            next: layout::ACPI_START + Rsdp::len() as u64,
        }
    }

    /// Writes `bytes` at the next `align`-aligned address, returns it.
    fn write(&mut self, table: &'static str, bytes: &[u8], align: u64) -> Result<u64, AcpiError> {
        let addr = self.next.next_multiple_of(align);
        let end = addr
            .checked_add(bytes.len() as u64)
            .filter(|end| *end <= layout::ACPI_END)
            .ok_or(AcpiError::NoSpace {
                table,
                len: bytes.len(),
            })?;
        self.write_at(table, bytes, addr)?;
        self.next = end;
        Ok(addr)
    }

    fn write_at(&self, table: &'static str, bytes: &[u8], addr: u64) -> Result<(), AcpiError> {
        self.mem
            .write_slice(bytes, GuestAddress(addr))
            .map_err(|source| AcpiError::Write {
                table,
                addr,
                source,
            })
    }
}

fn aml_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

/// An I/O port GAS of `bits` bits, accessed in `access` units.
fn io_gas(port: u16, bits: u8, access: AccessSize) -> GAS {
    GAS::new(AddressSpace::SystemIo, bits, 0, access, u64::from(port))
}

/// The FADT (revision 6): fixed-feature PM1a event/control blocks and PM
/// timer, SCI on IRQ 9, ACPI mode always on (no SMI_CMD), fixed power button,
/// no sleep button, 24-bit timer, no reset register.
fn fadt(facs: u64, dsdt: u64) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton);
    // Both tables are below 1 MiB: the 32-bit and 64-bit pointers agree.
    f.firmware_ctrl = (facs as u32).into();
    f.x_firmware_ctrl = facs.into();
    f.dsdt = (dsdt as u32).into();
    f.x_dsdt = dsdt.into();

    f.sci_int = u16::from(SCI_IRQ).into();
    f.smi_cmd = 0.into();
    f.pm1a_evt_blk = u32::from(layout::PM1A_EVT_PORT).into();
    f.pm1_evt_len = 4;
    f.pm1a_cnt_blk = u32::from(layout::PM1A_CNT_PORT).into();
    f.pm1_cnt_len = 2;
    f.pm_tmr_blk = u32::from(layout::PM_TMR_PORT).into();
    f.pm_tmr_len = 4;
    // PM1 event: a 16-bit status register then a 16-bit enable register.
    f.x_pm1a_evt_blk = io_gas(layout::PM1A_EVT_PORT, 32, AccessSize::WordAccess);
    f.x_pm1a_cnt_blk = io_gas(layout::PM1A_CNT_PORT, 16, AccessSize::WordAccess);
    f.x_pm_tmr_blk = io_gas(layout::PM_TMR_PORT, 32, AccessSize::DwordAccess);

    // The CMOS keeps the century at index 0x32, as on every PC.
    f.century = 0x32;
    // MSI is supported (PCI devices use MSI-X): no "MSI not supported" bit.
    f.iapc_boot_arch = (IAPC_LEGACY_DEVICES | IAPC_8042 | IAPC_VGA_NOT_PRESENT).into();
    aml_bytes(&f.finalize())
}

/// MADT interrupt source override (type 2), from an ISA IRQ.
struct InterruptSourceOverride {
    irq: u8,
    gsi: u32,
    flags: u16,
}

impl Aml for InterruptSourceOverride {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(2); // type
        sink.byte(10); // length
        sink.byte(0); // bus: ISA
        sink.byte(self.irq);
        sink.dword(self.gsi);
        sink.word(self.flags);
    }
}

/// MADT local APIC NMI (type 4).
struct LocalApicNmi {
    processor_uid: u8,
    flags: u16,
    lint: u8,
}

impl Aml for LocalApicNmi {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(4); // type
        sink.byte(6); // length
        sink.byte(self.processor_uid);
        sink.word(self.flags);
        sink.byte(self.lint);
    }
}

/// The MADT: one enabled local APIC per vCPU, one IOAPIC (GSIs 0..24), the
/// PIT and SCI overrides and LINT1 as NMI on every processor.
fn madt(num_cpus: u8) -> Vec<u8> {
    let mut madt = Sdt::new(
        *b"APIC",
        MADT_HEADER_LEN,
        MADT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    madt.write_u32(36, LAPIC_ADDR);
    madt.write_u32(40, MADT_PCAT_COMPAT);

    let mut body = Vec::new();
    for id in 0..num_cpus {
        ProcessorLocalApic::new(id, id, EnabledStatus::Enabled).to_aml_bytes(&mut body);
    }
    IoApic::new(num_cpus, IOAPIC_ADDR, 0).to_aml_bytes(&mut body);
    InterruptSourceOverride {
        irq: PIT_IRQ,
        gsi: PIT_GSI,
        flags: MPS_TRIGGER_EDGE,
    }
    .to_aml_bytes(&mut body);
    InterruptSourceOverride {
        irq: SCI_IRQ,
        gsi: u32::from(SCI_IRQ),
        flags: MPS_TRIGGER_LEVEL | MPS_POLARITY_HIGH,
    }
    .to_aml_bytes(&mut body);
    LocalApicNmi {
        processor_uid: 0xff,
        flags: MPS_TRIGGER_EDGE | MPS_POLARITY_HIGH,
        lint: 1,
    }
    .to_aml_bytes(&mut body);
    madt.append_slice(&body);
    madt.as_slice().to_vec()
}

/// The AML small resource descriptor `IRQNoFlags () {irq}`: an ISA interrupt,
/// edge-triggered, active high, exclusive. (`aml::Interrupt` is the extended
/// descriptor, meant for GSIs.)
struct IrqNoFlags(u8);

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let mask = 1u16.checked_shl(u32::from(self.0)).unwrap_or(0);
        sink.byte(0x22); // IRQ descriptor, 2 bytes long
        sink.word(mask);
    }
}

/// `IO (Decode16, port, port, 1, len)`.
fn io(port: u16, len: u8) -> IO {
    IO::new(port, port, 1, len)
}

/// An ISA device with a fixed `_HID`, `_UID` and `_CRS`.
fn isa_device(name: &str, hid: &str, uid: u8, crs: &[&dyn Aml]) -> Vec<u8> {
    let crs = ResourceTemplate::new(crs.to_vec());
    let hid = EISAName::new(hid);
    let hid = Name::new(Path::new("_HID"), &hid);
    let uid = Name::new(Path::new("_UID"), &uid);
    let crs = Name::new(Path::new("_CRS"), &crs);
    aml_bytes(&aml::Device::new(Path::new(name), vec![&hid, &uid, &crs]))
}

/// Raw AML bytes, to nest prebuilt objects.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

/// The DSDT: `\_S5` (soft off), the ISA devices and the PCI host bridge
/// under `\_SB`.
fn dsdt() -> Vec<u8> {
    let s5_type = layout::S5_SLEEP_TYPE;
    let s5_package = Package::new(vec![&s5_type, &s5_type, &aml::ZERO, &aml::ZERO]);
    let s5 = Name::new(Path::new("\\_S5_"), &s5_package);

    let com1 = RawAml(isa_device(
        "COM1",
        "PNP0501",
        0,
        &[
            &io(layout::COM1_PORT, 8),
            &IrqNoFlags(layout::COM1_IRQ as u8),
        ],
    ));
    let rtc = RawAml(isa_device(
        "RTC_",
        "PNP0B00",
        0,
        &[&io(layout::RTC_PORT, 2), &IrqNoFlags(layout::RTC_IRQ as u8)],
    ));
    let kbd = RawAml(isa_device(
        "KBD_",
        "PNP0303",
        0,
        &[
            &io(layout::I8042_DATA_PORT, 1),
            &io(layout::I8042_COMMAND_PORT, 1),
            &IrqNoFlags(I8042_KBD_IRQ),
        ],
    ));
    let pci0 = RawAml(pci::pci0());
    let sb = Scope::new(Path::new("\\_SB_"), vec![&com1, &rtc, &kbd, &pci0]);

    let mut dsdt = Sdt::new(
        *b"DSDT",
        SDT_HEADER_LEN,
        DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    let mut body = aml_bytes(&s5);
    sb.to_aml_bytes(&mut body);
    dsdt.append_slice(&body);
    dsdt.as_slice().to_vec()
}

/// The i8042's keyboard ISA interrupt line.
const I8042_KBD_IRQ: u8 = 1;
const _: () = assert!(layout::COM1_IRQ < 16 && layout::RTC_IRQ < 16);

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn memory(size: usize) -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    fn read(mem: &GuestMemoryMmap<()>, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |acc, x| acc.wrapping_add(*x))
    }

    /// Reads a whole SDT (by its length field), checks its signature,
    /// checksum and that it lies in the ACPI area.
    fn table(mem: &GuestMemoryMmap<()>, addr: u64, signature: &[u8; 4]) -> Vec<u8> {
        let header = read(mem, addr, 36);
        assert_eq!(&header[0..4], signature);
        let len = u32_at(&header, 4) as usize;
        assert!(addr >= layout::ACPI_START && addr + len as u64 <= layout::ACPI_END);
        let t = read(mem, addr, len);
        assert_eq!(
            sum(&t),
            0,
            "{} checksum",
            String::from_utf8_lossy(signature)
        );
        assert_eq!(&t[10..16], &OEM_ID);
        assert_eq!(&t[16..24], &OEM_TABLE_ID);
        t
    }

    struct Tables {
        fadt: Vec<u8>,
        madt: Vec<u8>,
        mcfg: Vec<u8>,
        dsdt: Vec<u8>,
        facs: Vec<u8>,
    }

    fn parse(mem: &GuestMemoryMmap<()>, rsdp: GuestAddress) -> Tables {
        assert_eq!(rsdp.0, layout::ACPI_START);
        assert_eq!(rsdp.0 % 16, 0);
        let r = read(mem, rsdp.0, 36);
        assert_eq!(&r[0..8], b"RSD PTR ");
        assert_eq!(sum(&r[..20]), 0);
        assert_eq!(sum(&r[..36]), 0);
        assert_eq!(r[15], 2, "RSDP revision");
        assert_eq!(u32_at(&r, 20), 36, "RSDP length");

        let xsdt = table(mem, u64_at(&r, 24), b"XSDT");
        let entries: Vec<u64> = xsdt[36..].chunks(8).map(|c| u64_at(c, 0)).collect();
        assert_eq!(entries.len(), 3);
        let sigs: Vec<Vec<u8>> = entries.iter().map(|a| read(mem, *a, 4)).collect();
        assert_eq!(
            sigs,
            vec![b"FACP".to_vec(), b"APIC".to_vec(), b"MCFG".to_vec()]
        );

        let fadt = table(mem, entries[0], b"FACP");
        let madt = table(mem, entries[1], b"APIC");
        let mcfg = table(mem, entries[2], b"MCFG");
        let dsdt = table(mem, u64_at(&fadt, 140), b"DSDT");
        let facs_addr = u64_at(&fadt, 132);
        assert_eq!(facs_addr % 64, 0, "FACS must be 64-byte aligned");
        let facs = read(mem, facs_addr, 64);
        assert_eq!(&facs[0..4], b"FACS");
        assert_eq!(u32_at(&facs, 4), 64);
        Tables {
            fadt,
            madt,
            mcfg,
            dsdt,
            facs,
        }
    }

    fn build(num_cpus: u8) -> Tables {
        let mem = memory(2 << 20);
        let rsdp = create_acpi_tables(&mem, &AcpiConfig { num_cpus }).unwrap();
        parse(&mem, rsdp)
    }

    #[test]
    fn fadt_fields_at_spec_offsets() {
        let t = build(2);
        let f = &t.fadt;
        assert_eq!(f.len(), 276);
        assert_eq!(f[8], 6, "FADT major revision");
        assert_eq!(u32_at(f, 36) as u64, u64_at(f, 132), "FIRMWARE_CTRL");
        assert_eq!(u32_at(f, 40) as u64, u64_at(f, 140), "DSDT");
        assert_eq!(u16_at(f, 46), 9, "SCI_INT");
        assert_eq!(u32_at(f, 48), 0, "SMI_CMD");
        assert_eq!(u32_at(f, 56), u32::from(layout::PM1A_EVT_PORT));
        assert_eq!(u32_at(f, 64), u32::from(layout::PM1A_CNT_PORT));
        assert_eq!(u32_at(f, 76), u32::from(layout::PM_TMR_PORT));
        assert_eq!(u32_at(f, 60), 0, "no PM1b event block");
        assert_eq!(u32_at(f, 80), 0, "no GPE0 block");
        assert_eq!(
            (f[88], f[89], f[91]),
            (4, 2, 4),
            "PM1 evt/cnt, timer lengths"
        );

        let flags = u32_at(f, 112);
        assert_eq!(
            flags,
            (1 << 0) | (1 << 2) | (1 << 5),
            "WBINVD, PROC_C1, SLP_BUTTON"
        );
        assert_eq!(flags & (1 << 4), 0, "fixed-feature power button");
        assert_eq!(flags & (1 << 8), 0, "24-bit PM timer");
        assert_eq!(flags & (1 << 20), 0, "not hardware-reduced");
        assert_eq!(flags & (1 << 10), 0, "no reset register");

        let boot_arch = u16_at(f, 109);
        assert_ne!(boot_arch & (1 << 1), 0, "8042 present");
        assert_ne!(boot_arch & (1 << 2), 0, "VGA not present");
        assert_eq!(boot_arch & (1 << 3), 0, "MSI is supported");
        assert_eq!(boot_arch & (1 << 5), 0, "the CMOS RTC exists");

        // X_ blocks: system I/O GAS (space, bit width, offset, access, address).
        let gas = |off: usize| {
            (
                f[off],
                f[off + 1],
                f[off + 2],
                f[off + 3],
                u64_at(f, off + 4),
            )
        };
        assert_eq!(gas(148), (1, 32, 0, 2, u64::from(layout::PM1A_EVT_PORT)));
        assert_eq!(gas(172), (1, 16, 0, 2, u64::from(layout::PM1A_CNT_PORT)));
        assert_eq!(gas(208), (1, 32, 0, 3, u64::from(layout::PM_TMR_PORT)));
        assert_eq!(gas(160).4, 0, "no X_PM1b event block");
        assert_eq!(t.facs[32], 1, "FACS version");
    }

    /// MADT entries as (type, bytes).
    fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut entries = Vec::new();
        let mut off = 44;
        while off < madt.len() {
            let len = madt[off + 1] as usize;
            assert!(len >= 2 && off + len <= madt.len());
            entries.push((madt[off], madt[off..off + len].to_vec()));
            off += len;
        }
        entries
    }

    fn check_madt(num_cpus: u8) {
        let t = build(num_cpus);
        let m = &t.madt;
        assert_eq!(u32_at(m, 36) as u64, layout::LAPIC_START);
        assert_eq!(u32_at(m, 40), 1, "PCAT_COMPAT");
        let entries = madt_entries(m);

        let lapics: Vec<&Vec<u8>> = entries.iter().filter(|e| e.0 == 0).map(|e| &e.1).collect();
        assert_eq!(lapics.len(), num_cpus as usize);
        for (i, l) in lapics.iter().enumerate() {
            assert_eq!(l.len(), 8);
            assert_eq!((l[2], l[3]), (i as u8, i as u8), "processor UID, APIC ID");
            assert_eq!(u32_at(l, 4), 1, "enabled");
        }

        let ioapics: Vec<&Vec<u8>> = entries.iter().filter(|e| e.0 == 1).map(|e| &e.1).collect();
        assert_eq!(ioapics.len(), 1);
        assert_eq!(ioapics[0][2], num_cpus, "IOAPIC ID");
        assert_eq!(u32_at(ioapics[0], 4) as u64, layout::IOAPIC_START);
        assert_eq!(u32_at(ioapics[0], 8), 0, "GSI base");

        let isos: Vec<(u8, u8, u32, u16)> = entries
            .iter()
            .filter(|e| e.0 == 2)
            .map(|e| (e.1[2], e.1[3], u32_at(&e.1, 4), u16_at(&e.1, 8)))
            .collect();
        assert_eq!(isos, vec![(0, 0, 2, 0b0100), (0, 9, 9, 0b1101)]);

        let nmis: Vec<&Vec<u8>> = entries.iter().filter(|e| e.0 == 4).map(|e| &e.1).collect();
        assert_eq!(nmis.len(), 1);
        assert_eq!(nmis[0], &vec![4, 6, 0xff, 0b0101, 0, 1]);
        assert_eq!(entries.len(), num_cpus as usize + 4);
    }

    #[test]
    fn madt_one_cpu() {
        check_madt(1);
    }

    #[test]
    fn madt_two_cpus() {
        check_madt(2);
    }

    #[test]
    fn madt_max_cpus() {
        check_madt(254);
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn dsdt_has_s5_and_isa_devices() {
        let t = build(1);
        let d = &t.dsdt;
        assert_eq!(d[8], DSDT_REVISION);
        // Name (\_S5_, Package (4) {5, 5, 0, 0})
        let s5 = find(d, b"\\_S5_").expect("\\_S5_ in the DSDT");
        assert_eq!(d[s5 - 1], 0x08, "NameOp");
        assert_eq!(&d[s5 + 5..s5 + 14], &[0x12, 8, 4, 0x0a, 5, 0x0a, 5, 0, 0]);

        assert!(find(d, b"\\_SB_").is_some());
        // Each device, its EISA ID (DWordConst) and its resources.
        let eisa = |id: u32| {
            let mut v = vec![0x0c];
            v.extend_from_slice(&id.to_le_bytes());
            v
        };
        for (name, id, crs) in [
            (
                &b"COM1"[..],
                0x0105_d041u32,
                vec![0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8, 0x22, 0x10, 0, 0x79, 0],
            ),
            (
                &b"RTC_"[..],
                0x000b_d041,
                vec![0x47, 1, 0x70, 0, 0x70, 0, 1, 2, 0x22, 0, 1, 0x79, 0],
            ),
            (
                &b"KBD_"[..],
                0x0303_d041,
                vec![
                    0x47, 1, 0x60, 0, 0x60, 0, 1, 1, 0x47, 1, 0x64, 0, 0x64, 0, 1, 1, 0x22, 2, 0,
                    0x79, 0,
                ],
            ),
        ] {
            let dev = find(d, name).unwrap_or_else(|| panic!("{name:?} in the DSDT"));
            let rest = &d[dev..];
            let hid = find(rest, b"_HID").unwrap();
            assert_eq!(&rest[hid + 4..hid + 9], &eisa(id)[..], "{name:?} _HID");
            assert!(find(rest, &crs).is_some(), "{name:?} _CRS");
        }
    }

    #[test]
    fn mcfg_points_at_the_ecam_of_bus_0() {
        let t = build(1);
        let m = &t.mcfg;
        assert_eq!(m[8], 1, "MCFG revision");
        assert_eq!(m.len(), 60, "header, 8 reserved bytes, one 16-byte entry");
        assert_eq!(u64_at(m, 44), layout::PCI_ECAM_START);
        assert_eq!(u16_at(m, 52), 0, "segment");
        assert_eq!((m[54], m[55]), (0, 0), "buses 0 to 0");
        // 1 MiB per bus: bus 0's ECAM is exactly the reserved range.
        assert_eq!(layout::PCI_ECAM_SIZE, 1 << 20);
    }

    #[test]
    fn dsdt_has_the_pci_host_bridge_in_sb() {
        let t = build(1);
        let d = &t.dsdt;
        let sb = find(d, b"\\_SB_").unwrap();
        let pci0 = find(d, b"PCI0").expect("PCI0 in the DSDT");
        assert!(pci0 > sb);
        assert_eq!(d[pci0 - 4..pci0 - 2], [0x5b, 0x82], "DeviceOp");
        let rest = &d[pci0..];
        let hid = find(rest, b"_HID").unwrap();
        assert_eq!(&rest[hid + 4..hid + 9], &[0x0c, 0x41, 0xd0, 0x0a, 0x08]);
        for name in [&b"_CID"[..], b"_SEG", b"_BBN", b"_UID", b"_CRS", b"_PRT"] {
            assert!(find(rest, name).is_some(), "{name:?} in PCI0");
        }
    }

    #[test]
    fn too_many_or_no_cpus_is_an_error() {
        let mem = memory(2 << 20);
        for n in [0, 255] {
            assert!(matches!(
                create_acpi_tables(&mem, &AcpiConfig { num_cpus: n }),
                Err(AcpiError::InvalidCpuCount(c)) if c == n
            ));
        }
    }

    #[test]
    fn too_small_memory_is_an_error() {
        // No RAM at the ACPI area at all.
        let mem = memory(layout::ACPI_START as usize);
        let err = create_acpi_tables(&mem, &AcpiConfig { num_cpus: 1 }).unwrap_err();
        assert!(matches!(err, AcpiError::Write { .. }), "{err}");
        // RAM that ends in the middle of the tables.
        let mem = memory(layout::ACPI_START as usize + 0x100);
        let err = create_acpi_tables(&mem, &AcpiConfig { num_cpus: 4 }).unwrap_err();
        assert!(matches!(err, AcpiError::Write { .. }), "{err}");
    }

    #[test]
    fn tables_that_do_not_fit_are_an_error() {
        let mem = memory(2 << 20);
        let mut w = TableWriter::new(&mem);
        let big = vec![0u8; (layout::ACPI_END - layout::ACPI_START) as usize];
        let err = w.write("BIG!", &big, 8).unwrap_err();
        assert!(
            matches!(err, AcpiError::NoSpace { table: "BIG!", .. }),
            "{err}"
        );
        // What fits still does, after the RSDP.
        let addr = w.write("SMAL", &[1, 2, 3], 16).unwrap();
        assert_eq!(addr, layout::ACPI_START + 48);
    }

    /// Disassembles the DSDT with iasl when it is installed (Debian package
    /// acpica-tools); skipped otherwise.
    #[test]
    fn iasl_disassembles_the_dsdt() {
        let Ok(out) = std::process::Command::new("iasl").arg("-v").output() else {
            eprintln!("iasl not installed: skipping");
            return;
        };
        assert!(out.status.success());
        let t = build(2);
        let dir = std::env::temp_dir().join(format!("keel-acpi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut dsl = String::new();
        for (name, bytes) in [
            ("dsdt", &t.dsdt),
            ("facp", &t.fadt),
            ("apic", &t.madt),
            ("mcfg", &t.mcfg),
        ] {
            let aml = dir.join(format!("{name}.aml"));
            std::fs::write(&aml, bytes).unwrap();
            let out = std::process::Command::new("iasl")
                .arg("-d")
                .arg(&aml)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            dsl.push_str(&std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap());
        }
        std::fs::remove_dir_all(&dir).unwrap();
        // Compare without iasl's `//` comments and with whitespace collapsed:
        // iasl versions comment and indent differently.
        let dsl = dsl
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(" ");
        let dsl = dsl.split_whitespace().collect::<Vec<_>>().join(" ");
        for want in [
            "Name (\\_S5, Package (0x04)",
            "Device (COM1)",
            "EisaId (\"PNP0501\")",
            "IRQNoFlags () {4}",
            "IRQNoFlags () {8}",
            "IRQNoFlags () {1}",
            "EisaId (\"PNP0B00\")",
            "EisaId (\"PNP0303\")",
            "SCI Interrupt : 0009",
            "Interrupt Source Override",
            "Device (PCI0)",
            "EisaId (\"PNP0A08\")",
            "EisaId (\"PNP0A03\")",
            "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0x0000, 0x0000, 0x0000, 0x0000, 0x0001",
            "IO (Decode16, 0x0CF8, 0x0CF8, 0x01, 0x08, )",
            "0x0000, 0x0000, 0x0CF7, 0x0000, 0x0CF8",
            "0x0000, 0x0D00, 0xFFFF, 0x0000, 0xF300",
            "0x00000000, 0xC0000000, 0xDFFFFFFF, 0x00000000, 0x20000000",
            "Name (_PRT, Package (0x80)",
            "Package (0x04) { 0x001FFFFF, 0x03, Zero, 0x12 }",
            "Base Address : 00000000E0000000",
            "Segment Group Number : 0000",
            "End Bus Number : 00",
        ] {
            assert!(dsl.contains(want), "{want:?} not in:\n{dsl}");
        }
        assert!(!dsl.contains("Error"), "{dsl}");
    }
}
