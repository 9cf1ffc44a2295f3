//! Where `keel` keeps its state: the session token of `keel login` and the
//! certificates of the hosts it trusts, in `$XDG_CONFIG_HOME/keel/`
//! (`~/.config/keel/`), readable by the user only.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
pub struct State {
    /// The host of the last `keel login`, used when no --host is given.
    #[serde(default)]
    pub host: Option<String>,
    /// Session tokens by host URL.
    #[serde(default)]
    pub tokens: BTreeMap<String, String>,
    /// Pinned certificates (DER, base64) by `host:port`.
    #[serde(default)]
    pub certificates: BTreeMap<String, String>,
}

pub fn dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("KEEL_CONFIG_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("keel"));
    }
    let home = std::env::var_os("HOME").context("Neither $HOME nor $KEEL_CONFIG_DIR is set")?;
    Ok(PathBuf::from(home).join(".config").join("keel"))
}

impl State {
    pub fn load() -> anyhow::Result<Self> {
        let path = dir()?.join("state.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!("{} is damaged: delete it and log in again", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("Cannot read {}", path.display())),
        }
    }

    /// Written atomically, mode 0600.
    pub fn save(&self) -> anyhow::Result<()> {
        let dir = dir()?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("Cannot create {}", dir.display()))?;
        let path = dir.join("state.json");
        let tmp = dir.join(".state.json.tmp");
        let text = serde_json::to_string_pretty(self)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("Cannot write {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("Cannot write {}", path.display()))
    }
}
