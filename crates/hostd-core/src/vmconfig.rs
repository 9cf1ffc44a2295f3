//! A VM's own configuration, `NAME.toml` in its folder (hostd_api::VmConfig
//! as TOML): read, checked and written atomically. The file is input like
//! any other (a folder may come from another host): every field is checked.

use std::fs;
use std::path::{Path, PathBuf};

use hostd_api::VmConfig;
use thiserror::Error;

use crate::error::CoreError;
use crate::fsutil::atomic_write;
use crate::names;

/// keel-vmm's limit.
pub const MAX_VCPUS: u32 = 254;
pub const MIN_MEMORY_MIB: u64 = 16;
pub const MAX_MEMORY_MIB: u64 = 1024 * 1024;
pub const MAX_CMDLINE: usize = 4096;
pub const MAX_NOTES: usize = 64 * 1024;
/// virtio-blk serials are at most 20 bytes.
pub const MAX_SERIAL: usize = 20;
/// Linux interface names (IFNAMSIZ - 1).
pub const MAX_TAP: usize = 15;
/// The largest config file read.
const MAX_FILE: u64 = 1024 * 1024;

#[derive(Debug, Error)]
pub enum VmConfigError {
    #[error("Reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid VM configuration: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path} is larger than {MAX_FILE} bytes")]
    TooBig { path: PathBuf },
    #[error("Writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Encoding the configuration: {0}")]
    Encode(String),
}

impl From<VmConfigError> for CoreError {
    fn from(err: VmConfigError) -> CoreError {
        match &err {
            VmConfigError::Read { source, .. } => {
                CoreError::io("", source).with_message(err.to_string())
            }
            VmConfigError::Parse { .. } | VmConfigError::TooBig { .. } => {
                CoreError::bad_request(err.to_string())
            }
            VmConfigError::Write { source, .. } => {
                CoreError::io("", source).with_message(err.to_string())
            }
            VmConfigError::Encode(_) => CoreError::internal(err.to_string()),
        }
    }
}

/// `FOLDER/NAME.toml`.
pub fn path_in(folder: &Path, name: &str) -> PathBuf {
    folder.join(format!("{name}.toml"))
}

/// Reads and checks a config file.
pub fn read(path: &Path) -> Result<VmConfig, CoreError> {
    let read_err = |source| VmConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(read_err)?;
    if meta.len() > MAX_FILE {
        return Err(VmConfigError::TooBig {
            path: path.to_path_buf(),
        }
        .into());
    }
    let text = fs::read_to_string(path).map_err(read_err)?;
    let cfg: VmConfig = toml::from_str(&text).map_err(|e| VmConfigError::Parse {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })?;
    validate(&cfg).map_err(|e| VmConfigError::Parse {
        path: path.to_path_buf(),
        message: e.message,
    })?;
    Ok(cfg)
}

/// Writes a config file atomically.
pub fn write(path: &Path, cfg: &VmConfig) -> Result<(), CoreError> {
    let text = toml::to_string_pretty(cfg).map_err(|e| VmConfigError::Encode(e.to_string()))?;
    atomic_write(path, text.as_bytes(), 0o644).map_err(|source| VmConfigError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(())
}

fn bad(msg: String) -> CoreError {
    CoreError::bad_request(msg)
}

pub fn check_vcpus(vcpus: u32) -> Result<(), CoreError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(bad(format!("vCPUs must be 1 to {MAX_VCPUS}, not {vcpus}")));
    }
    Ok(())
}

pub fn check_memory(mib: u64) -> Result<(), CoreError> {
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&mib) {
        return Err(bad(format!(
            "Memory must be {MIN_MEMORY_MIB} MiB to {MAX_MEMORY_MIB} MiB (1 TiB), not {mib} MiB"
        )));
    }
    Ok(())
}

pub fn check_cmdline(cmdline: &str) -> Result<(), CoreError> {
    if cmdline.len() > MAX_CMDLINE {
        return Err(bad(format!(
            "Kernel command line is longer than {MAX_CMDLINE} bytes"
        )));
    }
    if cmdline.chars().any(|c| c.is_control()) {
        return Err(bad(
            "Kernel command line contains a control character".into()
        ));
    }
    Ok(())
}

