//! `cargo xtask test` and `cargo xtask run`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::demo::{self, Binaries, RunOptions};
use crate::guest;
use crate::host;
use crate::paths;
use crate::payload::{self, Payload};
use crate::rig;
use crate::util::run_inherited;

fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(paths::workspace_root());
    cmd
}

/// Builds `keel-vmm` (debug) and returns its path.
pub fn build_keel_vmm() -> Result<PathBuf> {
    run_inherited(cargo().args(["build", "--quiet", "-p", "keel-vmm"]))?;
    Ok(paths::keel_vmm_debug())
}

/// Installs what the tests need, builds the guests, payloads and the
/// workspace, and runs `cargo test --workspace` (plus `extra` arguments),
/// then the web Host Client's tests ([`crate::ui::test`]).
/// With `KEEL_FUZZ_SECONDS=N` (CI sets it), then runs every fuzz target
/// for N seconds ([`crate::fuzz`]).
pub fn test(extra: &[String]) -> Result<()> {
    let fuzz_seconds =
        match std::env::var("KEEL_FUZZ_SECONDS") {
            Ok(v) if !v.trim().is_empty() => Some(v.trim().parse::<u64>().with_context(|| {
                format!("KEEL_FUZZ_SECONDS={v:?}: expected a number of seconds")
            })?),
            _ => None,
        };
    host::ensure(&[
        host::QEMU,
        host::QEMU_IMG,
        host::IASL,
        host::AS,
        host::LD,
        host::APT_GET,
        host::DPKG_DEB,
        host::NFT,
        host::BUSYBOX,
    ])?;
    let started = std::time::Instant::now();
    let image = rig::image().context("Building the rig's L1 image")?;
    guest::bench_initramfs().context("Building the benchmark initramfs")?;
    rig::qemu_archive_in(&paths::cache_dir()?).context("Building QEMU's archive for L1")?;
    for variant in Payload::ALL {
        payload::build(variant)?;
    }
    eprintln!(
        "xtask: guest {} and payloads ready in {:.1} s",
        image.guest.kernel_release,
        started.elapsed().as_secs_f64()
    );
    run_inherited(cargo().args(["build", "--workspace", "--all-targets"]))?;
    run_inherited(
        cargo()
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(extra),
    )?;
    crate::ui::test().context("The web Host Client's tests")?;
    if let Some(seconds) = fuzz_seconds.filter(|s| *s > 0) {
        let started = std::time::Instant::now();
        crate::fuzz::run(seconds, &[])?;
        eprintln!(
            "xtask: fuzzing done in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Builds keel-vmm, keeld and keel (debug) and returns their paths.
pub fn build_host_binaries() -> Result<Binaries> {
    run_inherited(cargo().args([
        "build", "--quiet", "-p", "keel-vmm", "-p", "keeld", "-p", "keel",
    ]))?;
    let debug = paths::target_dir().join("debug");
    Ok(Binaries {
        keel_vmm: debug.join("keel-vmm"),
        keeld: debug.join("keeld"),
        keel: debug.join("keel"),
    })
}

/// `cargo xtask run`: builds keel-vmm, keeld, keel and the test guest, then
/// runs a whole Keel host with a demo VM until Ctrl-C — keeld here on
/// hardware KVM, else inside the rig's L1 with its port forwarded (see
/// [`crate::demo`]).
pub fn run(opts: &RunOptions) -> Result<i32> {
    host::ensure(&[host::APT_GET, host::DPKG_DEB, host::AS, host::LD])?;
    let rig = opts.uses_rig();
    if rig {
        host::ensure(&[host::QEMU])?;
    }
    // Before the long builds: a port in use fails now, not in minutes.
    demo::check_port_free(opts.port)?;
    let bins = build_host_binaries()?;
    let guest = guest::build().context("Building the test guest")?;
    if rig {
        rig::image().context("Building the rig's L1 image")?;
    }
    // The web Host Client is part of the host; without Node (no apt, no
    // registry) the API and the CLI still work, so say so and go on.
    if let Err(e) = crate::ui::build() {
        eprintln!(
            "xtask: the web Host Client was not built ({e:#}); the API and keel work without it"
        );
    }
    demo::run(opts, &bins, &guest)
}

/// `cargo xtask bench`: runs the benchmarks named in `which` (all when
/// empty; see [`crate::bench::ALL`]), prints their tables and, with
/// `write`, puts them into docs/benchmarks.md. Each report says when and
/// where it was measured, the commit, and this machine's load average
/// before and after (its cores are shared).
pub fn bench(which: &[String], runs: usize, write: bool) -> Result<()> {
    use crate::bench;
    if runs == 0 {
        anyhow::bail!("--runs 0: expected at least one run");
    }
    let which: Vec<&str> = if which.is_empty() {
        bench::ALL.to_vec()
    } else {
        which.iter().map(String::as_str).collect()
    };
    if let Some(bad) = which.iter().find(|w| !bench::ALL.contains(w)) {
        anyhow::bail!(
            "Unknown benchmark {bad:?}: expected one of {:?}",
            bench::ALL
        );
    }
    for name in which {
        let load = |l: Option<f64>| l.map_or("?".to_string(), |l| format!("{l:.2}"));
        let before = bench::load_average();
        let started = std::time::Instant::now();
        let outcome = bench::run(name, runs)?;
        let body = format!(
            "Measured {} {} on {}, {runs} interleaved runs each, commit {}; \
             1-minute load average {} before, {} after ({:.0} s).\n\n{}",
            chrono_free_date(),
            outcome.place,
            bench::machine(),
            bench::commit(),
            load(before),
            load(bench::load_average()),
            started.elapsed().as_secs_f64(),
            outcome.table
        );
        println!("## {name}\n\n{body}");
        if write {
            bench::write_section(name, &body)?;
        }
    }
    Ok(())
}

/// Today's date (UTC) as YYYY-MM-DD, from `date`.
fn chrono_free_date() -> String {
    crate::util::run_captured(Command::new("date").args(["-u", "+%Y-%m-%d"]))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "today".into())
}
