//! What the host's networking needs from the kernel, as a trait: the real
//! one drives `crates/net` (bridges, TAPs, nftables NAT, the DHCP servers),
//! and the unit tests use a fake that only records the switches and ports.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use net::dhcp::{DhcpConfig, DhcpServer, ServerOptions};
use net::nat::{NatError, NatNetwork};
use net::port::{PortError, PortSpec};
use net::switch::SwitchError;
use net::{Ipv4Net, Mac, Netlink};

use crate::error::{CoreError, ErrorKind, Result};
use crate::host::lock;

/// A switch as the kernel should have it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeSpec {
    pub bridge: String,
    pub label: String,
    pub mtu: u32,
    pub uplinks: Vec<String>,
}

/// A NAT network on a switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatSpec {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub dhcp: bool,
}

/// A VM NIC's TAP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapSpec {
    pub tap: String,
    pub label: String,
    pub bridge: String,
    pub vlan: u16,
    pub up: bool,
}

/// Called with (MAC, address) when the DHCP server binds a lease.
pub type OnIp = Box<dyn Fn(Mac, Ipv4Addr) + Send + Sync>;

pub trait NetRuntime: Send + Sync {
    /// Creates the bridge or brings an existing one in line (MTU, uplinks
    /// added, up). True when it had to be created.
    fn ensure_switch(&self, spec: &BridgeSpec) -> Result<bool>;
    fn delete_switch(&self, bridge: &str) -> Result<()>;
    /// `up`, or what is wrong.
    fn switch_status(&self, bridge: &str) -> String;
    fn set_mtu(&self, bridge: &str, mtu: u32) -> Result<()>;
    fn add_uplink(&self, bridge: &str, nic: &str) -> Result<()>;
    fn remove_uplink(&self, bridge: &str, nic: &str) -> Result<()>;
    /// Whether a NIC of this name exists on the host.
    fn nic_exists(&self, nic: &str) -> bool;
    /// Whether the bridge can carry tagged VLANs (the kernel has bridge
    /// VLAN filtering).
    fn vlan_filtering(&self, bridge: &str) -> bool;
    /// Refuses a subnet that overlaps the host's own addresses and routes
    /// (other than `bridge`'s).
    fn check_subnet(&self, bridge: &str, subnet: Ipv4Net) -> Result<()>;
    /// Makes the NAT rules and DHCP servers exactly `nets`. `restart`
    /// names bridges whose DHCP server must restart (they were recreated).
    fn apply_nat(&self, nets: &[NatSpec], restart: &[String]) -> Result<()>;
    fn create_tap(&self, spec: &TapSpec) -> Result<()>;
    /// Puts an existing TAP on another bridge and VLAN.
    fn move_tap(&self, tap: &str, bridge: &str, vlan: u16) -> Result<()>;
    fn set_tap_vlan(&self, tap: &str, vlan: u16) -> Result<()>;
    /// A missing TAP is fine.
    fn delete_tap(&self, tap: &str) -> Result<()>;
    /// The names of every Keel TAP on the host.
    fn taps(&self) -> Vec<String>;
    fn lease_of(&self, mac: Mac) -> Option<Ipv4Addr>;
    fn set_on_ip(&self, f: OnIp);
}

/// The real runtime on the kernel of keeld's network namespace.
pub struct RealNet {
    /// None (and the error) when netlink cannot be opened (no privilege).
    nl: Mutex<std::result::Result<Netlink, String>>,
    lease_dir: PathBuf,
    dhcp: Mutex<HashMap<String, (NatSpec, DhcpServer)>>,
    on_ip: Arc<OnceLock<OnIp>>,
}

fn kind_of_switch(e: &SwitchError) -> ErrorKind {
    match e {
        SwitchError::Name(_) | SwitchError::Mtu(_) | SwitchError::UplinkInvalid(..) => {
            ErrorKind::BadRequest
        }
        SwitchError::UplinkMissing(_) | SwitchError::NotFound(_) | SwitchError::NotUplink(..) => {
            ErrorKind::NotFound
        }
        SwitchError::Exists(_) | SwitchError::NotOwned(_) | SwitchError::UplinkEnslaved(..) => {
            ErrorKind::Conflict
        }
        SwitchError::Netlink(_) => ErrorKind::Internal,
    }
}

fn sw_err(e: SwitchError) -> CoreError {
    CoreError::new(kind_of_switch(&e), e.to_string())
}

fn port_err(e: PortError) -> CoreError {
    let kind = match &e {
        PortError::Name(_) | PortError::Vlan(_) => ErrorKind::BadRequest,
        PortError::NoVlanFiltering(_) => ErrorKind::Conflict,
        PortError::Switch(s) => kind_of_switch(s),
        _ => ErrorKind::Internal,
    };
    CoreError::new(kind, e.to_string())
}

