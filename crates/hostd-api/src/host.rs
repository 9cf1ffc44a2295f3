//! `GET /api/v1/host`: what the host is and whether it can run VMs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostInfo {
    pub hostname: String,
    /// Like `Keel 0.1.0`.
    pub keel_version: String,
    /// `uname -r`.
    pub kernel: String,
    pub uptime_s: u64,
    pub cpu: CpuInfo,
    pub memory_total_bytes: u64,
    pub memory_free_bytes: u64,
    pub kvm: KvmInfo,
    /// ESXi-style hardware compatibility checks.
    pub compatibility: Vec<CompatCheck>,
    pub pci_devices: Vec<PciDevice>,
    pub nics: Vec<HostNic>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CpuInfo {
    pub model: String,
    pub vendor: String,
    /// Physical cores.
    pub cores: u32,
    /// Logical CPUs.
    pub threads: u32,
    /// The flags that matter for virtualization (`vmx`/`svm`, `avx2`, …).
    pub flags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KvmInfo {
    /// `/dev/kvm` opens and answers `KVM_GET_API_VERSION`.
    pub usable: bool,
    #[serde(default)]
    pub api_version: Option<u32>,
    /// `kvm_intel` / `kvm_amd`, when loaded.
    #[serde(default)]
    pub module: Option<String>,
    /// Nested virtualization is enabled in the module.
    pub nested: bool,
    /// This host itself runs in a VM (the CPU's hypervisor flag).
    pub in_vm: bool,
    /// Why it is not usable.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    Ok,
    Warning,
    Fail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CompatCheck {
    /// Like `kvm`, `virtualization-extensions`, `iommu`, `nested`.
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PciDevice {
    /// `0000:00:1f.2`.
    pub address: String,
    /// `8086`.
    pub vendor_id: String,
    pub device_id: String,
    /// `010601`.
    pub class: String,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub iommu_group: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostNic {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    /// `up`, `down`, `unknown`.
    pub state: String,
    /// Mbit/s when the link reports it.
    #[serde(default)]
    pub speed_mbps: Option<u32>,
    /// A physical device (not a bridge, TAP, veth or loopback).
    pub physical: bool,
}
