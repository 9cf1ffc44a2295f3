//! Networks: the `--net tap[=NAME][,mac=MAC]` flag, opening the TAPs once
//! per VMM process (a TAP keel-vmm created must not vanish, with its
//! addresses and bridge port, when the guest reboots), and one virtio-net
//! device per TAP.

use std::str::FromStr;
use std::sync::Arc;

use virtio::net::{check_name, MacAddr, Net, NetStats, Tap, TapError};

use crate::config::{split_options, OptionsError};

/// The form of `--net`, for error messages.
pub const NET_FORM: &str = "tap[=NAME][,mac=MAC]";

/// One `--net`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The TAP to open or create; `None`: create a new `keelN`.
    pub tap: Option<String>,
    /// The guest's MAC; `None`: Keel's stable default for the TAP's name
    /// ([`MacAddr::keel_default`]).
    pub mac: Option<MacAddr>,
}

/// A `--net` value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Invalid net '{given}': {problem}; expected {NET_FORM}")]
pub struct NetConfigError {
    pub given: String,
    pub problem: String,
}

impl FromStr for NetConfig {
    type Err = NetConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem: String| NetConfigError {
            given: s.to_string(),
            problem,
        };
        // `tap` alone asks for a new TAP.
        let items: Vec<&str> = s
            .split(',')
            .map(|i| if i == "tap" { "tap=" } else { i })
            .collect();
        let normalized = items.join(",");
        let pairs = split_options(&normalized, &["tap", "mac"]).map_err(|e| err(e.to_string()))?;
        let mut net = NetConfig {
            tap: None,
            mac: None,
        };
        let mut has_tap = false;
        for (key, value) in pairs {
            match key {
                "tap" => {
                    has_tap = true;
                    if !value.is_empty() {
                        check_name(value).map_err(|e| err(e.to_string()))?;
                        net.tap = Some(value.to_string());
                    }
                }
                _ => net.mac = Some(value.parse::<MacAddr>().map_err(|e| err(e.to_string()))?),
            }
        }
        if !has_tap {
            return Err(err(OptionsError::Missing("tap").to_string()));
        }
        Ok(net)
    }
}

/// A TAP, opened before the first boot, the MAC its NIC gets and the
/// NIC's frame counters (kept across reboots).
#[derive(Debug)]
pub struct OpenNet {
    pub tap: Arc<Tap>,
    pub mac: MacAddr,
    pub stats: Arc<NetStats>,
}

/// A network that cannot be set up (a bad input: exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("TAP {0} is given to more than one --net")]
    DuplicateTap(String),
    #[error("MAC {0} is given to more than one --net")]
    DuplicateMac(MacAddr),
    #[error("Cannot use net {index}")]
    Tap {
        index: usize,
        #[source]
        source: TapError,
    },
}

/// Opens (or creates) every TAP, in order.
pub fn open_nets(nets: &[NetConfig]) -> Result<Vec<OpenNet>, NetError> {
    for (i, n) in nets.iter().enumerate() {
        let earlier = &nets[..i];
        if let Some(tap) = &n.tap {
            if earlier.iter().any(|e| e.tap.as_ref() == Some(tap)) {
                return Err(NetError::DuplicateTap(tap.clone()));
            }
        }
        if let Some(mac) = n.mac {
            if earlier.iter().any(|e| e.mac == Some(mac)) {
                return Err(NetError::DuplicateMac(mac));
            }
        }
    }
    nets.iter()
        .enumerate()
        .map(|(index, n)| {
            let tap =
                Tap::open(n.tap.as_deref()).map_err(|source| NetError::Tap { index, source })?;
            let mac = n.mac.unwrap_or_else(|| MacAddr::keel_default(tap.name()));
            Ok(OpenNet {
                tap: Arc::new(tap),
                mac,
                stats: Arc::default(),
            })
        })
        .collect()
}

/// The virtio-net device for an open TAP, counting in its counters.
pub fn net_device(net: &OpenNet) -> Net {
    Net::with_stats(net.tap.clone(), net.mac, net.stats.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConfig, NetConfigError> {
        s.parse()
    }

    #[test]
    fn forms() {
        assert_eq!(
            parse("tap"),
            Ok(NetConfig {
                tap: None,
                mac: None
            })
        );
        assert_eq!(parse("tap="), parse("tap"));
        assert_eq!(
            parse("tap=keel7,mac=02:6b:65:00:00:01"),
            Ok(NetConfig {
                tap: Some("keel7".into()),
                mac: Some("02:6b:65:00:00:01".parse().unwrap()),
            })
        );
        assert_eq!(
            parse("mac=02:6b:65:00:00:01,tap"),
            Ok(NetConfig {
                tap: None,
                mac: Some("02:6b:65:00:00:01".parse().unwrap()),
            })
        );
    }

    #[test]
    fn bad_values_name_the_problem_and_the_form() {
        for (bad, word) in [
            ("", "'tap' is required"),
            ("mac=02:6b:65:00:00:01", "'tap' is required"),
            ("tap=x,bridge=br0", "unknown key 'bridge'"),
            ("tap=x,tap=y", "given twice"),
            ("tap=averyveryverylongname", "too long"),
            ("tap=a/b", "not valid"),
            ("tap=x,mac=01:00:5e:00:00:01", "multicast"),
            ("tap=x,mac=02:6b:65", "Invalid MAC"),
            ("tap=x,mac=00:00:00:00:00:00", "all zeroes"),
            ("tapx", "not key=value"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(word), "{bad:?}: {e}");
            assert!(e.contains(NET_FORM), "{bad:?}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
    }

    #[test]
    fn duplicates_are_refused_before_anything_opens() {
        let a = parse("tap=dup0").unwrap();
        let e = open_nets(&[a.clone(), a]).unwrap_err();
        assert!(
            matches!(e, NetError::DuplicateTap(ref t) if t == "dup0"),
            "{e}"
        );
        let m = parse("tap,mac=02:6b:65:00:00:01").unwrap();
        let e = open_nets(&[m.clone(), m]).unwrap_err();
        assert!(matches!(e, NetError::DuplicateMac(_)), "{e}");
    }
}
