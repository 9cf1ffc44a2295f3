//! `blk-rig`: fio in the guest, inside one L1 of the KVM rig, on a raw and a
//! qcow2 image: keel-vmm (`--disk`, with its default `cache=writeback` and
//! with `cache=none`) against QEMU's virtio-blk-pci with
//! `cache=none,aio=native` and with QEMU's defaults (writeback cache, thread
//! pool), on the same image files. The table compares like with like:
//! keel-vmm `cache=none` with QEMU `cache=none,aio=native`, keel-vmm's
//! default with QEMU's.
//!
//! L1's root filesystem is its initramfs, and tmpfs rejects `O_DIRECT`
//! (which `cache=none` needs), so the images live on ext4 on a `brd` RAM
//! disk (`/dev/ram0`) inside L1: a real block device, in memory. The raw
//! image is made in L1, the qcow2 one (empty) on the host with `qemu-img`;
//! one QEMU boot then writes both end to end with fio, so every later read
//! hits allocated data (and qcow2 writes never allocate clusters).
//!
//! Each VMM boots once per round with both disks (serials `raw` and
//! `qcow2`) and the benchmark initramfs (fio), runs the [`JOBS`] on each
//! disk (`--direct=1 --ioengine=libaio`, [`FIO_SECONDS`] s each after a
//! [`RAMP_SECONDS`] s ramp) and prints `FIO <disk> <rw> <iops> <KiB/s>
//! <error>` lines.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{
    bench_lines, keel_argv, qemu_argv, release_keel_vmm, rig_echo, rounds_sh, Grid, RemoveOnDrop,
    Row, IRQ_SH, RUN_VM_SH,
};
use crate::guest;
use crate::host;
use crate::paths;
use crate::rig::{self, RigOptions};
use crate::util::run_captured;

/// Size of each image.
pub const IMAGE_MIB: u64 = 256;
/// Measured seconds per fio job (after the ramp).
pub const FIO_SECONDS: u32 = 5;
/// Seconds of each job that fio runs before measuring.
pub const RAMP_SECONDS: u32 = 1;

/// One fio job.
pub struct Job {
    pub rw: &'static str,
    pub bs: &'static str,
    pub depth: u32,
    pub label: &'static str,
    /// IOPS (random) or MiB/s (sequential).
    pub iops: bool,
}

pub const JOBS: &[Job] = &[
    Job {
        rw: "randread",
        bs: "4k",
        depth: 32,
        label: "4k random read, QD32",
        iops: true,
    },
    Job {
        rw: "randwrite",
        bs: "4k",
        depth: 32,
        label: "4k random write, QD32",
        iops: true,
    },
    Job {
        rw: "read",
        bs: "1M",
        depth: 8,
        label: "1M sequential read, QD8",
        iops: false,
    },
    Job {
        rw: "write",
        bs: "1M",
        depth: 8,
        label: "1M sequential write, QD8",
        iops: false,
    },
];

/// The images, by their disk serial; each is `/bench/disk.<format>`.
pub const FORMATS: &[&str] = &["raw", "qcow2"];

const INITRD: &str = "/guest/initramfs-bench.cpio.gz";
/// A run (boot, then every job) is killed after this long; normally it
/// takes about 70 s.
const RUN_LIMIT_S: u32 = 240;

/// fio's terse (`--minimal`) output: read IOPS and KiB/s are fields 8 and
/// 7, write IOPS and KiB/s 49 and 48, the error 5 (1-based, `;`-separated).
const TERSE: &str = "awk -F';' '{print $8+$49,$7+$48,$5}'";

/// The guest's command: every job on every disk, found by its serial.
fn guest_cmd() -> String {
    let jobs: Vec<String> = JOBS
        .iter()
        .map(|j| format!("{}:{}:{}", j.rw, j.bs, j.depth))
        .collect();
    format!(
        "{IRQ_SH}for s in {formats};do d=;for b in /sys/block/vd*;do [ \"$(cat $b/serial)\" = $s ]&&d=/dev/${{b##*/}};done\n\
         for j in {jobs};do set -- $(echo $j|tr : ' ');a=$(q)\n\
         echo FIO $s $1 $(fio --name=j --filename=$d --rw=$1 --bs=$2 --iodepth=$3 --ioengine=libaio \
         --direct=1 --runtime={FIO_SECONDS} --ramp_time={RAMP_SECONDS} --time_based --minimal|{TERSE})\n\
         echo INFO irq $s $1 $(($(q)-a))\n\
         done;done\n",
        formats = FORMATS.join(" "),
        jobs = jobs.join(" "),
    )
}

