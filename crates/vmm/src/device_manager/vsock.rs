//! vsock: the `--vsock cid=N,socket=PATH` flag, its listening socket bound
//! once per VMM process, and the virtio-vsock device.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use virtio::unix::SocketListener;
use virtio::vsock::{bind_vsock_socket, check_vsock, Vsock, VsockError};

use crate::config::{split_options, OptionsError};

/// The form of `--vsock`, for error messages.
pub const VSOCK_FORM: &str = "cid=N,socket=PATH (N from 3 to 4294967294)";

/// The `--vsock` flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's CID.
    pub cid: u64,
    /// Host programs connect here (`CONNECT <port>`); the guest's
    /// connections to host port P go to `PATH_P`.
    pub socket: PathBuf,
}

/// A `--vsock` value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Invalid vsock '{given}': {problem}; expected {VSOCK_FORM}")]
pub struct VsockConfigError {
    pub given: String,
    pub problem: String,
}

impl FromStr for VsockConfig {
    type Err = VsockConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem: String| VsockConfigError {
            given: s.to_string(),
            problem,
        };
        let opt = |e: OptionsError| err(e.to_string());
        let pairs = split_options(s, &["cid", "socket"]).map_err(opt)?;
        let (mut cid, mut socket) = (None, None);
        for (key, value) in pairs {
            match key {
                "cid" => {
                    let bad = || {
                        opt(OptionsError::Value {
                            key: key.into(),
                            value: value.into(),
                        })
                    };
                    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad());
                    }
                    cid = Some(value.parse::<u64>().map_err(|_| bad())?);
                }
                _ if value.is_empty() || value.contains('\0') => {
                    return Err(err(format!("invalid socket '{value}'")))
                }
                _ => socket = Some(PathBuf::from(value)),
            }
        }
        let cid = cid.ok_or_else(|| opt(OptionsError::Missing("cid")))?;
        let socket = socket.ok_or_else(|| opt(OptionsError::Missing("socket")))?;
        check_vsock(cid, &socket).map_err(|e| match e {
            VsockError::BadCid(_) => opt(OptionsError::Value {
                key: "cid".into(),
                value: cid.to_string(),
            }),
            e => err(lower_first(&e.to_string())),
        })?;
        Ok(VsockConfig { cid, socket })
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Binds the vsock socket (kept across guest reboots); `None` without
/// `--vsock`.
pub fn bind_vsock(config: Option<&VsockConfig>) -> Result<Option<Arc<SocketListener>>, VsockError> {
    config
        .map(|c| bind_vsock_socket(c.cid, &c.socket))
        .transpose()
}

/// The virtio-vsock device of one boot.
pub fn vsock_device(
    config: &VsockConfig,
    listener: &Arc<SocketListener>,
) -> Result<Vsock, VsockError> {
    Vsock::with_listener(config.cid, listener.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag() {
        assert_eq!(
            "cid=3,socket=/run/v.sock".parse(),
            Ok(VsockConfig {
                cid: 3,
                socket: "/run/v.sock".into()
            })
        );
        let v: VsockConfig = "socket=v,cid=4294967294".parse().unwrap();
        assert_eq!(v.cid, u64::from(u32::MAX) - 1);
    }

    #[test]
    fn bad_values_name_the_key_and_the_form() {
        let long = format!("cid=3,socket=/{}", "x".repeat(100));
        for (bad, needle) in [
            ("socket=/a", "key 'cid' is required"),
            ("cid=3", "key 'socket' is required"),
            ("cid=2,socket=/a", "invalid cid '2'"),
            ("cid=0,socket=/a", "invalid cid '0'"),
            ("cid=4294967295,socket=/a", "invalid cid '4294967295'"),
            ("cid=-3,socket=/a", "invalid cid '-3'"),
            ("cid=x,socket=/a", "invalid cid 'x'"),
            ("cid=99999999999999999999,socket=/a", "invalid cid"),
            ("cid=3,socket=", "invalid socket"),
            ("cid=3,socket=/a,port=1", "unknown key 'port'"),
            (long.as_str(), "too long"),
        ] {
            let e = bad.parse::<VsockConfig>().unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(e.contains(VSOCK_FORM), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
    }

    #[test]
    fn binds_once_and_builds_devices_over_it() {
        let dir = std::env::temp_dir().join(format!("keel-vmm-vsock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = VsockConfig {
            cid: 5,
            socket: dir.join("v.sock"),
        };
        assert!(bind_vsock(None).unwrap().is_none());
        let l = bind_vsock(Some(&config)).unwrap().unwrap();
        let a = vsock_device(&config, &l).unwrap();
        drop(a);
        assert!(config.socket.exists(), "the socket stays between boots");
        let _b = vsock_device(&config, &l).unwrap();
        assert!(bind_vsock(Some(&config)).is_err(), "in use");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
