//! The lease table of one DHCP server and its JSON file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mac::Mac;

/// A bound lease: what the lease file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// Unix time (seconds) when the lease ends.
    pub expires: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseFileError {
    #[error("Cannot read lease file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("Lease file {0} is not valid: {1}")]
    Parse(PathBuf, serde_json::Error),
    #[error("Cannot write lease file {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

#[derive(Serialize, Deserialize)]
struct LeaseFile {
    version: u32,
    leases: Vec<Lease>,
}

/// Reads a lease file; a missing file is an empty table.
pub fn load(path: &Path) -> Result<Vec<Lease>, LeaseFileError> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LeaseFileError::Read(path.to_path_buf(), e)),
    };
    let file: LeaseFile =
        serde_json::from_slice(&data).map_err(|e| LeaseFileError::Parse(path.to_path_buf(), e))?;
    Ok(file.leases)
}

/// Writes the lease file atomically: temp file, fsync, rename, fsync of the directory.
pub fn save(path: &Path, leases: &[Lease]) -> Result<(), LeaseFileError> {
    let werr = |e| LeaseFileError::Write(path.to_path_buf(), e);
    let file = LeaseFile {
        version: 1,
        leases: leases.to_vec(),
    };
    let mut data =
        serde_json::to_vec_pretty(&file).map_err(|e| werr(std::io::Error::other(e.to_string())))?;
    data.push(b'\n');
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(werr)
}

/// A lease or offer in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub lease: Lease,
    pub bound: bool,
}

/// The table: one entry per MAC. Expired entries stay, so a returning
/// client gets its old address back while nobody else needed it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Table {
    pub by_mac: BTreeMap<Mac, Entry>,
    /// Addresses a client declined (in use by someone unknown), until when.
    pub declined: BTreeMap<Ipv4Addr, u64>,
}

impl Table {
    /// The MAC that holds `ip` at `now` (an unexpired lease or offer).
    pub fn holder(&self, ip: Ipv4Addr, now: u64) -> Option<Mac> {
        self.by_mac
            .values()
            .find(|e| e.lease.ip == ip && e.lease.expires > now)
            .map(|e| e.lease.mac)
    }

    /// Whether `ip` may be given to `mac` at `now`.
    pub fn free_for(&self, ip: Ipv4Addr, mac: Mac, now: u64) -> bool {
        if self.declined.get(&ip).is_some_and(|until| *until > now) {
            return false;
        }
        self.holder(ip, now).is_none_or(|m| m == mac)
    }

    /// Removes other MACs' expired entries for `ip` (the address moves on).
    pub fn evict_ip(&mut self, ip: Ipv4Addr, keep: Mac) {
        self.by_mac.retain(|m, e| *m == keep || e.lease.ip != ip);
    }

    pub fn bound(&self) -> Vec<Lease> {
        self.by_mac
            .values()
            .filter(|e| e.bound)
            .map(|e| e.lease.clone())
            .collect()
    }
}
