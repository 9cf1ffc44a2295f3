//! `cargo xtask bench`: keel-vmm side by side with QEMU in the same run,
//! interleaved, reported as medians and ratios in docs/benchmarks.md.
//!
//! - `boot-native`, `boot-rig` ([`boot`]): process start → exit of the PVH
//!   payload natively, and start → the guest's boot marker for the stock
//!   kernel in the KVM rig.
//! - `blk-rig` ([`blk`]): fio in the guest inside one L1, on a raw and a
//!   qcow2 image on ext4 on a RAM disk, keel-vmm vs QEMU virtio-blk-pci
//!   with `cache=none,aio=native` and with its defaults.
//! - `net-rig` ([`net`]): iperf3 between the guest and L1 over one TAP,
//!   keel-vmm vs QEMU's userspace virtio-net.
//! - `devices-native` ([`devices`]): the virtio crate's in-process device
//!   benchmarks (no guest, no QEMU), the baseline for later changes.
//!
//! Rig timings are emulated (L1 runs under QEMU TCG): compare VMMs only
//! within one run. The rig benchmarks print `BENCH <vmm> …` lines from L1,
//! parsed into a [`Grid`] here.

pub mod blk;
pub mod boot;
pub mod devices;
pub mod net;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub use boot::{boot_native, boot_rig, inner, table, Sample, Series};

use crate::paths;
use crate::util::run_inherited;

/// Every benchmark `cargo xtask bench` knows, in the order it runs them.
pub const ALL: &[&str] = &[
    "boot-native",
    "boot-rig",
    "blk-rig",
    "net-rig",
    "devices-native",
];

/// What one benchmark gave: where it ran and its markdown table.
pub struct Outcome {
    /// "natively", "inside the KVM rig (…)".
    pub place: &'static str,
    pub table: String,
}

/// Runs the benchmark `name` with `runs` measured runs per VMM.
pub fn run(name: &str, runs: usize) -> Result<Outcome> {
    const RIG: &str = "inside the KVM rig (L1: QEMU TCG, -cpu EPYC,+svm, 2 vCPUs, 4 GiB)";
    Ok(match name {
        "boot-native" => Outcome {
            place: "natively",
            table: table(&boot_native(runs)?, "start → exit"),
        },
        "boot-rig" => Outcome {
            place: RIG,
            table: table(&boot_rig(runs)?, "start → boot marker"),
        },
        "blk-rig" => Outcome {
            place: RIG,
            table: blk::run(runs)?,
        },
        "net-rig" => Outcome {
            place: RIG,
            table: net::run(runs)?,
        },
        "devices-native" => Outcome {
            place: "natively",
            table: devices::run(runs)?,
        },
        other => bail!("Unknown benchmark {other:?}: expected one of {ALL:?}"),
    })
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub(crate) fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(paths::workspace_root());
    cmd
}

/// Builds keel-vmm in release mode (what the numbers are about).
pub(crate) fn release_keel_vmm() -> Result<PathBuf> {
    run_inherited(cargo().args(["build", "--quiet", "--release", "-p", "keel-vmm"]))?;
    Ok(paths::target_dir().join("release/keel-vmm"))
}

/// Shows L1's console live when `KEEL_RIG_ECHO` is set (as the tests do).
pub(crate) fn rig_echo() -> bool {
    std::env::var_os("KEEL_RIG_ECHO").is_some()
}

pub(crate) struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The kernel command line for benchmark guests: quiet, run `cmd`, power off.
pub(crate) fn guest_cmdline(cmd: &str) -> String {
    format!(
        "console=ttyS0 reboot=k panic=1 quiet {}",
        crate::guest::cmdline_args(cmd, crate::guest::Then::Poweroff)
    )
}

/// The guest's vCPUs and memory (MiB) in the rig benchmarks.
pub(crate) const GUEST_CPUS: u32 = 1;
pub(crate) const GUEST_MEMORY_MIB: u32 = 512;