/// The guest's command for the prefill: every disk written end to end.
fn fill_cmd() -> String {
    format!(
        "for b in /sys/block/vd*;do echo FILL ${{b##*/}} $(fio --name=fill --filename=/dev/${{b##*/}} \
         --rw=write --bs=1M --iodepth=8 --ioengine=libaio --direct=1 --minimal|{TERSE});done\n"
    )
}

/// QEMU's `-drive`/`-device` pairs for the images, with `cache` options.
fn qemu_disks(cache: &str) -> Vec<String> {
    FORMATS
        .iter()
        .flat_map(|f| {
            [
                "-drive".to_string(),
                format!("if=none,id={f},file=/bench/disk.{f},format={f}{cache}"),
                "-device".to_string(),
                format!("virtio-blk-pci,drive={f},serial={f}"),
            ]
        })
        .collect()
}

/// keel-vmm's `--disk` flags for the images, with `cache` options.
fn keel_disks(cache: &str) -> Vec<String> {
    FORMATS
        .iter()
        .flat_map(|f| {
            [
                "--disk".to_string(),
                format!("path=/bench/disk.{f},format={f},serial={f}{cache}"),
            ]
        })
        .collect()
}

/// Column of keel-vmm with `cache=none`, whose ratio QEMU `cache=none`
/// ([`QEMU_DIRECT`]) takes.
const KEEL_DIRECT: usize = 1;
/// Column of QEMU with `cache=none,aio=native`.
const QEMU_DIRECT: usize = 2;

/// The VMMs compared (keel-vmm first), running `cmd` in the guest.
fn vmms(cmd: &str) -> Vec<(String, Vec<String>)> {
    vec![
        (
            "keel-vmm".to_string(),
            keel_argv(INITRD, cmd, &keel_disks("")),
        ),
        (
            "keel-vmm cache=none".to_string(),
            keel_argv(INITRD, cmd, &keel_disks(",cache=none")),
        ),
        (
            "QEMU cache=none,aio=native".to_string(),
            qemu_argv(INITRD, cmd, &qemu_disks(",cache=none,aio=native")),
        ),
        (
            "QEMU defaults (writeback, threads)".to_string(),
            qemu_argv(INITRD, cmd, &qemu_disks("")),
        ),
    ]
}

/// The script L1 runs: the RAM disk, ext4, the images, the prefill, then
/// `runs` interleaved rounds.
fn l1_script(runs: usize) -> String {
    // Both images, ext4's metadata and journal, and room to spare.
    let brd_kib = (FORMATS.len() as u64 * IMAGE_MIB + 128) * 1024;
    let fill = qemu_argv(INITRD, &fill_cmd(), &qemu_disks(""));
    let fill: Vec<String> = fill.iter().map(|a| rig::shell_quote(a)).collect();
    format!(
        r#"set -u
insmod /rig-bench/brd.ko rd_nr=1 rd_size={brd_kib} max_part=0 || exit 1
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 /dev/ram0 || exit 1
mkdir -p /bench
mount -t ext4 /dev/ram0 /bench || exit 1
dd if=/dev/zero of=/bench/disk.raw bs=1M count={IMAGE_MIB} 2>/dev/null || exit 1
cp /rig-bench/disk.qcow2 /bench/disk.qcow2 || exit 1
mkdir -p /tmp/bench
cd /tmp/bench
{RUN_VM_SH}
run_vm fill 'prefill (QEMU defaults)' FILL 2 {RUN_LIMIT_S} {fill} || exit 1
sync
echo "bench: images: $(ls -l /bench | grep disk | tr -s ' ' | cut -d' ' -f5,9 | tr '\n' ' ')"
{rounds}# A failed last run is listed, not the rig's failure.
true"#,
        fill = fill.join(" "),
        rounds = rounds_sh(
            &vmms(&guest_cmd()),
            runs,
            "FIO",
            FORMATS.len() * JOBS.len(),
            RUN_LIMIT_S
        ),
    )
}

fn rows() -> Vec<Row> {
    FORMATS
        .iter()
        .flat_map(|f| {
            JOBS.iter().map(move |j| Row {
                key: format!("{f} {}", j.rw),
                label: format!("{f}: {}", j.label),
                unit: if j.iops { "IOPS" } else { "MiB/s" },
                decimals: 0,
            })
        })
        .collect()
}

