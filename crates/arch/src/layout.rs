//! The guest physical memory map and the fixed I/O resources of the Keel PC.
//!
//! ```text
//! 0x0000_0000 ┌──────────────────────────────┐
//!             │ real-mode IVT / BDA          │
//! 0x0000_0500 │ GDT, IDT                     │
//! 0x0000_6000 │ PVH start_info + memory map  │
//! 0x0000_7000 │ Linux zero page (boot_params)│
//! 0x0000_9000 │ identity page tables (4 GiB) │
//! 0x0002_0000 │ kernel command line          │
//! 0x0009_fc00 ├──────────────────────────────┤ EBDA (reserved)
//! 0x000a_0000 │ VGA hole / option ROMs       │
//! 0x000e_0000 │ ACPI tables (RSDP first)     │ (reserved)
//! 0x0010_0000 ├──────────────────────────────┤ kernel (HIMEM)
//!             │ RAM ... initrd at its top    │
//! 0xc000_0000 ├──────────────────────────────┤ 32-bit MMIO hole (1 GiB)
//!             │ PCI BAR window (512 MiB)     │
//! 0xe000_0000 │ PCI ECAM, bus 0 (1 MiB)      │ (reserved)
//! 0xfec0_0000 │ IOAPIC                       │
//! 0xfee0_0000 │ LAPIC                        │
//! 0x1_0000_0000 ├────────────────────────────┤ RAM above 4 GiB
//! ```