fn nat_err(e: NatError) -> CoreError {
    let kind = match &e {
        NatError::Subnet(_) | NatError::Gateway(..) => ErrorKind::BadRequest,
        NatError::Overlap { .. } | NatError::Overlapping(..) => ErrorKind::Conflict,
        _ => ErrorKind::Internal,
    };
    CoreError::new(kind, e.to_string())
}

impl RealNet {
    pub fn new(lease_dir: PathBuf) -> RealNet {
        let nl = Netlink::new().map_err(|e| format!("Host networking is unavailable: {e}"));
        RealNet {
            nl: Mutex::new(nl),
            lease_dir,
            dhcp: Mutex::new(HashMap::new()),
            on_ip: Arc::new(OnceLock::new()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Netlink) -> Result<T>) -> Result<T> {
        let guard = lock(&self.nl);
        match &*guard {
            Ok(nl) => f(nl),
            Err(e) => Err(CoreError::conflict(e.clone())),
        }
    }

    fn start_dhcp(&self, n: &NatSpec) -> Result<DhcpServer> {
        let gateway = n.subnet.first_host();
        let mut config = DhcpConfig::new(n.subnet, gateway);
        config.dns = net::dhcp::default_dns(gateway);
        let on_ip = self.on_ip.clone();
        let lease_file = self.lease_dir.join(format!("{}.leases.json", n.bridge));
        DhcpServer::start(ServerOptions {
            bridge: n.bridge.clone(),
            config,
            lease_file,
            on_bind: Some(Box::new(move |mac, ip| {
                if let Some(f) = on_ip.get() {
                    f(mac, ip);
                }
            })),
        })
        .map_err(|e| CoreError::internal(format!("DHCP server on {}: {e}", n.bridge)))
    }
}

impl NetRuntime for RealNet {
    fn ensure_switch(&self, spec: &BridgeSpec) -> Result<bool> {
        self.with(|nl| {
            let rep = net::switch::ensure(
                nl,
                &net::switch::SwitchSpec {
                    ifname: spec.bridge.clone(),
                    label: spec.label.clone(),
                    mtu: spec.mtu,
                    uplinks: spec.uplinks.clone(),
                },
            )
            .map_err(sw_err)?;
            Ok(rep.created)
        })
    }

    fn delete_switch(&self, bridge: &str) -> Result<()> {
        self.with(|nl| match net::switch::delete(nl, bridge) {
            Ok(()) | Err(SwitchError::NotFound(_)) => Ok(()),
            Err(e) => Err(sw_err(e)),
        })
    }

    fn switch_status(&self, bridge: &str) -> String {
        let r = self.with(|nl| net::switch::get(nl, bridge).map_err(sw_err));
        match r {
            Ok(info) if info.up => "up".into(),
            Ok(_) => "down".into(),
            Err(e) => e.message,
        }
    }

    fn set_mtu(&self, bridge: &str, mtu: u32) -> Result<()> {
        self.with(|nl| net::switch::set_mtu(nl, bridge, mtu).map_err(sw_err))
    }

    fn add_uplink(&self, bridge: &str, nic: &str) -> Result<()> {
        self.with(|nl| net::switch::add_uplink(nl, bridge, nic).map_err(sw_err))
    }

    fn remove_uplink(&self, bridge: &str, nic: &str) -> Result<()> {
        self.with(|nl| net::switch::remove_uplink(nl, bridge, nic).map_err(sw_err))
    }

    fn nic_exists(&self, nic: &str) -> bool {
        self.with(|nl| nl.link(nic).map_err(|e| CoreError::internal(e.to_string())))
            .ok()
            .flatten()
            .is_some()
    }

    fn vlan_filtering(&self, bridge: &str) -> bool {
        self.with(|nl| net::switch::get(nl, bridge).map_err(sw_err))
            .is_ok_and(|info| info.vlan_filtering)
    }

    fn check_subnet(&self, bridge: &str, subnet: Ipv4Net) -> Result<()> {
        let n = NatNetwork::new(bridge, subnet);
        n.check().map_err(nat_err)?;
        self.with(|nl| net::nat::check_overlap(nl, &n).map_err(nat_err))
    }

