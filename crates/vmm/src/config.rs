//! The configuration of one VM, and the parsers for its command-line forms
//! (`512M`, `file=PATH`, …). Everything here is validated before KVM is
//! touched, so bad input fails fast with one clear line.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The kernel command line used when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";
/// Default guest memory.
pub const DEFAULT_MEMORY: u64 = 512 << 20;
/// Smallest guest memory we accept: room for the boot structures and a kernel.
pub const MIN_MEMORY: u64 = 16 << 20;
/// Largest guest memory we accept (the guest-physical address width we
/// describe stays well inside 46 bits).
pub const MAX_MEMORY: u64 = 16 << 40;
/// How long the guest gets to power off after the ACPI power button.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// The size at which `--serial socket=PATH,log=FILE` moves FILE to FILE.1
/// (replacing the older one) and starts a new FILE.
pub const SERIAL_LOG_LIMIT: u64 = 2 << 20;

/// Errors in a VM's configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("Invalid size '{0}': expected a number with an optional K, M, G or T suffix, like 512M or 4G")]
    Size(String),
    #[error("Memory size {0} bytes is too small: at least 16M is needed")]
    MemoryTooSmall(u64),
    #[error("Memory size {0} bytes is too large: at most 16T")]
    MemoryTooLarge(u64),
    #[error("Memory size {0} bytes is not a multiple of 4K")]
    MemoryUnaligned(u64),
    #[error("Invalid vCPU count '{0}': expected a number from 1 to {max}", max = arch::layout::MAX_VCPUS)]
    Cpus(String),
    #[error("Invalid serial '{0}': expected stdio, off, file=PATH or socket=PATH[,log=FILE]")]
    Serial(String),
}

/// Where the guest's COM1 goes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum SerialConfig {
    /// Output to stdout, input from stdin (raw mode when it is a terminal).
    #[default]
    Stdio,
    /// Output appended to a file; no input.
    File(PathBuf),
    /// A Unix socket the VMM listens on: one client at a time gets the output
    /// and sends input. With `log`, the output is also appended to that
    /// file (rotated at [`SERIAL_LOG_LIMIT`]), client or not.
    Socket { path: PathBuf, log: Option<PathBuf> },
    /// Output discarded.
    Off,
}

impl FromStr for SerialConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let path = |p: &str| {
            if p.is_empty() || p.contains('\0') {
                Err(ConfigError::Serial(s.to_string()))
            } else {
                Ok(PathBuf::from(p))
            }
        };
        match s {
            "stdio" => Ok(SerialConfig::Stdio),
            "off" => Ok(SerialConfig::Off),
            _ => match s.split_once('=') {
                Some(("file", p)) => path(p).map(SerialConfig::File),
                // The socket's path may hold commas; `,log=` is the last option.
                Some(("socket", rest)) => match rest.rsplit_once(",log=") {
                    Some((p, log)) => Ok(SerialConfig::Socket {
                        path: path(p)?,
                        log: Some(path(log)?),
                    }),
                    None => Ok(SerialConfig::Socket {
                        path: path(rest)?,
                        log: None,
                    }),
                },
                _ => Err(ConfigError::Serial(s.to_string())),
            },
        }
    }
}

/// Parses `512M`, `4G`, `1048576`, `64K`, `1T` (binary units, case-insensitive,
/// an optional trailing `B` or `iB`).
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let err = || ConfigError::Size(s.to_string());
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix("ib"))
        .or_else(|| t.strip_suffix(['B', 'b']))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(err()),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let n: u64 = digits.parse().map_err(|_| err())?;
    n.checked_mul(1u64 << shift).ok_or_else(err)
}

/// Parses and range-checks a guest memory size.
pub fn parse_memory(s: &str) -> Result<u64, ConfigError> {
    let bytes = parse_size(s)?;
    if bytes < MIN_MEMORY {
        return Err(ConfigError::MemoryTooSmall(bytes));
    }
    if bytes > MAX_MEMORY {
        return Err(ConfigError::MemoryTooLarge(bytes));
    }
    if bytes % 4096 != 0 {
        return Err(ConfigError::MemoryUnaligned(bytes));
    }
    Ok(bytes)
}

/// What is wrong with a `key=value,key=value` option list (device flags
/// like `--disk path=FILE,readonly=on`). Each device's parser wraps it in
/// an error that shows the flag's expected form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("'{0}' is not key=value")]
    NotKeyValue(String),
    #[error("unknown key '{0}'")]
    UnknownKey(String),
    #[error("key '{0}' is given twice")]
    Duplicate(String),
    #[error("key '{0}' is required")]
    Missing(&'static str),
    #[error("invalid {key} '{value}'")]
    Value { key: String, value: String },
}

/// Splits `key=value,key=value` into pairs, in order. Keys must be in
/// `known` and appear once; a value may contain `=` but not `,`; empty
/// items (`a=1,,b=2`, a trailing comma) are ignored.
pub fn split_options<'a>(
    s: &'a str,
    known: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, OptionsError> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for item in s.split(',').filter(|i| !i.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(OptionsError::NotKeyValue(item.to_string()));
        };
        if !known.contains(&key) {
            return Err(OptionsError::UnknownKey(key.to_string()));
        }
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(OptionsError::Duplicate(key.to_string()));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Parses an on/off switch value: `on|off`, `true|false`, `yes|no`, `1|0`.
pub fn parse_switch(key: &str, value: &str) -> Result<bool, OptionsError> {
    match value {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(OptionsError::Value {
            key: key.to_string(),
            value: value.to_string(),
        }),
    }
}