pub fn check_notes(notes: &str) -> Result<(), CoreError> {
    if notes.len() > MAX_NOTES {
        return Err(bad(format!("Notes are longer than {MAX_NOTES} bytes")));
    }
    if notes.contains('\0') {
        return Err(bad("Notes contain a NUL character".into()));
    }
    Ok(())
}

/// A file in the VM's folder: a plain name (no '/', '..'), and no ',' or
/// '=' (keel-vmm's `--disk k=v,…` syntax).
pub fn check_file_name(what: &str, name: &str) -> Result<(), CoreError> {
    if names::validate("File", name).is_err() || name.contains([',', '=']) {
        return Err(bad(format!(
            "{what} {name:?} is not a plain file name in the VM's folder"
        )));
    }
    Ok(())
}

pub fn check_serial(serial: &str) -> Result<(), CoreError> {
    if serial.is_empty()
        || serial.len() > MAX_SERIAL
        || !serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(bad(format!(
            "Disk serial {serial:?} must be 1 to {MAX_SERIAL} characters of A-Z, a-z, 0-9, '-', '_', '.'"
        )));
    }
    Ok(())
}

pub fn check_tap(tap: &str) -> Result<(), CoreError> {
    if tap.is_empty()
        || tap.len() > MAX_TAP
        || !tap
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(bad(format!(
            "TAP name {tap:?} must be 1 to {MAX_TAP} characters of A-Z, a-z, 0-9, '-', '_', '.'"
        )));
    }
    Ok(())
}

/// `xx:xx:xx:xx:xx:xx`, unicast, not all zero.
pub fn check_mac(mac: &str) -> Result<(), CoreError> {
    let parts: Vec<&str> = mac.split(':').collect();
    let bytes: Option<Vec<u8>> = if parts.len() == 6 {
        parts
            .iter()
            .map(|p| {
                if p.len() == 2 {
                    u8::from_str_radix(p, 16).ok()
                } else {
                    None
                }
            })
            .collect()
    } else {
        None
    };
    match bytes {
        Some(b) if b[0] & 1 == 0 && b.iter().any(|&x| x != 0) => Ok(()),
        Some(_) => Err(bad(format!("MAC address {mac} is multicast or zero"))),
        None => Err(bad(format!(
            "MAC address {mac:?} is not of the form 52:54:00:12:34:56"
        ))),
    }
}

/// Checks every field of a configuration.
pub fn validate(cfg: &VmConfig) -> Result<(), CoreError> {
    names::validate("VM", &cfg.name)?;
    check_vcpus(cfg.vcpus)?;
    check_memory(cfg.memory_mib)?;
    let mut serials = std::collections::HashSet::new();
    for d in &cfg.disks {
        check_file_name("Disk file", &d.file)?;
        if d.format != "raw" && d.format != "qcow2" {
            return Err(bad(format!(
                "Disk {} has format {:?}; expected raw or qcow2",
                d.file, d.format
            )));
        }
        check_serial(&d.serial)?;
        if !serials.insert(d.serial.as_str()) {
            return Err(bad(format!("Two disks have the serial {}", d.serial)));
        }
    }
    for n in &cfg.nics {
        if let Some(tap) = &n.tap {
            check_tap(tap)?;
        }
        if let Some(mac) = &n.mac {
            check_mac(mac)?;
        }
    }
    check_file_name("Kernel", &cfg.boot.kernel)?;
    if let Some(initrd) = &cfg.boot.initrd {
        check_file_name("Initrd", initrd)?;
    }
    check_cmdline(&cfg.boot.cmdline)?;
    check_notes(&cfg.notes)?;
    Ok(())
}

/// The files a configuration names (kernel, initrd, disks), relative to
/// its folder.
pub fn files(cfg: &VmConfig) -> Vec<&str> {
    let mut files = vec![cfg.boot.kernel.as_str()];
    files.extend(cfg.boot.initrd.as_deref());
    files.extend(cfg.disks.iter().map(|d| d.file.as_str()));
    files
}

