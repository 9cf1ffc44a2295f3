//! `cargo xtask fuzz`: runs every cargo-fuzz target in `fuzz/fuzz_targets/`
//! for a bounded time each (see docs/testing.md).
//!
//! cargo-fuzz needs nightly compiler flags (`-Zsanitizer=address`, …); on
//! the stable toolchain `RUSTC_BOOTSTRAP=1` unlocks them. The fuzz crate is
//! its own workspace (`fuzz/Cargo.toml`), so normal builds never see it.
//! Corpora grow across runs in `<cache>/fuzz/corpus/<target>`; seeds
//! checked in under `fuzz/seeds/<target>` are read too. A crash leaves its
//! input in `fuzz/artifacts/<target>/` and fails the run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::paths;
use crate::util::run_inherited;

/// The cargo-fuzz release line we install.
const CARGO_FUZZ_VERSION: &str = "^0.13";

fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(paths::workspace_root())
        .env("RUSTC_BOOTSTRAP", "1");
    cmd
}

/// The fuzz crate's directory.
pub fn fuzz_dir() -> PathBuf {
    paths::workspace_root().join("fuzz")
}

/// The targets: `fuzz/fuzz_targets/<name>.rs`, sorted.
pub fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("Listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                names.push(stem.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Installs cargo-fuzz with `cargo install` when `cargo fuzz` is missing.
pub fn ensure_cargo_fuzz() -> Result<()> {
    let present = cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz (cargo install, about a minute)");
    run_inherited(cargo().args([
        "install",
        "--locked",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
    .context("Installing cargo-fuzz")
}

/// The last libFuzzer status line (`#N DONE cov: … corp: …`), shortened.
fn summary(log: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| {
        let mut w = l.split_whitespace();
        w.next().is_some_and(|n| n.starts_with('#'))
            && w.next().is_some_and(|k| k == "DONE" || k == "pulse")
    })?;
    let mut words = line.split_whitespace();
    let runs = words.next()?.trim_start_matches('#');
    words.next();
    let mut out = format!("{runs} runs");
    let rest: Vec<&str> = words.collect();
    for key in ["cov:", "corp:", "exec/s:"] {
        if let Some(i) = rest.iter().position(|w| *w == key) {
            if let Some(v) = rest.get(i + 1) {
                out.push_str(&format!(", {} {v}", key.trim_end_matches(':')));
            }
        }
    }
    Some(out)
}

/// Builds every target, then fuzzes each (or those in `only`) for
/// `seconds`. Fails on the first crash, naming the saved input.
pub fn run(seconds: u64, only: &[String]) -> Result<()> {
    let dir = fuzz_dir();
    let all = targets(&dir)?;
    if let Some(unknown) = only.iter().find(|t| !all.contains(t)) {
        bail!(
            "No fuzz target {unknown:?}; the targets are {}",
            all.join(", ")
        );
    }
    let selected: Vec<&String> = all
        .iter()
        .filter(|t| only.is_empty() || only.contains(t))
        .collect();
    if selected.is_empty() {
        bail!("No fuzz targets in {}", dir.join("fuzz_targets").display());
    }
    ensure_cargo_fuzz()?;
    let started = Instant::now();
    run_inherited(cargo().args(["fuzz", "build"])).context("Building the fuzz targets")?;
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let corpora = paths::cache_dir()?.join("fuzz").join("corpus");
    let logs = paths::target_dir().join("fuzz-logs");
    fs::create_dir_all(&logs).with_context(|| format!("Creating {}", logs.display()))?;
    for target in selected {
        let corpus = corpora.join(target);
        fs::create_dir_all(&corpus).with_context(|| format!("Creating {}", corpus.display()))?;
        let log_path = logs.join(format!("{target}.log"));
        let log = fs::File::create(&log_path)
            .with_context(|| format!("Creating {}", log_path.display()))?;
        let mut cmd = cargo();
        cmd.args(["fuzz", "run", target]).arg(&corpus);
        let seeds = dir.join("seeds").join(target);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.args([
            "--".to_string(),
            format!("-max_total_time={seconds}"),
            "-timeout=10".to_string(),
            "-print_final_stats=1".to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        let t0 = Instant::now();
        let status = cmd
            .status()
            .with_context(|| format!("Running cargo fuzz run {target}"))?;
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        if !status.success() {
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "Fuzz target {target} failed ({status}); the crashing input is in \
                 fuzz/artifacts/{target}/ (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run \
                 {target} <file>). Full log: {}\n{}",
                log_path.display(),
                tail.join("\n")
            );
        }
        eprintln!(
            "xtask: fuzz {target}: {} in {:.0} s",
            summary(&text).unwrap_or_else(|| "no status line".into()),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_has_fuzz_targets() {
        let names = targets(&fuzz_dir()).unwrap();
        assert!(names.contains(&"virtio_chain".to_string()), "{names:?}");
        // Every target is declared as a [[bin]] of the fuzz crate.
        let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        for name in &names {
            assert!(
                manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")),
                "fuzz/Cargo.toml lacks a [[bin]] for {name}"
            );
        }
    }

    #[test]
    fn summary_reads_the_last_status_line() {
        let log = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 10 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #765191\tDONE   cov: 239 ft: 534 corp: 60/896b lim: 4096 exec/s: 36437 rss: 341Mb\n\
                   Done 765191 runs in 21 second(s)\n";
        assert_eq!(
            summary(log).as_deref(),
            Some("765191 runs, cov 239, corp 60/896b, exec/s 36437")
        );
        assert_eq!(summary("nothing here"), None);
    }
}
