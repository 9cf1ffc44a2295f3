//! The guest finds Keel's PCI bus: the host bridge at 00:00.0 through ACPI
//! (`\_SB.PCI0`), configuration space through ports 0xCF8/0xCFC and ECAM
//! (MCFG, reserved in e820), and MSI left enabled.

use e2e::LinuxVm;

/// What the guest prints: the devices on the bus, the host bridge's IDs,
/// and the kernel's PCI messages (prefixed so they can be told apart from
/// the console's own kernel output).
const CMD: &str = "\
echo PCI_DEVICES=$(ls /sys/bus/pci/devices | tr '\\n' ' ')
d=/sys/bus/pci/devices/0000:00:00.0
echo HOST_BRIDGE=$(cat $d/vendor):$(cat $d/device):$(cat $d/class)
dmesg | grep -iE 'pci|mmconfig|msi' | sed 's/^/DMESG: /'
";

#[test]
fn guest_sees_the_host_bridge_and_uses_mcfg() {
    let Some(out) = LinuxVm::new().cmd(CMD).run() else {
        return;
    };
    assert_eq!(out.status, Some(0), "{}", out.dump());
    assert_eq!(
        out.value("PCI_DEVICES").as_deref(),
        Some("0000:00:00.0"),
        "{}",
        out.dump()
    );
    assert_eq!(
        out.value("HOST_BRIDGE").as_deref(),
        Some("0x8086:0x0d57:0x060000"),
        "{}",
        out.dump()
    );
    let dmesg: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("DMESG: "))
        .collect();
    let has = |s: &str| dmesg.iter().any(|l| l.contains(s));
    for want in [
        "PCI: MMCONFIG for domain 0000 [bus 00-00] at [mem 0xe0000000-0xe00fffff]",
        "PCI: MMCONFIG at [mem 0xe0000000-0xe00fffff] reserved",
        "ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00])",
        "root bus resource [mem 0xc0000000-0xdfffffff window]",
        "pci 0000:00:00.0: [8086:0d57] type 00 class 0x060000",
    ] {
        assert!(
            has(want),
            "{want:?} not in the guest's dmesg:\n{}",
            out.dump()
        );
    }
    for unwanted in [
        "not reserved",
        "PCI: Fatal",
        "doesn't support MSI",
        "pci=nommconf",
    ] {
        assert!(
            !has(unwanted),
            "{unwanted:?} in the guest's dmesg:\n{}",
            out.dump()
        );
    }
}