/// keel-vmm's arguments in L1: the test guest with `initrd`, running `cmd`,
/// plus `devices`.
pub(crate) fn keel_argv(initrd: &str, cmd: &str, devices: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = [
        "keel-vmm",
        "--kernel",
        "/guest/vmlinuz",
        "--initrd",
        initrd,
        "--cpus",
        &GUEST_CPUS.to_string(),
        "--memory",
        &format!("{GUEST_MEMORY_MIB}M"),
        "--cmdline",
        &guest_cmdline(cmd),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend_from_slice(devices);
    argv
}

/// QEMU's arguments in L1 (`-M q35`, KVM): the same guest as [`keel_argv`].
pub(crate) fn qemu_argv(initrd: &str, cmd: &str, devices: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = [
        "qemu-system-x86_64",
        "-M",
        "q35",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-smp",
        &GUEST_CPUS.to_string(),
        "-m",
        &GUEST_MEMORY_MIB.to_string(),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        "/guest/vmlinuz",
        "-initrd",
        initrd,
        "-append",
        &guest_cmdline(cmd),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend_from_slice(devices);
    argv
}

/// Shell for L1: `run_vm INDEX NAME PREFIX COUNT TIMEOUT ARGV…` runs one
/// VMM, killed after TIMEOUT seconds. When it exits 0 with COUNT `PREFIX …`
/// lines on the guest's console, it prints them as `BENCH INDEX …`, the
/// guest's `INFO …` lines as `INFO INDEX …` and the VMM process's CPU time
/// (user + system) as `INFO INDEX cpu SECONDS`. Otherwise it prints
/// `FAILED INDEX STATUS RESULTS` and the ends of the console and of stderr,
/// and returns 1 (the run's results are left out: a hung or broken run is
/// reported, not averaged).
pub(crate) const RUN_VM_SH: &str = r#"
run_vm() {
    idx=$1 name=$2 prefix=$3 count=$4 limit=$5
    shift 5
    echo "bench: $name (L1 uptime $(cut -d' ' -f1 /proc/uptime) s)"
    time -p -o vm.time timeout -s KILL $limit "$@" >vm.out 2>vm.err </dev/null
    st=$?
    tr -d '\r' <vm.out >vm.txt
    n=$(grep -c "^$prefix " vm.txt)
    if [ $st -ne 0 ] || [ "$n" -ne "$count" ]; then
        echo "bench: $name failed: exit status $st, $n of $count results"
        echo "FAILED $idx $st $n"
        tail -n 30 vm.txt
        tail -n 10 vm.err
        return 1
    fi
    grep "^$prefix " vm.txt | sed "s/^$prefix /BENCH $idx /"
    grep "^INFO " vm.txt | sed "s/^INFO /INFO $idx /"
    echo "INFO $idx cpu $(awk '/^(user|sys) /{s+=$2}END{print s}' vm.time)"
}
"#;

/// `run_vm` calls for `runs` rounds over `vmms` (name, argv), the order
/// rotating each round so that no VMM always goes first; each run is
/// killed after `limit_s` seconds.
pub(crate) fn rounds_sh(
    vmms: &[(String, Vec<String>)],
    runs: usize,
    prefix: &str,
    count: usize,
    limit_s: u32,
) -> String {
    let mut s = String::new();
    for round in 0..runs {
        let mut order: Vec<usize> = (0..vmms.len()).collect();
        order.rotate_left(round % vmms.len());
        for i in order {
            let (name, argv) = &vmms[i];
            let argv: Vec<String> = argv.iter().map(|a| crate::rig::shell_quote(a)).collect();
            s.push_str(&format!(
                "run_vm {i} {} {prefix} {count} {limit_s} {}\n",
                crate::rig::shell_quote(&format!("round {}/{runs}: {name}", round + 1)),
                argv.join(" ")
            ));
        }
    }
    s
}

/// `BENCH <vmm> <fields…>` lines of the rig's output, as (vmm, fields).
pub(crate) fn bench_lines(output: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    tagged_lines(output, "BENCH")
}

/// `<tag> <vmm> <fields…>` lines of the rig's output, as (vmm, fields).
pub(crate) fn tagged_lines<'a>(
    output: &'a str,
    tag: &'a str,
) -> impl Iterator<Item = (usize, Vec<&'a str>)> + 'a {
    output.lines().filter_map(move |line| {
        let mut f = line.split_whitespace();
        if f.next() != Some(tag) {
            return None;
        }
        let vmm = f.next()?.parse().ok()?;
        Some((vmm, f.collect()))
    })
}

/// Shell for the guest: `q` prints the count of virtio interrupts so far
/// (every CPU's column of /proc/interrupts).
pub(crate) const IRQ_SH: &str =
    "q(){ awk '/virtio/{for(i=2;i<=NF&&$i~/^[0-9]+$/;i++)s+=$i}END{print s+0}' /proc/interrupts;}\n";

/// A sentence with each VMM's median CPU time per boot (from `INFO <vmm>
/// cpu <seconds>` lines), `what` saying what a boot did.
pub(crate) fn cpu_note(output: &str, names: &[String], what: &str) -> String {
    let mut parts = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let secs: Vec<f64> = tagged_lines(output, "INFO")
            .filter(|(vmm, f)| *vmm == i && f.first() == Some(&"cpu"))
            .filter_map(|(_, f)| f.get(1)?.parse().ok())
            .collect();
        if !secs.is_empty() {
            parts.push(format!("{name} {:.1} s", median(secs)));
        }
    }
    if parts.is_empty() {
        return String::new();
    }
    format!(
        "\nCPU time of the VMM process in L1 per boot (user + system, median; {what}): {}.\n",
        parts.join(", ")
    )
}

/// One row of a [`Grid`]: what the rig reports under `key`.
#[derive(Clone, Debug)]
pub struct Row {
    pub key: String,
    pub label: String,
    pub unit: &'static str,
    pub decimals: usize,
}

/// Samples of several metrics (rows) for several VMMs (columns), the
/// first VMM being keel-vmm; higher is better for every row.
#[derive(Debug)]
pub struct Grid {
    pub vmms: Vec<String>,
    pub rows: Vec<Row>,
    /// Per VMM: the keel-vmm column its ratio is taken against (`None`: a
    /// keel-vmm column itself, no ratio). By default every other column is
    /// compared with column 0.
    baselines: Vec<Option<usize>>,
    /// (row, vmm) → samples.
    samples: HashMap<(usize, usize), Vec<f64>>,
    /// Runs that failed, per VMM: (exit status, results printed).
    failed: HashMap<usize, Vec<(i32, usize)>>,
    /// (row, vmm) → the guest's virtio interrupts in each run, in the order
    /// of `samples`.
    irqs: HashMap<(usize, usize), Vec<f64>>,
}

impl Grid {
    pub fn new(vmms: Vec<String>, rows: Vec<Row>) -> Grid {
        Grid {
            baselines: (0..vmms.len()).map(|v| (v > 0).then_some(0)).collect(),
            vmms,
            rows,
            samples: HashMap::new(),
            failed: HashMap::new(),
            irqs: HashMap::new(),
        }
    }

    /// Takes the ratio of column `vmm` against keel-vmm column `keel`
    /// instead of column 0 (like against like: keel-vmm `cache=none`
    /// against QEMU `cache=none`); `None` makes `vmm` a keel-vmm column
    /// without a ratio.
    pub fn compare(&mut self, vmm: usize, keel: Option<usize>) {
        if let Some(b) = self.baselines.get_mut(vmm) {
            *b = keel.filter(|&k| k < self.vmms.len() && k != vmm);
        }
    }

    /// Records the guest's `INFO <vmm> irq <row key…> <count>` lines.
    pub fn add_irqs(&mut self, output: &str) {
        for (vmm, f) in tagged_lines(output, "INFO") {
            if f.first() != Some(&"irq") || f.len() < 3 || vmm >= self.vmms.len() {
                continue;
            }
            let key = f[1..f.len() - 1].join(" ");
            let Ok(count) = f[f.len() - 1].parse::<f64>() else {
                continue;
            };
            if let Some(row) = self.rows.iter().position(|r| r.key == key) {
                self.irqs.entry((row, vmm)).or_default().push(count);
            }
        }
    }

    /// The guest's virtio interrupts per unit of work (medians over runs),
    /// a table without ratios; `work(row, value)` is the work a run with
    /// that result did (e.g. requests from IOPS). Empty without counts.
    pub fn irq_table(&self, unit: &str, work: impl Fn(&Row, f64) -> f64) -> String {
        if self.irqs.is_empty() {
            return String::new();
        }
        let mut t = format!(
            "| guest interrupts {unit} | {} |\n|---|",
            self.vmms.join(" | ")
        );
        t.push_str(&"---|".repeat(self.vmms.len()));
        t.push('\n');
        for (r, row) in self.rows.iter().enumerate() {
            t.push_str(&format!("| {} |", row.label));
            for v in 0..self.vmms.len() {
                let values = self.samples.get(&(r, v)).map_or(&[][..], Vec::as_slice);
                let irqs = self.irqs.get(&(r, v)).map_or(&[][..], Vec::as_slice);
                let cell = if values.is_empty() || values.len() != irqs.len() {
                    "?".to_string()
                } else {
                    let per: Vec<f64> = values
                        .iter()
                        .zip(irqs)
                        .map(|(value, irq)| irq / work(row, *value))
                        .collect();
                    format!("{:.2}", median(per))
                };
                t.push_str(&format!(" {cell} |"));
            }
            t.push('\n');
        }
        t
    }

    /// Records the rig's `FAILED <vmm> <status> <results>` lines.
    pub fn add_failures(&mut self, output: &str) {
        for (vmm, f) in tagged_lines(output, "FAILED") {
            let status = f.first().and_then(|s| s.parse().ok()).unwrap_or(-1);
            let results = f.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            self.failed.entry(vmm).or_default().push((status, results));
        }
    }

    /// Adds a sample; false when the row or the VMM is unknown.
    pub fn push(&mut self, key: &str, vmm: usize, value: f64) -> bool {
        let Some(row) = self.rows.iter().position(|r| r.key == key) else {
            return false;
        };
        if vmm >= self.vmms.len() {
            return false;
        }
        self.samples.entry((row, vmm)).or_default().push(value);
        true
    }

    pub fn samples(&self, key: &str, vmm: usize) -> &[f64] {
        self.rows
            .iter()
            .position(|r| r.key == key)
            .and_then(|row| self.samples.get(&(row, vmm)))
            .map_or(&[], Vec::as_slice)
    }

    /// Errors unless every VMM has `runs` runs, failed or with a sample in
    /// every row, and at least one good run.
    pub fn check(&self, runs: usize) -> Result<()> {
        for (v, vmm) in self.vmms.iter().enumerate() {
            let failed = self.failed.get(&v).map_or(0, Vec::len);
            for (r, row) in self.rows.iter().enumerate() {
                let n = self.samples.get(&(r, v)).map_or(0, Vec::len);
                if n == 0 || n + failed != runs {
                    bail!(
                        "{vmm}: {n} samples of {:?} and {failed} failed runs, expected {runs} runs",
                        row.label
                    );
                }
            }
        }
        Ok(())
    }

    /// A sentence on the failed runs (empty when none failed).
    pub fn failures_note(&self, runs: usize) -> String {
        let mut parts = Vec::new();
        for (v, vmm) in self.vmms.iter().enumerate() {
            let Some(failed) = self.failed.get(&v) else {
                continue;
            };
            let how: Vec<String> = failed
                .iter()
                .map(|(status, results)| match status {
                    9 => format!("killed at the time limit with {results} results"),
                    s => format!("exit status {s} with {results} results"),
                })
                .collect();
            parts.push(format!(
                "{vmm} {} of {runs} ({})",
                failed.len(),
                how.join("; ")
            ));
        }
        if parts.is_empty() {
            return String::new();
        }
        format!(
            "\n**Failed runs**, left out of the medians: {}.\n",
            parts.join(", ")
        )
    }

    /// Medians (with the range over runs) and ratios keel-vmm / other
    /// (above 1.0: keel-vmm does more), each against its keel-vmm column
    /// ([`Grid::compare`]).
    pub fn table(&self) -> String {
        let mut head = "| workload | keel-vmm |".to_string();
        let mut rule = "|---|---|".to_string();
        for (v, vmm) in self.vmms.iter().enumerate().skip(1) {
            head.push_str(&format!(" {vmm} |"));
            rule.push_str("---|");
            if let Some(b) = self.baselines[v] {
                let keel = match b {
                    0 => "keel".to_string(),
                    b => self.vmms[b].replacen("keel-vmm", "keel", 1),
                };
                head.push_str(&format!(" {keel}/this |"));
                rule.push_str("---|");
            }
        }
        let mut t = format!("{head}\n{rule}\n");
        for (r, row) in self.rows.iter().enumerate() {
            let cell = |v: usize| -> (f64, String) {
                let s = self.samples.get(&(r, v)).cloned().unwrap_or_default();
                let med = median(s.clone());
                let lo = s.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let d = row.decimals;
                let text = if s.len() > 1 {
                    format!("{med:.d$} ({lo:.d$}–{hi:.d$})")
                } else {
                    format!("{med:.d$}")
                };
                (med, text)
            };
            let cells: Vec<(f64, String)> = (0..self.vmms.len()).map(cell).collect();
            t.push_str(&format!(
                "| {} ({}) | {} |",
                row.label, row.unit, cells[0].1
            ));
            for (v, (other, text)) in cells.iter().enumerate().skip(1) {
                t.push_str(&format!(" {text} |"));
                if let Some(b) = self.baselines[v] {
                    t.push_str(&format!(" {:.2} |", cells[b].0 / other));
                }
            }
            t.push('\n');
        }
        t
    }
}

/// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`
/// in docs/benchmarks.md.
pub fn write_section(name: &str, body: &str) -> Result<()> {
    let path = paths::workspace_root().join("docs/benchmarks.md");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("Reading {}", path.display()))?;
    let updated = replace_section(&text, name, body)
        .with_context(|| format!("{} has no bench:{name} markers", path.display()))?;
    crate::util::write_atomic(&path, updated.as_bytes())
}

