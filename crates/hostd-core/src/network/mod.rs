//! Virtual networking: standard switches (Linux bridges keeld owns, one per
//! switch, `keelbr<id>`), port groups (VLAN + policy) and the default
//! network `vSwitch0` / `VM Network` (host-only, NAT, DHCP). The inventory
//! holds what should be; [`runtime::NetRuntime`] makes the kernel match it,
//! at keeld's start (after a host reboot the bridges are recreated) and on
//! every change. VM NICs are in [`nics`].

mod nics;
pub(crate) mod runtime;

use std::net::Ipv4Addr;

use hostd_api::{
    NatInfo, NetPolicy, PortGroup, PortGroupCreate, PortGroupEdit, Privilege, Severity, Switch,
    SwitchCreate, SwitchEdit, VmConfig, DEFAULT_PORT_GROUP, DEFAULT_SWITCH,
};
use net::Ipv4Net;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::{CoreError, Result};
use crate::events::{self, NewEvent};
use crate::host::{lock, Caller, Host};
use crate::names;
use runtime::{BridgeSpec, NatSpec};

/// Set once the default network was made (so deleting it sticks).
const INITIALIZED_KEY: &str = "network_initialized";
/// Subnets tried, in order, for the default network when keeld's option
/// does not give one: the first that does not overlap the host's own.
const DEFAULT_SUBNETS: &[&str] = &[
    "10.77.0.0/24",
    "10.177.0.0/24",
    "172.31.77.0/24",
    "192.168.77.0/24",
];
pub const DEFAULT_MTU: u32 = 1500;

#[derive(Clone, Debug)]
pub(crate) struct SwitchRow {
    pub id: i64,
    pub name: String,
    pub mtu: u32,
    pub uplinks: Vec<String>,
    pub nat_subnet: Option<Ipv4Net>,
    pub dhcp: bool,
}

impl SwitchRow {
    pub fn bridge(&self) -> String {
        bridge_name(self.id)
    }

    fn spec(&self) -> BridgeSpec {
        BridgeSpec {
            bridge: self.bridge(),
            label: self.name.clone(),
            mtu: self.mtu,
            uplinks: self.uplinks.clone(),
        }
    }

    fn nat(&self) -> Option<NatSpec> {
        self.nat_subnet.map(|subnet| NatSpec {
            bridge: self.bridge(),
            subnet,
            dhcp: self.dhcp,
        })
    }
}

pub(crate) fn bridge_name(id: i64) -> String {
    format!("keelbr{id}")
}

#[derive(Clone, Debug)]
pub(crate) struct PgRow {
    pub name: String,
    pub switch_id: i64,
    pub vlan: u16,
    pub policy: NetPolicy,
}

fn switch_from(r: &Row<'_>) -> rusqlite::Result<SwitchRow> {
    let uplinks: String = r.get(3)?;
    let subnet: Option<String> = r.get(4)?;
    Ok(SwitchRow {
        id: r.get(0)?,
        name: r.get(1)?,
        mtu: r.get(2)?,
        uplinks: serde_json::from_str(&uplinks).unwrap_or_default(),
        nat_subnet: subnet.and_then(|s| s.parse().ok()),
        dhcp: r.get::<_, i64>(5)? != 0,
    })
}

const SWITCH_COLUMNS: &str = "id, name, mtu, uplinks, nat_subnet, dhcp";

pub(crate) fn switches(c: &Connection) -> rusqlite::Result<Vec<SwitchRow>> {
    let mut stmt = c.prepare(&format!(
        "SELECT {SWITCH_COLUMNS} FROM switches ORDER BY name"
    ))?;
    let rows = stmt.query_map([], switch_from)?;
    rows.collect()
}

fn switch_by_name(c: &Connection, name: &str) -> rusqlite::Result<Option<SwitchRow>> {
    c.query_row(
        &format!("SELECT {SWITCH_COLUMNS} FROM switches WHERE name = ?1"),
        [name],
        switch_from,
    )
    .optional()
}

