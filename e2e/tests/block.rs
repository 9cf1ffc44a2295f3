//! virtio-blk: the guest's stock virtio_blk driver on raw and qcow2 images
//! made here with the storage crate. Images travel into the rig's L1 (in
//! its initramfs, so they stay small), and the checks that need the host
//! side of the disk (checksums of image files) run there too, in the same
//! session as keel-vmm.

use std::path::{Path, PathBuf};

use e2e::{LinuxVm, Session, Then, VmOutput};
use storage::Format;

const MIB: u64 = 1 << 20;

/// A host directory for test images, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("keel-e2e-blk-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha256(path: &Path) -> String {
    xtask::util::sha256_file(path).unwrap()
}

/// A guest run with `disks` (`--disk` values) running `cmd`.
fn vm(cmd: &str, disks: &[&str]) -> LinuxVm {
    let mut vm = LinuxVm::new().cmd(cmd);
    for d in disks {
        vm = vm.arg("--disk").arg(d);
    }
    vm
}

fn value(out: &VmOutput, name: &str) -> String {
    out.value(name).unwrap_or_default()
}

/// Makes a file system on each of `$DISKS` (mkfs.ext4 when the guest has
/// it, else busybox's mke2fs), writes files, prints their checksums, trims
/// and unmounts.
const WRITE_FILES: &str = r#"
DISKS="vda vdb"
for d in $DISKS; do
  if command -v mkfs.ext4 >/dev/null 2>&1; then
    mkfs.ext4 -q -F /dev/$d >/tmp/mkfs.log 2>&1 && echo FS_$d=ext4 || echo FS_$d=failed
  else
    mke2fs -F /dev/$d >/tmp/mkfs.log 2>&1 && echo FS_$d=ext2 || echo FS_$d=failed
  fi
  mkdir -p /mnt/$d
  mount /dev/$d /mnt/$d || echo MOUNT_FAILED_$d
  dd if=/dev/urandom of=/mnt/$d/big bs=64k count=48 2>/dev/null
  echo "hello from $d" >/mnt/$d/small
  mkdir -p /mnt/$d/dir
  seq 1 20000 >/mnt/$d/dir/seq
  sync
  echo SUMS_$d=$(cd /mnt/$d && sha256sum big small dir/seq | awk '{print $1}' | tr '\n' ,)
  fstrim /mnt/$d >/dev/null 2>&1 && echo TRIM_$d=ok || echo TRIM_$d=failed
  umount /mnt/$d && echo UMOUNT_$d=ok
  echo FLUSHES_$d=$(awk '{print $16}' /sys/block/$d/stat)
done
echo WRITE_CACHE=$(cat /sys/block/vda/queue/write_cache)
echo DISCARD_MAX=$(cat /sys/block/vda/queue/discard_max_bytes)
"#;

/// Checks and mounts each disk again and prints the files' checksums.
const READ_FILES: &str = r#"
for d in vda vdb; do
  if command -v e2fsck >/dev/null 2>&1; then
    e2fsck -fn /dev/$d >/tmp/fsck.log 2>&1; echo FSCK_$d=$?
  fi
  mkdir -p /mnt/$d
  mount /dev/$d /mnt/$d || echo MOUNT_FAILED_$d
  echo SUMS_$d=$(cd /mnt/$d && sha256sum big small dir/seq | awk '{print $1}' | tr '\n' ,)
  echo SMALL_$d=$(tr ' ' _ </mnt/$d/small)
  umount /mnt/$d
done
echo SIZES=$(cat /sys/block/vda/size),$(cat /sys/block/vdb/size)
echo SERIALS=$(cat /sys/block/vda/serial),$(cat /sys/block/vdb/serial)
"#;

