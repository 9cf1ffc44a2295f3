//! Direct kernel boot: loading a bzImage or an ELF vmlinux (PVH or 64-bit
//! entry), the initrd and the command line, and the boot information the
//! kernel reads (the Linux zero page or the PVH `hvm_start_info`), including
//! the e820 memory map.

use std::io::{Read, Seek};

use linux_loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::bzimage::{BzImage, Error as BzImageError};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, Error as ElfError, PvhBootCapability};
use linux_loader::loader::{Error as LoaderError, KernelLoader};
use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemoryMmap, ReadVolatile};

use crate::layout::{self, RamRange};

/// Usable RAM in the e820 map.
pub const E820_RAM: u32 = 1;
/// Reserved ranges in the e820 map.
pub const E820_RESERVED: u32 = 2;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// bzImage: the 64-bit entry point is 0x200 bytes into the protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
const PAGE_SIZE: u64 = 0x1000;

/// Errors from loading and configuring the kernel.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("The kernel is neither a bzImage nor an ELF vmlinux")]
    NotAKernel,
    #[error("Cannot load the kernel into guest memory (is --memory large enough?)")]
    KernelLoad(#[source] LoaderError),
    #[error("The initrd ({size} bytes) does not fit in guest memory (at most {room} bytes are free below {limit:#x})")]
    InitrdTooLarge { size: u64, room: u64, limit: u64 },
    #[error("Cannot read the initrd")]
    InitrdRead(#[source] vm_memory::GuestMemoryError),
    #[error("The kernel command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("The kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("Cannot write the boot information into guest memory")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
}

/// How the vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// 64-bit long mode at `entry`, `rsi` = the zero page (bzImage or ELF
    /// without a PVH note).
    Linux64,
    /// 32-bit protected mode, paging off, `ebx` = `hvm_start_info`.
    Pvh,
}

/// A kernel loaded into guest memory.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    pub entry: GuestAddress,
    pub protocol: BootProtocol,
    /// First byte after the loaded image.
    pub end: u64,
    /// The bzImage setup header, if the kernel is a bzImage.
    pub setup_header: Option<setup_header>,
}

/// Where the initrd was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdLocation {
    pub addr: GuestAddress,
    pub size: u64,
}

/// Loads a kernel image, recognising a bzImage first and an ELF second. An
/// ELF with a PVH entry note boots through PVH.
pub fn load_kernel<F>(mem: &GuestMemoryMmap, image: &mut F) -> Result<LoadedKernel, BootError>
where
    F: Read + ReadVolatile + Seek,
{
    let himem = Some(GuestAddress(layout::HIMEM_START));
    match BzImage::load(mem, None, image, himem) {
        Ok(r) => {
            return Ok(LoadedKernel {
                entry: r.kernel_load.unchecked_add(BZIMAGE_64BIT_ENTRY_OFFSET),
                protocol: BootProtocol::Linux64,
                end: r.kernel_end,
                setup_header: r.setup_header,
            })
        }
        Err(LoaderError::Bzimage(BzImageError::InvalidBzImage))
        | Err(LoaderError::Bzimage(BzImageError::ReadBzImageHeader)) => {}
        Err(e) => return Err(BootError::KernelLoad(e)),
    }
    match Elf::load(mem, None, image, himem) {
        Ok(r) => {
            let (entry, protocol) = match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => (addr, BootProtocol::Pvh),
                _ => (r.kernel_load, BootProtocol::Linux64),
            };
            Ok(LoadedKernel {
                entry,
                protocol,
                end: r.kernel_end,
                setup_header: None,
            })
        }
        Err(LoaderError::Elf(ElfError::InvalidElfMagicNumber))
        | Err(LoaderError::Elf(ElfError::ReadElfHeader))
        | Err(LoaderError::Elf(ElfError::SeekElfStart)) => Err(BootError::NotAKernel),
        Err(e) => Err(BootError::KernelLoad(e)),
    }
}