    fn apply_nat(&self, nets: &[NatSpec], restart: &[String]) -> Result<()> {
        let nat: Vec<NatNetwork> = nets
            .iter()
            .map(|n| NatNetwork::new(&n.bridge, n.subnet))
            .collect();
        // The DHCP servers run even when the NAT rules cannot be applied
        // (no nft): VMs on the switch still reach each other and the host.
        let nat_result = self.with(|nl| {
            if nat.is_empty() {
                net::nat::remove_rules().map_err(nat_err)
            } else {
                net::nat::setup(nl, &nat).map_err(nat_err)
            }
        });
        let mut servers = lock(&self.dhcp);
        // Stop the servers no longer wanted, changed, or on a new bridge.
        let keep = |bridge: &str, spec: &NatSpec| {
            !restart.iter().any(|r| r == bridge)
                && nets
                    .iter()
                    .any(|n| n == spec && n.dhcp && n.bridge == bridge)
        };
        let stale: Vec<String> = servers
            .iter()
            .filter(|(b, (spec, _))| !keep(b, spec))
            .map(|(b, _)| b.clone())
            .collect();
        for b in stale {
            if let Some((_, s)) = servers.remove(&b) {
                s.stop();
            }
        }
        let mut first_err = None;
        for n in nets.iter().filter(|n| n.dhcp) {
            if servers.contains_key(&n.bridge) {
                continue;
            }
            match self.start_dhcp(n) {
                Ok(s) => {
                    servers.insert(n.bridge.clone(), (n.clone(), s));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        nat_result?;
        first_err.map_or(Ok(()), Err)
    }

    fn create_tap(&self, spec: &TapSpec) -> Result<()> {
        self.with(|nl| {
            // A leftover of the same name (a crash) goes first.
            let _ = net::port::delete(nl, &spec.tap);
            net::port::create(
                nl,
                &PortSpec {
                    name: spec.tap.clone(),
                    label: spec.label.clone(),
                    bridge: spec.bridge.clone(),
                    vlan: spec.vlan,
                    owner: None,
                    up: spec.up,
                },
            )
            .map(drop)
            .map_err(port_err)
        })
    }

    fn move_tap(&self, tap: &str, bridge: &str, vlan: u16) -> Result<()> {
        self.with(|nl| net::port::attach(nl, tap, bridge, vlan).map_err(port_err))
    }

    fn set_tap_vlan(&self, tap: &str, vlan: u16) -> Result<()> {
        self.with(|nl| net::port::set_vlan(nl, tap, vlan).map_err(port_err))
    }

    fn delete_tap(&self, tap: &str) -> Result<()> {
        self.with(|nl| net::port::delete(nl, tap).map_err(port_err))
    }

    fn taps(&self) -> Vec<String> {
        self.with(|nl| net::port::list(nl).map_err(port_err))
            .map(|ports| ports.into_iter().map(|p| p.name).collect())
            .unwrap_or_default()
    }

    fn lease_of(&self, mac: Mac) -> Option<Ipv4Addr> {
        lock(&self.dhcp)
            .values()
            .find_map(|(_, s)| s.lease_of(mac))
            .map(|l| l.ip)
    }

    fn set_on_ip(&self, f: OnIp) {
        let _ = self.on_ip.set(f);
    }
}

/// keeld with `--no-host-network`: switches and port groups live in the
/// inventory only; nothing touches the kernel, and a VM with a NIC on a
/// port group cannot power on.
pub struct NoNet;

const NO_NET: &str =
    "Host networking is off (keeld runs with --no-host-network): nothing is applied to the host";

impl NetRuntime for NoNet {
    fn ensure_switch(&self, _spec: &BridgeSpec) -> Result<bool> {
        Ok(false)
    }
    fn delete_switch(&self, _bridge: &str) -> Result<()> {
        Ok(())
    }
    fn switch_status(&self, _bridge: &str) -> String {
        "not applied: keeld runs with --no-host-network".into()
    }
    fn set_mtu(&self, _bridge: &str, _mtu: u32) -> Result<()> {
        Ok(())
    }
    fn add_uplink(&self, _bridge: &str, _nic: &str) -> Result<()> {
        Err(CoreError::conflict(NO_NET))
    }
    fn remove_uplink(&self, _bridge: &str, _nic: &str) -> Result<()> {
        Ok(())
    }
    fn nic_exists(&self, _nic: &str) -> bool {
        false
    }
    fn vlan_filtering(&self, _bridge: &str) -> bool {
        true
    }
    fn check_subnet(&self, _bridge: &str, subnet: Ipv4Net) -> Result<()> {
        subnet
            .check_usable()
            .map_err(|e| CoreError::bad_request(e.to_string()))
    }
    fn apply_nat(&self, _nets: &[NatSpec], _restart: &[String]) -> Result<()> {
        Ok(())
    }
    fn create_tap(&self, _spec: &TapSpec) -> Result<()> {
        Err(CoreError::conflict(NO_NET))
    }
    fn move_tap(&self, _tap: &str, _bridge: &str, _vlan: u16) -> Result<()> {
        Err(CoreError::conflict(NO_NET))
    }
    fn set_tap_vlan(&self, _tap: &str, _vlan: u16) -> Result<()> {
        Ok(())
    }
    fn delete_tap(&self, _tap: &str) -> Result<()> {
        Ok(())
    }
    fn taps(&self) -> Vec<String> {
        Vec::new()
    }
    fn lease_of(&self, _mac: Mac) -> Option<Ipv4Addr> {
        None
    }
    fn set_on_ip(&self, _f: OnIp) {}
}

/// The unit tests' runtime: bridges and TAPs as sets, no kernel.
#[cfg(test)]
#[derive(Default)]
pub struct FakeNet {
    pub bridges: Mutex<HashMap<String, BridgeSpec>>,
    pub taps: Mutex<HashMap<String, TapSpec>>,
    pub nat: Mutex<Vec<NatSpec>>,
    pub host_nics: Mutex<Vec<String>>,
    /// Subnets that "overlap the host".
    pub host_subnets: Mutex<Vec<Ipv4Net>>,
    pub leases: Mutex<HashMap<Mac, Ipv4Addr>>,
    pub no_vlan_filtering: Mutex<bool>,
}

#[cfg(test)]
impl NetRuntime for FakeNet {
    fn ensure_switch(&self, spec: &BridgeSpec) -> Result<bool> {
        for u in &spec.uplinks {
            if !self.nic_exists(u) {
                return Err(CoreError::not_found(format!(
                    "Uplink {u} does not exist on this host"
                )));
            }
        }
        Ok(lock(&self.bridges)
            .insert(spec.bridge.clone(), spec.clone())
            .is_none())
    }
    fn delete_switch(&self, bridge: &str) -> Result<()> {
        lock(&self.bridges).remove(bridge);
        Ok(())
    }
    fn switch_status(&self, bridge: &str) -> String {
        if lock(&self.bridges).contains_key(bridge) {
            "up".into()
        } else {
            format!("No bridge named {bridge}")
        }
    }
    fn set_mtu(&self, bridge: &str, mtu: u32) -> Result<()> {
        if let Some(b) = lock(&self.bridges).get_mut(bridge) {
            b.mtu = mtu;
        }
        Ok(())
    }
    fn add_uplink(&self, bridge: &str, nic: &str) -> Result<()> {
        if !self.nic_exists(nic) {
            return Err(CoreError::not_found(format!(
                "Uplink {nic} does not exist on this host"
            )));
        }
        if let Some(b) = lock(&self.bridges).get_mut(bridge) {
            b.uplinks.push(nic.into());
        }
        Ok(())
    }
    fn remove_uplink(&self, bridge: &str, nic: &str) -> Result<()> {
        if let Some(b) = lock(&self.bridges).get_mut(bridge) {
            b.uplinks.retain(|u| u != nic);
        }
        Ok(())
    }
    fn nic_exists(&self, nic: &str) -> bool {
        lock(&self.host_nics).iter().any(|n| n == nic)
    }
    fn vlan_filtering(&self, _bridge: &str) -> bool {
        !*lock(&self.no_vlan_filtering)
    }
    fn check_subnet(&self, _bridge: &str, subnet: Ipv4Net) -> Result<()> {
        subnet
            .check_usable()
            .map_err(|e| CoreError::bad_request(e.to_string()))?;
        if let Some(o) = lock(&self.host_subnets)
            .iter()
            .find(|o| o.overlaps(&subnet))
        {
            return Err(CoreError::conflict(format!(
                "Subnet {subnet} overlaps the host's route {o}"
            )));
        }
        Ok(())
    }
    fn apply_nat(&self, nets: &[NatSpec], _restart: &[String]) -> Result<()> {
        *lock(&self.nat) = nets.to_vec();
        Ok(())
    }
    fn create_tap(&self, spec: &TapSpec) -> Result<()> {
        if !lock(&self.bridges).contains_key(&spec.bridge) {
            return Err(CoreError::not_found(format!(
                "No bridge named {}",
                spec.bridge
            )));
        }
        lock(&self.taps).insert(spec.tap.clone(), spec.clone());
        Ok(())
    }
    fn move_tap(&self, tap: &str, bridge: &str, vlan: u16) -> Result<()> {
        if let Some(t) = lock(&self.taps).get_mut(tap) {
            t.bridge = bridge.into();
            t.vlan = vlan;
        }
        Ok(())
    }
    fn set_tap_vlan(&self, tap: &str, vlan: u16) -> Result<()> {
        if let Some(t) = lock(&self.taps).get_mut(tap) {
            t.vlan = vlan;
        }
        Ok(())
    }
    fn delete_tap(&self, tap: &str) -> Result<()> {
        lock(&self.taps).remove(tap);
        Ok(())
    }
    fn taps(&self) -> Vec<String> {
        lock(&self.taps).keys().cloned().collect()
    }
    fn lease_of(&self, mac: Mac) -> Option<Ipv4Addr> {
        lock(&self.leases).get(&mac).copied()
    }
    fn set_on_ip(&self, _f: OnIp) {}
}