#[test]
fn files_on_raw_and_qcow2_disks_survive_power_off_and_a_new_boot() {
    let dir = TempDir::new("persist");
    let raw = dir.path("raw.img");
    let qcow2 = dir.path("disk.qcow2");
    storage::create_raw(&raw, 32 * MIB).unwrap();
    storage::create_qcow2(&qcow2, 48 * MIB, None).unwrap();
    // format=auto (the default) must tell the two apart.
    let disks = [
        "path=raw.img,serial=KEEL-RAW-0",
        "path=disk.qcow2,serial=KEEL-QCOW2-1",
    ];
    let Some(out) = Session::new()
        .file(&raw, "raw.img")
        .file(&qcow2, "disk.qcow2")
        .vm(vm(WRITE_FILES, &disks))
        .sh("echo QCOW2_MAGIC=$(head -c 3 disk.qcow2)")
        .vm(vm(READ_FILES, &disks))
        .run()
    else {
        return;
    };
    let (first, second) = (&out.vms[0], &out.vms[1]);
    for o in [first, second] {
        assert_eq!(o.status, Some(0), "{}", o.dump());
    }
    for d in ["vda", "vdb"] {
        let fs = value(first, &format!("FS_{d}"));
        assert!(fs == "ext4" || fs == "ext2", "{d}: mkfs: {}", first.dump());
        assert_eq!(
            value(first, &format!("UMOUNT_{d}")),
            "ok",
            "{}",
            first.dump()
        );
        assert_eq!(value(first, &format!("TRIM_{d}")), "ok", "{}", first.dump());
        let flushes: u64 = value(first, &format!("FLUSHES_{d}")).parse().unwrap_or(0);
        assert!(flushes > 0, "{d}: no flush completed: {}", first.dump());
        let written = value(first, &format!("SUMS_{d}"));
        assert_eq!(
            written.split(',').filter(|s| s.len() == 64).count(),
            3,
            "{}",
            first.dump()
        );
        assert_eq!(
            value(second, &format!("SUMS_{d}")),
            written,
            "{d}: {}",
            second.dump()
        );
        assert_eq!(
            value(second, &format!("SMALL_{d}")),
            format!("hello_from_{d}")
        );
        if let Some(fsck) = second.value(&format!("FSCK_{d}")) {
            assert_eq!(fsck, "0", "{d}: e2fsck found errors: {}", second.dump());
        }
    }
    assert_eq!(
        value(first, "WRITE_CACHE"),
        "write back",
        "FLUSH not negotiated"
    );
    assert_ne!(value(first, "DISCARD_MAX"), "0", "DISCARD not negotiated");
    // The qcow2 disk has its virtual size, not its file's, and is still qcow2.
    assert_eq!(
        value(second, "SIZES"),
        format!("{},{}", 32 * MIB / 512, 48 * MIB / 512)
    );
    assert_eq!(out.sh[0].value("QCOW2_MAGIC").as_deref(), Some("QFI"));
    assert_eq!(
        value(second, "SERIALS"),
        "KEEL-RAW-0,KEEL-QCOW2-1",
        "{}",
        second.dump()
    );
}

#[test]
fn read_only_disk_refuses_writes_and_disks_show_their_serials() {
    let dir = TempDir::new("ro");
    let ro = dir.path("ro.img");
    let data = dir.path("data.img");
    storage::create_raw(&ro, 8 * MIB).unwrap();
    storage::create_raw(&data, 4 * MIB).unwrap();
    {
        let d = storage::open(&ro, Format::Raw, false).unwrap();
        d.write_at(b"KEEL-READ-ONLY-DISK", 0).unwrap();
        let fill: Vec<u8> = (0..MIB as usize).map(|i| (i * 7 % 251) as u8).collect();
        d.write_at(&fill, MIB).unwrap();
        d.flush().unwrap();
    }
    let ro_sum = sha256(&ro);
    let cmd = r#"
echo RO=$(cat /sys/block/vda/ro),$(cat /sys/block/vdb/ro)
echo SERIAL_vda=$(cat /sys/block/vda/serial)
echo SERIAL_vdb=$(cat /sys/block/vdb/serial)
echo HEAD=$(head -c 19 /dev/vda)
dd if=/dev/zero of=/dev/vda bs=4096 count=1 conv=fsync 2>/tmp/dd.err; echo DD_STATUS=$?
blockdev --setrw /dev/vda 2>/dev/null
dd if=/dev/zero of=/dev/vda bs=4096 seek=256 count=1 conv=fsync 2>>/tmp/dd.err; echo DD_SETRW_STATUS=$?
sed 's/^/DD-ERR: /' /tmp/dd.err
echo HEAD_AFTER=$(head -c 19 /dev/vda)
printf KEEL-WRITABLE | dd of=/dev/vdb bs=512 conv=sync,fsync 2>/dev/null; echo VDB_STATUS=$?
echo QUEUES=$(ls /sys/block/vdb/mq | wc -l)
"#;
    let disks = [
        "path=ro.img,format=raw,readonly=on,serial=KEEL-RO-0",
        "path=data.img,serial=KEEL-DATA-1",
    ];
    let Some(out) = Session::new()
        .file(&ro, "ro.img")
        .file(&data, "data.img")
        // Two vCPUs: each disk gets two request queues (VIRTIO_BLK_F_MQ).
        .vm(vm(cmd, &disks).cpus(2))
        .sh("echo RO_SUM=$(sha256sum ro.img | cut -d' ' -f1); echo DATA_HEAD=$(head -c 13 data.img)")
        .run()
    else {
        return;
    };
    let o = &out.vms[0];
    assert_eq!(o.status, Some(0), "{}", o.dump());
    assert_eq!(value(o, "RO"), "1,0", "{}", o.dump());
    assert_eq!(value(o, "SERIAL_vda"), "KEEL-RO-0", "{}", o.dump());
    assert_eq!(value(o, "SERIAL_vdb"), "KEEL-DATA-1", "{}", o.dump());
    assert_eq!(value(o, "HEAD"), "KEEL-READ-ONLY-DISK", "{}", o.dump());
    assert_ne!(
        value(o, "DD_STATUS"),
        "0",
        "a write succeeded: {}",
        o.dump()
    );
    assert_ne!(
        value(o, "DD_SETRW_STATUS"),
        "0",
        "a write succeeded: {}",
        o.dump()
    );
    assert_eq!(
        value(o, "HEAD_AFTER"),
        "KEEL-READ-ONLY-DISK",
        "{}",
        o.dump()
    );
    assert_eq!(value(o, "VDB_STATUS"), "0", "{}", o.dump());
    assert_eq!(value(o, "QUEUES"), "2", "{}", o.dump());
    let sh = &out.sh[0];
    assert_eq!(
        sh.value("RO_SUM"),
        Some(ro_sum),
        "the read-only image changed"
    );
    assert_eq!(sh.value("DATA_HEAD").as_deref(), Some("KEEL-WRITABLE"));
}

