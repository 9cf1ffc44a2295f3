//! Opening KVM and checking that it can run a Keel VM, with errors a person
//! can act on. kvm-ioctls is the hypervisor layer; this is the little policy
//! around it.

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm};

/// Errors from opening or probing KVM.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("/dev/kvm does not exist: enable virtualization in the firmware and load kvm_intel or kvm_amd")]
    Missing,
    #[error("No permission to open /dev/kvm: run as root or join the group that owns it (usually 'kvm')")]
    Permission,
    #[error("Cannot open /dev/kvm")]
    Open(#[source] kvm_ioctls::Error),
    #[error("KVM lacks a capability Keel needs: {0}")]
    MissingCap(&'static str),
    #[error("{requested} vCPUs requested, but this KVM allows at most {max}")]
    TooManyVcpus { requested: u8, max: usize },
    #[error("Cannot read KVM's supported CPUID")]
    Cpuid(#[source] kvm_ioctls::Error),
}

/// An open KVM with what Keel learnt about it.
pub struct Hypervisor {
    pub kvm: Kvm,
    pub supported_cpuid: CpuId,
    pub max_vcpus: usize,
    /// The in-kernel LAPIC can run the TSC-deadline timer.
    pub tsc_deadline: bool,
}

const REQUIRED_CAPS: [(Cap, &str); 5] = [
    (Cap::Irqchip, "in-kernel IRQ chip (KVM_CAP_IRQCHIP)"),
    (Cap::UserMemory, "user memory regions (KVM_CAP_USER_MEMORY)"),
    (Cap::SetTssAddr, "TSS address (KVM_CAP_SET_TSS_ADDR)"),
    (Cap::Pit2, "in-kernel PIT (KVM_CAP_PIT2)"),
    (Cap::ExtCpuid, "extended CPUID (KVM_CAP_EXT_CPUID)"),
];

impl Hypervisor {
    /// Opens /dev/kvm and checks it for a VM of `cpus` vCPUs.
    pub fn open(cpus: u8) -> Result<Self, KvmError> {
        let kvm = Kvm::new().map_err(|e| match e.errno() {
            libc::ENOENT | libc::ENODEV | libc::ENXIO => KvmError::Missing,
            libc::EACCES | libc::EPERM => KvmError::Permission,
            _ => KvmError::Open(e),
        })?;
        for (cap, name) in REQUIRED_CAPS {
            if !kvm.check_extension(cap) {
                return Err(KvmError::MissingCap(name));
            }
        }
        let max_vcpus = kvm.get_max_vcpus();
        if usize::from(cpus) > max_vcpus {
            return Err(KvmError::TooManyVcpus {
                requested: cpus,
                max: max_vcpus,
            });
        }
        let supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(KvmError::Cpuid)?;
        let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
        Ok(Hypervisor {
            kvm,
            supported_cpuid,
            max_vcpus,
            tsc_deadline,
        })
    }
}
