//! Programs from Debian packages, with the shared libraries they need, for
//! the initramfs of a test guest or of the rig's L1.
//!
//! A [`ToolSet`] names Debian packages and the files to take from them
//! (programs, symlinks to them, data files). [`resolve`] follows each ELF
//! file's interpreter and `DT_NEEDED` entries, recursively, through the
//! unpacked packages (`lib/x86_64-linux-gnu`, `usr/lib/x86_64-linux-gnu`,
//! …), and lays every library out as `/lib/x86_64-linux-gnu/<soname>`,
//! with `/lib64/ld-linux-x86-64.so.2` pointing at the loader. A library no
//! listed package ships is an error that names it and who needs it: add
//! the Debian package that ships it to the set.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cpio::CpioWriter;
use crate::elf;

/// Where every library goes.
pub const LIB_DIR: &str = "lib/x86_64-linux-gnu";

/// Directories searched for a soname inside each package root (after the
/// needing object's `DT_RUNPATH`).
const SEARCH_DIRS: &[&str] = &[
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib64",
    "usr/lib64",
    "lib",
    "usr/lib",
];

/// Programs (and data files) from Debian packages.
#[derive(Clone, Copy, Debug)]
pub struct ToolSet {
    /// A name for messages and the manifest.
    pub name: &'static str,
    /// The packages that ship the files and every library they need.
    pub packages: &'static [&'static str],
    /// Paths inside the packages, without a leading `/`, copied to the same
    /// path. Symlinks are kept and followed; ELF files bring their
    /// libraries.
    pub files: &'static [&'static str],
}

/// The packages of `sets`, each once, in order.
pub fn packages(sets: &[ToolSet]) -> Vec<&'static str> {
    let mut seen = BTreeSet::new();
    sets.iter()
        .flat_map(|s| s.packages.iter().copied())
        .filter(|p| seen.insert(*p))
        .collect()
}

/// One line per set for a manifest: `tools <name>: <files>`.
pub fn manifest_lines(sets: &[ToolSet]) -> String {
    sets.iter()
        .map(|s| format!("tools {}: {}\n", s.name, s.files.join(" ")))
        .collect()
}

/// What goes into the archive at one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A copy of this host file (mode kept).
    File(PathBuf),
    Symlink(String),
}

/// Resolved files, by destination path (no leading `/`).
#[derive(Clone, Debug, Default)]
pub struct Bundle {
    pub entries: BTreeMap<String, Entry>,
}

impl Bundle {
    /// Adds every entry to `cpio`.
    pub fn write<W: Write>(&self, cpio: &mut CpioWriter<W>) -> Result<()> {
        for (dest, entry) in &self.entries {
            match entry {
                Entry::File(host) => cpio.host_path(host, dest)?,
                Entry::Symlink(target) => cpio.symlink(dest, target)?,
            }
        }
        Ok(())
    }

    /// The bytes of all files.
    pub fn size(&self) -> Result<u64> {
        let mut total = 0;
        for entry in self.entries.values() {
            if let Entry::File(path) = entry {
                total += fs::metadata(path)
                    .with_context(|| format!("Reading {}", path.display()))?
                    .len();
            }
        }
        Ok(total)
    }

    /// Moves the entry at `from` to `to`; false when there is none.
    pub fn rename(&mut self, from: &str, to: &str) -> bool {
        match self.entries.remove(from) {
            Some(entry) => {
                self.entries.insert(to.to_string(), entry);
                true
            }
            None => false,
        }
    }

    /// This bundle without the entries `other` already has at the same path.
    pub fn minus(&self, other: &Bundle) -> Bundle {
        Bundle {
            entries: self
                .entries
                .iter()
                .filter(|(dest, _)| !other.entries.contains_key(*dest))
                .map(|(d, e)| (d.clone(), e.clone()))
                .collect(),
        }
    }
}

/// A package's files on the host: its name and the directory it is
/// unpacked in (`/` for the host's own installed files).
#[derive(Clone, Debug)]
pub struct Root {
    pub name: String,
    pub dir: PathBuf,
}

/// `target` of a symlink at `link` (both inside `root`), as a path in root.
fn resolve_link(link: &str, target: &str) -> Result<String> {
    let base = if target.starts_with('/') {
        PathBuf::new()
    } else {
        Path::new(link)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    };
    let mut parts: Vec<String> = base
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    for comp in Path::new(target).components() {
        match comp {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
        }
    }
    if parts.is_empty() {
        bail!("Symlink {link} -> {target} points at the root");
    }
    Ok(parts.join("/"))
}

/// The symlinks walked to a file, (path, link target), and the file's path.
struct Followed {
    links: Vec<(String, String)>,
    file: String,
}