/// Places the initrd as high as possible in RAM below the 32-bit MMIO hole
/// (and below the kernel's `initrd_addr_max`), above the kernel, page aligned.
pub fn load_initrd<F>(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    ram: &[RamRange],
    initrd: &mut F,
    size: u64,
) -> Result<InitrdLocation, BootError>
where
    F: ReadVolatile,
{
    let low_end = ram
        .first()
        .map(|r| r.start + r.size)
        .unwrap_or(0)
        .min(layout::MMIO_HOLE_START);
    let addr_max = kernel
        .setup_header
        .map(|h| u64::from(h.initrd_addr_max) + 1)
        .filter(|&m| m > 1)
        .unwrap_or(layout::MMIO_HOLE_START);
    let limit = low_end.min(addr_max);
    let floor = kernel
        .end
        .max(layout::HIMEM_START)
        .next_multiple_of(PAGE_SIZE);
    let room = limit.saturating_sub(floor);
    if size > room {
        return Err(BootError::InitrdTooLarge { size, room, limit });
    }
    let addr = (limit - size) & !(PAGE_SIZE - 1);
    let len = usize::try_from(size).map_err(|_| BootError::InitrdTooLarge { size, room, limit })?;
    mem.read_exact_volatile_from(GuestAddress(addr), initrd, len)
        .map_err(BootError::InitrdRead)?;
    Ok(InitrdLocation {
        addr: GuestAddress(addr),
        size,
    })
}

/// The e820 map the guest sees: low RAM, the BIOS area (holding the ACPI
/// tables) reserved, RAM from 1 MiB to the MMIO hole, and RAM above 4 GiB.
pub fn e820_map(ram: &[RamRange]) -> Vec<boot_e820_entry> {
    let mut map = vec![
        boot_e820_entry {
            addr: 0,
            size: layout::EBDA_START,
            r#type: E820_RAM,
        },
        boot_e820_entry {
            addr: layout::ACPI_START,
            size: layout::ACPI_END - layout::ACPI_START,
            r#type: E820_RESERVED,
        },
        // PCI ECAM: Linux uses an MCFG region only if it is reserved here.
        boot_e820_entry {
            addr: layout::PCI_ECAM_START,
            size: layout::PCI_ECAM_SIZE,
            r#type: E820_RESERVED,
        },
    ];
    for r in ram {
        let start = r.start.max(layout::HIMEM_START);
        let end = r.start + r.size;
        if end > start {
            map.push(boot_e820_entry {
                addr: start,
                size: end - start,
                r#type: E820_RAM,
            });
        }
    }
    map
}

/// Writes the command line, checking it against the kernel's limit.
fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str, max: usize) -> Result<(), BootError> {
    if cmdline.as_bytes().contains(&0) {
        return Err(BootError::CmdlineNul);
    }
    let max = max.min(layout::CMDLINE_MAX_SIZE);
    // The limit counts the terminating NUL.
    if cmdline.len() + 1 > max {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max: max.saturating_sub(1),
        });
    }
    let mut bytes = Vec::with_capacity(cmdline.len() + 1);
    bytes.extend_from_slice(cmdline.as_bytes());
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(layout::CMDLINE_START))
        .map_err(BootError::GuestMemory)
}

/// Writes everything the kernel reads at entry: the command line and either
/// the zero page (Linux 64-bit boot) or the PVH start info.
pub fn configure_boot(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline: &str,
    initrd: Option<InitrdLocation>,
    rsdp: GuestAddress,
    ram: &[RamRange],
) -> Result<(), BootError> {
    let e820 = e820_map(ram);
    match kernel.protocol {
        BootProtocol::Linux64 => {
            // Kernels before boot protocol 2.06 accept 255 bytes.
            let max = kernel
                .setup_header
                .map(|h| {
                    if h.version >= 0x0206 {
                        h.cmdline_size as usize
                    } else {
                        256
                    }
                })
                .unwrap_or(2048);
            write_cmdline(mem, cmdline, max)?;
            write_zero_page(mem, kernel, cmdline.len(), initrd, rsdp, &e820)
        }
        BootProtocol::Pvh => {
            // PVH has no header to state a limit; Linux's COMMAND_LINE_SIZE is 2048.
            write_cmdline(mem, cmdline, 2048)?;
            write_pvh_start_info(mem, initrd, rsdp, &e820)
        }
    }
}

