//! MAC addresses for VM NICs: parsing, validation and stable generation.
//!
//! Generated addresses are locally administered unicast addresses with the
//! prefix `02:4b` ("K"), so they never collide with a vendor's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The first two bytes of every MAC Keel generates.
pub const KEEL_MAC_PREFIX: [u8; 2] = [0x02, 0x4b];

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MacError {
    #[error("Invalid MAC address '{0}': expected six hex bytes separated by ':' (e.g. 02:4b:00:00:00:01)")]
    Syntax(String),
    #[error("MAC address {0} is a multicast address: a NIC needs a unicast one (first byte even)")]
    Multicast(Mac),
    #[error("MAC address {0} is all zeros")]
    Zero(Mac),
    #[error("MAC address {0} is already used on this host")]
    InUse(Mac),
    #[error("No free MAC address could be generated")]
    Exhausted,
}

impl Mac {
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 2 == 2
    }

    /// Checks that the address can be a NIC's own: unicast, not zero.
    pub fn validate(&self) -> Result<(), MacError> {
        if self.is_zero() {
            return Err(MacError::Zero(*self));
        }
        if self.is_multicast() {
            return Err(MacError::Multicast(*self));
        }
        Ok(())
    }

    /// Parses and validates a MAC a user gave, refusing one in `taken`.
    pub fn parse_for_nic(s: &str, taken: impl Fn(&Mac) -> bool) -> Result<Mac, MacError> {
        let mac: Mac = s.parse()?;
        mac.validate()?;
        if taken(&mac) {
            return Err(MacError::InUse(mac));
        }
        Ok(mac)
    }

    /// A stable MAC derived from `seed` (e.g. a VM's id and NIC index): the
    /// same seed gives the same address as long as it is free; when it is
    /// taken, the next candidate of the same seed is tried.
    pub fn derive(seed: &str, taken: impl Fn(&Mac) -> bool) -> Result<Mac, MacError> {
        for attempt in 0u32..4096 {
            let h = fnv1a(seed.as_bytes(), attempt);
            let b = h.to_be_bytes();
            let mac = Mac([
                KEEL_MAC_PREFIX[0],
                KEEL_MAC_PREFIX[1],
                b[0],
                b[1],
                b[2],
                b[3],
            ]);
            if !taken(&mac) {
                return Ok(mac);
            }
        }
        Err(MacError::Exhausted)
    }

    /// A random MAC with Keel's prefix, not in `taken`.
    pub fn generate(taken: impl Fn(&Mac) -> bool) -> Result<Mac, MacError> {
        for _ in 0..4096 {
            let mut b = [0u8; 4];
            if getrandom::fill(&mut b).is_err() {
                return Err(MacError::Exhausted);
            }
            let mac = Mac([
                KEEL_MAC_PREFIX[0],
                KEEL_MAC_PREFIX[1],
                b[0],
                b[1],
                b[2],
                b[3],
            ]);
            if !taken(&mac) {
                return Ok(mac);
            }
        }
        Err(MacError::Exhausted)
    }
}

fn fnv1a(data: &[u8], salt: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data.iter().chain(salt.to_le_bytes().iter()) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Self, MacError> {
        let err = || MacError::Syntax(s.chars().take(40).collect());
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn parse_and_display_round_trip() {
        let m: Mac = "02:4B:00:0a:ff:01".parse().unwrap();
        assert_eq!(m.0, [2, 0x4b, 0, 10, 255, 1]);
        assert_eq!(m.to_string(), "02:4b:00:0a:ff:01");
        assert_eq!("02-4b-00-0a-ff-01".parse::<Mac>().unwrap(), m);
        for bad in [
            "",
            "02:4b:00:0a:ff",
            "02:4b:00:0a:ff:01:02",
            "2:4b:00:0a:ff:01",
            "zz:4b:00:0a:ff:01",
        ] {
            assert!(
                matches!(bad.parse::<Mac>(), Err(MacError::Syntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn validation_refuses_multicast_and_zero() {
        assert!(matches!(
            Mac([1, 0, 0x5e, 0, 0, 1]).validate(),
            Err(MacError::Multicast(_))
        ));
        assert!(matches!(
            Mac([0xff; 6]).validate(),
            Err(MacError::Multicast(_))
        ));
        assert!(matches!(Mac([0; 6]).validate(), Err(MacError::Zero(_))));
        assert!(Mac([0x52, 0x54, 0, 1, 2, 3]).validate().is_ok());
        let taken = Mac([2, 0x4b, 0, 0, 0, 1]);
        assert_eq!(
            Mac::parse_for_nic("02:4b:00:00:00:01", |m| *m == taken),
            Err(MacError::InUse(taken))
        );
        assert!(matches!(
            Mac::parse_for_nic("01:00:00:00:00:01", |_| false),
            Err(MacError::Multicast(_))
        ));
    }

    #[test]
    fn derived_macs_are_stable_local_unicast_and_unique() {
        let a = Mac::derive("vm-7/nic0", |_| false).unwrap();
        assert_eq!(a, Mac::derive("vm-7/nic0", |_| false).unwrap());
        assert_eq!(a.0[..2], KEEL_MAC_PREFIX);
        assert!(a.is_locally_administered() && !a.is_multicast());
        let b = Mac::derive("vm-7/nic0", |m| *m == a).unwrap();
        assert_ne!(a, b);
        let mut set = HashSet::new();
        for i in 0..2000 {
            let m = Mac::derive(&format!("vm-{i}/nic0"), |m| set.contains(m)).unwrap();
            m.validate().unwrap();
            assert!(set.insert(m));
        }
        assert_eq!(Mac::derive("x", |_| true), Err(MacError::Exhausted));
    }

    #[test]
    fn random_macs_avoid_taken_ones() {
        let mut set = HashSet::new();
        for _ in 0..500 {
            let m = Mac::generate(|m| set.contains(m)).unwrap();
            assert_eq!(m.0[..2], KEEL_MAC_PREFIX);
            assert!(set.insert(m));
        }
    }

    #[test]
    fn serde_as_string() {
        let m = Mac([2, 0x4b, 1, 2, 3, 4]);
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, "\"02:4b:01:02:03:04\"");
        assert_eq!(serde_json::from_str::<Mac>(&j).unwrap(), m);
        assert!(serde_json::from_str::<Mac>("\"nope\"").is_err());
    }
}