fn pg_from(r: &Row<'_>) -> rusqlite::Result<PgRow> {
    let policy: String = r.get(3)?;
    Ok(PgRow {
        name: r.get(0)?,
        switch_id: r.get(1)?,
        vlan: r.get(2)?,
        policy: serde_json::from_str(&policy).unwrap_or_default(),
    })
}

pub(crate) fn port_groups(c: &Connection) -> rusqlite::Result<Vec<PgRow>> {
    let mut stmt =
        c.prepare("SELECT name, switch_id, vlan, policy_json FROM port_groups ORDER BY name")?;
    let rows = stmt.query_map([], pg_from)?;
    rows.collect()
}

pub(crate) fn port_group(c: &Connection, name: &str) -> rusqlite::Result<Option<PgRow>> {
    c.query_row(
        "SELECT name, switch_id, vlan, policy_json FROM port_groups WHERE name = ?1",
        [name],
        pg_from,
    )
    .optional()
}

fn insert_switch(c: &Connection, s: &SwitchRow) -> rusqlite::Result<i64> {
    let uplinks = serde_json::to_string(&s.uplinks).unwrap_or_else(|_| "[]".into());
    c.execute(
        "INSERT INTO switches (name, mtu, uplinks, nat_subnet, dhcp) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            s.name,
            s.mtu,
            uplinks,
            s.nat_subnet.map(|n| n.to_string()),
            s.dhcp as i64
        ],
    )?;
    Ok(c.last_insert_rowid())
}

fn insert_pg(c: &Connection, pg: &PgRow) -> rusqlite::Result<()> {
    let policy = serde_json::to_string(&pg.policy).unwrap_or_else(|_| "{}".into());
    c.execute(
        "INSERT INTO port_groups (name, switch_id, vlan, policy_json) VALUES (?1, ?2, ?3, ?4)",
        params![pg.name, pg.switch_id, pg.vlan, policy],
    )
    .map(drop)
}

/// The VLAN ID of a request: 0–4094.
fn check_vlan(vlan: u32) -> Result<u16> {
    net::port::check_vlan(vlan).map_err(|e| CoreError::bad_request(e.to_string()))
}

fn check_mtu(mtu: u32) -> Result<()> {
    net::switch::check_mtu(mtu).map_err(|e| CoreError::bad_request(e.to_string()))
}

fn check_policy(p: &NetPolicy) -> Result<()> {
    if let Some(s) = &p.shaping {
        let bad = |m: String| Err(CoreError::bad_request(m));
        if s.average_kbps == 0 || s.average_kbps > 100_000_000 {
            return bad(format!(
                "Shaping average {} kbit/s is out of range: expected 1 to 100000000",
                s.average_kbps
            ));
        }
        if let Some(peak) = s.peak_kbps {
            if peak < s.average_kbps || peak > 100_000_000 {
                return bad(format!(
                    "Shaping peak {peak} kbit/s must be at least the average ({}) and at most 100000000",
                    s.average_kbps
                ));
            }
        }
        if let Some(b) = s.burst_kib {
            if b == 0 || b > 1 << 20 {
                return bad(format!(
                    "Shaping burst {b} KiB is out of range: expected 1 to 1048576"
                ));
            }
        }
    }
    Ok(())
}

fn parse_subnet(s: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = s.parse().map_err(|e: net::subnet::SubnetError| {
        CoreError::bad_request(format!("Subnet {s:?}: {e}"))
    })?;
    net.check_usable()
        .map_err(|e| CoreError::bad_request(e.to_string()))?;
    Ok(net)
}

/// The VM configs of the inventory (its last copies), with the VM names.
pub(crate) fn vm_configs(c: &Connection) -> rusqlite::Result<Vec<(i64, String, VmConfig)>> {
    Ok(crate::vms::rows(c)?
        .into_iter()
        .filter_map(|r| {
            let cfg = serde_json::from_str::<VmConfig>(&r.config_json).ok()?;
            Some((r.id, r.name, cfg))
        })
        .collect())
}

/// The port group a NIC is on (`VM Network` when it names neither a port
/// group nor a TAP of its own).
pub(crate) fn nic_port_group(nic: &hostd_api::NicConfig) -> Option<&str> {
    match (&nic.port_group, &nic.tap) {
        (Some(pg), _) => Some(pg),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_PORT_GROUP),
    }
}

