//! `devices-native`: the virtio crate's in-process device benchmarks
//! (`crates/virtio/examples/{blkbench,netbench,vsockbench}.rs`), run
//! natively in release mode. A test driver in the same process drives each
//! device's queues (PCI transport, worker threads, MSI-X on eventfds): no
//! guest, no KVM, and no QEMU to compare with — these numbers are the
//! baseline later changes to the device code must not lose.
//!
//! Each example prints one line per mode: a rate (requests, frames or
//! packets per second), sometimes MB/s, and the CPU time per operation of
//! the device's worker threads and of the whole process. The examples run
//! `runs` times each, in rotating order; the table gives medians.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{cargo, median};
use crate::paths;
use crate::util::{run_captured, run_inherited};

/// Seconds per line of each example.
pub const SECONDS: u32 = 3;

/// The examples and what one operation is.
const EXAMPLES: &[(&str, &str)] = &[
    ("blkbench", "request"),
    ("netbench", "frame"),
    ("vsockbench", "packet"),
];

/// One mode's numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub name: String,
    /// Operations per second.
    pub rate: f64,
    pub mb_per_s: Option<f64>,
    pub device_ns: f64,
    pub process_ns: f64,
}

fn is_rate_unit(s: &str) -> bool {
    matches!(s, "req/s" | "frames/s" | "packets/s")
}

