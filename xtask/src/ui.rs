//! `cargo xtask ui build|test`: the web Host Client in `ui/` (TypeScript,
//! Vite, Preact). `build` installs the npm packages of `package-lock.json`
//! (`npm ci`, skipped while the lock file is unchanged) and runs the Vite
//! build into `ui/dist`, where keeld finds it; `test` also runs the Vitest
//! unit tests and the browser tests (`ui/e2e/`: Playwright driving Debian's
//! Chromium against a real keeld with payload guests). Node, npm and
//! Chromium come from Debian's packages when missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::host::{self, Requirement};
use crate::paths;
use crate::payload::{self, Payload};
use crate::util::{run_captured, run_inherited, sha256_file, write_atomic};

pub const NODE: Requirement = Requirement {
    program: "node",
    package: "nodejs",
};
pub const NPM: Requirement = Requirement {
    program: "npm",
    package: "npm",
};
/// Headless Chromium for the browser tests (`/usr/bin/chromium`).
pub const CHROMIUM: Requirement = Requirement {
    program: "chromium",
    package: "chromium",
};

/// The oldest Node the UI's tools run on (Debian 12 ships 18).
const MIN_NODE_MAJOR: u32 = 18;
/// Where `npm ci` records the lock file it installed.
const STAMP: &str = "node_modules/.keel-lock-sha256";

/// `ui/` in the workspace.
pub fn ui_dir() -> PathBuf {
    paths::workspace_root().join("ui")
}

/// Where the browser tests save their screenshots (the CI artifact folder).
pub fn screenshots_dir() -> PathBuf {
    paths::target_dir().join("ui-screenshots")
}

fn npm(ui: &Path) -> Command {
    let mut cmd = Command::new("npm");
    cmd.current_dir(ui)
        .env("npm_config_fund", "false")
        .env("npm_config_audit", "false")
        .env("npm_config_update_notifier", "false");
    cmd
}

/// The major version of `node --version` (`v20.11.1` → 20).
pub fn parse_node_major(version: &str) -> Option<u32> {
    version
        .trim()
        .strip_prefix('v')?
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn check_node() -> Result<()> {
    let version = run_captured(Command::new("node").arg("--version"))?;
    match parse_node_major(&version) {
        Some(major) if major >= MIN_NODE_MAJOR => Ok(()),
        _ => bail!(
            "node {} is too old for the UI's tools: Node {MIN_NODE_MAJOR} or newer is needed",
            version.trim()
        ),
    }
}

/// `npm ci` unless `node_modules` holds what `package-lock.json` names.
fn install(ui: &Path) -> Result<()> {
    let lock = sha256_file(&ui.join("package-lock.json"))?;
    let stamp = ui.join(STAMP);
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(lock.as_str()) {
        return Ok(());
    }
    let started = Instant::now();
    run_inherited(npm(ui).args(["ci", "--prefer-offline", "--no-audit", "--no-fund"]))?;
    write_atomic(&stamp, lock.as_bytes())?;
    eprintln!(
        "xtask: ui: npm ci in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Installs Node, npm (and Chromium with `browser`) when missing, then the
/// UI's npm packages.
fn prepare(browser: bool) -> Result<PathBuf> {
    let mut reqs = vec![NODE, NPM];
    if browser {
        reqs.push(CHROMIUM);
    }
    host::ensure(&reqs)?;
    check_node()?;
    let ui = ui_dir();
    install(&ui)?;
    Ok(ui)
}

/// `cargo xtask ui build`: type-checks and builds `ui/dist`; returns it.
pub fn build() -> Result<PathBuf> {
    let ui = prepare(false)?;
    let started = Instant::now();
    run_inherited(npm(&ui).args(["run", "build", "--silent"]))?;
    let dist = ui.join("dist");
    if !dist.join("index.html").is_file() {
        bail!("The UI build left no {}", dist.join("index.html").display());
    }
    eprintln!(
        "xtask: ui: built {} in {:.1} s",
        dist.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(dist)
}

/// `cargo xtask ui test`: builds the UI, runs its Vitest unit tests, then
/// the browser tests against a real keeld (screenshots in
/// `target/ui-screenshots/`).
pub fn test() -> Result<()> {
    host::ensure(&[CHROMIUM, host::AS, host::LD])?;
    let started = Instant::now();
    build()?;
    let ui = ui_dir();
    run_inherited(npm(&ui).args(["test", "--silent"])).context("The UI's unit tests failed")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_inherited(
        Command::new(cargo)
            .current_dir(paths::workspace_root())
            .args(["build", "--quiet", "-p", "keeld", "-p", "keel-vmm"]),
    )?;
    let debug = paths::target_dir().join("debug");
    let echo = payload::build(Payload::Echo)?;
    let button = payload::build(Payload::Button)?;
    run_inherited(
        Command::new("node")
            .current_dir(&ui)
            .args(["--test", "e2e/ui.test.mjs"])
            .env("KEELD", debug.join("keeld"))
            .env("KEEL_VMM", debug.join("keel-vmm"))
            .env("KEEL_PAYLOAD_ECHO", &echo)
            .env("KEEL_PAYLOAD_BUTTON", &button)
            .env("CARGO_TARGET_DIR", paths::target_dir()),
    )
    .context("The UI's browser tests failed")?;
    eprintln!(
        "xtask: ui: tests passed in {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        screenshots_dir().display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_versions_parse() {
        assert_eq!(parse_node_major("v20.20.2\n"), Some(20));
        assert_eq!(parse_node_major("v18.20.4"), Some(18));
        assert_eq!(parse_node_major("20.1.0"), None);
        assert_eq!(parse_node_major("vx"), None);
    }

    #[test]
    fn the_ui_is_in_the_workspace() {
        assert!(ui_dir().join("package.json").is_file());
        assert!(ui_dir().join("package-lock.json").is_file());
        assert!(screenshots_dir().ends_with("ui-screenshots"));
    }
}