impl Host {
    fn switch_info(&self, s: &SwitchRow, pgs: &[PgRow]) -> Switch {
        Switch {
            name: s.name.clone(),
            bridge: s.bridge(),
            mtu: s.mtu,
            uplinks: s.uplinks.clone(),
            nat: s.nat_subnet.map(|n| NatInfo {
                subnet: n.to_string(),
                gateway: n.first_host().to_string(),
                dhcp: s.dhcp,
            }),
            port_groups: pgs
                .iter()
                .filter(|p| p.switch_id == s.id)
                .map(|p| p.name.clone())
                .collect(),
            status: self.inner.net.switch_status(&s.bridge()),
        }
    }

    fn switch_row(&self, name: &str) -> Result<SwitchRow> {
        names::validate("Switch", name)?;
        self.store()
            .with(|c| switch_by_name(c, name))?
            .ok_or_else(|| CoreError::not_found(format!("No switch {name}")))
    }

    pub fn switch_list(&self, caller: &Caller) -> Result<Vec<Switch>> {
        self.require(caller, None, Privilege::SystemView)?;
        let (sws, pgs) = self.store().with(|c| Ok((switches(c)?, port_groups(c)?)))?;
        Ok(sws.iter().map(|s| self.switch_info(s, &pgs)).collect())
    }

    pub fn switch_get(&self, caller: &Caller, name: &str) -> Result<Switch> {
        self.require(caller, None, Privilege::SystemView)?;
        let s = self.switch_row(name)?;
        let pgs = self.store().with(port_groups)?;
        Ok(self.switch_info(&s, &pgs))
    }

    /// Uplinks of a request: distinct, existing on the host, not an uplink
    /// of another switch (`except` is the switch being edited).
    fn check_uplinks(&self, uplinks: &[String], except: Option<i64>) -> Result<()> {
        let sws = self.store().with(switches)?;
        for (i, u) in uplinks.iter().enumerate() {
            net::switch::check_ifname(u).map_err(|e| CoreError::bad_request(e.to_string()))?;
            if uplinks[..i].contains(u) {
                return Err(CoreError::bad_request(format!(
                    "Uplink {u} is listed twice"
                )));
            }
            if let Some(other) = sws
                .iter()
                .find(|s| Some(s.id) != except && s.uplinks.contains(u))
            {
                return Err(CoreError::conflict(format!(
                    "Uplink {u} is already used by switch {}",
                    other.name
                )));
            }
            if !self.inner.net.nic_exists(u) {
                return Err(CoreError::bad_request(format!(
                    "Uplink {u} does not exist on this host"
                )));
            }
        }
        Ok(())
    }

    /// Re-applies the NAT rules and DHCP servers of every switch.
    fn apply_nat(&self, restart: &[String]) -> Result<()> {
        let nets: Vec<NatSpec> = self
            .store()
            .with(switches)?
            .iter()
            .filter_map(SwitchRow::nat)
            .collect();
        self.inner.net.apply_nat(&nets, restart)
    }

