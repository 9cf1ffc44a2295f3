//! Boot benchmarks.
//!
//! - `boot-native`: the PVH payload on this machine's /dev/kvm, process
//!   start → exit and peak RSS, keel-vmm vs QEMU `-M microvm`.
//! - `boot-rig`: the stock kernel inside the KVM rig, process start → the
//!   guest's boot marker, keel-vmm vs QEMU `-M microvm` and `-M q35` in the
//!   same L1 (timings there are emulated: compare only within one run).
//!
//! The rig part runs this same binary inside L1 (`xtask bench-inner`), which
//! spawns the VMMs and timestamps the marker on their console output.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{median, release_keel_vmm, RemoveOnDrop};
use crate::guest;
use crate::paths;
use crate::payload::{self, Payload};
use crate::rig::{self, RigOptions};

/// One measured run of one VMM.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub millis: f64,
    pub max_rss_kib: u64,
}

/// Runs `cmd` to completion; returns its wall time (spawn → exit), peak
/// RSS (from wait4's rusage) and exit status.
fn measure(cmd: &mut Command) -> Result<(Sample, i32)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("Starting {}", crate::util::describe(cmd)))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data filled by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unwaited child; status and usage are valid out
    // pointers. std's Child is not waited afterwards.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    if rc != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((
        Sample {
            millis: elapsed.as_secs_f64() * 1e3,
            max_rss_kib: usage.ru_maxrss as u64,
        },
        code,
    ))
}

/// Results of one VMM over all runs.
pub struct Series {
    pub name: String,
    pub samples: Vec<Sample>,
}

impl Series {
    fn median_ms(&self) -> f64 {
        median(self.samples.iter().map(|s| s.millis).collect())
    }
    fn median_rss_mib(&self) -> f64 {
        median(
            self.samples
                .iter()
                .map(|s| s.max_rss_kib as f64 / 1024.0)
                .collect(),
        )
    }
}

/// Builds the command line of one VMM run.
type MakeCommand<'a> = &'a dyn Fn() -> Command;

/// Payload boot on the native /dev/kvm: keel-vmm vs QEMU microvm.
pub fn boot_native(runs: usize) -> Result<Vec<Series>> {
    let vmm = release_keel_vmm()?;
    let elf = payload::build(Payload::Ok)?;
    let keel = || {
        let mut c = Command::new(&vmm);
        c.arg("--kernel").arg(&elf).args(["--memory", "64M"]);
        c
    };
    let qemu = || {
        let mut c = Command::new("qemu-system-x86_64");
        c.args([
            "-M",
            "microvm,x-option-roms=off,rtc=off",
            "-accel",
            "kvm",
            "-m",
            "64",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel",
        ])
        .arg(&elf);
        c
    };
    // QEMU's isa-debug-exit exits with (0 << 1) | 1.
    let vmms: [(&str, MakeCommand, i32); 2] =
        [("keel-vmm", &keel, 0), ("qemu -M microvm", &qemu, 1)];
    let mut series: Vec<Series> = vmms
        .iter()
        .map(|(n, _, _)| Series {
            name: n.to_string(),
            samples: Vec::new(),
        })
        .collect();
    // One warm-up each (page cache), then interleaved rounds, alternating
    // which VMM goes first.
    for (_, make, _) in &vmms {
        measure(&mut make())?;
    }
    for round in 0..runs {
        let mut order: Vec<usize> = (0..vmms.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (name, make, want) = &vmms[i];
            let (sample, code) = measure(&mut make())?;
            if code != *want {
                bail!("{name} exited with {code}, expected {want}");
            }
            series[i].samples.push(sample);
        }
    }
    Ok(series)
}

/// The kernel command line for benchmark boots: quiet, the marker, power off.
fn bench_cmdline() -> String {
    format!(
        "console=ttyS0 reboot=k panic=1 quiet {}",
        guest::cmdline_args("true", guest::Then::Poweroff)
    )
}

