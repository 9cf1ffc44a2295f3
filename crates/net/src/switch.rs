//! Standard switches: Linux bridges that Keel creates and owns.
//!
//! A bridge is Keel's when its interface alias (`ifalias`) starts with
//! [`SWITCH_ALIAS_PREFIX`]; the rest of the alias is the switch's name (e.g.
//! `keel-switch:vSwitch0`). Every change here refuses bridges without that
//! mark, so keeld never touches bridges it did not create.

use crate::nl::{Link, Netlink, NetlinkError};
use crate::port;
use rtnetlink::packet_route::link::InfoBridge;
use rtnetlink::LinkBridge;

pub const SWITCH_ALIAS_PREFIX: &str = "keel-switch:";
pub const MIN_MTU: u32 = 68;
pub const MAX_MTU: u32 = 9000;
pub const DEFAULT_MTU: u32 = 1500;

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("Invalid interface name '{0}': 1-15 characters of letters, digits, '-', '_' or '.'")]
    Name(String),
    #[error("MTU {0} is out of range: expected {MIN_MTU} to {MAX_MTU}")]
    Mtu(u32),
    #[error("An interface named {0} already exists")]
    Exists(String),
    #[error("No bridge named {0}")]
    NotFound(String),
    #[error("Interface {0} is not a bridge created by Keel; it is left alone")]
    NotOwned(String),
    #[error("Uplink {0} does not exist on this host")]
    UplinkMissing(String),
    #[error("Uplink {0} is already a port of {1}")]
    UplinkEnslaved(String, String),
    #[error("Uplink {0} cannot be used: {1}")]
    UplinkInvalid(String, &'static str),
    #[error("{0} is not an uplink of {1}")]
    NotUplink(String, String),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// What a switch should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchSpec {
    /// The bridge's interface name (at most 15 characters).
    pub ifname: String,
    /// The switch's name as users know it (stored in the alias).
    pub label: String,
    pub mtu: u32,
    /// Host NICs enslaved to the bridge.
    pub uplinks: Vec<String>,
}

/// A switch as found on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchInfo {
    pub ifname: String,
    pub label: String,
    pub index: u32,
    pub mtu: u32,
    pub up: bool,
    pub vlan_filtering: bool,
    /// Ports that are not Keel TAPs (host NICs).
    pub uplinks: Vec<String>,
    /// Keel TAPs on the bridge.
    pub ports: Vec<String>,
}

/// Checks a Linux interface name.
pub fn check_ifname(name: &str) -> Result<(), SwitchError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SwitchError::Name(name.chars().take(40).collect()))
    }
}

pub fn check_mtu(mtu: u32) -> Result<(), SwitchError> {
    if (MIN_MTU..=MAX_MTU).contains(&mtu) {
        Ok(())
    } else {
        Err(SwitchError::Mtu(mtu))
    }
}

fn label_of(l: &Link) -> Option<String> {
    if l.kind.as_deref() != Some("bridge") {
        return None;
    }
    l.alias
        .as_deref()?
        .strip_prefix(SWITCH_ALIAS_PREFIX)
        .map(str::to_string)
}

fn info(links: &[Link], br: &Link, label: String) -> SwitchInfo {
    let mut uplinks = Vec::new();
    let mut ports = Vec::new();
    for l in links.iter().filter(|l| l.master == Some(br.index)) {
        if port::is_keel_tap(l) {
            ports.push(l.name.clone());
        } else {
            uplinks.push(l.name.clone());
        }
    }
    SwitchInfo {
        ifname: br.name.clone(),
        label,
        index: br.index,
        mtu: br.mtu,
        up: br.up,
        vlan_filtering: br.vlan_filtering.unwrap_or(false),
        uplinks,
        ports,
    }
}

/// Keel's switches on this host.
pub fn list(nl: &Netlink) -> Result<Vec<SwitchInfo>, SwitchError> {
    let links = nl.links()?;
    Ok(links
        .iter()
        .filter_map(|l| label_of(l).map(|label| info(&links, l, label)))
        .collect())
}

/// The Keel switch `ifname`.
pub fn get(nl: &Netlink, ifname: &str) -> Result<SwitchInfo, SwitchError> {
    let br = owned(nl, ifname)?;
    let links = nl.links()?;
    let label = label_of(&br).unwrap_or_default();
    Ok(info(&links, &br, label))
}

fn owned(nl: &Netlink, ifname: &str) -> Result<Link, SwitchError> {
    check_ifname(ifname)?;
    let l = nl
        .link(ifname)?
        .ok_or_else(|| SwitchError::NotFound(ifname.to_string()))?;
    if label_of(&l).is_none() {
        return Err(SwitchError::NotOwned(ifname.to_string()));
    }
    Ok(l)
}