    pub fn switch_create(&self, caller: &Caller, req: SwitchCreate) -> Result<Switch> {
        self.require(caller, None, Privilege::HostConfig)?;
        names::validate("Switch", &req.name)?;
        let _net = lock(&self.inner.net_lock);
        if self
            .store()
            .with(|c| switch_by_name(c, &req.name))?
            .is_some()
        {
            return Err(CoreError::conflict(format!(
                "Switch {} already exists",
                req.name
            )));
        }
        let mtu = req.mtu.unwrap_or(DEFAULT_MTU);
        check_mtu(mtu)?;
        self.check_uplinks(&req.uplinks, None)?;
        let nat = match &req.nat {
            Some(n) => Some((parse_subnet(&n.subnet)?, n.dhcp)),
            None => None,
        };
        let mut row = SwitchRow {
            id: 0,
            name: req.name.clone(),
            mtu,
            uplinks: req.uplinks.clone(),
            nat_subnet: nat.map(|n| n.0),
            dhcp: nat.is_some_and(|n| n.1),
        };
        row.id = self.store().with(|c| insert_switch(c, &row))?;
        let undo = |host: &Host, e: CoreError| {
            let _ = host.inner.net.delete_switch(&row.bridge());
            let _ = host
                .store()
                .with(|c| c.execute("DELETE FROM switches WHERE id = ?1", [row.id]));
            let _ = host.apply_nat(&[]);
            Err(e)
        };
        if let Some(subnet) = row.nat_subnet {
            // Checked after the insert so that a concurrent create cannot
            // take an overlapping subnet (both hold net_lock anyway).
            let others = self.store().with(switches)?;
            if let Some(o) = others
                .iter()
                .find(|s| s.id != row.id && s.nat_subnet.is_some_and(|n| n.overlaps(&subnet)))
            {
                return undo(
                    self,
                    CoreError::conflict(format!(
                        "Subnet {subnet} overlaps {} of switch {}",
                        o.nat_subnet.map(|n| n.to_string()).unwrap_or_default(),
                        o.name
                    )),
                );
            }
            if let Err(e) = self.inner.net.check_subnet(&row.bridge(), subnet) {
                return undo(self, e);
            }
        }
        if let Err(e) = self.inner.net.ensure_switch(&row.spec()) {
            return undo(self, e);
        }
        if row.nat_subnet.is_some() {
            if let Err(e) = self.apply_nat(&[]) {
                return undo(self, e);
            }
        }
        let mut what = format!("bridge {}, MTU {mtu}", row.bridge());
        if let Some(n) = row.nat_subnet {
            what.push_str(&format!(", NAT {n}"));
        }
        if !row.uplinks.is_empty() {
            what.push_str(&format!(", uplinks {}", row.uplinks.join(" ")));
        }
        self.net_event(
            caller,
            "network.switch-created",
            &format!("Switch {} created ({what})", row.name),
        );
        let pgs = self.store().with(port_groups)?;
        Ok(self.switch_info(&row, &pgs))
    }

    pub fn switch_edit(&self, caller: &Caller, name: &str, edit: SwitchEdit) -> Result<Switch> {
        self.require(caller, None, Privilege::HostConfig)?;
        let _net = lock(&self.inner.net_lock);
        let mut row = self.switch_row(name)?;
        let mut changes = Vec::new();
        if let Some(mtu) = edit.mtu {
            check_mtu(mtu)?;
        }
        if let Some(ups) = &edit.uplinks {
            let new: Vec<String> = ups
                .iter()
                .filter(|u| !row.uplinks.contains(u))
                .cloned()
                .collect();
            self.check_uplinks(&new, Some(row.id))?;
            for (i, u) in new.iter().enumerate() {
                if let Err(e) = self.inner.net.add_uplink(&row.bridge(), u) {
                    // All or nothing: the ones added so far go again.
                    for done in &new[..i] {
                        let _ = self.inner.net.remove_uplink(&row.bridge(), done);
                    }
                    return Err(e);
                }
            }
            for u in row.uplinks.iter().filter(|u| !ups.contains(u)) {
                if let Err(e) = self.inner.net.remove_uplink(&row.bridge(), u) {
                    eprintln!("keeld: removing uplink {u} of {}: {e}", row.name);
                }
            }
            changes.push(format!("uplinks [{}]", ups.join(" ")));
            row.uplinks = ups.clone();
        }
        if let Some(mtu) = edit.mtu {
            self.inner.net.set_mtu(&row.bridge(), mtu)?;
            changes.push(format!("MTU {} → {mtu}", row.mtu));
            row.mtu = mtu;
        }
        if changes.is_empty() {
            return self.switch_get(caller, name);
        }
        let uplinks = serde_json::to_string(&row.uplinks).unwrap_or_else(|_| "[]".into());
        self.store().with(|c| {
            c.execute(
                "UPDATE switches SET mtu = ?2, uplinks = ?3 WHERE id = ?1",
                params![row.id, row.mtu, uplinks],
            )
        })?;
        self.net_event(
            caller,
            "network.switch-reconfigured",
            &format!("Switch {name} reconfigured: {}", changes.join(", ")),
        );
        let pgs = self.store().with(port_groups)?;
        Ok(self.switch_info(&row, &pgs))
    }

