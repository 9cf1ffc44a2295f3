//! VM ports: persistent TAP devices that keeld creates for a VM's NICs,
//! attached to a switch with the port group's VLAN, handed to keel-vmm by
//! name (keel-vmm attaches to an existing TAP) and deleted when the VM stops.
//!
//! Keel's TAPs are named `kt…` ([`TAP_PREFIX`]) and carry the alias
//! `keel-port:<label>` (e.g. the VM and NIC), so leftovers after a crash of
//! keeld or keel-vmm are found with [`list`].

use crate::nl::{Link, Netlink, NetlinkError};
use crate::switch::{self, SwitchError};

pub const TAP_PREFIX: &str = "kt";
pub const PORT_ALIAS_PREFIX: &str = "keel-port:";
/// The VLAN a bridge gives untagged frames (Linux's default PVID).
pub const DEFAULT_PVID: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("Invalid TAP name '{0}': {TAP_PREFIX} followed by 1-13 letters, digits, '-' or '_'")]
    Name(String),
    #[error("VLAN ID {0} is out of range: expected 0 (untagged) or 1 to 4094")]
    Vlan(u32),
    #[error("An interface named {0} already exists")]
    Exists(String),
    #[error("No TAP named {0}")]
    NotFound(String),
    #[error("Interface {0} is not a TAP created by Keel; it is left alone")]
    NotOwned(String),
    #[error("Bridge {0} has VLAN filtering off: a tagged port group needs it")]
    NoVlanFiltering(String),
    #[error("Cannot create TAP {0}: {1}")]
    Create(String, std::io::Error),
    #[error(transparent)]
    Switch(#[from] SwitchError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// A port to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub name: String,
    /// What the port is for (e.g. `vm 42 nic 0`), stored in the alias.
    pub label: String,
    /// The bridge to attach to (a Keel switch).
    pub bridge: String,
    /// 0 = untagged (the bridge's default VLAN), 1–4094 = that VLAN.
    pub vlan: u16,
    /// The uid that may open the TAP (keel-vmm's), when not root.
    pub owner: Option<u32>,
    /// Link state on the host side.
    pub up: bool,
}

/// A Keel TAP as found on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub name: String,
    pub index: u32,
    pub label: String,
    pub bridge: Option<String>,
    pub up: bool,
    pub mtu: u32,
    /// The port's PVID (untagged VLAN) when it is on a VLAN-filtering bridge.
    pub pvid: Option<u16>,
}

pub fn check_name(name: &str) -> Result<(), PortError> {
    let rest = name.strip_prefix(TAP_PREFIX).unwrap_or("");
    let ok = !rest.is_empty()
        && name.len() < 16
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(PortError::Name(name.chars().take(40).collect()))
    }
}

pub fn check_vlan(vlan: u32) -> Result<u16, PortError> {
    if vlan <= 4094 {
        Ok(vlan as u16)
    } else {
        Err(PortError::Vlan(vlan))
    }
}

/// Whether an interface is one of Keel's TAPs.
pub fn is_keel_tap(l: &Link) -> bool {
    l.name.starts_with(TAP_PREFIX)
        && l.kind.as_deref() == Some("tun")
        && l.alias
            .as_deref()
            .is_some_and(|a| a.starts_with(PORT_ALIAS_PREFIX))
}

fn owned(nl: &Netlink, name: &str) -> Result<Link, PortError> {
    check_name(name)?;
    let l = nl
        .link(name)?
        .ok_or_else(|| PortError::NotFound(name.to_string()))?;
    if !is_keel_tap(&l) {
        return Err(PortError::NotOwned(name.to_string()));
    }
    Ok(l)
}

/// Creates the persistent TAP, marks it, attaches it to the bridge on its
/// VLAN and sets its link state. On failure the TAP is removed again.
pub fn create(nl: &Netlink, spec: &PortSpec) -> Result<PortInfo, PortError> {
    check_name(&spec.name)?;
    check_vlan(u32::from(spec.vlan))?;
    let br = switch::get(nl, &spec.bridge)?;
    if spec.vlan != 0 && !br.vlan_filtering {
        return Err(PortError::NoVlanFiltering(spec.bridge.clone()));
    }
    if nl.link(&spec.name)?.is_some() {
        return Err(PortError::Exists(spec.name.clone()));
    }
    crate::sys::create_persistent_tap(&spec.name, spec.owner).map_err(|e| {
        if e.raw_os_error() == Some(libc::EBUSY) {
            PortError::Exists(spec.name.clone())
        } else {
            PortError::Create(spec.name.clone(), e)
        }
    })?;
    let res = (|| {
        let l = nl
            .link(&spec.name)?
            .ok_or_else(|| PortError::NotFound(spec.name.clone()))?;
        nl.set_alias(l.index, &format!("{PORT_ALIAS_PREFIX}{}", spec.label))?;
        attach(nl, &spec.name, &spec.bridge, spec.vlan)?;
        set_link(nl, &spec.name, spec.up)?;
        get(nl, &spec.name)
    })();
    if res.is_err() {
        if let Ok(Some(l)) = nl.link(&spec.name) {
            let _ = nl.delete_link(l.index);
        }
    }
    res
}

