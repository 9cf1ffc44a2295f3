//! The default network's NAT: a host-only subnet on a Keel bridge, whose
//! gateway address is the bridge's, masqueraded to wherever the host's
//! routes lead (any interface but the bridge).
//!
//! The firewall rules live in one nftables table, `inet keel`, written
//! whole with `nft -f -` in one transaction; removing the table removes
//! every rule Keel added.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::nl::{Netlink, NetlinkError};
use crate::subnet::{Ipv4Net, SubnetError};

pub const NFT_TABLE: &str = "keel";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error(transparent)]
    Subnet(#[from] SubnetError),
    #[error("Gateway {0} is not a host address of subnet {1}")]
    Gateway(Ipv4Addr, Ipv4Net),
    #[error("Subnet {subnet} overlaps the host's {what} {other} on {dev}")]
    Overlap {
        subnet: Ipv4Net,
        what: &'static str,
        other: String,
        dev: String,
    },
    #[error("Subnets {0} and {1} of two NAT networks overlap")]
    Overlapping(Ipv4Net, Ipv4Net),
    #[error("Bridge {0} does not exist")]
    NoBridge(String),
    #[error("Invalid bridge name '{0}'")]
    BridgeName(String),
    #[error("Cannot run nft (is the nftables package installed?): {0}")]
    NftMissing(std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Nft(String),
    #[error("Cannot turn on IPv4 forwarding: {0}")]
    Forwarding(std::io::Error),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// One host-only network with NAT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatNetwork {
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// The bridge's address, the VMs' router (usually the first host).
    pub gateway: Ipv4Addr,
}

impl NatNetwork {
    pub fn new(bridge: &str, subnet: Ipv4Net) -> NatNetwork {
        NatNetwork {
            bridge: bridge.to_string(),
            gateway: subnet.first_host(),
            subnet,
        }
    }

    /// Static checks: subnet usable, gateway inside it, bridge name sane.
    pub fn check(&self) -> Result<(), NatError> {
        self.subnet.check_usable()?;
        let g = self.gateway;
        if !self.subnet.contains(g) || g == self.subnet.network() || g == self.subnet.broadcast() {
            return Err(NatError::Gateway(g, self.subnet));
        }
        if crate::switch::check_ifname(&self.bridge).is_err() || self.bridge.contains('"') {
            return Err(NatError::BridgeName(self.bridge.chars().take(40).collect()));
        }
        Ok(())
    }
}

/// The nftables ruleset for the networks: replaces the whole `inet keel`
/// table in one transaction (creating it first so the delete never fails).
pub fn ruleset(nets: &[NatNetwork]) -> String {
    let mut s = format!("table inet {NFT_TABLE} {{}}\ndelete table inet {NFT_TABLE}\n");
    s += &format!("table inet {NFT_TABLE} {{\n");
    s += "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n";
    for n in nets {
        s += &format!(
            "    ip saddr {} oifname != \"{}\" masquerade\n",
            n.subnet, n.bridge
        );
    }
    s += "  }\n  chain forward {\n    type filter hook forward priority filter; policy accept;\n";
    for n in nets {
        s += &format!(
            "    iifname \"{}\" ip saddr {} accept\n",
            n.bridge, n.subnet
        );
        s += &format!(
            "    oifname \"{}\" ip daddr {} ct state established,related accept\n",
            n.bridge, n.subnet
        );
    }
    s += "  }\n}\n";
    s
}

fn nft(input: &str) -> Result<String, NatError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NatError::NftMissing)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(NatError::NftMissing)?;
    }
    let out = child.wait_with_output().map_err(NatError::NftMissing)?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("failed")
            .trim()
            .to_string();
        return Err(NatError::Nft(first));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replaces Keel's nftables table with the rules for `nets`.
pub fn apply_rules(nets: &[NatNetwork]) -> Result<(), NatError> {
    for n in nets {
        n.check()?;
    }
    nft(&ruleset(nets)).map(|_| ())
}

/// Removes Keel's nftables table (and with it every rule); absent is fine.
pub fn remove_rules() -> Result<(), NatError> {
    nft(&format!(
        "table inet {NFT_TABLE} {{}}\ndelete table inet {NFT_TABLE}\n"
    ))
    .map(|_| ())
}

/// Keel's table as `nft list` prints it, or None when it does not exist.
pub fn list_rules() -> Result<Option<String>, NatError> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", NFT_TABLE])
        .output()
        .map_err(NatError::NftMissing)?;
    if out.status.success() {
        Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
    } else {
        Ok(None)
    }
}

