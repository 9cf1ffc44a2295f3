//! Where things live: the workspace, its target directory, the cache.

use std::path::PathBuf;

use anyhow::{bail, Result};

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let xtask_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match xtask_dir.parent() {
        Some(root) => root.to_path_buf(),
        None => xtask_dir,
    }
}

/// Cargo's target directory (`$CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The debug `keel-vmm` binary built by `cargo build -p keel-vmm`.
pub fn keel_vmm_debug() -> PathBuf {
    target_dir().join("debug").join("keel-vmm")
}

/// The cache of downloaded packages and built images: `$KEEL_CACHE`, else
/// `~/.cache/keel`, else (no `$HOME`) `<target>/keel-cache`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KEEL_CACHE") {
        if !dir.is_empty() {
            let dir = PathBuf::from(dir);
            if dir.is_relative() {
                bail!("KEEL_CACHE must be an absolute path, not {}", dir.display());
            }
            return Ok(dir);
        }
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".cache").join("keel")),
        _ => Ok(target_dir().join("keel-cache")),
    }
}