/// Attaches (or moves) the TAP to `bridge` with `vlan`; its MTU follows the bridge's.
pub fn attach(nl: &Netlink, name: &str, bridge: &str, vlan: u16) -> Result<(), PortError> {
    check_vlan(u32::from(vlan))?;
    let l = owned(nl, name)?;
    let br = switch::get(nl, bridge)?;
    if vlan != 0 && !br.vlan_filtering {
        return Err(PortError::NoVlanFiltering(bridge.to_string()));
    }
    if l.mtu != br.mtu {
        nl.set_mtu(l.index, br.mtu)?;
    }
    if l.master != Some(br.index) {
        nl.set_master(l.index, Some(br.index))?;
    }
    if br.vlan_filtering {
        set_vlan(nl, name, vlan)?;
    }
    Ok(())
}

/// Detaches the TAP from its bridge.
pub fn detach(nl: &Netlink, name: &str) -> Result<(), PortError> {
    let l = owned(nl, name)?;
    if l.master.is_some() {
        nl.set_master(l.index, None)?;
    }
    Ok(())
}

/// Puts the port on `vlan` (0 = the bridge's default VLAN), untagged: the
/// port's other VLANs (including the default VLAN 1) are removed.
pub fn set_vlan(nl: &Netlink, name: &str, vlan: u16) -> Result<(), PortError> {
    check_vlan(u32::from(vlan))?;
    let l = owned(nl, name)?;
    let want = if vlan == 0 { DEFAULT_PVID } else { vlan };
    nl.vlan_add(l.index, want, want, true)?;
    for v in nl.port_vlans(l.index)? {
        if v.vid != want {
            nl.vlan_del(l.index, v.vid, v.vid)?;
        }
    }
    Ok(())
}

/// Host-side link state of the port.
pub fn set_link(nl: &Netlink, name: &str, up: bool) -> Result<(), PortError> {
    let l = owned(nl, name)?;
    nl.set_up(l.index, up)?;
    Ok(())
}

/// Deletes a Keel TAP (it leaves its bridge with it). A missing one is fine.
pub fn delete(nl: &Netlink, name: &str) -> Result<(), PortError> {
    match owned(nl, name) {
        Ok(l) => Ok(nl.delete_link(l.index)?),
        Err(PortError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn port_info(nl: &Netlink, links: &[Link], l: &Link) -> Result<PortInfo, PortError> {
    let bridge = l
        .master
        .and_then(|m| links.iter().find(|b| b.index == m))
        .map(|b| b.name.clone());
    let pvid = if l.master.is_some() {
        nl.port_vlans(l.index)?
            .iter()
            .find(|v| v.pvid)
            .map(|v| v.vid)
    } else {
        None
    };
    Ok(PortInfo {
        name: l.name.clone(),
        index: l.index,
        label: l
            .alias
            .as_deref()
            .and_then(|a| a.strip_prefix(PORT_ALIAS_PREFIX))
            .unwrap_or("")
            .to_string(),
        bridge,
        up: l.up,
        mtu: l.mtu,
        pvid,
    })
}

pub fn get(nl: &Netlink, name: &str) -> Result<PortInfo, PortError> {
    let l = owned(nl, name)?;
    let links = nl.links()?;
    port_info(nl, &links, &l)
}

/// Every Keel TAP on the host (to find what a crash left behind).
pub fn list(nl: &Netlink) -> Result<Vec<PortInfo>, PortError> {
    let links = nl.links()?;
    links
        .iter()
        .filter(|l| is_keel_tap(l))
        .map(|l| port_info(nl, &links, l))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_vlans() {
        assert!(check_name("kt42n0").is_ok());
        assert!(check_name("kt-0123456789a").is_ok());
        for bad in ["", "kt", "tap0", "kt-0123456789abc", "kt a", "kt/x"] {
            assert!(matches!(check_name(bad), Err(PortError::Name(_))), "{bad}");
        }
        assert_eq!(check_vlan(0).unwrap(), 0);
        assert_eq!(check_vlan(4094).unwrap(), 4094);
        assert!(matches!(check_vlan(4095), Err(PortError::Vlan(4095))));
        assert!(matches!(check_vlan(70000), Err(PortError::Vlan(70000))));
    }

    #[test]
    fn keel_taps_need_prefix_kind_and_alias() {
        let mut l = Link {
            index: 9,
            name: "kt1n0".into(),
            kind: Some("tun".into()),
            master: None,
            alias: Some("keel-port:vm1/nic0".into()),
            mtu: 1500,
            up: true,
            mac: None,
            vlan_filtering: None,
        };
        assert!(is_keel_tap(&l));
        l.alias = None;
        assert!(!is_keel_tap(&l));
        l.alias = Some("keel-port:x".into());
        l.kind = Some("veth".into());
        assert!(!is_keel_tap(&l));
        l.kind = Some("tun".into());
        l.name = "tap0".into();
        assert!(!is_keel_tap(&l));
    }
}