    /// Deletes a switch without port groups.
    pub fn switch_delete(&self, caller: &Caller, name: &str) -> Result<()> {
        self.require(caller, None, Privilege::HostConfig)?;
        let _net = lock(&self.inner.net_lock);
        let row = self.switch_row(name)?;
        let pgs: Vec<String> = self
            .store()
            .with(port_groups)?
            .into_iter()
            .filter(|p| p.switch_id == row.id)
            .map(|p| p.name)
            .collect();
        if !pgs.is_empty() {
            return Err(CoreError::conflict(format!(
                "Switch {name} has port groups ({}); delete them first",
                pgs.join(", ")
            )));
        }
        self.store()
            .with(|c| c.execute("DELETE FROM switches WHERE id = ?1", [row.id]))?;
        if row.nat_subnet.is_some() {
            if let Err(e) = self.apply_nat(&[]) {
                eprintln!("keeld: NAT rules after deleting switch {name}: {e}");
            }
        }
        self.inner.net.delete_switch(&row.bridge())?;
        self.net_event(
            caller,
            "network.switch-deleted",
            &format!("Switch {name} deleted"),
        );
        Ok(())
    }

    fn pg_info(&self, pg: &PgRow, sws: &[SwitchRow], vms: &[(i64, String, VmConfig)]) -> PortGroup {
        PortGroup {
            name: pg.name.clone(),
            switch: sws
                .iter()
                .find(|s| s.id == pg.switch_id)
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            vlan: pg.vlan,
            policy: pg.policy.clone(),
            vms: vms
                .iter()
                .filter(|(_, _, cfg)| {
                    cfg.nics
                        .iter()
                        .any(|n| nic_port_group(n) == Some(pg.name.as_str()))
                })
                .map(|(_, name, _)| name.clone())
                .collect(),
        }
    }

    fn pg_row(&self, name: &str) -> Result<PgRow> {
        names::validate("Port group", name)?;
        self.store()
            .with(|c| port_group(c, name))?
            .ok_or_else(|| CoreError::not_found(format!("No port group {name}")))
    }

    pub fn portgroup_list(&self, caller: &Caller) -> Result<Vec<PortGroup>> {
        self.require(caller, None, Privilege::SystemView)?;
        let (pgs, sws, vms) = self
            .store()
            .with(|c| Ok((port_groups(c)?, switches(c)?, vm_configs(c)?)))?;
        Ok(pgs.iter().map(|p| self.pg_info(p, &sws, &vms)).collect())
    }

    pub fn portgroup_get(&self, caller: &Caller, name: &str) -> Result<PortGroup> {
        self.require(caller, None, Privilege::SystemView)?;
        let pg = self.pg_row(name)?;
        let (sws, vms) = self.store().with(|c| Ok((switches(c)?, vm_configs(c)?)))?;
        Ok(self.pg_info(&pg, &sws, &vms))
    }

    pub fn portgroup_create(&self, caller: &Caller, req: PortGroupCreate) -> Result<PortGroup> {
        self.require(caller, None, Privilege::HostConfig)?;
        names::validate("Port group", &req.name)?;
        let vlan = check_vlan(req.vlan)?;
        check_policy(&req.policy)?;
        let _net = lock(&self.inner.net_lock);
        let sw = self.switch_row(&req.switch)?;
        if vlan != 0 && !self.inner.net.vlan_filtering(&sw.bridge()) {
            return Err(CoreError::conflict(format!(
                "Switch {} cannot carry VLAN {vlan}: this host's kernel has no bridge VLAN filtering",
                sw.name
            )));
        }
        let pg = PgRow {
            name: req.name.clone(),
            switch_id: sw.id,
            vlan,
            policy: req.policy.clone(),
        };
        self.store().tx(|tx| {
            if port_group(tx, &pg.name)?.is_some() {
                return Err(CoreError::conflict(format!(
                    "Port group {} already exists",
                    pg.name
                )));
            }
            insert_pg(tx, &pg)?;
            Ok(())
        })?;
        self.net_event(
            caller,
            "network.portgroup-created",
            &format!(
                "Port group {} created on switch {} (VLAN {vlan})",
                pg.name, sw.name
            ),
        );
        self.portgroup_get(caller, &pg.name)
    }