fn write_zero_page(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline_len: usize,
    initrd: Option<InitrdLocation>,
    rsdp: GuestAddress,
    e820: &[boot_e820_entry],
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    if let Some(hdr) = kernel.setup_header {
        params.hdr = hdr;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = layout::CMDLINE_START as u32;
    params.hdr.cmdline_size = (cmdline_len + 1) as u32;
    if let Some(initrd) = initrd {
        // load_initrd keeps the initrd below 4 GiB.
        params.hdr.ramdisk_image = initrd.addr.raw_value() as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    params.acpi_rsdp_addr = rsdp.raw_value();
    let n = e820.len().min(params.e820_table.len());
    params.e820_table[..n].copy_from_slice(&e820[..n]);
    params.e820_entries = n as u8;
    mem.write_obj(params, GuestAddress(layout::ZERO_PAGE_START))
        .map_err(BootError::GuestMemory)
}

fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    initrd: Option<InitrdLocation>,
    rsdp: GuestAddress,
    e820: &[boot_e820_entry],
) -> Result<(), BootError> {
    let info_size = std::mem::size_of::<hvm_start_info>() as u64;
    let modlist_addr = layout::PVH_INFO_START + info_size;
    let memmap_addr = modlist_addr + std::mem::size_of::<hvm_modlist_entry>() as u64;

    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: layout::CMDLINE_START,
        rsdp_paddr: rsdp.raw_value(),
        memmap_paddr: memmap_addr,
        memmap_entries: e820.len() as u32,
        ..Default::default()
    };
    if let Some(initrd) = initrd {
        info.nr_modules = 1;
        info.modlist_paddr = modlist_addr;
        let module = hvm_modlist_entry {
            paddr: initrd.addr.raw_value(),
            size: initrd.size,
            ..Default::default()
        };
        mem.write_obj(module, GuestAddress(modlist_addr))
            .map_err(BootError::GuestMemory)?;
    }
    for (i, e) in e820.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.r#type,
            reserved: 0,
        };
        let at = memmap_addr + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        mem.write_obj(entry, GuestAddress(at))
            .map_err(BootError::GuestMemory)?;
    }
    mem.write_slice(info.as_slice(), GuestAddress(layout::PVH_INFO_START))
        .map_err(BootError::GuestMemory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn mem(size: u64) -> GuestMemoryMmap {
        let ranges: Vec<_> = layout::ram_ranges(size)
            .iter()
            .map(|r| (GuestAddress(r.start), r.size as usize))
            .collect();
        GuestMemoryMmap::from_ranges(&ranges).unwrap()
    }

    #[test]
    fn garbage_is_not_a_kernel() {
        let m = mem(64 << 20);
        let mut f = Cursor::new(b"#!/bin/sh\necho this is not a kernel\n".repeat(100));
        assert!(matches!(
            load_kernel(&m, &mut f),
            Err(BootError::NotAKernel)
        ));
        let mut empty = Cursor::new(Vec::new());
        assert!(matches!(
            load_kernel(&m, &mut empty),
            Err(BootError::NotAKernel)
        ));
    }

    #[test]
    fn e820_leaves_the_hole_and_bios_area() {
        let ram = layout::ram_ranges(5 << 30);
        let map = e820_map(&ram);
        let total: u64 = map
            .iter()
            .filter(|e| e.r#type == E820_RAM)
            .map(|e| e.size)
            .sum();
        // All RAM but the 384 KiB between the EBDA and 1 MiB.
        assert_eq!(
            total,
            (5 << 30) - (layout::HIMEM_START - layout::EBDA_START)
        );
        for e in map.iter().filter(|e| e.r#type == E820_RAM) {
            let end = e.addr + e.size;
            assert!(end <= layout::MMIO_HOLE_START || e.addr >= layout::RAM_64BIT_START);
        }
        assert!(map.iter().any(|e| e.addr == layout::RAM_64BIT_START));
        assert!(map.iter().any(|e| e.addr == layout::PCI_ECAM_START
            && e.size == layout::PCI_ECAM_SIZE
            && e.r#type == E820_RESERVED));
    }

    fn fake_kernel() -> LoadedKernel {
        LoadedKernel {
            entry: GuestAddress(layout::HIMEM_START),
            protocol: BootProtocol::Pvh,
            end: 0x20_0000,
            setup_header: None,
        }
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        let m = mem(64 << 20);
        let ram = layout::ram_ranges(64 << 20);
        let data = vec![0x5au8; 5000];
        let loc = load_initrd(
            &m,
            &fake_kernel(),
            &ram,
            &mut Cursor::new(data.clone()),
            5000,
        )
        .unwrap();
        assert_eq!(loc.addr.raw_value() % PAGE_SIZE, 0);
        assert!(loc.addr.raw_value() + 5000 <= 64 << 20);
        assert!(loc.addr.raw_value() + 5000 > (64 << 20) - 2 * PAGE_SIZE);
        let mut back = vec![0u8; 5000];
        m.read_slice(&mut back, loc.addr).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn initrd_that_does_not_fit_is_an_error() {
        let m = mem(16 << 20);
        let ram = layout::ram_ranges(16 << 20);
        let err = load_initrd(
            &m,
            &fake_kernel(),
            &ram,
            &mut Cursor::new(Vec::new()),
            32 << 20,
        )
        .unwrap_err();
        assert!(matches!(err, BootError::InitrdTooLarge { .. }), "{err}");
    }

    #[test]
    fn cmdline_limits() {
        let m = mem(16 << 20);
        assert!(write_cmdline(&m, "console=ttyS0", 2048).is_ok());
        assert!(matches!(
            write_cmdline(&m, &"x".repeat(2048), 2048),
            Err(BootError::CmdlineTooLong { .. })
        ));
        assert!(matches!(
            write_cmdline(&m, "a\0b", 2048),
            Err(BootError::CmdlineNul)
        ));
    }

    #[test]
    fn pvh_start_info_is_written() {
        let m = mem(64 << 20);
        let ram = layout::ram_ranges(64 << 20);
        let initrd = InitrdLocation {
            addr: GuestAddress(0x300_0000),
            size: 123,
        };
        configure_boot(
            &m,
            &fake_kernel(),
            "console=ttyS0",
            Some(initrd),
            GuestAddress(layout::ACPI_START),
            &ram,
        )
        .unwrap();
        let info: hvm_start_info = m.read_obj(GuestAddress(layout::PVH_INFO_START)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.rsdp_paddr, layout::ACPI_START);
        assert_eq!(info.memmap_entries as usize, e820_map(&ram).len());
        let module: hvm_modlist_entry = m.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!(module.paddr, 0x300_0000);
        assert_eq!(module.size, 123);
    }

    #[test]
    fn zero_page_is_written_for_elf_without_pvh() {
        let m = mem(64 << 20);
        let ram = layout::ram_ranges(64 << 20);
        let mut k = fake_kernel();
        k.protocol = BootProtocol::Linux64;
        configure_boot(
            &m,
            &k,
            "console=ttyS0",
            None,
            GuestAddress(layout::ACPI_START),
            &ram,
        )
        .unwrap();
        let p: boot_params = m.read_obj(GuestAddress(layout::ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ p.hdr.cmd_line_ptr }, layout::CMDLINE_START as u32);
        assert_eq!({ p.acpi_rsdp_addr }, layout::ACPI_START);
        assert_eq!(p.e820_entries as usize, e820_map(&ram).len());
    }
}