/// Follows `path` inside `root` through symlinks; `None` when it is absent.
fn follow(root: &Path, path: &str) -> Result<Option<Followed>> {
    let mut links = Vec::new();
    let mut cur = path.to_string();
    for _ in 0..16 {
        let host = root.join(&cur);
        let Ok(meta) = fs::symlink_metadata(&host) else {
            return Ok(None);
        };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&host)
                .with_context(|| format!("Reading the link {}", host.display()))?
                .to_string_lossy()
                .into_owned();
            let next = resolve_link(&cur, &target)?;
            links.push((cur, target));
            cur = next;
        } else if meta.is_file() {
            return Ok(Some(Followed { links, file: cur }));
        } else {
            bail!("{} is not a file", host.display());
        }
    }
    bail!("Too many symlinks from {} in {}", path, root.display())
}

struct Resolver<'a> {
    roots: &'a [Root],
    provided: &'a BTreeSet<String>,
    bundle: Bundle,
    /// ELF files still to read: (host path, who it is for messages).
    queue: VecDeque<(PathBuf, String)>,
    /// Sonames already placed (or provided).
    placed: BTreeSet<String>,
    /// Missing sonames and who needed them.
    missing: BTreeMap<String, BTreeSet<String>>,
}

impl Resolver<'_> {
    /// Adds a file (following symlinks) found in one of the roots.
    fn add_file(&mut self, set: &str, path: &str) -> Result<()> {
        for root in self.roots {
            let Some(Followed { links, file: real }) = follow(&root.dir, path)? else {
                continue;
            };
            for (link, target) in links {
                self.bundle.entries.insert(link, Entry::Symlink(target));
            }
            let host = root.dir.join(&real);
            self.bundle
                .entries
                .insert(real.clone(), Entry::File(host.clone()));
            self.queue.push_back((host, format!("/{real}")));
            return Ok(());
        }
        let names: Vec<&str> = self.roots.iter().map(|r| r.name.as_str()).collect();
        bail!(
            "Tool set {set}: no listed package ships /{path} (packages: {})",
            names.join(" ")
        )
    }

    /// Finds `soname` in the roots: (root index, host path of the file).
    fn find_library(&self, soname: &str, runpath: &[String]) -> Result<Option<(usize, PathBuf)>> {
        for (i, root) in self.roots.iter().enumerate() {
            let dirs = runpath
                .iter()
                .map(|d| d.trim_start_matches('/').to_string())
                .chain(SEARCH_DIRS.iter().map(|d| d.to_string()));
            for dir in dirs {
                if let Some(found) = follow(&root.dir, &format!("{dir}/{soname}"))? {
                    return Ok(Some((i, root.dir.join(found.file))));
                }
            }
        }
        Ok(None)
    }

    fn add_library(&mut self, soname: &str, needed_by: &str, runpath: &[String]) -> Result<()> {
        if self.provided.contains(soname) || self.placed.contains(soname) {
            return Ok(());
        }
        match self.find_library(soname, runpath)? {
            Some((i, host)) => {
                self.placed.insert(soname.to_string());
                self.bundle
                    .entries
                    .insert(format!("{LIB_DIR}/{soname}"), Entry::File(host.clone()));
                self.queue
                    .push_back((host, format!("{soname} ({})", self.roots[i].name)));
            }
            None => {
                self.missing
                    .entry(soname.to_string())
                    .or_default()
                    .insert(needed_by.to_string());
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        while let Some((host, who)) = self.queue.pop_front() {
            let data = fs::read(&host).with_context(|| format!("Reading {}", host.display()))?;
            if !elf::is_elf(&data) {
                continue; // a script or a data file
            }
            let dynamic =
                elf::dynamic(&data).with_context(|| format!("Reading {}", host.display()))?;
            if let Some(interp) = &dynamic.interp {
                let soname = interp.rsplit('/').next().unwrap_or(interp).to_string();
                self.add_library(&soname, &who, &[])?;
                let canonical = format!("/{LIB_DIR}/{soname}");
                if *interp != canonical && !self.provided.contains(&soname) {
                    self.bundle.entries.insert(
                        interp.trim_start_matches('/').to_string(),
                        Entry::Symlink(canonical),
                    );
                }
            }
            for soname in &dynamic.needed {
                self.add_library(soname, &who, &dynamic.runpath)?;
            }
        }
        Ok(())
    }
}

/// Resolves the files of `sets` and the libraries they need from `roots`
/// (searched in order). Sonames in `provided` are left out (the archive
/// gets them elsewhere).
pub fn resolve(sets: &[ToolSet], roots: &[Root], provided: &BTreeSet<String>) -> Result<Bundle> {
    let mut r = Resolver {
        roots,
        provided,
        bundle: Bundle::default(),
        queue: VecDeque::new(),
        placed: BTreeSet::new(),
        missing: BTreeMap::new(),
    };
    for set in sets {
        for file in set.files {
            r.add_file(set.name, file.trim_start_matches('/'))?;
        }
    }
    r.run()?;
    if !r.missing.is_empty() {
        let names: Vec<&str> = roots.iter().map(|r| r.name.as_str()).collect();
        let list: Vec<String> = r
            .missing
            .iter()
            .map(|(soname, by)| {
                format!(
                    "{soname} (needed by {})",
                    by.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        bail!(
            "No listed package provides {}; add the Debian packages that ship them to the tool \
             set (listed: {})",
            list.join("; "),
            names.join(" ")
        );
    }
    Ok(r.bundle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_resolve_inside_the_root() {
        assert_eq!(
            resolve_link("sbin/mkfs.ext4", "mke2fs").unwrap(),
            "sbin/mke2fs"
        );
        assert_eq!(resolve_link("sbin/ip", "/bin/ip").unwrap(), "bin/ip");
        assert_eq!(
            resolve_link("usr/lib/x/libz.so.1", "../../../lib/libz.so.1.2").unwrap(),
            "lib/libz.so.1.2"
        );
        // Escaping the root stays inside it.
        assert_eq!(resolve_link("a", "../../../etc/x").unwrap(), "etc/x");
        assert!(resolve_link("a", "/").is_err());
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-tools-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The host's own /bin/sh and its libraries stand in for a package.
    #[test]
    fn resolves_a_real_program_and_its_libraries() {
        let root = Root {
            name: "host".into(),
            dir: "/".into(),
        };
        let set = ToolSet {
            name: "sh",
            packages: &[],
            files: &["bin/sh"],
        };
        let bundle = resolve(&[set], std::slice::from_ref(&root), &BTreeSet::new()).unwrap();
        assert!(
            bundle
                .entries
                .contains_key("lib/x86_64-linux-gnu/libc.so.6"),
            "{bundle:?}"
        );
        let ld = "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
        assert!(
            matches!(bundle.entries.get(ld), Some(Entry::File(_))),
            "{bundle:?}"
        );
        assert_eq!(
            bundle.entries.get("lib64/ld-linux-x86-64.so.2"),
            Some(&Entry::Symlink(format!("/{ld}")))
        );
        assert!(bundle.size().unwrap() > 100_000);
        // A provided libc is left out, and so is the loader symlink.
        let provided: BTreeSet<String> = ["libc.so.6", "ld-linux-x86-64.so.2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let bundle = resolve(&[set], &[root], &provided).unwrap();
        assert!(!bundle
            .entries
            .contains_key("lib/x86_64-linux-gnu/libc.so.6"));
        assert!(!bundle.entries.contains_key("lib64/ld-linux-x86-64.so.2"));
    }

    #[test]
    fn missing_libraries_are_named_with_who_needs_them() {
        let dir = temp_dir("missing");
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::copy("/bin/sh", dir.join("bin/tool")).unwrap();
        std::os::unix::fs::symlink("tool", dir.join("bin/alias")).unwrap();
        let set = ToolSet {
            name: "demo",
            packages: &["demo"],
            files: &["bin/alias"],
        };
        let roots = [Root {
            name: "demo".into(),
            dir: dir.clone(),
        }];
        let err = resolve(&[set], &roots, &BTreeSet::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("libc.so.6 (needed by /bin/tool)"), "{err}");
        assert!(err.contains("listed: demo"), "{err}");
        // With the C library provided, the symlink and the program remain.
        let provided: BTreeSet<String> = ["libc.so.6", "ld-linux-x86-64.so.2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let bundle = resolve(&[set], &roots, &provided).unwrap();
        let mut names: Vec<&str> = bundle.entries.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["bin/alias", "bin/tool"]);
        assert_eq!(bundle.entries["bin/alias"], Entry::Symlink("tool".into()));
        let err = resolve(
            &[ToolSet {
                files: &["bin/nope"],
                ..set
            }],
            &roots,
            &provided,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no listed package ships /bin/nope"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn packages_are_listed_once() {
        let a = ToolSet {
            name: "a",
            packages: &["x", "libc6"],
            files: &[],
        };
        let b = ToolSet {
            name: "b",
            packages: &["libc6", "y"],
            files: &["usr/bin/y"],
        };
        assert_eq!(packages(&[a, b]), ["x", "libc6", "y"]);
        assert_eq!(manifest_lines(&[b]), "tools b: usr/bin/y\n");
    }
}
