//! VM NICs: their MACs (unique on the host), their TAPs (created at
//! power-on on the port group's bridge, removed when the VMM ends, found
//! again after a keeld restart), and the NIC operations of the API.

use std::collections::HashSet;

use hostd_api::{
    Accept, NetPolicy, NicConfig, NicCreate, NicEdit, NicInfo, NicStats, Privilege, VmConfig,
    DEFAULT_PORT_GROUP,
};
use net::Mac;
use rusqlite::params;

use super::runtime::TapSpec;
use super::{bridge_name, nic_port_group, port_group, vm_configs, PgRow};
use crate::error::{CoreError, Result};
use crate::events::NewEvent;
use crate::host::{lock, Caller, Host};
use crate::names;
use crate::vmconfig;
use crate::vms::VmRow;

/// The most NICs a VM has.
pub(crate) const MAX_NICS: usize = 8;

/// The TAP of a VM's NIC: `kt<vm id>n<index>` (at most 15 characters).
pub fn tap_name(vm_id: i64, index: usize) -> String {
    format!("kt{vm_id}n{index}")
}

/// The VM id of a TAP name from [`tap_name`].
fn tap_owner(tap: &str) -> Option<i64> {
    let rest = tap.strip_prefix("kt")?;
    let (id, idx) = rest.split_once('n')?;
    idx.parse::<u32>().ok()?;
    id.parse().ok()
}

fn accept(a: Accept) -> &'static str {
    match a {
        Accept::Accept => "accept",
        Accept::Reject => "reject",
    }
}

/// keel-vmm's `--net` options for a port group's policy.
fn policy_options(p: &NetPolicy) -> String {
    let mut s = format!(
        ",promiscuous={},mac-changes={},forged-transmits={}",
        accept(p.promiscuous),
        accept(p.mac_changes),
        accept(p.forged_transmits)
    );
    if let Some(sh) = &p.shaping {
        let rate = sh.average_kbps.saturating_mul(1000);
        let peak = sh.peak_kbps.unwrap_or(sh.average_kbps).saturating_mul(1000);
        let burst = sh.burst_kib.unwrap_or(64).saturating_mul(1024);
        for dir in ["rx", "tx"] {
            s.push_str(&format!(
                ",{dir}-rate={rate},{dir}-peak={peak},{dir}-burst={burst}"
            ));
        }
    }
    s
}

/// A NIC's MAC, or the stable one derived from the VM and index for an
/// old config without one.
fn nic_mac(vm_id: i64, index: usize, nic: &NicConfig) -> Option<Mac> {
    match &nic.mac {
        Some(m) => m.parse().ok(),
        None => Mac::derive(&format!("vm{vm_id}/nic{index}"), |_| false).ok(),
    }
}

