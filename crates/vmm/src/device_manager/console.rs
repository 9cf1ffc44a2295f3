//! Console ports: the `--console-port name=NAME,socket=PATH[,console=on]`
//! flag (repeatable), their sockets bound once per VMM process, and the one
//! virtio-console device that carries them all.

use std::path::PathBuf;
use std::str::FromStr;

use virtio::console::{check_port_name, Console, ConsoleError, ConsoleSockets, PortSpec};

use crate::config::{parse_switch, split_options, OptionsError};

/// The form of `--console-port`, for error messages.
pub const CONSOLE_PORT_FORM: &str = "name=NAME,socket=PATH[,console=on|off]";

/// One `--console-port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsolePortConfig {
    /// What the guest sees in `/sys/class/virtio-ports/vportNpM/name`.
    pub name: String,
    /// The Unix socket keel-vmm listens on for the port's host side.
    pub socket: PathBuf,
    /// The guest makes the port a console (hvc) too.
    pub console: bool,
}

/// A `--console-port` value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Invalid console port '{given}': {problem}; expected {CONSOLE_PORT_FORM}")]
pub struct ConsolePortConfigError {
    pub given: String,
    pub problem: String,
}

impl FromStr for ConsolePortConfig {
    type Err = ConsolePortConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem: String| ConsolePortConfigError {
            given: s.to_string(),
            problem,
        };
        let opt = |e: OptionsError| err(e.to_string());
        let pairs = split_options(s, &["name", "socket", "console"]).map_err(opt)?;
        let mut port = ConsolePortConfig {
            name: String::new(),
            socket: PathBuf::new(),
            console: false,
        };
        for (key, value) in pairs {
            match key {
                "name" if !check_port_name(value) => {
                    return Err(err(format!(
                        "invalid name '{value}' (1 to 255 of A-Z a-z 0-9 . _ -)"
                    )))
                }
                "name" => port.name = value.to_string(),
                "socket" if value.is_empty() || value.contains('\0') => {
                    return Err(err(format!("invalid socket '{value}'")))
                }
                "socket" => port.socket = PathBuf::from(value),
                _ => port.console = parse_switch(key, value).map_err(opt)?,
            }
        }
        if port.name.is_empty() {
            return Err(opt(OptionsError::Missing("name")));
        }
        if port.socket.as_os_str().is_empty() {
            return Err(opt(OptionsError::Missing("socket")));
        }
        Ok(port)
    }
}

impl From<&ConsolePortConfig> for PortSpec {
    fn from(c: &ConsolePortConfig) -> Self {
        PortSpec {
            name: c.name.clone(),
            socket: c.socket.clone(),
            console: c.console,
        }
    }
}

/// Checks the ports together (names, sockets, one console) and binds their
/// sockets; `None` without ports.
pub fn bind_console_ports(
    ports: &[ConsolePortConfig],
) -> Result<Option<ConsoleSockets>, ConsoleError> {
    if ports.is_empty() {
        return Ok(None);
    }
    let specs: Vec<PortSpec> = ports.iter().map(PortSpec::from).collect();
    ConsoleSockets::bind(&specs).map(Some)
}

/// The virtio-console device of one boot.
pub fn console_device(sockets: &ConsoleSockets) -> Console {
    Console::new(sockets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag() {
        assert_eq!(
            "name=org.keel.agent.0,socket=/run/a.sock".parse(),
            Ok(ConsolePortConfig {
                name: "org.keel.agent.0".into(),
                socket: "/run/a.sock".into(),
                console: false
            })
        );
        let c: ConsolePortConfig = "socket=s,name=con,console=on".parse().unwrap();
        assert!(c.console);
    }

    #[test]
    fn bad_values_name_the_key_and_the_form() {
        for (bad, needle) in [
            ("socket=/a", "key 'name' is required"),
            ("name=a", "key 'socket' is required"),
            ("name=a,socket=/a,speed=9600", "unknown key 'speed'"),
            ("name=a b,socket=/a", "invalid name 'a b'"),
            ("name=../x,socket=/a", "invalid name"),
            ("name=a,socket=", "invalid socket"),
            ("name=a,socket=/a,console=maybe", "invalid console 'maybe'"),
            ("name=a,name=b,socket=/a", "given twice"),
            ("agent", "not key=value"),
        ] {
            let e = bad.parse::<ConsolePortConfig>().unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(e.contains(CONSOLE_PORT_FORM), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
    }

    #[test]
    fn ports_are_checked_together() {
        let dir = std::env::temp_dir().join(format!("keel-vmm-cport-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = |name: &str, sock: &str| ConsolePortConfig {
            name: name.into(),
            socket: dir.join(sock),
            console: false,
        };
        assert!(bind_console_ports(&[]).unwrap().is_none());
        let e = bind_console_ports(&[port("a", "1"), port("a", "2")]).unwrap_err();
        assert!(
            e.to_string().contains("Two console ports are named 'a'"),
            "{e}"
        );
        let e = bind_console_ports(&[port("a", "1"), port("b", "1")]).unwrap_err();
        assert!(e.to_string().contains("use the socket"), "{e}");
        let ok = bind_console_ports(&[port("a", "1"), port("b", "2")])
            .unwrap()
            .unwrap();
        assert!(dir.join("1").exists() && dir.join("2").exists());
        let dev = console_device(&ok);
        assert!(virtio::VirtioDevice::describe(&dev).contains("a ("));
        drop(dev);
        drop(ok);
        assert!(!dir.join("1").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
