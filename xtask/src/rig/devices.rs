//! L1's devices besides the console: virtio-blk disks and a user-mode NIC
//! with a forwarded port ([`RigOptions::disks`], [`RigOptions::host_forward`]),
//! the shell prelude that loads their drivers and configures them, and the
//! check of the host-built programs brought into L1.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::RigOptions;

/// Modules L1 loads (from the per-run archive, so the cached base stays as
/// it is) when it has virtio devices: disks ([`RigOptions::disks`]) or the
/// user-mode NIC ([`RigOptions::host_forward`]). The kernel builds them all
/// as modules; ext4 is built in.
pub const VIRTIO_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
];

/// L1's address on QEMU's user-mode network, and its gateway.
pub const L1_ADDRESS: &str = "10.0.2.15/24";
pub const L1_GATEWAY: &str = "10.0.2.2";

/// Shell text run before the script: the virtio drivers, waiting for the
/// disks, and the user-mode network. Empty without virtio devices.
pub(super) fn prelude(opts: &RigOptions) -> String {
    if !opts.has_virtio() {
        return String::new();
    }
    let mut text = String::from(
        "# Added by the rig (xtask/src/rig.rs): virtio drivers, disks, network.\n\
         kver=$(uname -r)\n\
         while read -r mod; do\n\
         \x20   insmod \"/lib/modules/$kver/$mod.ko\" 2>/tmp/insmod.err ||\n\
         \x20       grep -q 'File exists' /tmp/insmod.err ||\n\
         \x20       echo \"KEEL-RIG-ERROR: insmod $mod failed: $(cat /tmp/insmod.err)\"\n\
         done </etc/keel-virtio-modules\n",
    );
    if let Some(last) = opts.disks.len().checked_sub(1) {
        let dev = disk_device(last);
        text.push_str(&format!(
            "i=0\n\
             while [ ! -b {dev} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done\n\
             [ -b {dev} ] || echo 'KEEL-RIG-ERROR: {dev} did not appear'\n"
        ));
    }
    if opts.host_forward.is_some() {
        // The NIC is the only interface backed by a device (not lo, not a
        // bridge); without udev it is eth0, but do not count on it.
        text.push_str(&format!(
            "rig_if=\n\
             i=0\n\
             while [ -z \"$rig_if\" ] && [ $i -lt 100 ]; do\n\
             \x20   for n in /sys/class/net/*; do\n\
             \x20       [ -e \"$n/device\" ] && rig_if=${{n##*/}} && break\n\
             \x20   done\n\
             \x20   [ -n \"$rig_if\" ] || {{ sleep 0.1; i=$((i + 1)); }}\n\
             done\n\
             if [ -z \"$rig_if\" ]; then\n\
             \x20   echo 'KEEL-RIG-ERROR: no network interface appeared'\n\
             elif ! {{ ip link set \"$rig_if\" up &&\n\
             \x20   ip addr add {L1_ADDRESS} dev \"$rig_if\" &&\n\
             \x20   ip route add default via {L1_GATEWAY}; }}; then\n\
             \x20   echo \"KEEL-RIG-ERROR: cannot configure $rig_if\"\n\
             fi\n"
        ));
    }
    text.push_str("cd /\n# The script.\n");
    text
}

/// L1's device for the disk at `index` of [`RigOptions::disks`].
pub fn disk_device(index: usize) -> String {
    let mut name = String::new();
    let mut n = index;
    loop {
        name.insert(0, char::from(b'a' + (n % 26) as u8));
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    format!("/dev/vd{name}")
}

/// `path` for a QEMU option value (commas doubled).
fn qemu_value(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// QEMU's arguments for L1's devices: disks and the user-mode NIC.
pub(super) fn device_args(opts: &RigOptions) -> Vec<String> {
    let mut args = Vec::new();
    for (i, disk) in opts.disks.iter().enumerate() {
        args.extend([
            "-drive".to_string(),
            format!(
                "file={},format=raw,if=none,id=disk{i},cache=writeback",
                qemu_value(disk)
            ),
            "-device".to_string(),
            format!("virtio-blk-pci,drive=disk{i}"),
        ]);
    }
    if let Some((host_port, l1_port)) = opts.host_forward {
        args.extend([
            "-nic".to_string(),
            format!("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{host_port}-:{l1_port}"),
        ]);
    }
    args
}

/// Checks that every program of [`RigOptions::programs`] needs only the
/// host libraries L1 has.
pub(super) fn check_programs(opts: &RigOptions) -> Result<()> {
    if opts.programs.is_empty() {
        return Ok(());
    }
    let libs: Vec<String> = super::host_libs()?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for (path, _) in &opts.programs {
        let data = fs::read(path).with_context(|| format!("Reading {}", path.display()))?;
        if !crate::elf::is_elf(&data) {
            continue; // a script
        }
        let dynamic = crate::elf::dynamic(&data)
            .with_context(|| format!("Reading {} as an ELF program", path.display()))?;
        let missing: Vec<&str> = dynamic
            .needed
            .iter()
            .filter(|n| !libs.contains(n))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} needs {}, which the rig's L1 lacks (it has the host's {})",
                path.display(),
                missing.join(", "),
                libs.join(" ")
            );
        }
    }
    Ok(())
}
