//! A DHCPv4 server for one bridge.
//!
//! [`DhcpCore`] is the pure state machine (request + time in, reply + lease
//! changes out); [`DhcpServer`] runs it on a UDP socket bound to the bridge
//! on its own thread, persists the leases in a JSON file (atomically, after
//! every change of a bound lease; reloaded on start) and reports every ACK.

mod core;
pub mod leases;
mod server;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;

pub use self::core::{DhcpCore, Outcome, Reply, DECLINE_SECS, OFFER_SECS};
pub use leases::{Lease, LeaseFileError};
pub use server::{DhcpError, DhcpServer, ServerOptions};

use crate::subnet::Ipv4Net;

pub const DEFAULT_LEASE_SECS: u32 = 3600;

/// What the server hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpConfig {
    pub subnet: Ipv4Net,
    /// The server's own address (the bridge's): router and server identifier.
    pub gateway: Ipv4Addr,
    /// The pool: `pool_start..=pool_end`, without the gateway.
    pub pool_start: Ipv4Addr,
    pub pool_end: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub lease_secs: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("Gateway {0} is not a host address of {1}")]
    Gateway(Ipv4Addr, Ipv4Net),
    #[error("DHCP pool {0}-{1} is not a range of host addresses of {2}")]
    Pool(Ipv4Addr, Ipv4Addr, Ipv4Net),
    #[error("DHCP pool {0}-{1} has no address besides the gateway")]
    EmptyPool(Ipv4Addr, Ipv4Addr),
    #[error("Lease time {0} s is out of range: expected 60 to 31536000")]
    LeaseTime(u32),
}

impl DhcpConfig {
    /// Every host address but the gateway, the gateway as DNS, an hour's leases.
    pub fn new(subnet: Ipv4Net, gateway: Ipv4Addr) -> DhcpConfig {
        let last = subnet.hosts().last().unwrap_or(gateway);
        DhcpConfig {
            subnet,
            gateway,
            pool_start: subnet.first_host(),
            pool_end: last,
            dns: vec![gateway],
            domain: None,
            lease_secs: DEFAULT_LEASE_SECS,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = self.subnet;
        let host = |ip: Ipv4Addr| s.contains(ip) && ip != s.network() && ip != s.broadcast();
        if !host(self.gateway) {
            return Err(ConfigError::Gateway(self.gateway, s));
        }
        if !host(self.pool_start) || !host(self.pool_end) || self.pool_start > self.pool_end {
            return Err(ConfigError::Pool(self.pool_start, self.pool_end, s));
        }
        if self.pool().next().is_none() {
            return Err(ConfigError::EmptyPool(self.pool_start, self.pool_end));
        }
        if !(60..=31_536_000).contains(&self.lease_secs) {
            return Err(ConfigError::LeaseTime(self.lease_secs));
        }
        Ok(())
    }

    pub fn in_pool(&self, ip: Ipv4Addr) -> bool {
        ip >= self.pool_start
            && ip <= self.pool_end
            && ip != self.gateway
            && self.subnet.contains(ip)
            && ip != self.subnet.network()
            && ip != self.subnet.broadcast()
    }

    /// The pool's addresses in order.
    pub fn pool(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (u32::from(self.pool_start)..=u32::from(self.pool_end))
            .map(Ipv4Addr::from)
            .filter(|ip| self.in_pool(*ip))
    }
}

/// The IPv4 name servers of a resolv.conf text that VMs can reach (not loopback).
pub fn resolvers_from(resolv_conf: &str) -> Vec<Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|a| a.parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .collect()
}

/// The DNS servers to give VMs: the host's resolvers from /etc/resolv.conf
/// when it names reachable ones, else the gateway.
pub fn default_dns(gateway: Ipv4Addr) -> Vec<Ipv4Addr> {
    let found = std::fs::read_to_string("/etc/resolv.conf")
        .map(|s| resolvers_from(&s))
        .unwrap_or_default();
    if found.is_empty() {
        vec![gateway]
    } else {
        found
    }
}
