//! Networks: the `--net tap[=NAME][,mac=MAC][,policy...]` flag, opening
//! the TAPs once per VMM process (a TAP keel-vmm created must not vanish,
//! with its addresses and bridge port, when the guest reboots), and one
//! virtio-net device per TAP with its policy (forged transmits,
//! promiscuous mode, shaping)
//! and its link state, which also lives as long as the process.

use std::str::FromStr;
use std::sync::Arc;

use virtio::net::{check_name, MacAddr, Net, NetLink, NetPolicy, NetStats, Shaping, Tap, TapError};

use crate::config::{parse_size, split_options, OptionsError};

/// The form of `--net`, for error messages.
pub const NET_FORM: &str = "tap[=NAME][,mac=MAC][,forged-transmits=accept|reject]\
[,mac-changes=accept|reject][,promiscuous=accept|reject][,link=up|down][,rx-rate=BITS/S][,rx-burst=BYTES][,rx-peak=BITS/S]\
[,tx-rate=BITS/S][,tx-burst=BYTES][,tx-peak=BITS/S]";

/// Every key of `--net`.
const KEYS: &[&str] = &[
    "tap",
    "mac",
    "forged-transmits",
    "mac-changes",
    "promiscuous",
    "link",
    "rx-rate",
    "rx-burst",
    "rx-peak",
    "tx-rate",
    "tx-burst",
    "tx-peak",
];

/// One `--net`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The TAP to open or create; `None`: create a new `keelN`.
    pub tap: Option<String>,
    /// The guest's MAC; `None`: Keel's stable default for the TAP's name
    /// ([`MacAddr::keel_default`]).
    pub mac: Option<MacAddr>,
    /// `forged-transmits=reject`: drop frames whose source MAC is not the
    /// NIC's.
    pub reject_forged: bool,
    /// `mac-changes=reject`. virtio-net without a control queue has no way
    /// for the guest to change the device's MAC, so this has an effect only
    /// through `reject_forged` (see docs/net.md); kept for the record.
    pub reject_mac_changes: bool,
    /// `promiscuous=reject`: drop frames for the guest whose destination
    /// MAC is a unicast address other than the NIC's.
    pub reject_promiscuous: bool,
    /// `link=up|down`: the link state the VM starts with.
    pub link_up: bool,
    /// Shaping of what the guest receives and sends.
    pub rx: Option<Shaping>,
    pub tx: Option<Shaping>,
}

impl Default for NetConfig {
    /// A new `keelN` TAP with the default MAC, everything accepted, link up.
    fn default() -> Self {
        NetConfig {
            tap: None,
            mac: None,
            reject_forged: false,
            reject_mac_changes: false,
            reject_promiscuous: false,
            link_up: true,
            rx: None,
            tx: None,
        }
    }
}

impl NetConfig {
    /// The policy the device applies.
    pub fn policy(&self) -> NetPolicy {
        NetPolicy {
            reject_forged: self.reject_forged,
            reject_promiscuous: self.reject_promiscuous,
            rx: self.rx,
            tx: self.tx,
        }
    }
}

