//! Debian packages for guests: resolved with `apt-cache`, fetched with
//! `apt-get download`, unpacked with `dpkg-deb -x`. Nothing is installed on
//! the host.
//!
//! `apt-cache` takes about a second per call, so a resolution is cached
//! together with a fingerprint of apt's package lists and reused until
//! those lists change (a warm guest build then runs no apt command at all).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::host::{self, apt_update_once};
use crate::util::{is_root, run_captured, sha256_file, sha256_hex, write_atomic};

const APT_LISTS: &str = "/var/lib/apt/lists";

/// What to fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    /// A package by name, at its candidate version.
    Package(&'static str),
    /// The dependency of metapackage `meta` whose name starts with `prefix`
    /// (`linux-image-cloud-amd64` → `linux-image-6.1.0-…-cloud-amd64`).
    DependencyOf {
        meta: &'static str,
        prefix: &'static str,
    },
}

impl Spec {
    fn key(&self) -> String {
        match self {
            Spec::Package(name) => (*name).to_string(),
            Spec::DependencyOf { meta, prefix } => format!("{meta}->{prefix}"),
        }
    }
}

/// One concrete package version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    /// SHA-256 of the `.deb`, as the archive's index lists it.
    pub sha256: String,
}

/// A package unpacked in the cache.
#[derive(Clone, Debug)]
pub struct Unpacked {
    pub package: DebPackage,
    /// The directory holding the package's files (`root/bin/busybox`, …).
    pub root: PathBuf,
}

/// Resolves, downloads and unpacks `specs` under `<cache>/apt/`.
pub fn fetch(cache: &Path, specs: &[Spec]) -> Result<Vec<Unpacked>> {
    host::ensure(&[host::APT_GET, host::DPKG_DEB])?;
    let dir = cache.join("apt");
    fs::create_dir_all(&dir).with_context(|| format!("Creating {}", dir.display()))?;
    let packages = match resolve_cached(&dir, specs).and_then(|p| download_all(&dir, &p).map(|_| p))
    {
        Ok(packages) => packages,
        Err(err) if is_root() => {
            // Stale lists: the archive moved on. Refresh once and retry.
            eprintln!("xtask: {err:#}; refreshing the package lists");
            apt_update_once()?;
            let packages = resolve_fresh(&dir, specs)?;
            download_all(&dir, &packages)?;
            packages
        }
        Err(err) => return Err(err),
    };
    packages.into_iter().map(|p| unpack(&dir, p)).collect()
}

fn lists_fingerprint() -> Result<Option<String>> {
    let mut entries = Vec::new();
    let Ok(read) = fs::read_dir(APT_LISTS) else {
        return Ok(None);
    };
    for entry in read.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.contains("_Packages") {
            continue;
        }
        let meta = entry
            .metadata()
            .with_context(|| format!("Reading {name}"))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        entries.push(format!("{name} {} {mtime}", meta.len()));
    }
    if entries.is_empty() {
        return Ok(None);
    }
    entries.sort();
    Ok(Some(sha256_hex(entries.join("\n").as_bytes())))
}

fn resolution_file(dir: &Path, specs: &[Spec]) -> PathBuf {
    let key: Vec<String> = specs.iter().map(Spec::key).collect();
    let hash = sha256_hex(key.join(",").as_bytes());
    dir.join(format!("resolved-{}.txt", &hash[..16]))
}

fn resolve_cached(dir: &Path, specs: &[Spec]) -> Result<Vec<DebPackage>> {
    let Some(fingerprint) = lists_fingerprint()? else {
        apt_update_once()?;
        return resolve_fresh(dir, specs);
    };
    let file = resolution_file(dir, specs);
    if let Ok(text) = fs::read_to_string(&file) {
        if let Some(packages) = parse_resolution(&text, &fingerprint, specs.len()) {
            return Ok(packages);
        }
    }
    resolve_fresh(dir, specs)
}

fn resolve_fresh(dir: &Path, specs: &[Spec]) -> Result<Vec<DebPackage>> {
    let mut names = Vec::new();
    for spec in specs {
        names.push(match spec {
            Spec::Package(name) => (*name).to_string(),
            Spec::DependencyOf { meta, prefix } => {
                let stanza = apt_cache_show(&[meta])?;
                let depends = field(&stanza, "Depends")
                    .with_context(|| format!("{meta} has no Depends field"))?;
                dependency_named(&depends, prefix).with_context(|| {
                    format!("{meta} depends on no package starting with {prefix}")
                })?
            }
        });
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let text = apt_cache_show(&refs)?;
    let mut packages = Vec::new();
    for name in &names {
        let stanza = text
            .split("\n\n")
            .find(|s| field(s, "Package").as_deref() == Some(name.as_str()))
            .with_context(|| format!("apt-cache show printed nothing for {name}"))?;
        packages.push(DebPackage {
            name: name.clone(),
            version: field(stanza, "Version").with_context(|| format!("{name}: no Version"))?,
            sha256: field(stanza, "SHA256").with_context(|| format!("{name}: no SHA256"))?,
        });
    }
    if let Some(fingerprint) = lists_fingerprint()? {
        let mut text = format!("lists {fingerprint}\n");
        for p in &packages {
            text.push_str(&format!("{} {} {}\n", p.name, p.version, p.sha256));
        }
        write_atomic(&resolution_file(dir, specs), text.as_bytes())?;
    }
    Ok(packages)
}

fn parse_resolution(text: &str, fingerprint: &str, count: usize) -> Option<Vec<DebPackage>> {
    let mut lines = text.lines();
    if lines.next()? != format!("lists {fingerprint}") {
        return None;
    }
    let packages: Vec<DebPackage> = lines
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some(DebPackage {
                name: words.next()?.to_string(),
                version: words.next()?.to_string(),
                sha256: words.next()?.to_string(),
            })
        })
        .collect();
    (packages.len() == count).then_some(packages)
}