fn replace_section(text: &str, name: &str, body: &str) -> Option<String> {
    let open = format!("<!-- bench:{name} -->");
    let close = format!("<!-- /bench:{name} -->");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    Some(format!("{}\n{}{}", &text[..start], body, &text[end..]))
}

/// A one-line description of this machine, for the report.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kvm = if Path::new("/sys/module/kvm_pvm").exists() {
        "PVM /dev/kvm"
    } else {
        "/dev/kvm"
    };
    format!("{cpu}, {} cores, {kvm}", num_cpus())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The 1-minute load average, from /proc/loadavg.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The commit measured: its short hash, plus "+ uncommitted changes" when
/// the crates or binaries differ from it.
pub fn commit() -> String {
    let git = |args: &[&str]| {
        crate::util::run_captured(
            Command::new("git")
                .current_dir(paths::workspace_root())
                .args(args),
        )
        .map(|s| s.trim().to_string())
    };
    let Ok(hash) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown commit".into();
    };
    match git(&["status", "--porcelain", "--", "crates", "bin"]) {
        Ok(s) if !s.is_empty() => format!("{hash} + uncommitted changes in crates/ or bin/"),
        _ => hash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn sections_are_replaced_between_markers() {
        let doc = "a\n<!-- bench:x -->\nold\n<!-- /bench:x -->\nb\n";
        let new = replace_section(doc, "x", "new\n").unwrap();
        assert_eq!(new, "a\n<!-- bench:x -->\nnew\n<!-- /bench:x -->\nb\n");
        assert!(replace_section(doc, "y", "z").is_none());
    }

    #[test]
    fn the_doc_has_markers_for_every_benchmark() {
        let doc =
            std::fs::read_to_string(paths::workspace_root().join("docs/benchmarks.md")).unwrap();
        for name in ALL {
            assert!(replace_section(&doc, name, "x\n").is_some(), "{name}");
        }
    }

    fn grid() -> Grid {
        let row = |key: &str, decimals| Row {
            key: key.into(),
            label: key.to_uppercase(),
            unit: "u",
            decimals,
        };
        Grid::new(
            vec!["keel-vmm".into(), "qemu".into()],
            vec![row("a", 0), row("b", 1)],
        )
    }

    #[test]
    fn grid_tables_give_medians_ranges_and_ratios() {
        let mut g = grid();
        for (key, vmm, v) in [
            ("a", 0, 10.0),
            ("a", 0, 30.0),
            ("a", 0, 20.0),
            ("a", 1, 5.0),
            ("a", 1, 15.0),
            ("a", 1, 10.0),
            ("b", 0, 1.0),
            ("b", 0, 1.0),
            ("b", 0, 1.0),
            ("b", 1, 4.0),
            ("b", 1, 4.0),
            ("b", 1, 4.0),
        ] {
            assert!(g.push(key, vmm, v));
        }
        assert!(!g.push("c", 0, 1.0));
        assert!(!g.push("a", 2, 1.0));
        g.check(3).unwrap();
        assert!(g.check(4).is_err());
        assert_eq!(g.samples("a", 1), &[5.0, 15.0, 10.0]);
        let t = g.table();
        assert!(t.starts_with("| workload | keel-vmm | qemu | keel/this |\n|---|---|---|---|\n"));
        assert!(
            t.contains("| A (u) | 20 (10–30) | 10 (5–15) | 2.00 |"),
            "{t}"
        );
        assert!(
            t.contains("| B (u) | 1.0 (1.0–1.0) | 4.0 (4.0–4.0) | 0.25 |"),
            "{t}"
        );
    }

    #[test]
    fn ratios_compare_like_with_like() {
        let row = Row {
            key: "a".into(),
            label: "A".into(),
            unit: "u",
            decimals: 0,
        };
        let names = ["keel-vmm", "keel-vmm cache=none", "QEMU cache=none", "QEMU"];
        let mut g = Grid::new(names.iter().map(|n| n.to_string()).collect(), vec![row]);
        g.compare(1, None);
        g.compare(2, Some(1));
        for (vmm, v) in [(0, 100.0), (1, 300.0), (2, 200.0), (3, 50.0)] {
            assert!(g.push("a", vmm, v));
        }
        let t = g.table();
        assert!(
            t.starts_with(
                "| workload | keel-vmm | keel-vmm cache=none | QEMU cache=none | \
                 keel cache=none/this | QEMU | keel/this |\n|---|---|---|---|---|---|---|\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("| A (u) | 100 | 300 | 200 | 1.50 | 50 | 2.00 |"),
            "{t}"
        );
    }

    #[test]
    fn cpu_times_are_summarised_per_vmm() {
        let out = "INFO 0 cpu 3\nINFO 1 cpu 10\nINFO 0 cpu 5\nINFO 0 cpu 4\nINFO 1 features 1\n";
        let names = ["keel-vmm".to_string(), "qemu".to_string()];
        assert_eq!(
            cpu_note(out, &names, "boot + fio"),
            "\nCPU time of the VMM process in L1 per boot (user + system, median; boot + fio): \
             keel-vmm 4.0 s, qemu 10.0 s.\n"
        );
        assert_eq!(cpu_note("", &names, "x"), "");
    }

    #[test]
    fn run_vm_is_valid_sh() {
        let status = Command::new("sh")
            .args(["-n", "-c", RUN_VM_SH])
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn missing_cells_fail_the_check() {
        let mut g = grid();
        g.push("a", 0, 1.0);
        g.push("b", 0, 1.0);
        let err = g.check(1).unwrap_err().to_string();
        assert!(err.contains("qemu: 0 samples"), "{err}");
    }

    #[test]
    fn interrupts_are_given_per_unit_of_work() {
        let mut g = grid();
        g.push("a", 0, 10.0);
        g.push("a", 0, 20.0);
        g.push("a", 1, 5.0);
        assert_eq!(g.irq_table("x", |_, v| v), "");
        g.add_irqs(
            "INFO 0 irq a 30\nINFO 0 irq a 20\nINFO 1 irq a 50\nINFO 1 cpu 3\nINFO 0 irq zz 1\n",
        );
        let t = g.irq_table("per op", |_, v| v * 2.0);
        assert!(
            t.starts_with("| guest interrupts per op | keel-vmm | qemu |\n|---|---|---|\n"),
            "{t}"
        );
        // keel: 30/20 and 20/40 → median 1.0; qemu: 50/10.
        assert!(t.contains("| A | 1.00 | 5.00 |"), "{t}");
        assert!(t.contains("| B | ? | ? |"), "{t}");
    }

    #[test]
    fn irq_counter_sums_virtio_lines() {
        let dir = std::env::temp_dir().join(format!("xtask-irq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("interrupts");
        std::fs::write(
            &f,
            "           CPU0       CPU1\n 24:   100   20  PCI-MSIX-0000:00:03.0  0-edge  virtio0-input.0\n \
             25:  7  1  PCI-MSIX-0000:00:03.0  1-edge  virtio0-output.0\n  4:  999  0  IO-APIC  4-edge  ttyS0\n",
        )
        .unwrap();
        let script = IRQ_SH.replace("/proc/interrupts", &f.display().to_string()) + "q";
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "128");
    }

    #[test]
    fn failed_runs_count_as_runs_and_are_reported() {
        let mut g = grid();
        for key in ["a", "b"] {
            g.push(key, 0, 1.0);
            g.push(key, 0, 2.0);
            g.push(key, 1, 1.0);
        }
        assert!(g.check(2).is_err());
        assert_eq!(g.failures_note(2), "");
        g.add_failures("bench: x failed\nFAILED 1 9 3\nFAILED x 1 1\n");
        g.check(2).unwrap();
        assert_eq!(
            g.failures_note(2),
            "\n**Failed runs**, left out of the medians: qemu 1 of 2 (killed at the time \
             limit with 3 results).\n"
        );
        // Only failures: nothing left to report.
        let mut g = grid();
        g.add_failures("FAILED 0 1 0\nFAILED 1 1 0\n");
        assert!(g.check(1).is_err());
    }
}