/// NotFound/BadRequest unless every file the config names is a regular
/// file in the folder.
pub fn check_files(folder: &Path, cfg: &VmConfig) -> Result<(), CoreError> {
    for f in files(cfg) {
        let path = folder.join(f);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(bad(format!("{} is not a regular file", path.display()))),
            Err(e) => return Err(CoreError::io(format!("VM file {}", path.display()), &e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::TestDir;
    use hostd_api::{BootConfig, DiskConfig, GuestOs, NicConfig};

    pub fn sample(name: &str) -> VmConfig {
        VmConfig {
            name: name.into(),
            vcpus: 2,
            memory_mib: 256,
            disks: vec![DiskConfig {
                file: "disk0.qcow2".into(),
                format: "qcow2".into(),
                readonly: false,
                serial: "disk0".into(),
            }],
            nics: vec![NicConfig {
                tap: Some("tap-web1".into()),
                mac: Some("52:54:00:aa:bb:cc".into()),
                ..NicConfig::default()
            }],
            boot: BootConfig {
                kernel: "vmlinuz".into(),
                initrd: Some("initrd.img".into()),
                cmdline: "console=ttyS0".into(),
            },
            guest_os: GuestOs::Linux,
            notes: "a \"note\"\nwith lines".into(),
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let dir = TestDir::new("vmconfig");
        let path = path_in(dir.path(), "web1");
        let cfg = sample("web1");
        write(&path, &cfg).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("vcpus = 2"), "{text}");
        assert_eq!(read(&path).unwrap(), cfg);
    }

    #[test]
    fn bad_files_are_refused_with_the_path() {
        let dir = TestDir::new("vmconfig");
        let path = dir.path().join("x.toml");
        fs::write(&path, "name = \"x\"\nvcpus = \"two\"\n").unwrap();
        let err = read(&path).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::BadRequest);
        assert!(err.message.contains("x.toml"), "{err}");
        let mut cfg = sample("x");
        cfg.disks[0].file = "../../etc/shadow".into();
        fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
        assert!(read(&path).unwrap_err().message.contains("plain file name"));
        fs::write(&path, "unknown = 1\n").unwrap();
        assert!(read(&path).is_err());
        assert_eq!(
            read(&dir.path().join("none.toml")).unwrap_err().kind,
            crate::ErrorKind::NotFound
        );
    }

    #[test]
    fn field_checks() {
        assert!(check_vcpus(0).is_err());
        assert!(check_vcpus(1).is_ok());
        assert!(check_vcpus(MAX_VCPUS + 1).is_err());
        assert!(check_memory(15).is_err());
        assert!(check_memory(16).is_ok());
        assert!(check_memory(MAX_MEMORY_MIB + 1).is_err());
        assert!(check_mac("52:54:00:12:34:56").is_ok());
        assert!(check_mac("53:54:00:12:34:56").is_err(), "multicast");
        assert!(check_mac("00:00:00:00:00:00").is_err());
        assert!(check_mac("52:54:00:12:34").is_err());
        assert!(check_mac("52:54:00:12:34:5g").is_err());
        assert!(check_tap("tap0").is_ok());
        assert!(check_tap("a-very-long-tap-name").is_err());
        assert!(check_tap("tap/0").is_err());
        assert!(check_serial("disk0").is_ok());
        assert!(check_serial("has space").is_err());
        assert!(check_serial(&"s".repeat(21)).is_err());
        assert!(check_file_name("Disk", "a,b.img").is_err());
        assert!(check_file_name("Disk", "..").is_err());
        assert!(check_cmdline("a\nb").is_err());
        let mut cfg = sample("x");
        cfg.disks.push(cfg.disks[0].clone());
        cfg.disks[1].file = "disk1.qcow2".into();
        assert!(validate(&cfg).unwrap_err().message.contains("serial"));
        cfg.disks.pop();
        cfg.disks[0].format = "vmdk".into();
        assert!(validate(&cfg).is_err());
    }

    #[test]
    fn check_files_wants_regular_files() {
        let dir = TestDir::new("vmconfig");
        let cfg = sample("x");
        assert_eq!(
            check_files(dir.path(), &cfg).unwrap_err().kind,
            crate::ErrorKind::NotFound
        );
        for f in files(&cfg) {
            fs::write(dir.path().join(f), b"x").unwrap();
        }
        check_files(dir.path(), &cfg).unwrap();
        fs::remove_file(dir.path().join("vmlinuz")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("vmlinuz")).unwrap();
        assert!(check_files(dir.path(), &cfg).is_err());
    }
}