fn apt_cache_show(names: &[&str]) -> Result<String> {
    run_captured(
        Command::new("apt-cache")
            .args(["show", "--no-all-versions"])
            .args(names),
    )
}

/// The value of `name:` in a control stanza (first line only).
fn field(stanza: &str, name: &str) -> Option<String> {
    stanza.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().to_string())
    })
}

/// The first package in a `Depends:` value whose name starts with `prefix`.
fn dependency_named(depends: &str, prefix: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .map(|dep| dep.split_whitespace().next().unwrap_or(""))
        .find(|name| name.starts_with(prefix))
        .map(str::to_string)
}

fn deb_path(dir: &Path, p: &DebPackage) -> PathBuf {
    dir.join("debs")
        .join(format!("{}_{}.deb", p.name, p.version.replace(':', "%3a")))
}

/// Downloads the packages not yet unpacked, all with one `apt-get download`.
fn download_all(dir: &Path, packages: &[DebPackage]) -> Result<()> {
    let wanted: Vec<&DebPackage> = packages
        .iter()
        .filter(|p| !is_unpacked(dir, p))
        .filter(|p| {
            let dest = deb_path(dir, p);
            !(dest.exists() && sha256_file(&dest).ok().as_deref() == Some(p.sha256.as_str()))
        })
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let tmp = dir.join(format!("download.{}", unique()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("Creating {}", tmp.display()))?;
    let result = download_into(dir, &tmp, &wanted);
    let _ = fs::remove_dir_all(&tmp);
    let names: Vec<&str> = wanted.iter().map(|p| p.name.as_str()).collect();
    result.with_context(|| format!("Downloading {}", names.join(" ")))
}

fn download_into(dir: &Path, tmp: &Path, wanted: &[&DebPackage]) -> Result<()> {
    let mut cmd = Command::new("apt-get");
    cmd.args(["download", "-q"]).current_dir(tmp);
    if is_root() {
        // apt's sandbox user cannot write into a root-owned cache.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd.args(wanted.iter().map(|p| format!("{}={}", p.name, p.version)));
    run_captured(&mut cmd)?;
    // Match the files to the packages by checksum.
    let mut by_sum = std::collections::HashMap::new();
    for entry in fs::read_dir(tmp)?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "deb") {
            by_sum.insert(sha256_file(&path)?, path);
        }
    }
    fs::create_dir_all(dir.join("debs"))?;
    for p in wanted {
        let Some(deb) = by_sum.get(&p.sha256) else {
            bail!(
                "{} {}: apt-get download left no .deb with the sha256 the index lists ({})",
                p.name,
                p.version,
                p.sha256
            );
        };
        let dest = deb_path(dir, p);
        fs::rename(deb, &dest).with_context(|| format!("Storing {}", dest.display()))?;
    }
    Ok(())
}

/// A name part unique to this process and call (tests run in threads).
fn unique() -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

fn unpack_dir(dir: &Path, p: &DebPackage) -> PathBuf {
    dir.join("root")
        .join(format!("{}_{}", p.name, p.version.replace(':', "%3a")))
}

/// True when the package is unpacked from a `.deb` with the right sha256.
fn is_unpacked(dir: &Path, p: &DebPackage) -> bool {
    fs::read_to_string(unpack_dir(dir, p).join(".keel-unpacked"))
        .ok()
        .as_deref()
        == Some(p.sha256.as_str())
}

fn unpack(dir: &Path, package: DebPackage) -> Result<Unpacked> {
    let root = unpack_dir(dir, &package);
    if is_unpacked(dir, &package) {
        return Ok(Unpacked { package, root });
    }
    let tmp = root.with_extension(format!("tmp{}", unique()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("Creating {}", tmp.display()))?;
    run_captured(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb_path(dir, &package))
            .arg(&tmp),
    )?;
    fs::write(tmp.join(".keel-unpacked"), &package.sha256)?;
    let _ = fs::remove_dir_all(&root);
    fs::rename(&tmp, &root).with_context(|| format!("Moving {} into place", root.display()))?;
    Ok(Unpacked { package, root })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_versioned_kernel_from_depends() {
        let depends = "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2), foo | bar";
        assert_eq!(
            dependency_named(depends, "linux-image-").as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(dependency_named(depends, "bar").as_deref(), Some("bar"));
        assert_eq!(dependency_named(depends, "zzz"), None);
    }

    #[test]
    fn reads_control_fields() {
        let stanza =
            "Package: busybox-static\nVersion: 1:1.35.0-4\nSHA256: abc\nDescription: x: y\n";
        assert_eq!(field(stanza, "Version").as_deref(), Some("1:1.35.0-4"));
        assert_eq!(field(stanza, "SHA256").as_deref(), Some("abc"));
        assert_eq!(field(stanza, "Depends"), None);
    }

    #[test]
    fn cached_resolution_needs_the_same_lists() {
        let text = "lists f00\nbusybox-static 1:1.35 abc\n";
        let parsed = parse_resolution(text, "f00", 1).unwrap();
        assert_eq!(parsed[0].version, "1:1.35");
        assert!(parse_resolution(text, "other", 1).is_none());
        assert!(parse_resolution(text, "f00", 2).is_none());
    }
}
