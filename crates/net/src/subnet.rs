//! IPv4 subnets (`10.77.0.0/24`) and the checks a host-only network needs.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 network: its address (host bits zero) and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubnetError {
    #[error("Invalid subnet '{0}': expected an IPv4 network like 10.77.0.0/24")]
    Syntax(String),
    #[error("Invalid subnet {0}: host bits are set (did you mean {1}?)")]
    HostBits(String, Ipv4Net),
    #[error("Subnet {0} is too small or too large for a VM network: the prefix must be /8 to /29")]
    Size(Ipv4Net),
    #[error("Subnet {0} is not a private/usable unicast range (loopback, link-local, multicast or reserved)")]
    Reserved(Ipv4Net),
}

impl Ipv4Net {
    /// A network from an address and prefix; host bits are cleared.
    pub fn new_truncating(addr: Ipv4Addr, prefix: u8) -> Ipv4Net {
        let prefix = prefix.min(32);
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let p = self.prefix.min(other.prefix);
        u32::from(self.addr) & mask(p) == u32::from(other.addr) & mask(p)
    }

    /// The first usable host address (the conventional gateway).
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }

    /// Usable host addresses (without network and broadcast), in order.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.addr) + 1;
        let last = u32::from(self.broadcast()).saturating_sub(1);
        (first..=last).map(Ipv4Addr::from)
    }

    /// Checks that the subnet suits a host-only VM network.
    pub fn check_usable(&self) -> Result<(), SubnetError> {
        if !(8..=29).contains(&self.prefix) {
            return Err(SubnetError::Size(*self));
        }
        let a = self.addr;
        if a.is_loopback()
            || a.is_link_local()
            || a.is_multicast()
            || a.is_broadcast()
            || a.is_unspecified()
            || a.octets()[0] == 0
            || a.octets()[0] >= 240
        {
            return Err(SubnetError::Reserved(*self));
        }
        Ok(())
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = SubnetError;
    fn from_str(s: &str) -> Result<Self, SubnetError> {
        let short: String = s.chars().take(40).collect();
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| SubnetError::Syntax(short.clone()))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| SubnetError::Syntax(short.clone()))?;
        let prefix: u8 = p.parse().map_err(|_| SubnetError::Syntax(short.clone()))?;
        if prefix > 32 || p.starts_with('+') {
            return Err(SubnetError::Syntax(short));
        }
        let net = Ipv4Net::new_truncating(addr, prefix);
        if net.addr != addr {
            return Err(SubnetError::HostBits(short, net));
        }
        Ok(net)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_geometry() {
        let net = n("10.77.0.0/24");
        assert_eq!(net.to_string(), "10.77.0.0/24");
        assert_eq!(net.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(net.broadcast(), Ipv4Addr::new(10, 77, 0, 255));
        assert_eq!(net.first_host(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(net.hosts().count(), 254);
        assert!(net.contains(Ipv4Addr::new(10, 77, 0, 200)));
        assert!(!net.contains(Ipv4Addr::new(10, 77, 1, 1)));
        assert!(
            matches!("10.77.0.1/24".parse::<Ipv4Net>(), Err(SubnetError::HostBits(_, x)) if x == net)
        );
        for bad in [
            "10.77.0.0",
            "10.77.0.0/33",
            "x/24",
            "10.77.0.0/+4",
            "10.77.0.0/",
        ] {
            assert!(
                matches!(bad.parse::<Ipv4Net>(), Err(SubnetError::Syntax(_))),
                "{bad}"
            );
        }
        assert_eq!(
            n("0.0.0.0/0").hosts().next(),
            Some(Ipv4Addr::new(0, 0, 0, 1))
        );
    }

    #[test]
    fn overlap() {
        assert!(n("10.0.0.0/8").overlaps(&n("10.77.0.0/24")));
        assert!(n("10.77.0.0/24").overlaps(&n("10.0.0.0/8")));
        assert!(!n("10.77.0.0/24").overlaps(&n("10.77.1.0/24")));
        assert!(n("10.77.0.0/24").overlaps(&n("10.77.0.128/25")));
        assert!(n("0.0.0.0/0").overlaps(&n("192.168.1.0/24")));
    }

    #[test]
    fn usable() {
        assert!(n("10.77.0.0/24").check_usable().is_ok());
        assert!(n("192.168.100.0/29").check_usable().is_ok());
        assert!(matches!(
            n("10.77.0.0/30").check_usable(),
            Err(SubnetError::Size(_))
        ));
        assert!(matches!(
            n("10.0.0.0/7").check_usable(),
            Err(SubnetError::Size(_))
        ));
        assert!(matches!(
            n("127.0.0.0/8").check_usable(),
            Err(SubnetError::Reserved(_))
        ));
        assert!(matches!(
            n("169.254.0.0/16").check_usable(),
            Err(SubnetError::Reserved(_))
        ));
        assert!(matches!(
            n("224.0.0.0/8").check_usable(),
            Err(SubnetError::Reserved(_))
        ));
    }
}