/// The VMM command lines compared in the rig (paths as seen inside L1).
fn rig_commands(keel: &str, cpus: u32, memory_mib: u32) -> Vec<(String, Vec<String>)> {
    let cmdline = bench_cmdline();
    let kernel = "/guest/vmlinuz";
    let initrd = "/guest/initramfs.cpio.gz";
    let keel_args = vec![
        keel.to_string(),
        "--kernel".into(),
        kernel.into(),
        "--initrd".into(),
        initrd.into(),
        "--cpus".into(),
        cpus.to_string(),
        "--memory".into(),
        format!("{memory_mib}M"),
        "--cmdline".into(),
        cmdline.clone(),
    ];
    let qemu = |machine: &str| -> Vec<String> {
        [
            "qemu-system-x86_64",
            "-M",
            machine,
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-smp",
            &cpus.to_string(),
            "-m",
            &memory_mib.to_string(),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
            kernel,
            "-initrd",
            initrd,
            "-append",
            &cmdline,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    vec![
        ("keel-vmm".to_string(), keel_args),
        ("qemu -M microvm".to_string(), qemu("microvm")),
        ("qemu -M q35".to_string(), qemu("q35")),
    ]
}

/// Runs inside L1: `runs` interleaved rounds of every VMM; prints one
/// `BENCH <vmm-index> <marker-ms> <exit-ms> <max-rss-kib>` line per run.
pub fn inner(runs: usize, cpus: u32, memory_mib: u32) -> Result<()> {
    let vmms = rig_commands("/usr/bin/keel-vmm", cpus, memory_mib);
    for round in 0..runs {
        let mut order: Vec<usize> = (0..vmms.len()).collect();
        order.rotate_left(round % vmms.len());
        for i in order {
            let (name, argv) = &vmms[i];
            let (marker, exit, rss) = time_to_marker(argv, "KEEL-GUEST-BOOTED")
                .with_context(|| format!("Benchmarking {name}"))?;
            println!("BENCH {i} {marker:.1} {exit:.1} {rss}");
        }
    }
    Ok(())
}

/// Spawns `argv`, returns (ms to `marker` on stdout, ms to exit, peak RSS KiB).
fn time_to_marker(argv: &[String], marker: &str) -> Result<(f64, f64, u64)> {
    let start = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("Starting {}", argv[0]))?;
    let pid = child.id() as libc::pid_t;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut marker_ms = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if marker_ms.is_none() && line.contains(marker) {
            marker_ms = Some(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut status = 0;
    // SAFETY: see `measure`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unwaited child.
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let exit_ms = start.elapsed().as_secs_f64() * 1e3;
    let marker_ms = marker_ms.with_context(|| format!("{} never printed {marker}", argv[0]))?;
    Ok((marker_ms, exit_ms, usage.ru_maxrss as u64))
}

/// Stock-kernel boot in the rig: keel-vmm vs QEMU microvm and q35 in one L1.
pub fn boot_rig(runs: usize) -> Result<Vec<Series>> {
    let vmm = release_keel_vmm()?;
    // A copy of this very binary (through /proc/self/exe, which works even
    // when cargo has rebuilt the file since we started) runs inside L1.
    let xtask = paths::target_dir().join(format!("keel-bench-{}", std::process::id()));
    std::fs::copy("/proc/self/exe", &xtask).context("Copying the xtask binary")?;
    let _cleanup = RemoveOnDrop(xtask.clone());
    let (cpus, memory) = (1, 512);
    let opts = RigOptions {
        timeout: Duration::from_secs(120 + 60 * runs as u64),
        keel_vmm: Some(vmm),
        files: vec![(xtask, "/usr/bin/keel-bench".to_string())],
        with_qemu: true,
        ..RigOptions::default()
    };
    let script = format!("keel-bench bench-inner --runs {runs} --cpus {cpus} --memory {memory}");
    let out = rig::run(&opts, &script)?;
    if out.status != 0 {
        bail!("The benchmark failed in the rig:\n{}", out.output);
    }
    let names: Vec<String> = rig_commands("", cpus, memory)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut series: Vec<Series> = names
        .iter()
        .map(|n| Series {
            name: n.clone(),
            samples: Vec::new(),
        })
        .collect();
    for line in out.output.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 5 && f[0] == "BENCH" {
            let (Ok(i), Ok(ms), Ok(rss)) = (f[1].parse::<usize>(), f[2].parse(), f[4].parse())
            else {
                continue;
            };
            if let Some(s) = series.get_mut(i) {
                s.samples.push(Sample {
                    millis: ms,
                    max_rss_kib: rss,
                });
            }
        }
    }
    if series.iter().any(|s| s.samples.len() != runs) {
        bail!("The rig printed too few results:\n{}", out.output);
    }
    Ok(series)
}

/// A markdown table with medians and ratios against the first series.
pub fn table(series: &[Series], what: &str) -> String {
    let base = &series[0];
    let mut t = format!(
        "| VMM | runs | median {what} (ms) | ratio keel/this | median peak RSS (MiB) | ratio keel/this |\n|---|---|---|---|---|---|\n"
    );
    for s in series {
        t.push_str(&format!(
            "| {} | {} | {:.1} | {:.2} | {:.1} | {:.2} |\n",
            s.name,
            s.samples.len(),
            s.median_ms(),
            base.median_ms() / s.median_ms(),
            s.median_rss_mib(),
            base.median_rss_mib() / s.median_rss_mib(),
        ));
    }
    t
}