/// Parses a rate in bits per second: `1000000`, `500k`, `10M`, `1G`
/// (decimal units, as link speeds are given).
fn parse_rate(s: &str) -> Option<u64> {
    let (digits, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c {
                'k' | 'K' => 1_000,
                'm' | 'M' => 1_000_000,
                'g' | 'G' => 1_000_000_000,
                _ => return None,
            };
            (&s[..i], mult)
        }
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

fn parse_accept(key: &str, value: &str) -> Result<bool, OptionsError> {
    match value {
        "accept" => Ok(false),
        "reject" => Ok(true),
        _ => Err(OptionsError::Value {
            key: key.to_string(),
            value: value.to_string(),
        }),
    }
}

/// One direction's `*-rate`, `*-burst`, `*-peak`.
#[derive(Default)]
struct ShapingKeys {
    rate: Option<u64>,
    burst: Option<u64>,
    peak: Option<u64>,
}

impl ShapingKeys {
    fn build(&self, dir: &str) -> Result<Option<Shaping>, String> {
        let Some(rate) = self.rate else {
            if self.burst.is_some() || self.peak.is_some() {
                return Err(format!("{dir}-burst and {dir}-peak need {dir}-rate"));
            }
            return Ok(None);
        };
        let s = Shaping {
            average_bps: rate,
            burst_bytes: self.burst.unwrap_or_else(|| Shaping::default_burst(rate)),
            peak_bps: self.peak,
        };
        s.check().map_err(|e| format!("{dir} shaping: {e}"))?;
        Ok(Some(s))
    }
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
        let pairs = split_options(&normalized, KEYS).map_err(|e| err(e.to_string()))?;
        let mut net = NetConfig::default();
        let mut has_tap = false;
        let (mut rx, mut tx) = (ShapingKeys::default(), ShapingKeys::default());
        let bad = |key: &str, value: &str| {
            err(OptionsError::Value {
                key: key.to_string(),
                value: value.to_string(),
            }
            .to_string())
        };
        for (key, value) in pairs {
            let rate = || parse_rate(value).ok_or_else(|| bad(key, value));
            let size = || parse_size(value).map_err(|_| bad(key, value));
            match key {
                "forged-transmits" => {
                    net.reject_forged = parse_accept(key, value).map_err(|e| err(e.to_string()))?
                }
                "mac-changes" => {
                    net.reject_mac_changes =
                        parse_accept(key, value).map_err(|e| err(e.to_string()))?
                }
                "promiscuous" => {
                    net.reject_promiscuous =
                        parse_accept(key, value).map_err(|e| err(e.to_string()))?
                }
                "link" => {
                    net.link_up = match value {
                        "up" => true,
                        "down" => false,
                        _ => return Err(bad(key, value)),
                    }
                }
                "rx-rate" => rx.rate = Some(rate()?),
                "rx-burst" => rx.burst = Some(size()?),
                "rx-peak" => rx.peak = Some(rate()?),
                "tx-rate" => tx.rate = Some(rate()?),
                "tx-burst" => tx.burst = Some(size()?),
                "tx-peak" => tx.peak = Some(rate()?),
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
        net.rx = rx.build("rx").map_err(err)?;
        net.tx = tx.build("tx").map_err(err)?;
        Ok(net)
    }
}

/// A TAP, opened before the first boot, the MAC its NIC gets, its policy,
/// and the NIC's frame counters and link state (kept across reboots).
#[derive(Debug)]
pub struct OpenNet {
    pub tap: Arc<Tap>,
    pub mac: MacAddr,
    pub stats: Arc<NetStats>,
    pub policy: NetPolicy,
    pub link: NetLink,
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
                policy: n.policy(),
                link: NetLink::new(n.link_up),
            })
        })
        .collect()
}

