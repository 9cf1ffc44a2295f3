use super::*;

#[test]
fn status_comes_from_the_last_exit_line() {
    let out = parse_result("hello\nKEEL-RIG-EXIT=3\n", "", Some(0)).unwrap();
    assert_eq!(out.status, 3);
    assert_eq!(out.output, "hello\n");
}

#[test]
fn missing_status_and_missing_kvm_are_errors() {
    let err = parse_result("Kernel panic\n", "qemu: boom\n", Some(1)).unwrap_err();
    assert!(err.to_string().contains("qemu: boom"), "{err}");
    let err = parse_result("KEEL-RIG-NOKVM: no\n", "", Some(0)).unwrap_err();
    assert!(err.to_string().contains("KVM is not available"), "{err}");
}

#[test]
fn console_text_is_normalized() {
    assert_eq!(normalize(b"a\r\nb\rc\n"), "a\nbc\n");
    assert_eq!(tail("1\n2\n3\n", 2), "2\n3");
}

#[test]
fn quoting_survives_sh() {
    let s = "it's $HOME \"x\"";
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("printf %s {}", shell_quote(s))])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
}

#[test]
fn disks_and_the_forward_become_devices() {
    let opts = RigOptions {
        disks: vec!["/s/a.img".into(), "/s/b,c.img".into()],
        host_forward: Some((9443, 8443)),
        ..RigOptions::default()
    };
    let args = device_args(&opts).join(" ");
    assert_eq!(
        args,
        "-drive file=/s/a.img,format=raw,if=none,id=disk0,cache=writeback \
         -device virtio-blk-pci,drive=disk0 \
         -drive file=/s/b,,c.img,format=raw,if=none,id=disk1,cache=writeback \
         -device virtio-blk-pci,drive=disk1 \
         -nic user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:9443-:8443"
    );
    assert!(device_args(&RigOptions::default()).is_empty());
}

#[test]
fn disk_devices_are_named_like_linux_does() {
    assert_eq!(disk_device(0), "/dev/vda");
    assert_eq!(disk_device(25), "/dev/vdz");
    assert_eq!(disk_device(26), "/dev/vdaa");
    assert_eq!(disk_device(27), "/dev/vdab");
}

#[test]
fn the_prelude_loads_virtio_and_configures_the_network() {
    assert_eq!(prelude(&RigOptions::default()), "");
    let opts = RigOptions {
        disks: vec!["/a".into(), "/b".into()],
        host_forward: Some((8443, 8443)),
        ..RigOptions::default()
    };
    let text = prelude(&opts);
    let out = Command::new("sh")
        .args(["-n", "-c", &text])
        .output()
        .unwrap();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("</etc/keel-virtio-modules"), "{text}");
    assert!(text.contains("[ ! -b /dev/vdb ]"), "{text}");
    assert!(text.contains("ip addr add 10.0.2.15/24 dev"), "{text}");
    assert!(text.contains("ip route add default via 10.0.2.2"), "{text}");
    let disks_only = prelude(&RigOptions {
        disks: vec!["/a".into()],
        ..RigOptions::default()
    });
    assert!(!disks_only.contains("ip addr"), "{disks_only}");
}

/// The prelude's interface search, on a fake /sys/class/net.
#[test]
fn the_prelude_finds_the_device_backed_interface() {
    let dir = std::env::temp_dir().join(format!("xtask-rig-net-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    for (name, device) in [("lo", false), ("br0", false), ("eth0", true)] {
        fs::create_dir_all(dir.join(name)).unwrap();
        if device {
            fs::create_dir_all(dir.join(name).join("device")).unwrap();
        }
    }
    let text = prelude(&RigOptions {
        host_forward: Some((1, 2)),
        ..RigOptions::default()
    });
    let start = text.find("rig_if=\n").unwrap();
    let end = text.find("if [ -z \"$rig_if\" ]").unwrap();
    let search = text[start..end].replace("/sys/class/net", &dir.display().to_string());
    let out = Command::new("sh")
        .args(["-c", &format!("{search}echo \"$rig_if\"")])
        .output()
        .unwrap();
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "eth0");
}

#[test]
fn programs_may_need_only_the_host_libraries_l1_has() {
    let me = std::env::current_exe().unwrap();
    let ok = RigOptions {
        programs: vec![(me, "/usr/bin/t".into())],
        ..RigOptions::default()
    };
    check_programs(&ok).unwrap();
    // QEMU needs far more than the C library.
    if let Some(qemu) = crate::util::which(host::QEMU.program) {
        let bad = RigOptions {
            programs: vec![(qemu.clone(), "/usr/bin/q".into())],
            ..RigOptions::default()
        };
        let err = check_programs(&bad).unwrap_err().to_string();
        assert!(err.contains("which the rig's L1 lacks"), "{err}");
        assert!(err.contains(&qemu.display().to_string()), "{err}");
    }
}

#[test]
fn qemu_gets_svm_and_the_options() {
    let image = RigImage {
        kernel: "/k".into(),
        base_initramfs: "/b".into(),
        guest: Guest {
            vmlinuz: "/k".into(),
            vmlinux: "/v".into(),
            initramfs: "/i".into(),
            manifest: "/m".into(),
            kernel_release: "r".into(),
            kernel_root: "/r".into(),
        },
    };
    let opts = RigOptions {
        cpus: 3,
        memory_mib: 1234,
        ..RigOptions::default()
    };
    let args = qemu_args(&image, Path::new("/tmp/x.cpio"), &opts).join(" ");
    assert!(args.contains("-cpu EPYC,+svm"), "{args}");
    assert!(args.contains("-smp 3 -m 1234"), "{args}");
    assert!(args.contains("-initrd /tmp/x.cpio"), "{args}");
    assert!(args.contains("-no-reboot"), "{args}");
}