/// Parses a vCPU count (1 to 254; KVM's own limit is checked when it opens).
pub fn parse_cpus(s: &str) -> Result<u8, ConfigError> {
    match s.trim().parse::<u16>() {
        Ok(n) if n >= 1 && n <= u16::from(arch::layout::MAX_VCPUS) => Ok(n as u8),
        _ => Err(ConfigError::Cpus(s.to_string())),
    }
}

/// Everything needed to boot one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub cpus: u8,
    pub memory: u64,
    pub serial: SerialConfig,
    /// A guest reboot ends the VMM (status 0) instead of restarting the guest.
    pub no_reboot: bool,
    /// How long the guest has to power off after SIGTERM pressed the power button.
    pub shutdown_timeout: Duration,
    /// A virtio-rng device fed from the host's getrandom.
    pub rng: bool,
    /// The control socket (`--api-socket`): a Unix socket the VMM listens on.
    pub api_socket: Option<PathBuf>,
    /// A virtio-balloon device (`--balloon`).
    pub balloon: Option<crate::device_manager::balloon::BalloonOptions>,
    /// virtio-blk disks, in PCI order.
    pub disks: Vec<crate::device_manager::block::DiskConfig>,
    /// virtio-net NICs on TAPs, in PCI order.
    pub nets: Vec<crate::device_manager::net::NetConfig>,
    /// Named virtio-console ports, each on a Unix socket (`--console-port`).
    pub console_ports: Vec<crate::device_manager::console::ConsolePortConfig>,
    /// A virtio-vsock device (`--vsock`).
    pub vsock: Option<crate::device_manager::vsock::VsockConfig>,
}

impl VmConfig {
    /// A configuration with the defaults for everything but the kernel.
    pub fn new(kernel: PathBuf) -> Self {
        VmConfig {
            kernel,
            initrd: None,
            cmdline: DEFAULT_CMDLINE.to_string(),
            cpus: 1,
            memory: DEFAULT_MEMORY,
            serial: SerialConfig::Stdio,
            no_reboot: false,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            rng: false,
            api_socket: None,
            balloon: None,
            disks: Vec::new(),
            nets: Vec::new(),
            console_ports: Vec::new(),
            vsock: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        for bad in [
            "",
            "M",
            "12Q",
            "-1G",
            "1.5G",
            "G1",
            "99999999999999999999",
            "16777216T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_limits() {
        assert_eq!(parse_memory("0"), Err(ConfigError::MemoryTooSmall(0)));
        assert_eq!(
            parse_memory("1M"),
            Err(ConfigError::MemoryTooSmall(1 << 20))
        );
        assert!(matches!(
            parse_memory("17T"),
            Err(ConfigError::MemoryTooLarge(_))
        ));
        assert!(matches!(
            parse_memory("16777217K"),
            Err(ConfigError::MemoryUnaligned(_))
        ));
        assert_eq!(parse_memory("5G"), Ok(5 << 30));
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("1"), Ok(1));
        assert_eq!(parse_cpus("254"), Ok(254));
        for bad in ["0", "255", "1000", "-1", "two", ""] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serial() {
        assert_eq!("stdio".parse(), Ok(SerialConfig::Stdio));
        assert_eq!("off".parse(), Ok(SerialConfig::Off));
        assert_eq!(
            "file=/tmp/x.log".parse(),
            Ok(SerialConfig::File("/tmp/x.log".into()))
        );
        assert_eq!(
            "socket=/run/s".parse(),
            Ok(SerialConfig::Socket {
                path: "/run/s".into(),
                log: None
            })
        );
        assert_eq!(
            "socket=/run/a,b.sock,log=console.log".parse(),
            Ok(SerialConfig::Socket {
                path: "/run/a,b.sock".into(),
                log: Some("console.log".into())
            })
        );
        for bad in [
            "",
            "file=",
            "tcp=1",
            "pty",
            "socket",
            "socket=",
            "socket=,log=x",
            "socket=/s,log=",
        ] {
            assert!(bad.parse::<SerialConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn option_lists() {
        let known = ["path", "readonly", "serial"];
        assert_eq!(
            split_options("path=/a=b,readonly=on,", &known),
            Ok(vec![("path", "/a=b"), ("readonly", "on")])
        );
        assert_eq!(split_options("", &known), Ok(vec![]));
        assert_eq!(
            split_options("path", &known),
            Err(OptionsError::NotKeyValue("path".into()))
        );
        assert_eq!(
            split_options("path=x,size=1", &known),
            Err(OptionsError::UnknownKey("size".into()))
        );
        assert_eq!(
            split_options("path=x,path=y", &known),
            Err(OptionsError::Duplicate("path".into()))
        );
        assert_eq!(parse_switch("readonly", "on"), Ok(true));
        assert_eq!(parse_switch("readonly", "0"), Ok(false));
        assert!(parse_switch("readonly", "maybe").is_err());
    }

    #[test]
    fn messages_name_the_expected_form() {
        let m = parse_size("12Q").unwrap_err().to_string();
        assert!(m.contains("12Q") && m.contains("512M"), "{m}");
    }
}