    /// Changes a port group: its VLAN at once (also for running VMs' NICs),
    /// its policy at each NIC's next power-on.
    pub fn portgroup_edit(
        &self,
        caller: &Caller,
        name: &str,
        edit: PortGroupEdit,
    ) -> Result<PortGroup> {
        self.require(caller, None, Privilege::HostConfig)?;
        let _net = lock(&self.inner.net_lock);
        let mut pg = self.pg_row(name)?;
        let mut changes = Vec::new();
        if let Some(p) = &edit.policy {
            check_policy(p)?;
        }
        if let Some(v) = edit.vlan {
            let vlan = check_vlan(v)?;
            if vlan != 0 && !self.inner.net.vlan_filtering(&bridge_name(pg.switch_id)) {
                return Err(CoreError::conflict(format!(
                    "Port group {name} cannot carry VLAN {vlan}: this host's kernel has no bridge VLAN filtering"
                )));
            }
            if vlan != pg.vlan {
                changes.push(format!("VLAN {} → {vlan}", pg.vlan));
                pg.vlan = vlan;
                for tap in self.running_taps_on(&pg.name)? {
                    self.inner.net.set_tap_vlan(&tap, vlan)?;
                }
            }
        }
        if let Some(p) = edit.policy {
            if p != pg.policy {
                changes.push("policy (applies at each VM's next power-on)".into());
                pg.policy = p;
            }
        }
        if !changes.is_empty() {
            let policy = serde_json::to_string(&pg.policy).unwrap_or_else(|_| "{}".into());
            self.store().with(|c| {
                c.execute(
                    "UPDATE port_groups SET vlan = ?2, policy_json = ?3 WHERE name = ?1",
                    params![pg.name, pg.vlan, policy],
                )
            })?;
            self.net_event(
                caller,
                "network.portgroup-reconfigured",
                &format!("Port group {name} reconfigured: {}", changes.join(", ")),
            );
        }
        self.portgroup_get(caller, name)
    }

    /// Deletes a port group no VM uses.
    pub fn portgroup_delete(&self, caller: &Caller, name: &str) -> Result<()> {
        self.require(caller, None, Privilege::HostConfig)?;
        let _net = lock(&self.inner.net_lock);
        let pg = self.pg_row(name)?;
        let info = self.portgroup_get(caller, &pg.name)?;
        if !info.vms.is_empty() {
            return Err(CoreError::conflict(format!(
                "Port group {name} is in use by VM {}",
                info.vms.join(", ")
            )));
        }
        self.store()
            .with(|c| c.execute("DELETE FROM port_groups WHERE name = ?1", [name]))?;
        self.net_event(
            caller,
            "network.portgroup-deleted",
            &format!("Port group {name} deleted"),
        );
        Ok(())
    }

    fn net_event(&self, caller: &Caller, kind: &str, msg: &str) {
        self.event(
            NewEvent::info(kind, msg)
                .user(Some(&caller.user))
                .target("host"),
        );
    }