/// The virtio-net device for an open TAP, counting in its counters, with
/// its policy and link.
pub fn net_device(net: &OpenNet) -> Net {
    Net::with_stats(net.tap.clone(), net.mac, net.stats.clone())
        .with_policy(net.policy)
        .with_link(net.link.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConfig, NetConfigError> {
        s.parse()
    }

    #[test]
    fn forms() {
        assert_eq!(parse("tap"), Ok(NetConfig::default()));
        assert_eq!(parse("tap="), parse("tap"));
        assert_eq!(
            parse("tap=keel7,mac=02:6b:65:00:00:01"),
            Ok(NetConfig {
                tap: Some("keel7".into()),
                mac: Some("02:6b:65:00:00:01".parse().unwrap()),
                ..NetConfig::default()
            })
        );
        assert_eq!(
            parse("mac=02:6b:65:00:00:01,tap"),
            Ok(NetConfig {
                tap: None,
                mac: Some("02:6b:65:00:00:01".parse().unwrap()),
                ..NetConfig::default()
            })
        );
    }

    #[test]
    fn policy_keys() {
        let n = parse("tap,forged-transmits=reject,mac-changes=reject,link=down").unwrap();
        assert!(n.reject_forged && n.reject_mac_changes && !n.link_up);
        assert!(n.policy().reject_forged);
        let n = parse("tap,forged-transmits=accept,mac-changes=accept,link=up").unwrap();
        assert_eq!(n, NetConfig::default());
        let n = parse("tap,tx-rate=10M,tx-burst=256K,tx-peak=20M,rx-rate=500k").unwrap();
        assert_eq!(
            n.tx,
            Some(Shaping {
                average_bps: 10_000_000,
                burst_bytes: 256 << 10,
                peak_bps: Some(20_000_000),
            })
        );
        // The default burst: 100 ms of the rate, at least 64 KiB.
        assert_eq!(n.rx, Some(Shaping::new(500_000)));
        assert_eq!(n.rx.map(|s| s.burst_bytes), Some(64 << 10));
        assert_eq!(
            parse("tap,rx-rate=1G").unwrap().rx,
            Some(Shaping::new(1_000_000_000))
        );
        assert_eq!(
            parse("tap,rx-rate=1000").unwrap().rx.map(|s| s.average_bps),
            Some(1000)
        );
        assert_eq!(parse("tap").unwrap().policy(), NetPolicy::default());
    }

    #[test]
    fn promiscuous_key() {
        let n = parse("tap,promiscuous=reject").unwrap();
        assert!(n.reject_promiscuous);
        assert!(n.policy().reject_promiscuous);
        // It is a policy of its own: the others keep their defaults.
        assert!(!n.reject_forged && !n.policy().reject_forged);
        assert_eq!(
            parse("tap,promiscuous=accept").unwrap(),
            NetConfig::default()
        );
        assert!(!NetConfig::default().policy().reject_promiscuous);
        let n =
            parse("tap=k0,forged-transmits=reject,promiscuous=reject,mac-changes=reject").unwrap();
        assert!(n.reject_forged && n.reject_promiscuous && n.reject_mac_changes);
        for (bad, word) in [
            ("tap,promiscuous=", "invalid promiscuous ''"),
            ("tap,promiscuous=on", "invalid promiscuous 'on'"),
            ("tap,promiscuous=Reject", "invalid promiscuous 'Reject'"),
            ("tap,promiscuous=reject,promiscuous=accept", "given twice"),
            ("tap,promiscuous", "not key=value"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(word), "{bad:?}: {e}");
            assert!(e.contains("promiscuous=accept|reject"), "{bad:?}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
    }

    #[test]
    fn bad_policy_values_name_the_problem() {
        for (bad, word) in [
            ("tap,forged-transmits=yes", "invalid forged-transmits 'yes'"),
            ("tap,mac-changes=", "invalid mac-changes ''"),
            ("tap,link=off", "invalid link 'off'"),
            ("tap,rx-rate=fast", "invalid rx-rate 'fast'"),
            ("tap,rx-rate=10X", "invalid rx-rate '10X'"),
            ("tap,rx-rate=99999999999999999999", "invalid rx-rate"),
            ("tap,tx-rate=1M,tx-burst=lots", "invalid tx-burst 'lots'"),
            ("tap,tx-burst=1M", "tx-burst and tx-peak need tx-rate"),
            ("tap,rx-peak=1M", "rx-burst and rx-peak need rx-rate"),
            ("tap,tx-rate=10M,tx-peak=1M", "below the average"),
            ("tap,tx-rate=0", "at least 8 bits/s"),
            ("tap,tx-rate=1M,tx-burst=0", "at least 1 byte"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(word), "{bad:?}: {e}");
            assert!(e.contains("forged-transmits=accept|reject"), "{bad:?}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
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
