//! The initial state of a vCPU: MSRs, FPU, local APIC, and for the boot vCPU
//! the registers, segments and page tables its boot protocol asks for.
//!
//! Linux 64-bit boot (Documentation/arch/x86/boot.rst): long mode, paging on
//! with an identity map covering the kernel, zero page and command line
//! (we map the first 4 GiB), `__BOOT_CS` = 0x10 and `__BOOT_DS` = 0x18 flat,
//! `rsi` = zero page. PVH (xen/arch-x86/hvm/start_info.h): 32-bit protected
//! mode, paging off, flat 32-bit CS/DS, `ebx` = `hvm_start_info`.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::boot::BootProtocol;
use crate::layout;

/// Errors from setting up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("Cannot write the boot GDT, IDT or page tables into guest memory")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
    #[error("KVM refused the vCPU's {what}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM accepted only {set} of {total} MSRs")]
    Msrs { set: usize, total: usize },
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
    move |source| RegsError::Kvm { what, source }
}

// GDT slots (selector = index * 8).
const GDT_CODE32: usize = 1;
const GDT_CODE64: usize = 2; // __BOOT_CS
const GDT_DATA: usize = 3; // __BOOT_DS
const GDT_TSS: usize = 4;

/// The boot GDT: null, 32-bit code (PVH), 64-bit code, flat data, TSS.
/// Each entry is (access byte | flags nibble << 12, base, limit).
const GDT: [(u16, u32, u32); 5] = [
    (0, 0, 0),
    (0xc09b, 0, 0xfffff),
    (0xa09b, 0, 0xfffff),
    (0xc093, 0, 0xfffff),
    (0x808b, 0, 0xfffff),
];

/// Encodes a segment descriptor.
fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (u64::from(flags), u64::from(base), u64::from(limit));
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The KVM view of GDT slot `index`.
fn segment(index: usize) -> kvm_segment {
    let (flags, base, limit) = GDT[index];
    let access = flags & 0xff;
    let nibble = (flags >> 12) & 0xf;
    let granular = nibble & 0x8 != 0;
    let present = (access >> 7) & 1;
    kvm_segment {
        base: u64::from(base),
        limit: if granular {
            (limit << 12) | 0xfff
        } else {
            limit
        },
        selector: (index * 8) as u16,
        type_: (access & 0xf) as u8,
        present: present as u8,
        dpl: ((access >> 5) & 0x3) as u8,
        db: ((nibble >> 2) & 1) as u8,
        s: ((access >> 4) & 1) as u8,
        l: ((nibble >> 1) & 1) as u8,
        g: granular as u8,
        avl: (nibble & 1) as u8,
        unusable: (present == 0) as u8,
        padding: 0,
    }
}

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const PDPT_START: u64 = layout::PML4_START + 0x1000;
const PD_START: u64 = layout::PML4_START + 0x2000;
/// Gigabytes identity-mapped for the 64-bit boot.
const IDENTITY_MAPPED_GIB: u64 = 4;

/// Writes the boot GDT, an empty IDT and (for 64-bit boot) identity page
/// tables for the first 4 GiB. Called once per boot.
pub fn write_boot_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    for (i, &(flags, base, limit)) in GDT.iter().enumerate() {
        let at = layout::BOOT_GDT_START + (i * 8) as u64;
        mem.write_obj(gdt_entry(flags, base, limit), GuestAddress(at))
            .map_err(RegsError::GuestMemory)?;
    }
    mem.write_obj(0u64, GuestAddress(layout::BOOT_IDT_START))
        .map_err(RegsError::GuestMemory)?;

    // PML4[0] -> PDPT; PDPT[0..4] -> 4 PDs of 2 MiB pages.
    let present_rw = 0x3;
    mem.write_obj(PDPT_START | present_rw, GuestAddress(layout::PML4_START))
        .map_err(RegsError::GuestMemory)?;
    for gib in 0..IDENTITY_MAPPED_GIB {
        let pd = PD_START + gib * 0x1000;
        mem.write_obj(pd | present_rw, GuestAddress(PDPT_START + gib * 8))
            .map_err(RegsError::GuestMemory)?;
        let entries: Vec<u8> = (0..512u64)
            .flat_map(|i| ((((gib << 9) + i) << 21) | 0x83).to_le_bytes())
            .collect();
        mem.write_slice(&entries, GuestAddress(pd))
            .map_err(RegsError::GuestMemory)?;
    }
    Ok(())
}

