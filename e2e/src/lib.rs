//! End-to-end test harness: runs `keel-vmm` on real guests and reports what
//! happened (exit status, serial console, keel-vmm's messages).
//!
//! Where a guest runs:
//! - payload guests (tiny PVH ELFs) need only an openable `/dev/kvm`;
//! - Linux guests run natively on hardware KVM, else inside the KVM rig
//!   (an L1 VM under QEMU TCG with a real `kvm-amd`), else the test prints
//!   `SKIPPED (<reason>)` and passes — unless `KEEL_REQUIRE_KVM=1`, where a
//!   skip is a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use xtask::host::{self, Kvm};

pub use xtask::guest::Then;
pub use xtask::payload::Payload;

mod keeld;
mod linux_vm;
mod output;
mod run;
mod session;
#[cfg(test)]
mod tests;

pub use keeld::*;
pub use linux_vm::*;
pub use output::*;
pub use run::*;
pub use session::*;

/// The guest's boot marker, printed once per boot.
pub const BOOT_MARKER: &str = "KEEL-GUEST-BOOTED";
/// The command line every Linux test guest gets before its `keel.*` words.
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 quiet";

/// Prints `SKIPPED (<reason>)` where `cargo test` shows it, or fails the
/// test when `KEEL_REQUIRE_KVM=1`.
pub fn skip(reason: &str) {
    if std::env::var("KEEL_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("KEEL_REQUIRE_KVM=1 and this test cannot run: {reason}");
    }
    // Straight to the stream: the test harness captures println!.
    let _ = writeln!(std::io::stderr(), "SKIPPED ({reason})");
}

/// The `keel-vmm` binary beside the test executable (`target/debug/`),
/// built with `cargo build -p keel-vmm` when missing.
pub fn keel_vmm() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("keel-vmm")))
            .filter(|p| p.exists())
            .unwrap_or_else(xtask::paths::keel_vmm_debug);
        if !path.exists() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "keel-vmm"])
                .current_dir(xtask::paths::workspace_root())
                .status()
                .expect("running cargo build -p keel-vmm");
            assert!(status.success(), "cargo build -p keel-vmm failed");
        }
        assert!(path.exists(), "{} does not exist", path.display());
        path
    })
}

/// Where Linux guests run on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    /// Hardware KVM: keel-vmm runs here.
    Native,
    /// In the KVM rig (QEMU TCG + nested SVM).
    Rig,
}

/// Where a Linux guest can run, or `None` after [`skip`].
pub fn linux_runner() -> Option<Runner> {
    match host::kvm() {
        Kvm::Hardware => Some(Runner::Native),
        kind => {
            if xtask::util::which(host::QEMU.program).is_some() {
                Some(Runner::Rig)
            } else {
                skip(&format!(
                    "no hardware KVM ({}) and no {} for the KVM rig",
                    describe(&kind),
                    host::QEMU.program
                ));
                None
            }
        }
    }
}

/// True when payload guests can run here (an openable `/dev/kvm`); else
/// [`skip`]s.
pub fn native_kvm() -> bool {
    match host::kvm() {
        Kvm::Hardware | Kvm::Pvm => true,
        Kvm::Unusable(why) => {
            skip(&why);
            false
        }
    }
}

pub(crate) fn describe(kind: &Kvm) -> String {
    match kind {
        Kvm::Hardware => "hardware KVM".into(),
        Kvm::Pvm => "/dev/kvm is PVM".into(),
        Kvm::Unusable(why) => why.clone(),
    }
}
