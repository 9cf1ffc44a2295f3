//! The tools the other tests rely on: the Debian programs in the test guest
//! (mkfs.ext4, e2fsck, ip, socat with vsock, iperf3; fio in the benchmark
//! initramfs), the rig's L1 tools (ip with TAP and bridges, socat, nc,
//! sha256sum, host files and host-built binaries), and QEMU inside L1.

use std::path::PathBuf;

use e2e::{LinuxVm, BASE_CMDLINE};
use xtask::guest::{cmdline_args, Then};

#[test]
fn guest_has_its_debian_tools() {
    let cmd = "\
mkfs.ext4 -V 2>&1 | head -1
e2fsck -V 2>&1 | head -1
iperf3 --version | head -1
socat -V | grep 'socat version'
echo VSOCK=$(socat -h | grep -ci vsock)
ip -V
ip tuntap help 2>&1 | head -1
dd if=/dev/zero of=/tmp/fs.img bs=1M count=16 2>/dev/null
mkfs.ext4 -q -F -L keeltest /tmp/fs.img; echo MKFS=$?
e2fsck -fn /tmp/fs.img >/tmp/fsck.out 2>&1; echo FSCK=$?
echo LABEL=$(dumpe2fs -h /tmp/fs.img 2>/dev/null | sed -n 's/^Filesystem volume name: *//p')
ip link add kt0 type dummy 2>/dev/null; ip -o link show lo | cut -d: -f2 | tr -d ' ' | sed 's/^/LO=/'
";
    let Some(out) = LinuxVm::new().cmd(cmd).run() else {
        return;
    };
    assert_eq!(out.status, Some(0), "{}", out.dump());
    let console = &out.stdout;
    for expected in [
        "mke2fs 1.",
        "e2fsck 1.",
        "iperf 3.",
        "socat version 1.",
        "ip utility, iproute2",
        "Usage: ip tuntap",
    ] {
        assert!(
            console.contains(expected),
            "no {expected:?}: {}",
            out.dump()
        );
    }
    let vsock: u32 = out.value("VSOCK").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(vsock > 0, "socat lacks VSOCK addresses: {}", out.dump());
    assert_eq!(out.value("MKFS").as_deref(), Some("0"), "{}", out.dump());
    assert_eq!(out.value("FSCK").as_deref(), Some("0"), "{}", out.dump());
    assert_eq!(
        out.value("LABEL").as_deref(),
        Some("keeltest"),
        "{}",
        out.dump()
    );
    assert_eq!(out.value("LO").as_deref(), Some("lo"), "{}", out.dump());
}

#[test]
fn bench_guest_runs_fio() {
    let cmd = "\
fio --version
fio --name=t --filename=/tmp/fio.dat --size=4M --rw=randrw --bs=4k --ioengine=psync \
    --runtime=2 --time_based --output-format=terse >/tmp/fio.out 2>&1
echo FIO=$?
echo TERSE=$(cut -d';' -f1-3 /tmp/fio.out | head -1)
";
    let Some(out) = LinuxVm::new().bench_tools().cmd(cmd).run() else {
        return;
    };
    assert_eq!(out.status, Some(0), "{}", out.dump());
    assert!(out.stdout.contains("fio-3."), "{}", out.dump());
    assert_eq!(out.value("FIO").as_deref(), Some("0"), "{}", out.dump());
    // Terse format: version;fio version;job name.
    let terse = out.value("TERSE").unwrap_or_default();
    assert!(terse.ends_with(";t"), "{}", out.dump());
}