impl Host {
    /// Every MAC of every VM's NICs but `except`'s.
    fn macs_in_use(&self, except: Option<i64>) -> Result<HashSet<Mac>> {
        let vms = self.store().with(vm_configs)?;
        Ok(vms
            .iter()
            .filter(|(id, _, _)| Some(*id) != except)
            .flat_map(|(id, _, cfg)| {
                cfg.nics
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| nic_mac(*id, i, n))
            })
            .collect())
    }

    /// A MAC for a NIC: the requested one (unicast, not used on the host)
    /// or a new generated one. `also` holds the MACs taken by the same
    /// request so far.
    pub(crate) fn pick_mac(
        &self,
        requested: Option<&str>,
        except: Option<i64>,
        also: &HashSet<Mac>,
    ) -> Result<String> {
        let used = self.macs_in_use(except)?;
        let taken = |m: &Mac| used.contains(m) || also.contains(m);
        let mac = match requested {
            Some(s) => Mac::parse_for_nic(s, taken),
            None => Mac::generate(taken),
        }
        .map_err(|e| match e {
            net::mac::MacError::InUse(_) => CoreError::conflict(e.to_string()),
            net::mac::MacError::Exhausted => CoreError::internal(e.to_string()),
            _ => CoreError::bad_request(e.to_string()),
        })?;
        Ok(mac.to_string())
    }

    /// The NICs of a new VM's request: port group checked (default `VM
    /// Network`), MAC checked or generated.
    pub(crate) fn new_nics(
        &self,
        spec: &[NicConfig],
        except: Option<i64>,
    ) -> Result<Vec<NicConfig>> {
        if spec.len() > MAX_NICS {
            return Err(CoreError::bad_request(format!(
                "A VM has at most {MAX_NICS} network adapters"
            )));
        }
        let mut taken = HashSet::new();
        let mut out = Vec::new();
        for n in spec {
            if let Some(tap) = &n.tap {
                vmconfig::check_tap(tap)?;
                // keeld's own TAPs and bridges are not for a VM to name.
                if tap.starts_with(net::port::TAP_PREFIX) || tap.starts_with("keelbr") {
                    return Err(CoreError::bad_request(format!(
                        "TAP name {tap} is reserved for keeld's own interfaces ({}…, keelbr…); put the network adapter on a port group instead",
                        net::port::TAP_PREFIX
                    )));
                }
            }
            let port_group = match (&n.port_group, &n.tap) {
                (Some(pg), _) => Some(pg.clone()),
                (None, Some(_)) => None,
                (None, None) => Some(DEFAULT_PORT_GROUP.to_string()),
            };
            if let Some(pg) = &port_group {
                self.pg_row(pg)?;
            }
            let mac = self.pick_mac(n.mac.as_deref(), except, &taken)?;
            if let Ok(m) = mac.parse() {
                taken.insert(m);
            }
            out.push(NicConfig {
                port_group,
                tap: n.tap.clone(),
                mac: Some(mac),
                connected: n.connected,
            });
        }
        Ok(out)
    }

    /// A VM being registered: NICs whose MAC another VM uses get a new
    /// one (a folder copied by hand). Returns what changed.
    pub(crate) fn dedupe_macs(&self, cfg: &mut VmConfig) -> Result<Vec<String>> {
        let mut used = self.macs_in_use(None)?;
        let mut changed = Vec::new();
        for (i, n) in cfg.nics.iter_mut().enumerate() {
            let mine = n.mac.as_deref().and_then(|m| m.parse::<Mac>().ok());
            match mine {
                Some(m) if !used.contains(&m) => {
                    used.insert(m);
                }
                _ => {
                    let new = self.pick_mac(None, None, &used)?;
                    if let Ok(m) = new.parse() {
                        used.insert(m);
                    }
                    changed.push(format!("network adapter {i} got MAC {new}"));
                    n.mac = Some(new);
                }
            }
        }
        Ok(changed)
    }

    /// The NICs as the API shows them.
    pub(crate) fn nic_infos(&self, row: &VmRow, cfg: &VmConfig) -> Vec<NicInfo> {
        let running = self.backend().running(row.id).is_some();
        let links = lock(&self.inner.nic_links);
        cfg.nics
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mac = nic_mac(row.id, i, n);
                let pg = nic_port_group(n);
                let tap = if !running {
                    None
                } else if pg.is_some() {
                    Some(tap_name(row.id, i))
                } else {
                    n.tap.clone()
                };
                NicInfo {
                    index: i as u32,
                    port_group: pg.map(str::to_string),
                    mac: mac.map(|m| m.to_string()).unwrap_or_default(),
                    connected: if running {
                        links.get(&(row.id, i)).copied().unwrap_or(n.connected)
                    } else {
                        n.connected
                    },
                    tap,
                    ip: mac
                        .and_then(|m| self.inner.net.lease_of(m))
                        .map(|ip| ip.to_string()),
                    stats: None,
                }
            })
            .collect()
    }

    /// Creates the TAPs of a VM about to power on; returns keel-vmm's
    /// `--net` specs. On failure the TAPs made so far are removed.
    pub(crate) fn prepare_nics(&self, row: &VmRow, cfg: &VmConfig) -> Result<Vec<String>> {
        let mut specs = Vec::new();
        let mut made = Vec::new();
        let result: Result<()> = (|| {
            for (i, n) in cfg.nics.iter().enumerate() {
                let mac = nic_mac(row.id, i, n).ok_or_else(|| {
                    CoreError::bad_request(format!("Network adapter {i} has no valid MAC"))
                })?;
                let link = if n.connected { "up" } else { "down" };
                let Some(pg_name) = nic_port_group(n) else {
                    // A TAP of the user's own, outside keeld's switches.
                    let tap = n.tap.clone().unwrap_or_default();
                    specs.push(format!("tap={tap},mac={mac},link={link}"));
                    continue;
                };
                let pg: PgRow =
                    self.store()
                        .with(|c| port_group(c, pg_name))?
                        .ok_or_else(|| {
                            CoreError::conflict(format!(
                            "Network adapter {i} is on port group {pg_name}, which does not exist"
                        ))
                        })?;
                let tap = tap_name(row.id, i);
                self.inner.net.create_tap(&TapSpec {
                    tap: tap.clone(),
                    label: format!("vm {} nic {i}", row.name),
                    bridge: bridge_name(pg.switch_id),
                    vlan: pg.vlan,
                    up: true,
                })?;
                made.push(tap.clone());
                specs.push(format!(
                    "tap={tap},mac={mac},link={link}{}",
                    policy_options(&pg.policy)
                ));
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                let mut links = lock(&self.inner.nic_links);
                links.retain(|(id, _), _| *id != row.id);
                Ok(specs)
            }
            Err(e) => {
                for tap in made {
                    let _ = self.inner.net.delete_tap(&tap);
                }
                Err(e.context(format!("Network of VM {}", row.name)))
            }
        }
    }

    /// Removes the TAPs of a VM whose VMM ended.
    /// (The supervisor keeps the VM `running` until this returns, so no
    /// new power-on of the VM can have made TAPs of its own yet.)
    pub(crate) fn release_nics(&self, vm_id: i64) {
        lock(&self.inner.nic_links).retain(|(id, _), _| *id != vm_id);
        for tap in self.inner.net.taps() {
            if tap_owner(&tap) == Some(vm_id) {
                if let Err(e) = self.inner.net.delete_tap(&tap) {
                    eprintln!("keeld: removing TAP {tap}: {e}");
                }
            }
        }
    }

    /// At keeld's start, after re-attaching: removes the TAPs of VMs that
    /// no longer run (a crash of keeld and a VMM, a host reboot).
    pub(crate) fn release_stale_nics(&self) {
        for tap in self.inner.net.taps() {
            let running = tap_owner(&tap).is_some_and(|id| self.backend().running(id).is_some());
            if !running {
                if let Err(e) = self.inner.net.delete_tap(&tap) {
                    eprintln!("keeld: removing stale TAP {tap}: {e}");
                }
            }
        }
    }

    /// The TAPs of running VMs' NICs on a port group.
    pub(crate) fn running_taps_on(&self, pg: &str) -> Result<Vec<String>> {
        let vms = self.store().with(vm_configs)?;
        Ok(vms
            .iter()
            .filter(|(id, _, _)| self.backend().running(*id).is_some())
            .flat_map(|(id, _, cfg)| {
                cfg.nics
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| nic_port_group(n) == Some(pg))
                    .map(|(i, _)| tap_name(*id, i))
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    pub fn vm_nics(&self, caller: &Caller, name: &str) -> Result<Vec<NicInfo>> {
        self.require(caller, Some(name), Privilege::SystemView)?;
        let row = self.vm_row(name)?;
        let (cfg, _) = self.vm_config(&row);
        let mut nics = self.nic_infos(&row, &cfg);
        if self.backend().running(row.id).is_some() {
            if let Ok(vmm_api::Reply::Counters(c)) =
                self.backend().request(row.id, vmm_api::Request::Counters)
            {
                for (n, k) in nics.iter_mut().zip(&c.nics) {
                    n.stats = Some(NicStats {
                        rx_packets: k.rx_packets,
                        rx_bytes: k.rx_bytes,
                        tx_packets: k.tx_packets,
                        tx_bytes: k.tx_bytes,
                        rx_dropped: k.rx_dropped,
                        tx_errors: k.tx_errors,
                        tx_forged: k.tx_forged,
                        rx_filtered: k.rx_filtered,
                    });
                }
            }
        }
        Ok(nics)
    }

    /// Writes a changed config and its inventory copy, with an event.
    fn save_nics(&self, caller: &Caller, row: &VmRow, cfg: &VmConfig, msg: &str) -> Result<()> {
        vmconfig::validate(cfg)?;
        let folder = self.vm_folder(row)?;
        vmconfig::write(&vmconfig::path_in(&folder, &row.folder), cfg)?;
        let json = serde_json::to_string(cfg).map_err(|e| CoreError::internal(e.to_string()))?;
        self.store().with(|c| {
            c.execute(
                "UPDATE vms SET config_json = ?2 WHERE id = ?1",
                params![row.id, json],
            )
        })?;
        self.event(
            NewEvent::info("vm.reconfigured", msg)
                .user(Some(&caller.user))
                .target(&format!("vm:{}", row.name)),
        );
        Ok(())
    }

    fn read_config(&self, row: &VmRow) -> Result<VmConfig> {
        let folder = self.vm_folder(row)?;
        vmconfig::read(&vmconfig::path_in(&folder, &row.folder))
    }

    /// Adds a NIC to a powered-off VM.
    pub fn vm_nic_add(&self, caller: &Caller, name: &str, req: NicCreate) -> Result<NicInfo> {
        names::validate("VM", name)?;
        self.require(caller, Some(name), Privilege::VmConfig)?;
        let row = self.vm_row(name)?;
        let _guard = self.claim(row.id, name, "edit")?;
        let _net = lock(&self.inner.net_lock);
        if self.backend().running(row.id).is_some() {
            return Err(CoreError::conflict(format!(
                "VM {name} is powered on; power it off to add a network adapter"
            )));
        }
        let mut cfg = self.read_config(&row)?;
        if cfg.nics.len() >= MAX_NICS {
            return Err(CoreError::conflict(format!(
                "VM {name} already has {MAX_NICS} network adapters"
            )));
        }
        // `except: None`: this VM's own MACs count as taken too.
        let nic = self
            .new_nics(
                &[NicConfig {
                    port_group: req.port_group.clone(),
                    tap: None,
                    mac: req.mac.clone(),
                    connected: req.connected.unwrap_or(true),
                }],
                None,
            )?
            .remove(0);
        let index = cfg.nics.len();
        let msg = format!(
            "VM {name}: network adapter {index} added on {} ({})",
            nic.port_group.as_deref().unwrap_or("-"),
            nic.mac.as_deref().unwrap_or("-")
        );
        cfg.nics.push(nic);
        self.save_nics(caller, &row, &cfg, &msg)?;
        Ok(self.nic_infos(&row, &cfg).remove(index))
    }

    /// Changes a NIC: connected and port group also while the VM runs.
    pub fn vm_nic_edit(
        &self,
        caller: &Caller,
        name: &str,
        index: u32,
        edit: NicEdit,
    ) -> Result<NicInfo> {
        names::validate("VM", name)?;
        let only_link = edit.port_group.is_none() && edit.mac.is_none();
        let needed = if only_link {
            Privilege::VmPower
        } else {
            Privilege::VmConfig
        };
        self.require(caller, Some(name), needed)?;
        let row = self.vm_row(name)?;
        let _guard = self.claim(row.id, name, "edit")?;
        let _net = lock(&self.inner.net_lock);
        let mut cfg = self.read_config(&row)?;
        let i = index as usize;
        let Some(old) = cfg.nics.get(i).cloned() else {
            return Err(CoreError::not_found(format!(
                "VM {name} has no network adapter {index}"
            )));
        };
        let running = self.backend().running(row.id).is_some();
        let mut nic = old.clone();
        let mut changes = Vec::new();
        if let Some(mac) = &edit.mac {
            if running {
                return Err(CoreError::conflict(format!(
                    "VM {name} is powered on; power it off to change a MAC address"
                )));
            }
            let own: HashSet<Mac> = cfg
                .nics
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .filter_map(|(j, n)| nic_mac(row.id, j, n))
                .collect();
            nic.mac = Some(self.pick_mac(Some(mac), Some(row.id), &own)?);
            changes.push(format!("MAC {}", nic.mac.as_deref().unwrap_or("")));
        }
        let mut new_pg = None;
        if let Some(pg) = &edit.port_group {
            let pg_row = self.pg_row(pg)?;
            if nic_port_group(&old) != Some(pg.as_str()) {
                if running && nic_port_group(&old).is_none() {
                    return Err(CoreError::conflict(format!(
                        "Network adapter {index} of VM {name} is on its own TAP; power the VM off to move it to a port group"
                    )));
                }
                nic.port_group = Some(pg.clone());
                nic.tap = None;
                changes.push(format!("port group {pg}"));
                new_pg = Some(pg_row);
            }
        }
        if let Some(up) = edit.connected {
            nic.connected = up;
            changes.push(if up { "connected" } else { "disconnected" }.to_string());
        }
        if running {
            if let Some(pg) = &new_pg {
                self.inner.net.move_tap(
                    &tap_name(row.id, i),
                    &bridge_name(pg.switch_id),
                    pg.vlan,
                )?;
            }
            if let Some(up) = edit.connected {
                self.backend()
                    .request(
                        row.id,
                        vmm_api::Request::NicLink {
                            nic: format!("net{i}"),
                            up,
                        },
                    )
                    .map_err(|e| CoreError::internal(format!("VM {name}: {e}")))?;
                lock(&self.inner.nic_links).insert((row.id, i), up);
            }
        }
        if !changes.is_empty() {
            cfg.nics[i] = nic;
            let msg = format!("VM {name}: network adapter {index} {}", changes.join(", "));
            self.save_nics(caller, &row, &cfg, &msg)?;
        }
        Ok(self.nic_infos(&row, &cfg).remove(i))
    }

    /// Removes a NIC of a powered-off VM (the later ones move up).
    pub fn vm_nic_remove(&self, caller: &Caller, name: &str, index: u32) -> Result<()> {
        names::validate("VM", name)?;
        self.require(caller, Some(name), Privilege::VmConfig)?;
        let row = self.vm_row(name)?;
        let _guard = self.claim(row.id, name, "edit")?;
        let _net = lock(&self.inner.net_lock);
        if self.backend().running(row.id).is_some() {
            return Err(CoreError::conflict(format!(
                "VM {name} is powered on; power it off to remove a network adapter"
            )));
        }
        let mut cfg = self.read_config(&row)?;
        if index as usize >= cfg.nics.len() {
            return Err(CoreError::not_found(format!(
                "VM {name} has no network adapter {index}"
            )));
        }
        let nic = cfg.nics.remove(index as usize);
        let msg = format!(
            "VM {name}: network adapter {index} ({}) removed",
            nic.mac.as_deref().unwrap_or("-")
        );
        self.save_nics(caller, &row, &cfg, &msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_and_parse_back() {
        let t = tap_name(123_456_789, 7);
        assert!(t.len() <= 15, "{t}");
        assert_eq!(tap_owner(&t), Some(123_456_789));
        assert_eq!(tap_owner("kt12n0"), Some(12));
        assert_eq!(tap_owner("kt12"), None);
        assert_eq!(tap_owner("ktxn0"), None);
        assert_eq!(tap_owner("eth0"), None);
    }

    #[test]
    fn policy_becomes_keel_vmm_options() {
        let mut p = NetPolicy::default();
        assert_eq!(
            policy_options(&p),
            ",promiscuous=reject,mac-changes=accept,forged-transmits=accept"
        );
        p.forged_transmits = Accept::Reject;
        p.shaping = Some(hostd_api::Shaping {
            average_kbps: 8000,
            peak_kbps: None,
            burst_kib: Some(32),
        });
        let s = policy_options(&p);
        assert!(s.contains("forged-transmits=reject"), "{s}");
        assert!(
            s.contains(",rx-rate=8000000,rx-peak=8000000,rx-burst=32768"),
            "{s}"
        );
        assert!(s.contains(",tx-rate=8000000,"), "{s}");
    }
}