/// The GDT used for boot (both 64-bit Linux boot and 32-bit PVH boot).
pub const BOOT_GDT_START: u64 = 0x500;
/// The (empty) boot IDT.
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`, followed by its memory map.
pub const PVH_INFO_START: u64 = 0x6000;
/// Linux `boot_params` (the "zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// The first page of the boot page tables (PML4, then PDPT, then 4 PDs).
pub const PML4_START: u64 = 0x9000;
/// The kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// The largest command line we accept, including the NUL terminator.
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// End of the low conventional memory (start of the EBDA).
pub const EBDA_START: u64 = 0x9fc00;
/// Where the ACPI tables go: inside the BIOS area the RSDP is searched in.
pub const ACPI_START: u64 = 0xe0000;
/// End of the BIOS area.
pub const ACPI_END: u64 = 0x100000;
/// Where the kernel is loaded (the 1 MiB "HIMEM" mark).
pub const HIMEM_START: u64 = 0x100000;

/// Start of the 32-bit MMIO hole: RAM stops here and resumes at 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// First address above 4 GiB.
pub const RAM_64BIT_START: u64 = 0x1_0000_0000;
/// The IOAPIC's MMIO registers.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// The local APICs' MMIO registers.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// KVM's TSS for real-mode emulation (three pages below the BIOS ROM).
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
/// KVM's identity map page for real-mode emulation (one page below the TSS).
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// PCI: where memory BARs go (the host bridge's 32-bit `_CRS` window).
pub const PCI_MMIO_START: u64 = MMIO_HOLE_START;
/// PCI: the size of the memory BAR window.
pub const PCI_MMIO_SIZE: u64 = 0x2000_0000;
/// PCI: ECAM (MMCONFIG) for bus 0 (the MCFG table points here; e820 marks
/// it reserved, as Linux requires).
pub const PCI_ECAM_START: u64 = 0xe000_0000;
/// PCI: 1 MiB of ECAM is bus 0.
pub const PCI_ECAM_SIZE: u64 = 1 << 20;
/// PCI configuration mechanism #1: address at 0xCF8, data at 0xCFC..0xD00.
pub const PCI_CONFIG_PORT: u16 = 0xcf8;
/// The ports of configuration mechanism #1.
pub const PCI_CONFIG_PORT_LEN: u16 = 8;
/// PCI: the host bridge forwards I/O ports from here to 0xFFFF (and those
/// below 0xCF8) to the bus, as its `_CRS` says.
pub const PCI_IO_START: u16 = 0x0d00;
/// PCI: where I/O BARs are placed, up to 0xFFFF.
pub const PCI_IO_BAR_START: u16 = 0xc000;
const _: () = assert!(PCI_IO_START >= PCI_CONFIG_PORT + PCI_CONFIG_PORT_LEN);
const _: () = assert!(PCI_IO_BAR_START >= PCI_IO_START);
/// PCI INTx: the first of the 8 IOAPIC inputs PCI interrupts are wired to.
pub const PCI_INTX_GSI_BASE: u32 = 16;
/// PCI INTx: how many IOAPIC inputs they share (GSIs 16..24).
pub const PCI_INTX_GSI_COUNT: u32 = 8;

/// The GSI PCI slot `slot`'s interrupt pin `pin` (0 = INTA .. 3 = INTD) is
/// wired to: the usual swizzle over GSIs 16..23, `16 + (slot + pin) % 8`,
/// which the DSDT's `_PRT` describes.
pub const fn pci_intx_gsi(slot: u8, pin: u8) -> u32 {
    PCI_INTX_GSI_BASE + (slot as u32 + pin as u32) % PCI_INTX_GSI_COUNT
}

/// COM1: the serial console.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's ISA interrupt line.
pub const COM1_IRQ: u32 = 4;
/// The CMOS / RTC index and data ports.
pub const RTC_PORT: u16 = 0x70;
/// The RTC's ISA interrupt line.
pub const RTC_IRQ: u32 = 8;
/// The i8042 keyboard controller data port (status/command is `+4`).
pub const I8042_DATA_PORT: u16 = 0x60;
/// The i8042 status/command port.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// ACPI PM1a event block (status, enable): 4 bytes.
pub const PM1A_EVT_PORT: u16 = 0x600;
/// ACPI PM1a control block: 2 bytes.
pub const PM1A_CNT_PORT: u16 = 0x604;
/// ACPI PM timer: 4 bytes (3.579545 MHz, 24-bit).
pub const PM_TMR_PORT: u16 = 0x608;
/// The ACPI SCI's ISA interrupt line (level-triggered, active high).
pub const SCI_IRQ: u32 = 9;
/// The sleep type that `\_S5` (soft off) names in the DSDT; the PM device
/// powers the VM off when the guest writes it with SLP_EN.
pub const S5_SLEEP_TYPE: u8 = 5;

/// The most vCPUs this board describes (MADT, APIC IDs are 8-bit).
pub const MAX_VCPUS: u8 = 254;

/// One contiguous range of guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    pub start: u64,
    pub size: u64,
}

/// Splits `mem_size` bytes of RAM around the 32-bit MMIO hole.
pub fn ram_ranges(mem_size: u64) -> Vec<RamRange> {
    if mem_size <= MMIO_HOLE_START {
        vec![RamRange {
            start: 0,
            size: mem_size,
        }]
    } else {
        vec![
            RamRange {
                start: 0,
                size: MMIO_HOLE_START,
            },
            RamRange {
                start: RAM_64BIT_START,
                size: mem_size - MMIO_HOLE_START,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range() {
        assert_eq!(
            ram_ranges(256 << 20),
            vec![RamRange {
                start: 0,
                size: 256 << 20
            }]
        );
    }

    #[test]
    fn pci_ranges_sit_in_the_hole_apart_from_the_apics() {
        let bars = PCI_MMIO_START..PCI_MMIO_START + PCI_MMIO_SIZE;
        let ecam = PCI_ECAM_START..PCI_ECAM_START + PCI_ECAM_SIZE;
        for r in [&bars, &ecam] {
            assert!(r.start >= MMIO_HOLE_START && r.end <= IOAPIC_START);
            assert!(r.end <= KVM_IDENTITY_MAP_ADDRESS);
        }
        assert!(bars.end <= ecam.start);
        for port in [COM1_PORT, RTC_PORT, I8042_COMMAND_PORT, PM1A_EVT_PORT] {
            assert!(port < PCI_IO_START);
        }
    }

    #[test]
    fn pci_intx_swizzle_covers_gsis_16_to_23() {
        assert_eq!(pci_intx_gsi(0, 0), 16);
        assert_eq!(pci_intx_gsi(1, 0), 17);
        assert_eq!(pci_intx_gsi(1, 3), 20);
        assert_eq!(pci_intx_gsi(7, 1), 16);
        assert_eq!(pci_intx_gsi(31, 3), 18);
        for slot in 0..32 {
            for pin in 0..4 {
                assert!((16..24).contains(&pci_intx_gsi(slot, pin)));
            }
        }
    }

    #[test]
    fn large_memory_skips_the_hole() {
        let r = ram_ranges(5 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].size, MMIO_HOLE_START);
        assert_eq!(r[1].start, RAM_64BIT_START);
        assert_eq!(r[0].size + r[1].size, 5 << 30);
    }
}