#[test]
fn l1_has_network_tools_files_and_scripts_around_keel_vmm() {
    let data = std::env::temp_dir().join(format!("keel-tools-data-{}", std::process::id()));
    std::fs::write(&data, b"bytes the test brings into L1\n").unwrap();
    let sum = xtask::util::sha256_file(&data).unwrap();
    // A binary built for the host (Debian's cksum, dynamically linked)
    // runs in L1 unchanged.
    let host_bin = PathBuf::from("/usr/bin/cksum");
    let before = "\
ip -V
ip tuntap add dev tap0 mode tap && echo TAP=ok
ip link add br0 type bridge && ip link set tap0 master br0 && echo BRIDGE=ok
ip link add veth0 type veth peer name veth1 && echo VETH=ok
ip addr add 192.0.2.1/24 dev br0 && ip link set br0 up && echo ADDR=ok
socat -V | grep 'socat version'
socat -u TCP-LISTEN:5555,bind=127.0.0.1,reuseaddr OPEN:/tmp/received,creat >/tmp/socat.log 2>&1 &
listener=$!
";
    let after = "\
i=0; while ! netstat -ltn | grep -q ':5555 ' && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
nc 127.0.0.1 5555 </data/file
wait $listener
echo RECEIVED=$(sha256sum </tmp/received | cut -d' ' -f1)
echo BROUGHT=$(sha256sum /data/file | cut -d' ' -f1)
echo CKSUM=$(/opt/host-cksum </data/file | cut -d' ' -f1)
echo MASTER=$(cat /sys/class/net/tap0/master/uevent | sed -n 's/^INTERFACE=//p')
";
    let Some(out) = LinuxVm::new()
        .cmd("echo GUEST=ran")
        .rig_file(&data, "/data/file")
        .rig_file(&host_bin, "/opt/host-cksum")
        .l1_before(before)
        .l1_after(after)
        .run()
    else {
        return;
    };
    let _ = std::fs::remove_file(&data);
    assert_eq!(out.status, Some(0), "{}", out.dump());
    assert_eq!(out.value("GUEST").as_deref(), Some("ran"), "{}", out.dump());
    let before = out.l1_before.clone().expect("l1_before's report");
    assert_eq!(before.status, 0, "{}\n{}", before.stdout, out.dump());
    for key in ["TAP", "BRIDGE", "VETH", "ADDR"] {
        assert_eq!(
            before.value(key).as_deref(),
            Some("ok"),
            "{}",
            before.stdout
        );
    }
    assert!(before.stdout.contains("iproute2"), "{}", before.stdout);
    let after = out.l1_after.clone().expect("l1_after's report");
    assert_eq!(
        after.value("BROUGHT").as_deref(),
        Some(sum.as_str()),
        "{}",
        after.stdout
    );
    assert_eq!(
        after.value("RECEIVED").as_deref(),
        Some(sum.as_str()),
        "{}",
        after.stdout
    );
    let host_cksum = std::process::Command::new(&host_bin)
        .arg(&data)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split(' ')
                .next()
                .unwrap_or("")
                .to_string()
        });
    assert!(
        after.value("CKSUM").is_some_and(|c| !c.is_empty()),
        "{}",
        after.stdout
    );
    if let Some(host) = host_cksum.filter(|c| !c.is_empty()) {
        assert_eq!(
            after.value("CKSUM").as_deref(),
            Some(host.as_str()),
            "{}",
            after.stdout
        );
    }
    assert_eq!(
        after.value("MASTER").as_deref(),
        Some("br0"),
        "{}",
        after.stdout
    );
}

#[test]
fn qemu_boots_the_test_guest_inside_l1() {
    let cmdline = format!(
        "{BASE_CMDLINE} {}",
        cmdline_args("echo QEMU_GUEST=$(nproc)", Then::Poweroff)
    );
    let before = format!(
        "\
qemu-system-x86_64 --version | head -1
timeout 150 qemu-system-x86_64 -accel kvm -M microvm -cpu host -smp 1 -m 512 \
  -nodefaults -no-user-config -display none -serial stdio -no-reboot \
  -kernel /guest/vmlinuz -initrd /guest/initramfs.cpio.gz -append '{cmdline}' \
  </dev/null >/tmp/qemu.out 2>&1
echo QEMU_STATUS=$?
grep -a -E 'KEEL-GUEST-BOOTED|QEMU_GUEST=|KEEL-CMD-EXIT=' /tmp/qemu.out | tr -d '\\r'
"
    );
    let Some(out) = LinuxVm::new()
        .with_qemu()
        .cmd("echo KEEL_GUEST=$(nproc)")
        .l1_before(&before)
        .run()
    else {
        return;
    };
    let qemu = out.l1_before.clone().expect("l1_before's report");
    assert!(
        qemu.stdout.contains("QEMU emulator version"),
        "{}",
        qemu.stdout
    );
    assert_eq!(
        qemu.value("QEMU_STATUS").as_deref(),
        Some("0"),
        "{}",
        qemu.stdout
    );
    assert!(qemu.stdout.contains("KEEL-GUEST-BOOTED"), "{}", qemu.stdout);
    assert_eq!(
        qemu.value("QEMU_GUEST").as_deref(),
        Some("1"),
        "{}",
        qemu.stdout
    );
    assert_eq!(
        qemu.value("KEEL-CMD-EXIT").as_deref(),
        Some("0"),
        "{}",
        qemu.stdout
    );
    // keel-vmm ran the same guest in the same L1 afterwards.
    assert_eq!(out.status, Some(0), "{}", out.dump());
    assert_eq!(
        out.value("KEEL_GUEST").as_deref(),
        Some("1"),
        "{}",
        out.dump()
    );
}
