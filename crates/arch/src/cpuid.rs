//! The CPUID one vCPU sees, built from what `KVM_GET_SUPPORTED_CPUID` returns.
//!
//! [`setup_cpuid`] takes KVM's supported set and fixes what KVM leaves to the
//! VMM:
//!
//! - **Identity** (leaf 0x1): initial APIC ID = vCPU id, logical processor
//!   count, CLFLUSH line size, HTT, and the "hypervisor present" bit.
//! - **Topology**: one socket of `num_cpus` cores, one thread per core, one
//!   node; APIC ID = x2APIC ID = vCPU id. Intel-style leaves 0x4, 0xB and 0x1F
//!   and, on AMD (and Hygon), leaves 0x80000001 (CmpLegacy), 0x80000008
//!   (NC, ApicIdCoreIdSize), 0x8000001D and 0x8000001E all say the same.
//!   L1/L2 caches are per core, L3 is shared by the package.
//! - **Hypervisor leaves**: Keel names itself in the first hypervisor range,
//!   and KVM's own paravirtual leaves move one range up:
//!
//! ```text
//! 0x40000000  EAX = 0x40000001, EBX ECX EDX = "KeelKeelKeel"   (Keel's range)
//! 0x40000001  Keel's interface: all zero (version 0, no features)
//! 0x40000100  EAX = 0x40000101, EBX ECX EDX = "KVMKVMKVM\0\0\0" (KVM's range)
//! 0x40000101  KVM's PV features (EAX) and hints (EDX), as KVM reported them
//! ```
//!
//! This is how other hypervisors expose two interfaces (Hyper-V's leaves at
//! 0x40000000 and KVM's at 0x40000100): a Linux guest's `kvm_cpuid_base()`
//! scans 0x40000000..0x40010000 in steps of 0x100 for KVM's signature, and so
//! does the host's KVM when it looks up the guest's PV features and
//! signature in the CPUID we set. kvm-clock, PV EOI, PV TLB flush and the
//! other PV features keep working.
//!
//! Calling [`setup_cpuid`] again on its own output is harmless: the
//! hypervisor leaves are moved only once.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

use crate::layout;

/// The first hypervisor CPUID leaf: Keel's.
pub const KEEL_CPUID_BASE: u32 = 0x4000_0000;
/// Where KVM's hypervisor leaves are moved to.
pub const KVM_CPUID_BASE: u32 = 0x4000_0100;
/// Keel's CPUID signature, in EBX, ECX, EDX of [`KEEL_CPUID_BASE`].
pub const KEEL_SIGNATURE: [u8; 12] = *b"KeelKeelKeel";
/// The highest leaf of Keel's range.
pub const KEEL_CPUID_MAX: u32 = KEEL_CPUID_BASE + 1;
/// The size of one hypervisor leaf range.
const HYPERVISOR_RANGE: u32 = 0x100;

/// Errors adapting the CPUID to one vCPU.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    #[error("Invalid vCPU count {0}: the board describes 1 to {max}", max = layout::MAX_VCPUS)]
    InvalidCpuCount(u8),
    #[error("Invalid vCPU id {vcpu_id} for {num_cpus} vCPUs")]
    InvalidVcpuId { vcpu_id: u8, num_cpus: u8 },
    #[error("CPUID table is full: cannot add leaf {function:#x} subleaf {index}")]
    TableFull { function: u32, index: u32 },
}

// Leaf 0x1.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// CLFLUSH line size, in 8-byte units (64 bytes).
const CLFLUSH_LINE_SIZE: u32 = 8;

// Leaf 0xB / 0x1F level types.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

// Leaf 0x80000001 ECX.
const AMD_ECX_CMP_LEGACY: u32 = 1 << 1;
const AMD_ECX_TOPOEXT: u32 = 1 << 22;

/// The CPU vendor KVM reports in leaf 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vendor {
    /// Intel and anything not AMD-like: Intel's topology leaves.
    Intel,
    /// AMD and Hygon: AMD's extended topology leaves as well.
    Amd,
}

/// The package as the guest sees it: `num_cpus` cores of one thread.
#[derive(Clone, Copy, Debug)]
struct Topology {
    vcpu_id: u8,
    num_cpus: u8,
}

impl Topology {
    /// `num_cpus` rounded up to a power of two: the APIC IDs a package reserves.
    fn cpus_pow2(self) -> u32 {
        u32::from(self.num_cpus).next_power_of_two()
    }