/// Sets the boot vCPU's segment and control registers for `protocol`.
pub fn setup_sregs(vcpu: &VcpuFd, protocol: BootProtocol) -> Result<(), RegsError> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(kvm("special registers"))?;
    let (code, data) = match protocol {
        BootProtocol::Linux64 => (segment(GDT_CODE64), segment(GDT_DATA)),
        BootProtocol::Pvh => (segment(GDT_CODE32), segment(GDT_DATA)),
    };
    sregs.gdt.base = layout::BOOT_GDT_START;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = layout::BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(GDT_TSS);
    match protocol {
        BootProtocol::Linux64 => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.cr3 = layout::PML4_START;
            sregs.cr4 = X86_CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
        BootProtocol::Pvh => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    vcpu.set_sregs(&sregs).map_err(kvm("special registers"))
}

/// Sets the boot vCPU's general registers for `protocol`.
pub fn setup_regs(vcpu: &VcpuFd, protocol: BootProtocol, entry: u64) -> Result<(), RegsError> {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        ..Default::default()
    };
    match protocol {
        BootProtocol::Linux64 => {
            regs.rsp = layout::BOOT_STACK_POINTER;
            regs.rbp = layout::BOOT_STACK_POINTER;
            regs.rsi = layout::ZERO_PAGE_START;
        }
        BootProtocol::Pvh => regs.rbx = layout::PVH_INFO_START,
    }
    vcpu.set_regs(&regs).map_err(kvm("general registers"))
}

/// Sets the FPU to its power-on control words.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("FPU state"))
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default memory type write-back.
const MTRR_ENABLE_DEFAULT_WB: u64 = (1 << 11) | 6;

/// The MSR values every vCPU starts with.
pub fn boot_msrs() -> Vec<(u32, u64)> {
    vec![
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_DEFAULT_WB),
    ]
}

/// Sets the boot MSRs.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let entries: Vec<kvm_msr_entry> = boot_msrs()
        .into_iter()
        .map(|(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|_| RegsError::Msrs {
        set: 0,
        total: entries.len(),
    })?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm("MSRs"))?;
    if set != entries.len() {
        return Err(RegsError::Msrs {
            set,
            total: entries.len(),
        });
    }
    Ok(())
}

const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Routes LINT0 to the 8259 PIC (ExtINT) and LINT1 to NMI, as a PC's BIOS
/// leaves them.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut lapic = vcpu.get_lapic().map_err(kvm("local APIC"))?;
    for (reg, mode) in [
        (APIC_LVT_LINT0, APIC_MODE_EXTINT),
        (APIC_LVT_LINT1, APIC_MODE_NMI),
    ] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[reg + i] as u8);
        let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (i, b) in value.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = *b as _;
        }
    }
    vcpu.set_lapic(&lapic).map_err(kvm("local APIC"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_encode_like_the_manual() {
        // A flat 64-bit code segment and a flat data segment.
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc093, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        assert_eq!(gdt_entry(0x808b, 0, 0xfffff), 0x008f_8b00_0000_ffff);
        assert_eq!(
            gdt_entry(0xc09b, 0x1234_5678, 0xabcde),
            0x12ca_9b34_5678_bcde
        );
    }

    #[test]
    fn segments_follow_the_boot_protocols() {
        let cs64 = segment(GDT_CODE64);
        assert_eq!(cs64.selector, 0x10, "__BOOT_CS");
        assert_eq!((cs64.l, cs64.db, cs64.present), (1, 0, 1));
        let ds = segment(GDT_DATA);
        assert_eq!(ds.selector, 0x18, "__BOOT_DS");
        assert_eq!(ds.limit, 0xffff_ffff);
        let cs32 = segment(GDT_CODE32);
        assert_eq!((cs32.l, cs32.db, cs32.g), (0, 1, 1));
        assert_eq!(cs32.type_, 0xb);
        assert_eq!(segment(0).unusable, 1);
    }

    #[test]
    fn page_tables_identity_map_4gib() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_boot_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(layout::PML4_START)).unwrap();
        assert_eq!(pml4 & !0xfff, PDPT_START);
        let pdpt3: u64 = mem.read_obj(GuestAddress(PDPT_START + 3 * 8)).unwrap();
        let pd3 = pdpt3 & !0xfff;
        let last: u64 = mem.read_obj(GuestAddress(pd3 + 511 * 8)).unwrap();
        assert_eq!(last & !0xfff, (4 << 30) - (2 << 20));
        assert_eq!(last & 0x83, 0x83);
    }
}