/// Parses an example's result line (`<name> <numbers with units>`); `None`
/// for headers and anything else.
pub fn parse_line(line: &str) -> Option<Line> {
    let t: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| t.get(i).and_then(|s| s.parse::<f64>().ok());
    let start = (0..t.len()).find(|&i| {
        num(i).is_some()
            && t.get(i + 1)
                .is_some_and(|u| *u == "MB/s" || is_rate_unit(u))
    })?;
    if start == 0 {
        return None;
    }
    let (mut rate, mut mb, mut device, mut process) = (None, None, None, None);
    for i in start..t.len() {
        let unit = t.get(i + 1).copied().unwrap_or("");
        match (num(i), unit) {
            (Some(v), "MB/s") => mb = Some(v),
            (Some(v), u) if is_rate_unit(u) => rate = Some(v),
            // blkbench: "<x> µs device CPU/req  <y> µs process CPU/req"
            (Some(v), "µs") => match t.get(i + 2).copied() {
                Some("device") => device = Some(v * 1e3),
                Some("process") => process = Some(v * 1e3),
                _ => {}
            },
            // netbench, vsockbench: "device <x> ns/frame   process <y> ns/frame"
            (None, "") => {}
            (None, _) if unit.parse::<f64>().is_ok() => {
                let is_ns = t.get(i + 2).is_some_and(|u| u.starts_with("ns/"));
                match (t[i], is_ns) {
                    ("device", true) => device = num(i + 1),
                    ("process", true) => process = num(i + 1),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Some(Line {
        name: t[..start].join(" "),
        rate: rate?,
        mb_per_s: mb,
        device_ns: device?,
        process_ns: process?,
    })
}

/// Builds the examples (release) and returns the directory they are in.
fn build() -> Result<std::path::PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--quiet",
        "--release",
        "-p",
        "virtio",
        "--features",
        "testing",
    ]);
    for (name, _) in EXAMPLES {
        cmd.args(["--example", name]);
    }
    run_inherited(&mut cmd)?;
    Ok(paths::target_dir().join("release/examples"))
}

/// Samples by (example index, line name), in first-seen order of names.
#[derive(Default)]
struct Results {
    order: Vec<(usize, String)>,
    samples: BTreeMap<(usize, String), Vec<Line>>,
}

impl Results {
    fn add(&mut self, example: usize, output: &str) -> usize {
        let mut n = 0;
        for line in output.lines().filter_map(parse_line) {
            let key = (example, line.name.clone());
            if !self.samples.contains_key(&key) {
                self.order.push(key.clone());
            }
            self.samples.entry(key).or_default().push(line);
            n += 1;
        }
        n
    }

    fn table(&self) -> String {
        let mut t = "| device | mode | runs | median rate | MB/s | device CPU per op (ns) | process CPU per op (ns) |\n\
                     |---|---|---|---|---|---|---|\n"
            .to_string();
        for key in &self.order {
            let lines = &self.samples[key];
            let (example, op) = EXAMPLES[key.0];
            let med = |f: &dyn Fn(&Line) -> f64| median(lines.iter().map(f).collect());
            let rate = med(&|l| l.rate);
            let lo = lines.iter().map(|l| l.rate).fold(f64::INFINITY, f64::min);
            let hi = lines.iter().map(|l| l.rate).fold(0.0, f64::max);
            let mb = if lines.iter().all(|l| l.mb_per_s.is_some()) {
                format!("{:.1}", med(&|l| l.mb_per_s.unwrap_or(0.0)))
            } else {
                "—".into()
            };
            let range = if lines.len() > 1 {
                format!(" ({lo:.0}–{hi:.0})")
            } else {
                String::new()
            };
            t.push_str(&format!(
                "| {} | {} | {} | {rate:.0} {op}s/s{range} | {mb} | {:.0} | {:.0} |\n",
                example.trim_end_matches("bench"),
                key.1,
                lines.len(),
                med(&|l| l.device_ns),
                med(&|l| l.process_ns),
            ));
        }
        t
    }
}

/// Runs every example `runs` times (rotating which goes first); returns
/// the markdown table.
pub fn run(runs: usize) -> Result<String> {
    let dir = build()?;
    let mut results = Results::default();
    let mut expected: Vec<Option<usize>> = vec![None; EXAMPLES.len()];
    for round in 0..runs {
        let mut order: Vec<usize> = (0..EXAMPLES.len()).collect();
        order.rotate_left(round % EXAMPLES.len());
        for i in order {
            let name = EXAMPLES[i].0;
            eprintln!("xtask: devices-native round {}/{runs}: {name}", round + 1);
            let out = run_captured(Command::new(dir.join(name)).arg(SECONDS.to_string()))
                .with_context(|| format!("Running the {name} example"))?;
            let n = results.add(i, &out);
            match expected[i] {
                _ if n == 0 => bail!("{name} printed no results:\n{out}"),
                Some(want) if want != n => {
                    bail!("{name} printed {n} results, {want} before:\n{out}")
                }
                _ => expected[i] = Some(n),
            }
        }
    }
    Ok(results.table())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkbench_lines_parse() {
        let l = parse_line(
            "raw qd32 x 2 queues       123456 req/s    1.25 µs device CPU/req    3.50 µs process CPU/req",
        )
        .unwrap();
        assert_eq!(l.name, "raw qd32 x 2 queues");
        assert_eq!(l.rate, 123456.0);
        assert_eq!(l.mb_per_s, None);
        assert_eq!(l.device_ns, 1250.0);
        assert_eq!(l.process_ns, 3500.0);
        assert!(
            parse_line("virtio-blk 4 KiB random reads through the device, 3 s per line").is_none()
        );
    }

    #[test]
    fn netbench_and_vsockbench_lines_parse() {
        let l = parse_line(
            "guest → host 64000 B TSO    2345.6 MB/s     36650 frames/s   device   8123 ns/frame   process  20111 ns/frame",
        )
        .unwrap();
        assert_eq!(l.name, "guest → host 64000 B TSO");
        assert_eq!(l.rate, 36650.0);
        assert_eq!(l.mb_per_s, Some(2345.6));
        assert_eq!(l.device_ns, 8123.0);
        assert_eq!(l.process_ns, 20111.0);
        let v = parse_line(
            "host → guest      512.0 MB/s    125000 packets/s   device    900 ns/packet   process   2100 ns/packet",
        )
        .unwrap();
        assert_eq!(v.name, "host → guest");
        assert_eq!(v.rate, 125000.0);
        assert_eq!(v.device_ns, 900.0);
        assert!(parse_line("virtio-vsock, 4096-byte payloads, 3 s per direction").is_none());
        assert!(parse_line("").is_none());
    }

    #[test]
    fn results_give_medians_per_mode() {
        let mut r = Results::default();
        for rate in [100, 300, 200] {
            let out = format!(
                "header\nraw qd1   {rate} req/s  1.00 µs device CPU/req  2.00 µs process CPU/req\n"
            );
            assert_eq!(r.add(0, &out), 1);
        }
        let t = r.table();
        assert!(
            t.contains("| blk | raw qd1 | 3 | 200 requests/s (100–300) | — | 1000 | 2000 |"),
            "{t}"
        );
    }
}