    /// Bits of the APIC ID that number the cores: ceil(log2(num_cpus)).
    fn core_shift(self) -> u32 {
        self.cpus_pow2().trailing_zeros()
    }

    fn apic_id(self) -> u32 {
        u32::from(self.vcpu_id)
    }
}

/// Turns `cpuid`, the set `KVM_GET_SUPPORTED_CPUID` returned, into what vCPU
/// `vcpu_id` of `num_cpus` sees. On error, `cpuid` may be partly changed.
pub fn setup_cpuid(cpuid: &mut CpuId, vcpu_id: u8, num_cpus: u8) -> Result<(), CpuidError> {
    if num_cpus == 0 || num_cpus > layout::MAX_VCPUS {
        return Err(CpuidError::InvalidCpuCount(num_cpus));
    }
    if vcpu_id >= num_cpus {
        return Err(CpuidError::InvalidVcpuId { vcpu_id, num_cpus });
    }
    let topo = Topology { vcpu_id, num_cpus };
    let vendor = vendor(cpuid);
    let max_basic = find(cpuid, 0, 0).map_or(0, |e| e.eax);

    update_leaf1(cpuid, topo);
    update_cache_leaves(cpuid, 0x4, topo);
    if max_basic >= 0xb {
        update_extended_topology(cpuid, 0xb, topo)?;
    }
    if max_basic >= 0x1f && cpuid.as_slice().iter().any(|e| e.function == 0x1f) {
        update_extended_topology(cpuid, 0x1f, topo)?;
    }
    if vendor == Vendor::Amd {
        update_amd_topology(cpuid, topo)?;
    }
    setup_hypervisor_leaves(cpuid)
}

/// Advertises the TSC-deadline timer (leaf 0x1 ECX bit 24). KVM emulates it
/// in its LAPIC but leaves it out of KVM_GET_SUPPORTED_CPUID; call this when
/// KVM_CAP_TSC_DEADLINE_TIMER is present.
pub fn enable_tsc_deadline(cpuid: &mut CpuId) {
    if let Some(leaf1) = find(cpuid, 1, 0) {
        leaf1.ecx |= 1 << 24;
    }
}