#[test]
fn qcow2_overlay_reads_its_base_and_never_writes_it() {
    let dir = TempDir::new("overlay");
    let base = dir.path("base.qcow2");
    let top = dir.path("top.qcow2");
    storage::create_qcow2(&base, 16 * MIB, None).unwrap();
    let fill: Vec<u8> = (0..MIB as usize).map(|i| (i * 13 % 241) as u8).collect();
    {
        let b = storage::open(&base, Format::Qcow2, false).unwrap();
        b.write_at(b"KEEL-BASE-IMAGE!", 0).unwrap();
        b.write_at(&fill, 2 * MIB).unwrap();
        b.flush().unwrap();
    }
    let fill_sum = {
        use std::io::Write;
        let p = dir.path("fill.bin");
        std::fs::File::create(&p).unwrap().write_all(&fill).unwrap();
        sha256(&p)
    };
    // The overlay names its base relatively: both sit in the session's
    // working directory.
    storage::create_qcow2(&top, 16 * MIB, Some(Path::new("base.qcow2"))).unwrap();
    let base_sum = sha256(&base);
    let cmd = r#"
echo HEAD=$(head -c 16 /dev/vda)
echo FILL=$(dd if=/dev/vda bs=1M skip=2 count=1 2>/dev/null | sha256sum | cut -d' ' -f1)
printf KEEL-OVERLAY-NEW | dd of=/dev/vda bs=512 conv=sync,fsync 2>/dev/null; echo W1=$?
dd if=/dev/urandom of=/dev/vda bs=64k seek=96 count=16 conv=fsync 2>/dev/null; echo W2=$?
echo 3 >/proc/sys/vm/drop_caches
echo HEAD_AFTER=$(head -c 16 /dev/vda)
echo FILL_AFTER=$(dd if=/dev/vda bs=1M skip=2 count=1 2>/dev/null | sha256sum | cut -d' ' -f1)
"#;
    let Some(out) = Session::new()
        .file(&base, "base.qcow2")
        .file(&top, "top.qcow2")
        .sh("echo SUM=$(sha256sum base.qcow2 | cut -d' ' -f1)")
        .vm(vm(cmd, &["path=top.qcow2,serial=KEEL-OVERLAY"]))
        .sh("echo SUM=$(sha256sum base.qcow2 | cut -d' ' -f1); echo TOP_KIB=$(du -k top.qcow2 | cut -f1)")
        .run()
    else {
        return;
    };
    let o = &out.vms[0];
    assert_eq!(o.status, Some(0), "{}", o.dump());
    assert_eq!(value(o, "HEAD"), "KEEL-BASE-IMAGE!", "{}", o.dump());
    assert_eq!(value(o, "FILL"), fill_sum, "{}", o.dump());
    assert_eq!(
        (value(o, "W1"), value(o, "W2")),
        ("0".into(), "0".into()),
        "{}",
        o.dump()
    );
    assert_eq!(value(o, "HEAD_AFTER"), "KEEL-OVERLAY-NEW", "{}", o.dump());
    assert_eq!(value(o, "FILL_AFTER"), fill_sum, "{}", o.dump());
    assert_eq!(
        out.sh[0].value("SUM"),
        Some(base_sum.clone()),
        "the base arrived changed"
    );
    assert_eq!(
        out.sh[1].value("SUM"),
        Some(base_sum),
        "the guest's writes reached the base"
    );
    let top_kib: u64 = out.sh[1]
        .value("TOP_KIB")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(top_kib >= 1024, "the overlay did not grow ({top_kib} KiB)");
}