/// Creates the bridge (VLAN filtering on where the kernel has it, up), marks it as Keel's and
/// enslaves the uplinks. On failure nothing is left behind.
pub fn create(nl: &Netlink, spec: &SwitchSpec) -> Result<SwitchInfo, SwitchError> {
    check_ifname(&spec.ifname)?;
    check_mtu(spec.mtu)?;
    if nl.link(&spec.ifname)?.is_some() {
        return Err(SwitchError::Exists(spec.ifname.clone()));
    }
    for u in &spec.uplinks {
        check_uplink(nl, &spec.ifname, u)?;
    }
    let msg = LinkBridge::new(&spec.ifname).mtu(spec.mtu).build();
    nl.add_link(msg, &format!("bridge {} create", spec.ifname))?;
    let res = (|| {
        let br = nl
            .link(&spec.ifname)?
            .ok_or_else(|| SwitchError::NotFound(spec.ifname.clone()))?;
        nl.set_alias(br.index, &format!("{SWITCH_ALIAS_PREFIX}{}", spec.label))?;
        enable_vlan_filtering(nl, br.index)?;
        for u in &spec.uplinks {
            add_uplink(nl, &spec.ifname, u)?;
        }
        get(nl, &spec.ifname)
    })();
    if res.is_err() {
        if let Ok(Some(br)) = nl.link(&spec.ifname) {
            let _ = nl.delete_link(br.index);
        }
    }
    res
}