fn vendor(cpuid: &CpuId) -> Vendor {
    let Some(leaf0) = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0 && e.index == 0)
    else {
        return Vendor::Intel;
    };
    let mut name = [0u8; 12];
    name[0..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    name[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    name[8..12].copy_from_slice(&leaf0.ecx.to_le_bytes());
    match &name {
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Intel,
    }
}

/// The entry for `function`/`index` (entries whose index is not significant
/// match any index).
fn find(cpuid: &mut CpuId, function: u32, index: u32) -> Option<&mut kvm_cpuid_entry2> {
    cpuid.as_mut_slice().iter_mut().find(|e| {
        e.function == function
            && (e.index == index || e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0)
    })
}

/// The entry for `function`/`index`, added (zeroed) if missing.
fn find_or_add(
    cpuid: &mut CpuId,
    function: u32,
    index: u32,
    flags: u32,
) -> Result<&mut kvm_cpuid_entry2, CpuidError> {
    let pos = cpuid.as_slice().iter().position(|e| {
        e.function == function
            && (e.index == index || e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0)
    });
    let pos = match pos {
        Some(pos) => pos,
        None => {
            let entry = kvm_cpuid_entry2 {
                function,
                index,
                flags,
                ..Default::default()
            };
            cpuid
                .push(entry)
                .map_err(|_| CpuidError::TableFull { function, index })?;
            cpuid.as_slice().len() - 1
        }
    };
    Ok(&mut cpuid.as_mut_slice()[pos])
}

/// Replaces bits `[lo, lo + width)` of `reg` with `value`.
fn set_bits(reg: &mut u32, lo: u32, width: u32, value: u32) {
    let mask = (u32::MAX >> (32 - width)) << lo;
    *reg = (*reg & !mask) | ((value << lo) & mask);
}

fn update_leaf1(cpuid: &mut CpuId, topo: Topology) {
    let Some(e) = find(cpuid, 0x1, 0) else {
        return;
    };
    set_bits(&mut e.ebx, 24, 8, topo.apic_id());
    set_bits(&mut e.ebx, 16, 8, topo.cpus_pow2().min(0xff));
    set_bits(&mut e.ebx, 8, 8, CLFLUSH_LINE_SIZE);
    if topo.num_cpus > 1 {
        e.edx |= LEAF1_EDX_HTT;
    } else {
        e.edx &= !LEAF1_EDX_HTT;
    }
    // TSC-deadline (ECX bit 24) stays as KVM reported it.
    e.ecx |= LEAF1_ECX_HYPERVISOR;
}

/// Deterministic cache parameters: Intel leaf 0x4 and AMD leaf 0x8000001D
/// have the same EAX layout. L1 and L2 belong to one core (of one thread),
/// L3 to the package.
fn update_cache_leaves(cpuid: &mut CpuId, function: u32, topo: Topology) {
    for e in cpuid
        .as_mut_slice()
        .iter_mut()
        .filter(|e| e.function == function)
    {
        let cache_type = e.eax & 0x1f;
        if cache_type == 0 {
            continue;
        }
        let level = (e.eax >> 5) & 0x7;
        let sharing = if level >= 3 { topo.cpus_pow2() } else { 1 };
        set_bits(&mut e.eax, 14, 12, sharing - 1);
        if function == 0x4 {
            // Addressable core IDs in the package, minus one.
            set_bits(&mut e.eax, 26, 6, topo.cpus_pow2().min(64) - 1);
        }
    }
}

/// Leaf 0xB or 0x1F: subleaf 0 is the SMT level (1 thread per core), subleaf
/// 1 the core level (the whole package), later subleaves are invalid. EDX is
/// the x2APIC ID on every subleaf.
fn update_extended_topology(
    cpuid: &mut CpuId,
    function: u32,
    topo: Topology,
) -> Result<(), CpuidError> {
    for e in cpuid
        .as_mut_slice()
        .iter_mut()
        .filter(|e| e.function == function)
    {
        e.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    }
    for index in 0..2 {
        find_or_add(cpuid, function, index, KVM_CPUID_FLAG_SIGNIFCANT_INDEX)?;
    }
    for e in cpuid
        .as_mut_slice()
        .iter_mut()
        .filter(|e| e.function == function)
    {
        let (shift, count, level_type) = match e.index {
            0 => (0, 1, LEVEL_TYPE_SMT),
            1 => (topo.core_shift(), u32::from(topo.num_cpus), LEVEL_TYPE_CORE),
            _ => (0, 0, 0),
        };
        e.eax = shift;
        e.ebx = count;
        e.ecx = (level_type << 8) | (e.index & 0xff);
        e.edx = topo.apic_id();
    }
    Ok(())
}

fn update_amd_topology(cpuid: &mut CpuId, topo: Topology) -> Result<(), CpuidError> {
    let mut topoext = false;
    if let Some(e) = find(cpuid, 0x8000_0001, 0) {
        if topo.num_cpus > 1 {
            e.ecx |= AMD_ECX_CMP_LEGACY;
        } else {
            e.ecx &= !AMD_ECX_CMP_LEGACY;
        }
        topoext = e.ecx & AMD_ECX_TOPOEXT != 0;
    }
    if let Some(e) = find(cpuid, 0x8000_0008, 0) {
        // NC: cores in the package minus one; ApicIdCoreIdSize: their bits.
        set_bits(&mut e.ecx, 0, 8, u32::from(topo.num_cpus) - 1);
        set_bits(&mut e.ecx, 12, 4, topo.core_shift());
    }
    update_cache_leaves(cpuid, 0x8000_001d, topo);

    let present = cpuid.as_slice().iter().any(|e| e.function == 0x8000_001e);
    if present || topoext {
        let e = find_or_add(cpuid, 0x8000_001e, 0, 0)?;
        // Extended APIC ID; compute unit (core) ID and threads per core
        // minus one; node 0 of one node per package.
        e.eax = topo.apic_id();
        e.ebx = topo.apic_id();
        e.ecx = 0;
        if let Some(max) = find(cpuid, 0x8000_0000, 0) {
            max.eax = max.eax.max(0x8000_001e);
        }
    }
    Ok(())
}

fn signature_regs(sig: &[u8; 12]) -> (u32, u32, u32) {
    let reg = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
    (reg(0), reg(4), reg(8))
}

fn is_first_range(function: u32) -> bool {
    (KEEL_CPUID_BASE..KEEL_CPUID_BASE + HYPERVISOR_RANGE).contains(&function)
}

/// Moves the leaves KVM reports at 0x40000000.. to 0x40000100.., and puts
/// Keel's at 0x40000000.
fn setup_hypervisor_leaves(cpuid: &mut CpuId) -> Result<(), CpuidError> {
    let keel = signature_regs(&KEEL_SIGNATURE);
    if let Some(base) = find(cpuid, KEEL_CPUID_BASE, 0) {
        if (base.ebx, base.ecx, base.edx) == keel {
            return Ok(());
        }
    }

    let second_range = KVM_CPUID_BASE..KVM_CPUID_BASE + HYPERVISOR_RANGE;
    if cpuid.as_slice().iter().any(|e| is_first_range(e.function)) {
        cpuid.retain(|e| !second_range.contains(&e.function));
        let mut max = KVM_CPUID_BASE;
        for e in cpuid
            .as_mut_slice()
            .iter_mut()
            .filter(|e| is_first_range(e.function))
        {
            e.function += HYPERVISOR_RANGE;
            max = max.max(e.function);
        }
        if let Some(base) = find(cpuid, KVM_CPUID_BASE, 0) {
            base.eax = max;
        }
    }

    let base = find_or_add(cpuid, KEEL_CPUID_BASE, 0, 0)?;
    (base.eax, base.ebx, base.ecx, base.edx) = (KEEL_CPUID_MAX, keel.0, keel.1, keel.2);
    let features = find_or_add(cpuid, KEEL_CPUID_BASE + 1, 0, 0)?;
    (features.eax, features.ebx, features.ecx, features.edx) = (0, 0, 0, 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: u32 = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;

    fn e(function: u32, index: u32, flags: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    /// Leaf 0 with `max` and a vendor string (EBX, EDX, ECX order).
    fn leaf0(max: u32, vendor: &[u8; 12]) -> kvm_cpuid_entry2 {
        let (ebx, edx, ecx) = signature_regs(vendor);
        e(0, 0, 0, [max, ebx, ecx, edx])
    }

    fn kvm_leaves() -> [kvm_cpuid_entry2; 2] {
        let (b, c, d) = signature_regs(b"KVMKVMKVM\0\0\0");
        [
            e(0x4000_0000, 0, 0, [0x4000_0001, b, c, d]),
            e(0x4000_0001, 0, 0, [0x0100_7afb, 0, 0, 1]),
        ]
    }

    const LEAF1_TSC_DEADLINE: u32 = 1 << 24;

    /// What KVM on an Intel host might report (older KVM: 0xB passes the
    /// host's topology through; 0x1F only subleaf 0).
    fn intel() -> Vec<kvm_cpuid_entry2> {
        let mut v = vec![
            leaf0(0x1f, b"GenuineIntel"),
            e(
                1,
                0,
                0,
                [
                    0x906ea,
                    (5 << 24) | (16 << 16) | (8 << 8) | 0x2a,
                    0x77fa_3203 | LEAF1_TSC_DEADLINE,
                    0xbfeb_fbff,
                ],
            ),
            e(4, 0, SIG, [0x1c00_4121, 0x01c0_003f, 0x3f, 0]),
            e(4, 1, SIG, [0x1c00_4122, 0x01c0_003f, 0x3f, 0]),
            e(4, 2, SIG, [0x1c00_4143, 0x00c0_003f, 0x3ff, 0]),
            e(4, 3, SIG, [0x1c03_c163, 0x02c0_003f, 0x2fff, 6]),
            e(4, 4, SIG, [0, 0, 0, 0]),
            e(0xb, 0, SIG, [1, 2, 0x100, 5]),
            e(0xb, 1, SIG, [5, 24, 0x201, 5]),
            e(0xb, 2, SIG, [0, 0, 2, 5]),
            e(0x1f, 0, SIG, [0, 0, 0, 0]),
            e(0x8000_0000, 0, 0, [0x8000_0008, 0, 0, 0]),
            e(0x8000_0001, 0, 0, [0, 0, 0x121, 0x2c10_0800]),
            e(0x8000_0008, 0, 0, [0x3027, 0, 0, 0]),
        ];
        v.extend(kvm_leaves());
        v
    }

    /// What KVM on an AMD EPYC host might report (newer KVM: 0xB and
    /// 0x8000001E left to the VMM, zeroed).
    fn amd() -> Vec<kvm_cpuid_entry2> {
        let mut v = vec![
            leaf0(0xd, b"AuthenticAMD"),
            e(
                1,
                0,
                0,
                [
                    0x830f10,
                    (7 << 24) | (2 << 16) | (8 << 8),
                    0xfed8_3203,
                    0x178b_fbff,
                ],
            ),
            e(4, 0, SIG, [0, 0, 0, 0]),
            e(0xb, 0, SIG, [0, 0, 0, 0]),
            e(0x8000_0000, 0, 0, [0x8000_0021, 0, 0, 0]),
            e(0x8000_0001, 0, 0, [0x830f10, 0, 0x75c2_37fd, 0x2fd3_fbff]),
            e(0x8000_0008, 0, 0, [0x3030, 0, 0x0001_7003, 0]),
            e(0x8000_001d, 0, SIG, [0x121, 0x01c0_003f, 0x3f, 0]),
            e(0x8000_001d, 1, SIG, [0x122, 0x01c0_003f, 0x3f, 0]),
            e(0x8000_001d, 2, SIG, [0x143, 0x01c0_003f, 0x3ff, 2]),
            e(0x8000_001d, 3, SIG, [0x3c163, 0x03c0_003f, 0x3fff, 1]),
            e(0x8000_001d, 4, SIG, [0, 0, 0, 0]),
            e(0x8000_001e, 0, 0, [0, 0, 0, 0]),
        ];
        v.extend(kvm_leaves());
        v
    }

    fn setup(entries: &[kvm_cpuid_entry2], vcpu_id: u8, num_cpus: u8) -> CpuId {
        let mut cpuid = CpuId::from_entries(entries).unwrap();
        setup_cpuid(&mut cpuid, vcpu_id, num_cpus).unwrap();
        cpuid
    }

    fn get(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap_or_else(|| panic!("leaf {function:#x}.{index} missing"))
    }

    fn orig(entries: &[kvm_cpuid_entry2], function: u32, index: u32) -> kvm_cpuid_entry2 {
        *entries
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    fn bits(reg: u32, lo: u32, width: u32) -> u32 {
        (reg >> lo) & (u32::MAX >> (32 - width))
    }

    fn check_leaf1(set: &[kvm_cpuid_entry2], c: &CpuId, vcpu: u8, n: u8) {
        let (before, l) = (orig(set, 1, 0), get(c, 1, 0));
        assert_eq!(bits(l.ebx, 24, 8), u32::from(vcpu), "initial APIC ID");
        let count = u32::from(n).next_power_of_two().min(255);
        assert_eq!(bits(l.ebx, 16, 8), count, "logical processor count");
        assert_eq!(bits(l.ebx, 8, 8), 8, "CLFLUSH line size");
        assert_eq!(
            bits(l.ebx, 0, 8),
            bits(before.ebx, 0, 8),
            "brand index kept"
        );
        assert_eq!(l.edx & LEAF1_EDX_HTT != 0, n > 1, "HTT");
        assert_eq!(l.edx | LEAF1_EDX_HTT, before.edx | LEAF1_EDX_HTT);
        assert_ne!(l.ecx & LEAF1_ECX_HYPERVISOR, 0, "hypervisor bit");
        assert_eq!(l.ecx & LEAF1_TSC_DEADLINE, before.ecx & LEAF1_TSC_DEADLINE);
        assert_eq!(l.eax, before.eax);
    }

    /// Leaf 0xB or 0x1F, subleaves 0..=2.
    fn check_ext_topology(c: &CpuId, function: u32, vcpu: u8, n: u8) {
        let shift = u32::from(n).next_power_of_two().trailing_zeros();
        let vcpu = u32::from(vcpu);
        let smt = get(c, function, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, vcpu));
        let core = get(c, function, 1);
        assert_eq!(
            (core.eax, core.ebx, core.ecx, core.edx),
            (shift, u32::from(n), 0x201, vcpu)
        );
        assert_ne!(core.flags & SIG, 0);
        if let Some(end) = c
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == 2)
        {
            assert_eq!(
                (end.eax, end.ebx, bits(end.ecx, 8, 8), end.edx),
                (0, 0, 0, vcpu)
            );
        }
    }

    /// Leaf 0x4 or 0x8000001D.
    fn check_caches(set: &[kvm_cpuid_entry2], c: &CpuId, function: u32, n: u8) {
        let pow2 = u32::from(n).next_power_of_two();
        let mut seen = 0;
        for before in set.iter().filter(|e| e.function == function) {
            let after = get(c, function, before.index);
            let level = bits(before.eax, 5, 3);
            if bits(before.eax, 0, 5) == 0 {
                assert_eq!(after, *before, "null cache leaf untouched");
                continue;
            }
            seen += 1;
            let sharing = if level >= 3 { pow2 - 1 } else { 0 };
            assert_eq!(bits(after.eax, 14, 12), sharing, "L{level} sharing");
            assert_eq!(bits(after.eax, 0, 14), bits(before.eax, 0, 14));
            if function == 4 {
                assert_eq!(
                    bits(after.eax, 26, 6),
                    pow2.min(64) - 1,
                    "cores per package"
                );
            }
            assert_eq!(
                (after.ebx, after.ecx, after.edx),
                (before.ebx, before.ecx, before.edx)
            );
        }
        assert!(seen == 4 || seen == 0);
    }

    fn check_hypervisor(set: &[kvm_cpuid_entry2], c: &CpuId) {
        let (b, cx, d) = signature_regs(&KEEL_SIGNATURE);
        let keel = get(c, 0x4000_0000, 0);
        assert_eq!(
            (keel.eax, keel.ebx, keel.ecx, keel.edx),
            (0x4000_0001, b, cx, d)
        );
        assert_eq!(&keel.ebx.to_le_bytes(), b"Keel");
        let keel1 = get(c, 0x4000_0001, 0);
        assert_eq!((keel1.eax, keel1.ebx, keel1.ecx, keel1.edx), (0, 0, 0, 0));

        let (kb, kc, kd) = signature_regs(b"KVMKVMKVM\0\0\0");
        let kvm = get(c, 0x4000_0100, 0);
        assert_eq!(
            (kvm.eax, kvm.ebx, kvm.ecx, kvm.edx),
            (0x4000_0101, kb, kc, kd)
        );
        let features = get(c, 0x4000_0101, 0);
        let before = orig(set, 0x4000_0001, 0);
        assert_eq!((features.eax, features.edx), (before.eax, before.edx));
        let hv: Vec<u32> = c
            .as_slice()
            .iter()
            .map(|e| e.function)
            .filter(|f| (0x4000_0000..0x5000_0000).contains(f))
            .collect();
        assert_eq!(hv.len(), 4, "{hv:x?}");
    }

    fn check_common(set: &[kvm_cpuid_entry2], vcpu: u8, n: u8) -> CpuId {
        let c = setup(set, vcpu, n);
        check_leaf1(set, &c, vcpu, n);
        check_caches(set, &c, 4, n);
        check_ext_topology(&c, 0xb, vcpu, n);
        check_hypervisor(set, &c);
        c
    }

    #[test]
    fn tsc_deadline_bit_is_added() {
        let mut set = intel();
        for e in set.iter_mut().filter(|e| e.function == 1) {
            e.ecx &= !(1 << 24);
        }
        let mut c = setup(&set, 0, 1);
        assert_eq!(get(&c, 1, 0).ecx & (1 << 24), 0);
        enable_tsc_deadline(&mut c);
        assert_ne!(get(&c, 1, 0).ecx & (1 << 24), 0);
    }

    #[test]
    fn intel_topology() {
        let set = intel();
        for (vcpu, n) in [(0, 4), (3, 4), (0, 1), (253, 254)] {
            let c = check_common(&set, vcpu, n);
            check_ext_topology(&c, 0x1f, vcpu, n);
            // AMD-only leaves are left alone.
            assert_eq!(get(&c, 0x8000_0001, 0), orig(&set, 0x8000_0001, 0));
            assert_eq!(get(&c, 0x8000_0008, 0), orig(&set, 0x8000_0008, 0));
            assert!(!c.as_slice().iter().any(|e| e.function == 0x8000_001e));
        }
        let c = setup(&set, 0, 254);
        assert_eq!(bits(get(&c, 1, 0).ebx, 16, 8), 255);
        assert_eq!(get(&c, 0xb, 1).eax, 8);
        assert_eq!(bits(get(&c, 4, 0).eax, 26, 6), 63);
    }

    fn check_amd(set: &[kvm_cpuid_entry2], vcpu: u8, n: u8) {
        let c = check_common(set, vcpu, n);
        check_caches(set, &c, 0x8000_001d, n);
        let shift = u32::from(n).next_power_of_two().trailing_zeros();
        let ext1 = get(&c, 0x8000_0001, 0);
        assert_eq!(ext1.ecx & AMD_ECX_CMP_LEGACY != 0, n > 1, "CmpLegacy");
        let ext8 = get(&c, 0x8000_0008, 0);
        assert_eq!(bits(ext8.ecx, 0, 8), u32::from(n) - 1, "NC");
        assert_eq!(bits(ext8.ecx, 12, 4), shift, "ApicIdCoreIdSize");
        assert_eq!(bits(ext8.ecx, 16, 2), 1, "PerfTscSize kept");
        let ext1e = get(&c, 0x8000_001e, 0);
        let vcpu = u32::from(vcpu);
        assert_eq!((ext1e.eax, ext1e.ebx, ext1e.ecx), (vcpu, vcpu, 0));
        assert_eq!(bits(ext1e.ebx, 8, 8), 0, "one thread per core");
    }

    #[test]
    fn amd_topology() {
        let set = amd();
        for (vcpu, n) in [(0, 4), (3, 4), (0, 1), (200, 254)] {
            check_amd(&set, vcpu, n);
        }
        // KVM reporting CmpLegacy on a 1-vCPU VM: cleared.
        let mut set = amd();
        set[5].ecx |= AMD_ECX_CMP_LEGACY;
        check_amd(&set, 0, 1);
    }

    #[test]
    fn amd_topoext_without_leaf_8000001e_adds_it() {
        let set: Vec<_> = amd()
            .into_iter()
            .filter(|e| e.function != 0x8000_001e)
            .collect();
        let c = setup(&set, 2, 4);
        let ext1e = get(&c, 0x8000_001e, 0);
        assert_eq!((ext1e.eax, ext1e.ebx), (2, 2));
    }

    #[test]
    fn kvm_signature_moves_to_0x40000100() {
        let c = setup(&intel(), 1, 2);
        let kvm = get(&c, KVM_CPUID_BASE, 0);
        let mut sig = Vec::new();
        for r in [kvm.ebx, kvm.ecx, kvm.edx] {
            sig.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&sig, b"KVMKVMKVM\0\0\0");
        assert_eq!(kvm.eax, 0x4000_0101);
    }

    #[test]
    fn without_kvm_leaves_keel_still_names_itself() {
        let set: Vec<_> = amd()
            .into_iter()
            .filter(|e| !is_first_range(e.function))
            .collect();
        let c = setup(&set, 0, 1);
        assert_eq!(get(&c, KEEL_CPUID_BASE, 0).eax, KEEL_CPUID_MAX);
        assert!(!c.as_slice().iter().any(
            |e| e.function >= KVM_CPUID_BASE && e.function < KVM_CPUID_BASE + HYPERVISOR_RANGE
        ));
    }

    #[test]
    fn setup_twice_is_setup_once() {
        for set in [intel(), amd()] {
            let once = setup(&set, 3, 4);
            let mut twice = once.clone();
            setup_cpuid(&mut twice, 3, 4).unwrap();
            assert!(once == twice);
        }
    }

    #[test]
    fn full_table_is_an_error() {
        let mut set = intel();
        let mut f = 0x2000_0000;
        while set.len() < kvm_bindings::KVM_MAX_CPUID_ENTRIES {
            set.push(e(f, 0, 0, [0; 4]));
            f += 1;
        }
        let mut cpuid = CpuId::from_entries(&set).unwrap();
        let err = setup_cpuid(&mut cpuid, 0, 2).unwrap_err();
        assert!(
            matches!(
                err,
                CpuidError::TableFull {
                    function: 0x1f,
                    index: 1
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn invalid_counts_are_errors() {
        let mut cpuid = CpuId::from_entries(&amd()).unwrap();
        assert!(matches!(
            setup_cpuid(&mut cpuid, 0, 0),
            Err(CpuidError::InvalidCpuCount(0))
        ));
        assert!(matches!(
            setup_cpuid(&mut cpuid, 0, 255),
            Err(CpuidError::InvalidCpuCount(255))
        ));
        assert!(matches!(
            setup_cpuid(&mut cpuid, 4, 4),
            Err(CpuidError::InvalidVcpuId {
                vcpu_id: 4,
                num_cpus: 4
            })
        ));
    }
}
