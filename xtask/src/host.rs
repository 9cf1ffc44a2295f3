//! Host prerequisites: Debian packages the tasks need on the host itself.
//!
//! As root, missing packages are installed (`apt-get update` once, then
//! `apt-get install -y --no-install-recommends`); otherwise the error names
//! the packages to install.

use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Result};

use crate::util::{is_root, run_inherited, which};

/// A program the host needs and the Debian package that ships it.
#[derive(Clone, Copy, Debug)]
pub struct Requirement {
    pub program: &'static str,
    pub package: &'static str,
}

/// QEMU, for the KVM rig.
pub const QEMU: Requirement = Requirement {
    program: "qemu-system-x86_64",
    package: "qemu-system-x86",
};
/// qemu-img, for the storage crate's qcow2 tests (they skip without it).
pub const QEMU_IMG: Requirement = Requirement {
    program: "qemu-img",
    package: "qemu-utils",
};
/// iasl, for the ACPI table tests (they skip without it).
pub const IASL: Requirement = Requirement {
    program: "iasl",
    package: "acpica-tools",
};
/// nft, for the host-networking tests of the NAT table (they skip without it).
pub const NFT: Requirement = Requirement {
    program: "nft",
    package: "nftables",
};
/// busybox (its udhcpc), the DHCP client of the host-networking tests.
pub const BUSYBOX: Requirement = Requirement {
    program: "busybox",
    package: "busybox",
};
/// Debian's package tools, for building guests from packages.
pub const APT_GET: Requirement = Requirement {
    program: "apt-get",
    package: "apt",
};
pub const DPKG_DEB: Requirement = Requirement {
    program: "dpkg-deb",
    package: "dpkg",
};
/// GNU as and ld, for the payload guests.
pub const AS: Requirement = Requirement {
    program: "as",
    package: "binutils",
};
pub const LD: Requirement = Requirement {
    program: "ld",
    package: "binutils",
};

static APT_UPDATED: Mutex<bool> = Mutex::new(false);

/// Runs `apt-get update` once per process (as root only).
pub fn apt_update_once() -> Result<()> {
    let mut updated = match APT_UPDATED.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    if *updated {
        return Ok(());
    }
    if !is_root() {
        bail!("The apt package lists are missing or stale: run `sudo apt-get update`");
    }
    run_inherited(Command::new("apt-get").args(["update", "-q"]))?;
    *updated = true;
    Ok(())
}

/// The packages whose programs are missing from `$PATH`.
pub fn missing(reqs: &[Requirement]) -> Vec<&'static str> {
    let mut pkgs: Vec<&'static str> = reqs
        .iter()
        .filter(|r| which(r.program).is_none())
        .map(|r| r.package)
        .collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    pkgs
}

/// Makes sure every program in `reqs` is on `$PATH`, installing the missing
/// packages when running as root.
pub fn ensure(reqs: &[Requirement]) -> Result<()> {
    let pkgs = missing(reqs);
    if pkgs.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "Missing host packages: run `sudo apt-get install -y --no-install-recommends {}`",
            pkgs.join(" ")
        );
    }
    eprintln!("xtask: installing {}", pkgs.join(" "));
    apt_update_once()?;
    run_inherited(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still = missing(reqs);
    if !still.is_empty() {
        bail!(
            "Installing {} did not provide the programs needed",
            still.join(" ")
        );
    }
    Ok(())
}

/// What the local `/dev/kvm` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kvm {
    /// Hardware KVM (VT-x/AMD-V): stock kernels boot on it.
    Hardware,
    /// PVM (`/sys/module/kvm_pvm`): the KVM API works and payload guests
    /// run, but a stock kernel does not boot.
    Pvm,
    /// No usable `/dev/kvm`, and why.
    Unusable(String),
}

/// Probes `/dev/kvm` (opens it read-write, as a VMM does).
pub fn kvm() -> Kvm {
    if let Err(err) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Kvm::Unusable(format!("/dev/kvm cannot be opened: {err}"));
    }
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        Kvm::Pvm
    } else {
        Kvm::Hardware
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_programs_are_not_missing() {
        let sh = Requirement {
            program: "sh",
            package: "dash",
        };
        assert!(missing(&[sh]).is_empty());
        let nope = Requirement {
            program: "surely-not-a-real-program-xyz",
            package: "nope",
        };
        assert_eq!(missing(&[sh, nope, nope]), vec!["nope"]);
    }
}