/// The grid from the rig's `BENCH <vmm> <disk> <rw> <iops> <KiB/s> <error>`.
fn parse(output: &str) -> Result<Grid> {
    let names = vmms("").into_iter().map(|(n, _)| n).collect();
    let mut grid = Grid::new(names, rows());
    grid.compare(KEEL_DIRECT, None);
    grid.compare(QEMU_DIRECT, Some(KEEL_DIRECT));
    for (vmm, f) in bench_lines(output) {
        let [disk, rw, iops, kib, err] = f[..] else {
            bail!("A fio result line is incomplete: {f:?}");
        };
        if err != "0" {
            bail!("fio failed on {disk} ({rw}) with error {err}");
        }
        let iops: f64 = iops.parse().with_context(|| format!("fio IOPS {iops:?}"))?;
        let kib: f64 = kib.parse().with_context(|| format!("fio KiB/s {kib:?}"))?;
        let random = JOBS.iter().any(|j| j.rw == rw && j.iops);
        let value = if random { iops } else { kib / 1024.0 };
        if !grid.push(&format!("{disk} {rw}"), vmm, value) {
            bail!("Unexpected fio result for VMM {vmm}: {f:?}");
        }
    }
    Ok(grid)
}

/// Runs the benchmark: `runs` rounds of every VMM in one L1; returns the
/// table.
pub fn run(runs: usize) -> Result<String> {
    host::ensure(&[host::QEMU, host::QEMU_IMG])?;
    let vmm = release_keel_vmm()?;
    let g = guest::build()?;
    let index = guest::module_index(&g.kernel_root, &g.kernel_release)?;
    let brd = index
        .get("brd")
        .context("The kernel package has no brd module (the RAM disk for the images)")?;
    let dir = paths::target_dir().join(format!("keel-blk-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("Creating {}", dir.display()))?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let qcow2: PathBuf = dir.join("disk.qcow2");
    run_captured(
        Command::new(host::QEMU_IMG.program)
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&qcow2)
            .arg(format!("{IMAGE_MIB}M")),
    )?;
    let per_boot = (JOBS.len() * FORMATS.len()) as u64 * u64::from(FIO_SECONDS + RAMP_SECONDS);
    let boots = runs as u64 * vmms("").len() as u64;
    eprintln!(
        "xtask: blk-rig: {runs} rounds × {} VMMs, {per_boot} s of fio per boot (about {} min)",
        vmms("").len(),
        (boots * (per_boot + 30) + 180).div_ceil(60)
    );
    let opts = RigOptions {
        timeout: Duration::from_secs(900 + boots * u64::from(RUN_LIMIT_S)),
        keel_vmm: Some(vmm),
        files: vec![
            (brd.clone(), "/rig-bench/brd.ko".to_string()),
            (qcow2, "/rig-bench/disk.qcow2".to_string()),
        ],
        guest_bench: true,
        with_qemu: true,
        echo: rig_echo(),
        ..RigOptions::default()
    };
    let out = rig::run(&opts, &l1_script(runs))?;
    if out.status != 0 {
        bail!(
            "The benchmark failed in the rig:\n{}",
            rig::tail(&out.output, 80)
        );
    }
    let mut grid = parse(&out.output)?;
    grid.add_failures(&out.output);
    grid.add_irqs(&out.output);
    grid.check(runs)
        .with_context(|| format!("The rig's output:\n{}", rig::tail(&out.output, 80)))?;
    let what = format!(
        "boot, then {} fio jobs of {} s",
        JOBS.len() * FORMATS.len(),
        FIO_SECONDS + RAMP_SECONDS
    );
    // IOPS or MiB/s (of 1 MiB requests) over the ramp and the run →
    // requests (the ramp counts too: the interrupts do).
    let requests = |_: &Row, rate: f64| rate * f64::from(FIO_SECONDS + RAMP_SECONDS);
    Ok(grid.table()
        + &grid.failures_note(runs)
        + "\n"
        + &grid.irq_table("per request (approx.)", requests)
        + &super::cpu_note(&out.output, &grid.vmms, &what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_commands_fit_the_kernel_command_line() {
        for cmd in [guest_cmd(), fill_cmd()] {
            let line = super::super::guest_cmdline(&cmd);
            assert!(line.len() <= 2046, "{} bytes", line.len());
        }
    }

    #[test]
    fn guest_command_is_valid_sh_and_runs_every_job() {
        let cmd = guest_cmd();
        for script in [cmd.as_str(), &fill_cmd()] {
            let status = Command::new("sh")
                .args(["-n", "-c", script])
                .status()
                .unwrap();
            assert!(status.success(), "{script}");
        }
        assert!(cmd.contains("randread:4k:32 randwrite:4k:32 read:1M:8 write:1M:8"));
        assert!(cmd.contains("--direct=1") && cmd.contains("--ioengine=libaio"));
        assert!(cmd.contains(&format!("--runtime={FIO_SECONDS} ")));
    }

    /// The terse fields picked are the ones fio 3.33 documents: a sample
    /// line of a write job gives its IOPS and bandwidth.
    #[test]
    fn terse_fields_pick_iops_and_bandwidth() {
        let mut fields = vec!["0"; 130];
        fields[0] = "3";
        fields[2] = "j";
        fields[47] = "354237"; // write KiB/s (field 48)
        fields[48] = "88559"; // write IOPS (field 49)
        let line = fields.join(";");
        let out = Command::new("sh")
            .args(["-c", &format!("echo '{line}' | {TERSE}")])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "88559 354237 0"
        );
    }

    #[test]
    fn every_vmm_gets_both_disks_with_their_serials() {
        let v = vmms("true");
        assert_eq!(v.len(), 4);
        let has = |argv: &[String], disk: &str| argv.iter().any(|a| a == disk);
        let keel = &v[0].1;
        assert!(has(keel, "path=/bench/disk.raw,format=raw,serial=raw"));
        assert!(has(
            keel,
            "path=/bench/disk.qcow2,format=qcow2,serial=qcow2"
        ));
        assert!(!keel.join(" ").contains("cache="));
        assert_eq!(v[KEEL_DIRECT].0, "keel-vmm cache=none");
        let keel_direct = &v[KEEL_DIRECT].1;
        assert!(has(
            keel_direct,
            "path=/bench/disk.raw,format=raw,serial=raw,cache=none"
        ));
        assert!(has(
            keel_direct,
            "path=/bench/disk.qcow2,format=qcow2,serial=qcow2,cache=none"
        ));
        assert_eq!(v[QEMU_DIRECT].0, "QEMU cache=none,aio=native");
        let direct = v[QEMU_DIRECT].1.join(" ");
        assert!(direct.contains(
            "if=none,id=qcow2,file=/bench/disk.qcow2,format=qcow2,cache=none,aio=native"
        ));
        assert!(direct.contains("virtio-blk-pci,drive=raw,serial=raw"));
        let defaults = v[3].1.join(" ");
        assert!(defaults.contains("file=/bench/disk.raw,format=raw -device"));
        assert!(!defaults.contains("cache="));
        for (_, argv) in &v {
            assert!(argv.iter().any(|a| a == INITRD));
        }
    }

    #[test]
    fn script_prefills_then_rotates_the_vmms() {
        let s = l1_script(2);
        let fill = s.find("run_vm fill").unwrap();
        let first = s.find("run_vm 0 ").unwrap();
        assert!(fill < first);
        let calls: Vec<&str> = s
            .lines()
            .filter(|l| l.starts_with("run_vm ") && !l.starts_with("run_vm fill"))
            .map(|l| &l[7..8])
            .collect();
        assert_eq!(calls, ["0", "1", "2", "3", "1", "2", "3", "0"]);
        assert!(s.contains("rd_size=655360"));
    }

    #[test]
    fn results_parse_into_iops_and_mib_per_second() {
        let out = "noise\nBENCH 0 raw randread 12000 48000 0\nBENCH 2 qcow2 write 300 307200 0\n\
                   BENCH fill vda 1 2 0\n";
        let g = parse(out).unwrap();
        assert_eq!(g.samples("raw randread", 0), &[12000.0]);
        assert_eq!(g.samples("qcow2 write", 2), &[300.0]);
        assert!(g.check(1).is_err());
        // keel-vmm cache=none is compared with QEMU cache=none, keel-vmm's
        // default with QEMU's.
        let head = g.table().lines().next().unwrap().to_string();
        assert_eq!(
            head,
            "| workload | keel-vmm | keel-vmm cache=none | QEMU cache=none,aio=native | \
             keel cache=none/this | QEMU defaults (writeback, threads) | keel/this |"
        );
        let err = parse("BENCH 1 raw read 1 2 5\n").unwrap_err().to_string();
        assert!(err.contains("error 5"), "{err}");
        assert!(parse("BENCH 1 raw read\n").is_err());
        assert!(parse("BENCH 1 nvme read 1 1 0\n").is_err());
    }
}