#[test]
fn a_disk_stays_usable_across_a_guest_reboot_in_place() {
    let dir = TempDir::new("reboot");
    let raw = dir.path("disk.raw");
    storage::create_raw(&raw, 4 * MIB).unwrap();
    // Both boots read sector 0, then write the marker there.
    let cmd = r#"
echo BOOT_READ=$(head -c 8 /dev/vda | tr -d '\000')
printf KEEL-RB1 | dd of=/dev/vda bs=512 conv=sync,fsync 2>/dev/null; echo WRITE=$?
"#;
    let Some(out) = Session::new()
        .file(&raw, "disk.raw")
        .vm(vm(cmd, &["path=disk.raw"]).then(Then::RebootOnce))
        .run()
    else {
        return;
    };
    let o = &out.vms[0];
    assert_eq!(o.status, Some(0), "{}", o.dump());
    assert_eq!(o.count("KEEL-SECOND-BOOT"), 1, "{}", o.dump());
    assert_eq!(o.count("BOOT_READ="), 2, "{}", o.dump());
    assert_eq!(o.count("BOOT_READ=KEEL-RB1"), 1, "{}", o.dump());
    assert_eq!(
        value(o, "BOOT_READ"),
        "KEEL-RB1",
        "second boot: {}",
        o.dump()
    );
    assert_eq!(o.count("WRITE=0"), 2, "{}", o.dump());
}

/// Runs keel-vmm natively with a kernel that is a plain file (disks are
/// checked before the kernel is loaded or KVM opened).
fn run_with_disks(dir: &TempDir, disks: &[String]) -> VmOutput {
    let kernel = dir.path("kernel");
    std::fs::write(&kernel, b"not a kernel").unwrap();
    let mut args = vec!["--kernel".to_string(), kernel.display().to_string()];
    for d in disks {
        args.extend(["--disk".to_string(), d.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    e2e::run_keel_vmm(&args)
}

#[test]
fn bad_disks_are_refused_with_one_line_and_status_2() {
    let dir = TempDir::new("bad");
    let raw = dir.path("raw.img");
    storage::create_raw(&raw, MIB).unwrap();
    let orphan = dir.path("orphan.qcow2");
    let gone = dir.path("gone.qcow2");
    storage::create_qcow2(&gone, MIB, None).unwrap();
    storage::create_qcow2(&orphan, MIB, Some(&gone)).unwrap();
    std::fs::remove_file(&gone).unwrap();
    let raw_s = raw.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![format!("path={}", dir.path("missing.img").display())],
            "missing.img",
        ),
        (vec![format!("path={raw_s},size=1G")], "unknown key 'size'"),
        (vec![format!("path={raw_s},format=vmdk")], "format"),
        (vec!["readonly=on".into()], "path"),
        (
            vec![format!("path={raw_s},serial=this-serial-is-too-long")],
            "20 bytes",
        ),
        (
            vec![format!("path={raw_s},format=qcow2")],
            "not a qcow2 image",
        ),
        (vec![format!("path={}", orphan.display())], "gone.qcow2"),
        (
            vec![format!("path={raw_s}"), format!("path={raw_s}")],
            "in use",
        ),
    ];
    for (disks, wanted) in cases {
        let out = run_with_disks(&dir, &disks);
        assert_eq!(out.status, Some(2), "{disks:?}: {}", out.dump());
        let err = out.stderr.trim();
        assert!(err.contains(wanted), "{disks:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{disks:?}: {err}");
        assert!(err.starts_with("keel-vmm: "), "{err}");
    }
}