    /// At keeld's start: makes the default network on first start, then
    /// brings every switch, NAT rule and DHCP server up (recreating bridges
    /// a host reboot removed). Failures are warning events: keeld runs on,
    /// and VMs on a broken switch fail to power on with the reason.
    pub(crate) fn network_start(&self, default_subnet: Option<&str>) -> Result<()> {
        let _net = lock(&self.inner.net_lock);
        if self.store().setting(INITIALIZED_KEY)?.is_none() {
            self.create_default_network(default_subnet)?;
        }
        let weak = std::sync::Arc::downgrade(&self.inner);
        self.inner.net.set_on_ip(Box::new(move |mac, ip| {
            if let Some(inner) = weak.upgrade() {
                Host { inner }.on_ip(mac, ip);
            }
        }));
        let mut recreated = Vec::new();
        for s in self.store().with(switches)? {
            match self.inner.net.ensure_switch(&s.spec()) {
                Ok(true) => {
                    recreated.push(s.bridge());
                    self.event(NewEvent::info(
                        "network.switch-recreated",
                        &format!(
                            "Switch {} (bridge {}) was missing and was recreated",
                            s.name,
                            s.bridge()
                        ),
                    ));
                }
                Ok(false) => {}
                Err(e) => self.event(
                    NewEvent::info("network.switch-failed", &format!("Switch {}: {e}", s.name))
                        .severity(Severity::Warning),
                ),
            }
        }
        if let Err(e) = self.apply_nat(&recreated) {
            self.event(
                NewEvent::info("network.nat-failed", &format!("NAT and DHCP: {e}"))
                    .severity(Severity::Warning),
            );
        }
        Ok(())
    }

    fn create_default_network(&self, wanted: Option<&str>) -> Result<()> {
        let probe = bridge_name(0);
        let subnet = match wanted {
            Some(s) => {
                let n = parse_subnet(s).map_err(|e| e.context("VM network subnet"))?;
                self.inner
                    .net
                    .check_subnet(&probe, n)
                    .map_err(|e| e.context("VM network subnet"))?;
                Some(n)
            }
            None => DEFAULT_SUBNETS
                .iter()
                .filter_map(|s| s.parse::<Ipv4Net>().ok())
                .find(|n| self.inner.net.check_subnet(&probe, *n).is_ok()),
        };
        let msg = match subnet {
            Some(n) => format!(
                "Default network created: switch {DEFAULT_SWITCH}, port group {DEFAULT_PORT_GROUP}, NAT and DHCP on {n}"
            ),
            None => format!(
                "Default network created without NAT: every candidate subnet overlaps the host's networks ({})",
                DEFAULT_SUBNETS.join(", ")
            ),
        };
        self.store().tx(|tx| {
            let id = insert_switch(
                tx,
                &SwitchRow {
                    id: 0,
                    name: DEFAULT_SWITCH.into(),
                    mtu: DEFAULT_MTU,
                    uplinks: Vec::new(),
                    nat_subnet: subnet,
                    dhcp: subnet.is_some(),
                },
            )?;
            insert_pg(
                tx,
                &PgRow {
                    name: DEFAULT_PORT_GROUP.into(),
                    switch_id: id,
                    vlan: 0,
                    policy: NetPolicy::default(),
                },
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO settings (key, value) VALUES (?1, '1')",
                [INITIALIZED_KEY],
            )?;
            events::insert(
                tx,
                &NewEvent::info("network.initialized", &msg).severity(if subnet.is_some() {
                    Severity::Info
                } else {
                    Severity::Warning
                }),
            )?;
            Ok(())
        })
    }

    /// A DHCP lease was bound: an event when a VM NIC's address changed.
    fn on_ip(&self, mac: net::Mac, ip: Ipv4Addr) {
        let mut ips = lock(&self.inner.net_ips);
        if ips.get(&mac) == Some(&ip) {
            return;
        }
        ips.insert(mac, ip);
        drop(ips);
        let owner = self.store().with(vm_configs).ok().and_then(|vms| {
            vms.into_iter().find_map(|(_, name, cfg)| {
                cfg.nics
                    .iter()
                    .position(|n| n.mac.as_deref().and_then(|m| m.parse().ok()) == Some(mac))
                    .map(|i| (name, i))
            })
        });
        let (msg, target) = match owner {
            Some((vm, i)) => (
                format!("VM {vm} network adapter {i} ({mac}) got address {ip}"),
                Some(format!("vm:{vm}")),
            ),
            None => (format!("DHCP: {mac} got address {ip}"), None),
        };
        let mut ev = NewEvent::info("network.dhcp-bound", &msg);
        if let Some(t) = &target {
            ev = ev.target(t);
        }
        self.event(ev);
    }
}

#[cfg(test)]
mod tests;
