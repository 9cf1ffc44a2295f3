//! virtio-rng: the guest's stock virtio_pci and virtio-rng drivers find the
//! device on PCI, use MSI-X, and read random bytes from /dev/hwrng.

use e2e::LinuxVm;

const CMD: &str = "\
echo RNG_CURRENT=$(cat /sys/class/misc/hw_random/rng_current)
a=$(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n')
b=$(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n')
echo RNG_A=$a
echo RNG_B=$b
echo BIG=$(dd if=/dev/hwrng bs=4096 count=16 2>/dev/null | wc -c)
grep virtio /proc/interrupts | sed 's/^/IRQ: /'
echo MSIX=$(awk '/PCI-MSI.*virtio0-input/ { n = 0; for (i = 2; i < NF; i++) if ($i ~ /^[0-9]+$/) n += $i; print n }' /proc/interrupts)
echo VENDOR=$(cat /sys/bus/pci/devices/0000:00:01.0/vendor):$(cat /sys/bus/pci/devices/0000:00:01.0/device)
";

#[test]
fn guest_reads_random_bytes_from_hwrng() {
    let Some(out) = LinuxVm::new().arg("--rng").cmd(CMD).run() else {
        return;
    };
    assert_eq!(out.status, Some(0), "{}", out.dump());
    assert_eq!(
        out.value("VENDOR").as_deref(),
        Some("0x1af4:0x1044"),
        "{}",
        out.dump()
    );
    let current = out.value("RNG_CURRENT").unwrap_or_default();
    assert!(current.starts_with("virtio_rng"), "{}", out.dump());
    let a = out.value("RNG_A").unwrap_or_default();
    let b = out.value("RNG_B").unwrap_or_default();
    assert_eq!(a.len(), 128, "64 bytes as hex: {}", out.dump());
    assert_eq!(b.len(), 128, "{}", out.dump());
    assert_ne!(a, b, "two reads gave the same bytes");
    assert_ne!(a, "0".repeat(128), "all zeroes");
    assert_eq!(out.value("BIG").as_deref(), Some("65536"), "{}", out.dump());
    let msix: u32 = out.value("MSIX").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(
        msix >= 1,
        "no MSI-X interrupt was delivered for virtio0's queue: {}",
        out.dump()
    );
}

#[test]
fn without_rng_flag_there_is_no_device() {
    let Some(out) = LinuxVm::new()
        .cmd("echo PCI_DEVICES=$(ls /sys/bus/pci/devices | tr '\\n' ' ')")
        .run()
    else {
        return;
    };
    assert_eq!(out.status, Some(0), "{}", out.dump());
    assert_eq!(
        out.value("PCI_DEVICES").as_deref(),
        Some("0000:00:00.0"),
        "{}",
        out.dump()
    );
}