/// Turns VLAN filtering on; false when the kernel lacks it
/// (CONFIG_BRIDGE_VLAN_FILTERING): the bridge then carries untagged port
/// groups only.
fn enable_vlan_filtering(nl: &Netlink, index: u32) -> Result<bool, SwitchError> {
    match nl.set_bridge_opts(index, vec![InfoBridge::VlanFiltering(true)]) {
        Ok(()) => Ok(nl.link_by_index(index)?.and_then(|l| l.vlan_filtering) == Some(true)),
        Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a Keel bridge; its uplinks are released (they stay on the host).
pub fn delete(nl: &Netlink, ifname: &str) -> Result<(), SwitchError> {
    let br = owned(nl, ifname)?;
    nl.delete_link(br.index)?;
    Ok(())
}

pub fn set_mtu(nl: &Netlink, ifname: &str, mtu: u32) -> Result<(), SwitchError> {
    check_mtu(mtu)?;
    let br = owned(nl, ifname)?;
    // Ports first: a bridge's MTU cannot exceed its ports'.
    for l in nl.links()?.iter().filter(|l| l.master == Some(br.index)) {
        if l.mtu != mtu {
            nl.set_mtu(l.index, mtu)?;
        }
    }
    nl.set_mtu(br.index, mtu)?;
    Ok(())
}

pub fn set_up(nl: &Netlink, ifname: &str, up: bool) -> Result<(), SwitchError> {
    let br = owned(nl, ifname)?;
    nl.set_up(br.index, up)?;
    Ok(())
}

fn check_uplink(nl: &Netlink, bridge: &str, nic: &str) -> Result<Link, SwitchError> {
    check_ifname(nic)?;
    if nic == bridge {
        return Err(SwitchError::UplinkInvalid(
            nic.to_string(),
            "it is the bridge itself",
        ));
    }
    let l = nl
        .link(nic)?
        .ok_or_else(|| SwitchError::UplinkMissing(nic.to_string()))?;
    if let Some(m) = l.master {
        let name = nl
            .link_by_index(m)?
            .map(|b| b.name)
            .unwrap_or_else(|| m.to_string());
        return Err(SwitchError::UplinkEnslaved(nic.to_string(), name));
    }
    match l.kind.as_deref() {
        Some("bridge") => {
            return Err(SwitchError::UplinkInvalid(
                nic.to_string(),
                "it is a bridge",
            ))
        }
        _ if nic == "lo" => {
            return Err(SwitchError::UplinkInvalid(
                nic.to_string(),
                "it is the loopback",
            ))
        }
        _ if port::is_keel_tap(&l) => {
            return Err(SwitchError::UplinkInvalid(
                nic.to_string(),
                "it is a VM port",
            ))
        }
        _ => {}
    }
    Ok(l)
}

/// Enslaves a host NIC as an uplink: a trunk carrying VLANs 1 (untagged)
/// and 2–4094 (tagged), up.
pub fn add_uplink(nl: &Netlink, ifname: &str, nic: &str) -> Result<(), SwitchError> {
    let br = owned(nl, ifname)?;
    let l = check_uplink(nl, ifname, nic)?;
    if l.mtu != br.mtu {
        nl.set_mtu(l.index, br.mtu)?;
    }
    nl.set_master(l.index, Some(br.index))?;
    let res = (|| {
        if br.vlan_filtering == Some(true) {
            nl.vlan_add(l.index, 2, 4094, false)?;
        }
        nl.set_up(l.index, true)
    })();
    if let Err(e) = res {
        let _ = nl.set_master(l.index, None);
        return Err(e.into());
    }
    Ok(())
}

pub fn remove_uplink(nl: &Netlink, ifname: &str, nic: &str) -> Result<(), SwitchError> {
    let br = owned(nl, ifname)?;
    let l = nl
        .link(nic)?
        .ok_or_else(|| SwitchError::UplinkMissing(nic.to_string()))?;
    if l.master != Some(br.index) || port::is_keel_tap(&l) {
        return Err(SwitchError::NotUplink(nic.to_string(), ifname.to_string()));
    }
    nl.set_master(l.index, None)?;
    Ok(())
}

/// What [`ensure`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnsureReport {
    pub created: bool,
    pub uplinks_added: Vec<String>,
    pub changed: Vec<String>,
}

/// Makes the host match `spec` (at keeld start, e.g. after a reboot):
/// creates a missing bridge, keeps an existing one with its ports, fixes
/// MTU, VLAN filtering and link state, adds missing uplinks. Uplinks it
/// cannot add are errors; extra ports are left alone.
pub fn ensure(nl: &Netlink, spec: &SwitchSpec) -> Result<EnsureReport, SwitchError> {
    check_ifname(&spec.ifname)?;
    check_mtu(spec.mtu)?;
    let mut rep = EnsureReport::default();
    let Some(br) = nl.link(&spec.ifname)? else {
        create(nl, spec)?;
        rep.created = true;
        rep.uplinks_added = spec.uplinks.clone();
        return Ok(rep);
    };
    if label_of(&br).is_none() {
        return Err(SwitchError::NotOwned(spec.ifname.clone()));
    }
    let want_alias = format!("{SWITCH_ALIAS_PREFIX}{}", spec.label);
    if br.alias.as_deref() != Some(want_alias.as_str()) {
        nl.set_alias(br.index, &want_alias)?;
        rep.changed.push("label".into());
    }
    if br.vlan_filtering != Some(true) && enable_vlan_filtering(nl, br.index)? {
        rep.changed.push("vlan_filtering".into());
    }
    if br.mtu != spec.mtu {
        set_mtu(nl, &spec.ifname, spec.mtu)?;
        rep.changed.push("mtu".into());
    }
    if !br.up {
        nl.set_up(br.index, true)?;
        rep.changed.push("up".into());
    }
    for u in &spec.uplinks {
        let l = nl.link(u)?;
        if l.as_ref().is_some_and(|l| l.master == Some(br.index)) {
            continue;
        }
        add_uplink(nl, &spec.ifname, u)?;
        rep.uplinks_added.push(u.clone());
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_mtus() {
        assert!(check_ifname("keelbr0").is_ok());
        assert!(check_ifname("a.b-c_d").is_ok());
        for bad in ["", "0123456789abcdef", "a b", "a/b", ".", "..", "é"] {
            assert!(
                matches!(check_ifname(bad), Err(SwitchError::Name(_))),
                "{bad}"
            );
        }
        assert!(check_mtu(68).is_ok() && check_mtu(1500).is_ok() && check_mtu(9000).is_ok());
        assert!(matches!(check_mtu(67), Err(SwitchError::Mtu(67))));
        assert!(matches!(check_mtu(9001), Err(SwitchError::Mtu(9001))));
    }

    #[test]
    fn ownership_needs_bridge_kind_and_alias() {
        let mut l = Link {
            index: 3,
            name: "br0".into(),
            kind: Some("bridge".into()),
            master: None,
            alias: Some("keel-switch:vSwitch0".into()),
            mtu: 1500,
            up: true,
            mac: None,
            vlan_filtering: Some(true),
        };
        assert_eq!(label_of(&l).as_deref(), Some("vSwitch0"));
        l.alias = Some("docker bridge".into());
        assert_eq!(label_of(&l), None);
        l.alias = Some("keel-switch:x".into());
        l.kind = Some("veth".into());
        assert_eq!(label_of(&l), None);
    }
}
