//! `GET /host`: what the machine is, read from /proc and /sys, and an
//! ESXi-style compatibility check. Every reader takes the file system root
//! so that tests can point it at a fake tree.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use hostd_api::{
    CheckStatus, CompatCheck, CpuInfo, HostInfo, HostNic, KvmInfo, PciDevice, Privilege,
};

use crate::error::Result;
use crate::host::{Caller, Host};
use crate::sys;

/// CPU flags worth showing for virtualization.
const FLAGS: &[&str] = &[
    "vmx",
    "svm",
    "hypervisor",
    "lm",
    "nx",
    "pae",
    "x2apic",
    "aes",
    "avx",
    "avx2",
    "avx512f",
    "sse4_2",
    "popcnt",
    "rdrand",
    "rdseed",
    "ept",
    "npt",
    "vpid",
    "tsc_deadline_timer",
    "invtsc",
    "constant_tsc",
    "pdpe1gb",
];

fn read(root: &Path, rel: &str) -> Option<String> {
    fs::read_to_string(root.join(rel.trim_start_matches('/')))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Parses /proc/cpuinfo.
pub fn cpu_info(cpuinfo: &str) -> CpuInfo {
    let mut model = String::new();
    let mut vendor = String::new();
    let mut flags: Vec<String> = Vec::new();
    let mut threads = 0u32;
    let mut cores = HashSet::new();
    let mut physical = String::new();
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => threads += 1,
            "model name" if model.is_empty() => model = value.to_string(),
            "vendor_id" if vendor.is_empty() => vendor = value.to_string(),
            "physical id" => physical = value.to_string(),
            "core id" => {
                cores.insert((physical.clone(), value.to_string()));
            }
            "flags" if flags.is_empty() => {
                let have: HashSet<&str> = value.split_whitespace().collect();
                flags = FLAGS
                    .iter()
                    .filter(|f| have.contains(*f))
                    .map(|f| f.to_string())
                    .collect();
            }
            _ => {}
        }
    }
    CpuInfo {
        model,
        vendor,
        cores: if cores.is_empty() {
            threads
        } else {
            cores.len() as u32
        },
        threads,
        flags,
    }
}

/// A `/proc/meminfo` value in bytes.
pub fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kib * 1024)
    })
}

fn kvm_info(root: &Path, cpu: &CpuInfo) -> KvmInfo {
    let in_vm = cpu.flags.iter().any(|f| f == "hypervisor");
    let module = ["kvm_intel", "kvm_amd"]
        .into_iter()
        .find(|m| root.join("sys/module").join(m).exists())
        .map(str::to_string);
    let nested = module.as_ref().is_some_and(|m| {
        read(root, &format!("sys/module/{m}/parameters/nested"))
            .is_some_and(|v| v == "Y" || v == "1")
    });
    let (usable, api_version, error) = match sys::kvm_api_version(&root.join("dev/kvm")) {
        Ok(v) if v == 12 => (true, Some(v), None),
        Ok(v) => (
            false,
            Some(v),
            Some(format!("/dev/kvm has API version {v}, expected 12")),
        ),
        Err(e) => (false, None, Some(format!("/dev/kvm: {e}"))),
    };
    KvmInfo {
        usable,
        api_version,
        module,
        nested,
        in_vm,
        error,
    }
}