/// Turns on IPv4 forwarding (in the caller's network namespace).
pub fn enable_forwarding() -> Result<(), NatError> {
    if std::fs::read_to_string(IP_FORWARD).is_ok_and(|s| s.trim() == "1") {
        return Ok(());
    }
    std::fs::write(IP_FORWARD, "1\n").map_err(NatError::Forwarding)
}

/// Refuses a subnet that overlaps an address or route of the host on any
/// interface but the network's own bridge (the default route excepted).
pub fn check_overlap(nl: &Netlink, net: &NatNetwork) -> Result<(), NatError> {
    let links = nl.links()?;
    let name = |i: u32| {
        links
            .iter()
            .find(|l| l.index == i)
            .map(|l| l.name.clone())
            .unwrap_or_else(|| i.to_string())
    };
    let own = links.iter().find(|l| l.name == net.bridge).map(|l| l.index);
    for (idx, ip, prefix) in nl.addresses_v4()? {
        if Some(idx) == own || ip.is_loopback() {
            continue;
        }
        let other = Ipv4Net::new_truncating(ip, prefix);
        if other.overlaps(&net.subnet) {
            return Err(NatError::Overlap {
                subnet: net.subnet,
                what: "address",
                other: format!("{ip}/{prefix}"),
                dev: name(idx),
            });
        }
    }
    for (dst, oif) in nl.routes_v4()? {
        if dst.prefix() == 0 || (oif.is_some() && oif == own) || dst.network().is_loopback() {
            continue;
        }
        if dst.overlaps(&net.subnet) {
            let dev = oif.map(name).unwrap_or_else(|| "-".into());
            return Err(NatError::Overlap {
                subnet: net.subnet,
                what: "route",
                other: dst.to_string(),
                dev,
            });
        }
    }
    Ok(())
}

/// Sets up the networks: checks (also against each other), gives each
/// bridge its gateway address, turns on forwarding, writes the rules.
/// Idempotent: run it again with the same networks and nothing changes.
pub fn setup(nl: &Netlink, nets: &[NatNetwork]) -> Result<(), NatError> {
    for (i, a) in nets.iter().enumerate() {
        a.check()?;
        for b in &nets[i + 1..] {
            if a.subnet.overlaps(&b.subnet) {
                return Err(NatError::Overlapping(a.subnet, b.subnet));
            }
        }
        check_overlap(nl, a)?;
    }
    for n in nets {
        let br = nl
            .link(&n.bridge)?
            .ok_or_else(|| NatError::NoBridge(n.bridge.clone()))?;
        nl.add_address_v4(br.index, n.gateway, n.subnet.prefix())?;
    }
    enable_forwarding()?;
    apply_rules(nets)
}

/// Undoes [`setup`]: removes the table and the gateway addresses (bridges
/// that are gone are fine). Forwarding is left on (other users may need it).
pub fn teardown(nl: &Netlink, nets: &[NatNetwork]) -> Result<(), NatError> {
    remove_rules()?;
    for n in nets {
        if let Some(br) = nl.link(&n.bridge)? {
            nl.del_address_v4(br.index, n.gateway, n.subnet.prefix())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_replaces_the_table_whole() {
        let nets = [NatNetwork::new("keelbr0", "10.77.0.0/24".parse().unwrap())];
        let r = ruleset(&nets);
        assert!(r.starts_with("table inet keel {}\ndelete table inet keel\ntable inet keel {\n"));
        assert!(r.contains("ip saddr 10.77.0.0/24 oifname != \"keelbr0\" masquerade"));
        assert!(r.contains("type nat hook postrouting priority srcnat"));
        assert!(r.contains("iifname \"keelbr0\" ip saddr 10.77.0.0/24 accept"));
        assert!(r.contains(
            "oifname \"keelbr0\" ip daddr 10.77.0.0/24 ct state established,related accept"
        ));
        assert_eq!(r.matches('{').count(), r.matches('}').count());
    }

    #[test]
    fn network_checks() {
        let mut n = NatNetwork::new("keelbr0", "10.77.0.0/24".parse().unwrap());
        assert_eq!(n.gateway, Ipv4Addr::new(10, 77, 0, 1));
        assert!(n.check().is_ok());
        n.gateway = Ipv4Addr::new(10, 78, 0, 1);
        assert!(matches!(n.check(), Err(NatError::Gateway(..))));
        n.gateway = Ipv4Addr::new(10, 77, 0, 255);
        assert!(matches!(n.check(), Err(NatError::Gateway(..))));
        let bad = NatNetwork::new("br\"; flush ruleset", "10.77.0.0/24".parse().unwrap());
        assert!(matches!(bad.check(), Err(NatError::BridgeName(_))));
        let small = NatNetwork::new("b", "10.77.0.0/30".parse().unwrap());
        assert!(matches!(small.check(), Err(NatError::Subnet(_))));
    }
}