fn pci_devices(root: &Path) -> Vec<PciDevice> {
    let Ok(read) = fs::read_dir(root.join("sys/bus/pci/devices")) else {
        return Vec::new();
    };
    let mut out: Vec<PciDevice> = read
        .flatten()
        .map(|e| {
            let dir = e.path();
            let attr = |name: &str| {
                fs::read_to_string(dir.join(name))
                    .map(|s| s.trim().trim_start_matches("0x").to_string())
                    .unwrap_or_default()
            };
            let link_name = |name: &str| {
                fs::read_link(dir.join(name))
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            };
            PciDevice {
                address: e.file_name().to_string_lossy().into_owned(),
                vendor_id: attr("vendor"),
                device_id: attr("device"),
                class: attr("class"),
                driver: link_name("driver"),
                iommu_group: link_name("iommu_group").and_then(|g| g.parse().ok()),
            }
        })
        .collect();
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

fn nics(root: &Path) -> Vec<HostNic> {
    let base = root.join("sys/class/net");
    let Ok(read) = fs::read_dir(&base) else {
        return Vec::new();
    };
    let mut out: Vec<HostNic> = read
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dir = base.join(&name);
            let attr = |a: &str| {
                fs::read_to_string(dir.join(a))
                    .map(|s| s.trim().to_string())
                    .ok()
            };
            HostNic {
                mac: attr("address").unwrap_or_default(),
                mtu: attr("mtu").and_then(|m| m.parse().ok()).unwrap_or(0),
                state: attr("operstate").unwrap_or_else(|| "unknown".into()),
                speed_mbps: attr("speed")
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|&s| s > 0)
                    .map(|s| s as u32),
                physical: dir.join("device").exists(),
                name,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn checks(root: &Path, cpu: &CpuInfo, kvm: &KvmInfo) -> Vec<CompatCheck> {
    let check = |name: &str, status, detail: String| CompatCheck {
        name: name.into(),
        status,
        detail,
    };
    let mut out = Vec::new();
    out.push(if kvm.usable {
        check(
            "kvm",
            CheckStatus::Ok,
            format!(
                "/dev/kvm answers (API version {})",
                kvm.api_version.unwrap_or(0)
            ),
        )
    } else {
        check(
            "kvm",
            CheckStatus::Fail,
            kvm.error
                .clone()
                .unwrap_or_else(|| "/dev/kvm is not usable".into()),
        )
    });
    let ext = cpu.flags.iter().find(|f| *f == "vmx" || *f == "svm");
    out.push(match ext {
        Some(f) => check(
            "virtualization-extensions",
            CheckStatus::Ok,
            format!(
                "The CPU has {}",
                if f == "vmx" {
                    "Intel VT-x (vmx)"
                } else {
                    "AMD-V (svm)"
                }
            ),
        ),
        None if kvm.usable => check(
            "virtualization-extensions",
            CheckStatus::Warning,
            "The CPU shows no vmx/svm flag, but /dev/kvm works (a paravirtual KVM?)".into(),
        ),
        None => check(
            "virtualization-extensions",
            CheckStatus::Fail,
            "The CPU has neither vmx nor svm (or they are disabled in the firmware)".into(),
        ),
    });
    let groups = fs::read_dir(root.join("sys/kernel/iommu_groups"))
        .map(|r| r.count())
        .unwrap_or(0);
    out.push(if groups > 0 {
        check("iommu", CheckStatus::Ok, format!("{groups} IOMMU groups"))
    } else {
        check(
            "iommu",
            CheckStatus::Warning,
            "No IOMMU groups: PCI passthrough is not possible".into(),
        )
    });
    out.push(match (&kvm.module, kvm.nested) {
        (Some(m), true) => check(
            "nested",
            CheckStatus::Ok,
            format!("{m} allows nested virtualization"),
        ),
        (Some(m), false) => check(
            "nested",
            CheckStatus::Warning,
            format!("{m} has nested virtualization off"),
        ),
        (None, _) => check(
            "nested",
            CheckStatus::Warning,
            "Neither kvm_intel nor kvm_amd is loaded".into(),
        ),
    });
    if kvm.in_vm {
        out.push(check(
            "hypervisor",
            CheckStatus::Warning,
            "This host itself runs in a virtual machine".into(),
        ));
    }
    out
}

/// Everything about the host, read under `root` (normally `/`).
pub fn collect(root: &Path) -> HostInfo {
    let cpu = cpu_info(&read(root, "proc/cpuinfo").unwrap_or_default());
    let meminfo = read(root, "proc/meminfo").unwrap_or_default();
    let uptime_s = read(root, "proc/uptime")
        .and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |s| s as u64);
    let kvm = kvm_info(root, &cpu);
    HostInfo {
        hostname: read(root, "proc/sys/kernel/hostname").unwrap_or_default(),
        keel_version: format!("Keel {}", env!("CARGO_PKG_VERSION")),
        kernel: read(root, "proc/sys/kernel/osrelease").unwrap_or_default(),
        uptime_s,
        memory_total_bytes: meminfo_bytes(&meminfo, "MemTotal").unwrap_or(0),
        memory_free_bytes: meminfo_bytes(&meminfo, "MemAvailable")
            .or_else(|| meminfo_bytes(&meminfo, "MemFree"))
            .unwrap_or(0),
        compatibility: checks(root, &cpu, &kvm),
        cpu,
        kvm,
        pci_devices: pci_devices(root),
        nics: nics(root),
    }
}

impl Host {
    pub fn host_info(&self, caller: &Caller) -> Result<HostInfo> {
        self.require(caller, None, Privilege::SystemView)?;
        Ok(collect(Path::new("/")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::TestDir;
    use std::os::unix::fs::symlink;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nphysical id\t: 0\ncore id\t\t: 0\nflags\t\t: fpu lm svm avx2 hypervisor nx\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nphysical id\t: 0\ncore id\t\t: 0\nflags\t\t: fpu lm svm avx2 hypervisor nx\n\nprocessor\t: 2\nphysical id\t: 0\ncore id\t\t: 1\n";

    #[test]
    fn cpuinfo_and_meminfo_parse() {
        let cpu = cpu_info(CPUINFO);
        assert_eq!(cpu.model, "AMD EPYC 7B13");
        assert_eq!(cpu.vendor, "AuthenticAMD");
        assert_eq!((cpu.threads, cpu.cores), (3, 2));
        assert_eq!(cpu.flags, ["svm", "hypervisor", "lm", "nx", "avx2"]);
        let mem = "MemTotal:       16384 kB\nMemFree:  100 kB\nMemAvailable:    8192 kB\n";
        assert_eq!(meminfo_bytes(mem, "MemTotal"), Some(16 << 20));
        assert_eq!(meminfo_bytes(mem, "MemAvailable"), Some(8 << 20));
        assert_eq!(meminfo_bytes(mem, "Mem"), None);
        assert_eq!(meminfo_bytes("garbage", "MemTotal"), None);
    }

    #[test]
    fn a_fake_tree_is_read_completely() {
        let dir = TestDir::new("hostinfo");
        let r = dir.path();
        let w = |p: &str, s: &str| {
            let p = r.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, s).unwrap();
        };
        w("proc/cpuinfo", CPUINFO);
        w("proc/meminfo", "MemTotal: 2048 kB\nMemAvailable: 1024 kB\n");
        w("proc/uptime", "12345.67 999.0\n");
        w("proc/sys/kernel/hostname", "esx1\n");
        w("proc/sys/kernel/osrelease", "6.1.0-test\n");
        w("sys/module/kvm_amd/parameters/nested", "1\n");
        w("dev/kvm", "");
        let pci = "sys/bus/pci/devices/0000:00:1f.2";
        w(&format!("{pci}/vendor"), "0x8086\n");
        w(&format!("{pci}/device"), "0x2922\n");
        w(&format!("{pci}/class"), "0x010601\n");
        fs::create_dir_all(r.join("sys/kernel/iommu_groups/7")).unwrap();
        fs::create_dir_all(r.join("sys/bus/pci/drivers/ahci")).unwrap();
        symlink(
            r.join("sys/bus/pci/drivers/ahci"),
            r.join(pci).join("driver"),
        )
        .unwrap();
        symlink(
            r.join("sys/kernel/iommu_groups/7"),
            r.join(pci).join("iommu_group"),
        )
        .unwrap();
        w("sys/class/net/eth0/address", "52:54:00:12:34:56\n");
        w("sys/class/net/eth0/mtu", "1500\n");
        w("sys/class/net/eth0/operstate", "up\n");
        w("sys/class/net/eth0/speed", "1000\n");
        fs::create_dir_all(r.join("sys/class/net/eth0/device")).unwrap();
        w("sys/class/net/lo/address", "00:00:00:00:00:00\n");
        w("sys/class/net/lo/mtu", "65536\n");
        w("sys/class/net/lo/speed", "-1\n");

        let info = collect(r);
        assert_eq!(info.hostname, "esx1");
        assert_eq!(info.kernel, "6.1.0-test");
        assert_eq!(info.uptime_s, 12345);
        assert_eq!(
            (info.memory_total_bytes, info.memory_free_bytes),
            (2 << 20, 1 << 20)
        );
        assert!(info.keel_version.starts_with("Keel "));
        assert_eq!(info.kvm.module.as_deref(), Some("kvm_amd"));
        assert!(info.kvm.nested && info.kvm.in_vm);
        assert!(!info.kvm.usable, "a plain file is not /dev/kvm");
        assert!(info.kvm.error.is_some());
        let status = |n: &str| {
            info.compatibility
                .iter()
                .find(|c| c.name == n)
                .unwrap()
                .status
        };
        assert_eq!(status("kvm"), CheckStatus::Fail);
        assert_eq!(status("virtualization-extensions"), CheckStatus::Ok);
        assert_eq!(status("iommu"), CheckStatus::Ok);
        assert_eq!(status("nested"), CheckStatus::Ok);
        assert_eq!(status("hypervisor"), CheckStatus::Warning);
        assert_eq!(info.pci_devices.len(), 1);
        let d = &info.pci_devices[0];
        assert_eq!(
            (
                d.address.as_str(),
                d.vendor_id.as_str(),
                d.device_id.as_str(),
                d.class.as_str()
            ),
            ("0000:00:1f.2", "8086", "2922", "010601")
        );
        assert_eq!(
            (d.driver.as_deref(), d.iommu_group),
            (Some("ahci"), Some(7))
        );
        assert_eq!(info.nics.len(), 2);
        let eth0 = &info.nics[0];
        assert_eq!(
            (eth0.name.as_str(), eth0.mtu, eth0.speed_mbps, eth0.physical),
            ("eth0", 1500, Some(1000), true)
        );
        let lo = &info.nics[1];
        assert_eq!(
            (lo.speed_mbps, lo.physical, lo.state.as_str()),
            (None, false, "unknown")
        );
    }

    #[test]
    fn an_empty_tree_gives_empty_answers() {
        let dir = TestDir::new("hostinfo");
        let info = collect(dir.path());
        assert_eq!(info.cpu.threads, 0);
        assert!(info.pci_devices.is_empty() && info.nics.is_empty());
        assert!(!info.kvm.usable);
    }

    #[test]
    fn the_real_host_reads() {
        let info = collect(Path::new("/"));
        assert!(info.cpu.threads >= 1);
        assert!(info.memory_total_bytes > 0);
        assert!(!info.kernel.is_empty());
        assert!(info.nics.iter().any(|n| n.name == "lo"));
    }
}
