//! `keel network switch|portgroup …` and `keel vm nic …`

use clap::Subcommand;
use hostd_api::{
    Accept, NatCreate, NetPolicy, NicCreate, NicEdit, PortGroup, PortGroupCreate, PortGroupEdit,
    Shaping, Switch, SwitchCreate, SwitchEdit,
};

use super::{connect, print_json, usage};
use crate::table;
use crate::Global;

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// Standard switches (Linux bridges keeld owns).
    #[command(subcommand)]
    Switch(SwitchCmd),
    /// Port groups: where VM network adapters connect.
    #[command(subcommand, alias = "pg")]
    Portgroup(PortGroupCmd),
}

#[derive(Subcommand)]
pub enum SwitchCmd {
    List,
    Show {
        name: String,
    },
    /// Creates a switch, optionally with uplinks (host NICs) and a NAT
    /// network with keeld's DHCP server.
    Create {
        name: String,
        /// 68–9000 (default 1500).
        #[arg(long)]
        mtu: Option<u32>,
        /// A host NIC to enslave (repeatable).
        #[arg(long = "uplink", value_name = "NIC")]
        uplinks: Vec<String>,
        /// Make it a host-only network with NAT on this subnet (like
        /// 10.78.0.0/24).
        #[arg(long, value_name = "CIDR")]
        nat: Option<String>,
        /// With --nat: no DHCP server.
        #[arg(long, requires = "nat")]
        no_dhcp: bool,
    },
    /// Changes a switch's MTU or its uplinks.
    Edit {
        name: String,
        #[arg(long)]
        mtu: Option<u32>,
        /// The new uplinks (repeatable; replaces the old list).
        #[arg(long = "uplink", value_name = "NIC")]
        uplinks: Vec<String>,
        /// Remove every uplink.
        #[arg(long, conflicts_with = "uplinks")]
        no_uplinks: bool,
    },
    /// Deletes a switch without port groups.
    Delete {
        name: String,
    },
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum AcceptArg {
    Accept,
    Reject,
}

impl From<AcceptArg> for Accept {
    fn from(a: AcceptArg) -> Accept {
        match a {
            AcceptArg::Accept => Accept::Accept,
            AcceptArg::Reject => Accept::Reject,
        }
    }
}

/// A port group's policy flags (each optional: unchanged / default).
#[derive(clap::Args, Default)]
pub struct PolicyArgs {
    #[arg(long, value_enum)]
    promiscuous: Option<AcceptArg>,
    #[arg(long, value_enum)]
    mac_changes: Option<AcceptArg>,
    #[arg(long, value_enum)]
    forged_transmits: Option<AcceptArg>,
    /// Traffic shaping: average rate in kbit/s, each direction.
    #[arg(long, value_name = "KBIT/S")]
    shaping_average: Option<u64>,
    /// Peak rate in kbit/s (default: the average).
    #[arg(long, value_name = "KBIT/S", requires = "shaping_average")]
    shaping_peak: Option<u64>,
    /// Burst size in KiB (default 64).
    #[arg(long, value_name = "KIB", requires = "shaping_average")]
    shaping_burst: Option<u64>,
    /// Turn traffic shaping off.
    #[arg(long, conflicts_with = "shaping_average")]
    no_shaping: bool,
}

impl PolicyArgs {
    fn any(&self) -> bool {
        self.promiscuous.is_some()
            || self.mac_changes.is_some()
            || self.forged_transmits.is_some()
            || self.shaping_average.is_some()
            || self.no_shaping
    }

    fn apply(&self, p: &mut NetPolicy) {
        if let Some(a) = self.promiscuous {
            p.promiscuous = a.into();
        }
        if let Some(a) = self.mac_changes {
            p.mac_changes = a.into();
        }
        if let Some(a) = self.forged_transmits {
            p.forged_transmits = a.into();
        }
        if let Some(avg) = self.shaping_average {
            p.shaping = Some(Shaping {
                average_kbps: avg,
                peak_kbps: self.shaping_peak,
                burst_kib: self.shaping_burst,
            });
        }
        if self.no_shaping {
            p.shaping = None;
        }
    }
}

#[derive(Subcommand)]
pub enum PortGroupCmd {
    List,
    Show {
        name: String,
    },
    /// Creates a port group on a switch.
    Create {
        name: String,
        #[arg(long, default_value = hostd_api::DEFAULT_SWITCH)]
        switch: String,
        /// 0 (untagged, the default) or 1–4094.
        #[arg(long, default_value_t = 0)]
        vlan: u32,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Changes a port group's VLAN (at once) or policy (at each VM's next
    /// power-on).
    Edit {
        name: String,
        #[arg(long)]
        vlan: Option<u32>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Deletes a port group no VM uses.
    Delete {
        name: String,
    },
}

fn accept(a: Accept) -> &'static str {
    match a {
        Accept::Accept => "accept",
        Accept::Reject => "reject",
    }
}

/// `promiscuous reject, MAC changes accept, …, shaping 8000 kbit/s`.
pub fn policy_summary(p: &NetPolicy) -> String {
    let mut s = format!(
        "promiscuous {}, MAC changes {}, forged transmits {}",
        accept(p.promiscuous),
        accept(p.mac_changes),
        accept(p.forged_transmits)
    );
    if let Some(sh) = &p.shaping {
        s.push_str(&format!(", shaping {} kbit/s", sh.average_kbps));
        if let Some(peak) = sh.peak_kbps {
            s.push_str(&format!(" (peak {peak})"));
        }
    }
    s
}

fn switch_rows(sws: &[Switch]) -> Vec<Vec<String>> {
    sws.iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.bridge.clone(),
                s.mtu.to_string(),
                if s.uplinks.is_empty() {
                    "-".into()
                } else {
                    s.uplinks.join(" ")
                },
                s.nat.as_ref().map_or("-".into(), |n| {
                    format!("{}{}", n.subnet, if n.dhcp { " +DHCP" } else { "" })
                }),
                s.port_groups.join(", "),
                s.status.clone(),
            ]
        })
        .collect()
}

fn pg_rows(pgs: &[PortGroup]) -> Vec<Vec<String>> {
    pgs.iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.switch.clone(),
                if p.vlan == 0 {
                    "-".into()
                } else {
                    p.vlan.to_string()
                },
                p.vms.join(", "),
                policy_summary(&p.policy),
            ]
        })
        .collect()
}

const SWITCH_HEAD: [&str; 7] = [
    "NAME",
    "BRIDGE",
    "MTU",
    "UPLINKS",
    "NAT",
    "PORT GROUPS",
    "STATUS",
];
const PG_HEAD: [&str; 5] = ["NAME", "SWITCH", "VLAN", "VMS", "POLICY"];

pub fn run(cmd: NetworkCmd, g: &Global) -> anyhow::Result<()> {
    let c = connect(g)?;
    match cmd {
        NetworkCmd::Switch(cmd) => match cmd {
            SwitchCmd::List => {
                let sws = c.switch_list()?;
                if g.json {
                    return print_json(&sws);
                }
                table::print(&SWITCH_HEAD, &switch_rows(&sws));
            }
            SwitchCmd::Show { name } => {
                let s = c.switch_get(&name)?;
                if g.json {
                    return print_json(&s);
                }
                table::print(&SWITCH_HEAD, &switch_rows(&[s]));
            }
            SwitchCmd::Create {
                name,
                mtu,
                uplinks,
                nat,
                no_dhcp,
            } => {
                let s = c.switch_create(&SwitchCreate {
                    name,
                    mtu,
                    uplinks,
                    nat: nat.map(|subnet| NatCreate {
                        subnet,
                        dhcp: !no_dhcp,
                    }),
                })?;
                if g.json {
                    return print_json(&s);
                }
                println!("Created switch {} (bridge {})", s.name, s.bridge);
            }
            SwitchCmd::Edit {
                name,
                mtu,
                uplinks,
                no_uplinks,
            } => {
                let uplinks = if no_uplinks {
                    Some(Vec::new())
                } else if uplinks.is_empty() {
                    None
                } else {
                    Some(uplinks)
                };
                if mtu.is_none() && uplinks.is_none() {
                    return Err(usage(
                        "Nothing to change: give --mtu, --uplink or --no-uplinks",
                    ));
                }
                let s = c.switch_edit(&name, &SwitchEdit { mtu, uplinks })?;
                if g.json {
                    return print_json(&s);
                }
                println!("Changed switch {}", s.name);
            }
            SwitchCmd::Delete { name } => {
                c.switch_delete(&name)?;
                if !g.json {
                    println!("Deleted switch {name}");
                }
            }
        },
        NetworkCmd::Portgroup(cmd) => match cmd {
            PortGroupCmd::List => {
                let pgs = c.portgroup_list()?;
                if g.json {
                    return print_json(&pgs);
                }
                table::print(&PG_HEAD, &pg_rows(&pgs));
            }
            PortGroupCmd::Show { name } => {
                let p = c.portgroup_get(&name)?;
                if g.json {
                    return print_json(&p);
                }
                table::print(&PG_HEAD, &pg_rows(&[p]));
            }
            PortGroupCmd::Create {
                name,
                switch,
                vlan,
                policy,
            } => {
                let mut p = NetPolicy::default();
                policy.apply(&mut p);
                let pg = c.portgroup_create(&PortGroupCreate {
                    name,
                    switch,
                    vlan,
                    policy: p,
                })?;
                if g.json {
                    return print_json(&pg);
                }
                println!("Created port group {} on {}", pg.name, pg.switch);
            }
            PortGroupCmd::Edit { name, vlan, policy } => {
                let new_policy = if policy.any() {
                    let mut p = c.portgroup_get(&name)?.policy;
                    policy.apply(&mut p);
                    Some(p)
                } else {
                    None
                };
                if vlan.is_none() && new_policy.is_none() {
                    return Err(usage("Nothing to change: give --vlan or a policy flag"));
                }
                let pg = c.portgroup_edit(
                    &name,
                    &PortGroupEdit {
                        vlan,
                        policy: new_policy,
                    },
                )?;
                if g.json {
                    return print_json(&pg);
                }
                println!("Changed port group {}", pg.name);
            }
            PortGroupCmd::Delete { name } => {
                c.portgroup_delete(&name)?;
                if !g.json {
                    println!("Deleted port group {name}");
                }
            }
        },
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum NicCmd {
    /// A VM's network adapters with their port group, MAC, TAP and address.
    List { vm: String },
    /// Adds a network adapter (VM powered off).
    Add {
        vm: String,
        /// Default "VM Network".
        #[arg(long)]
        portgroup: Option<String>,
        #[arg(long)]
        mac: Option<String>,
        /// Start disconnected.
        #[arg(long)]
        disconnected: bool,
    },
    /// Moves an adapter to another port group (also while the VM runs) or
    /// changes its MAC (VM off).
    Edit {
        vm: String,
        index: u32,
        #[arg(long)]
        portgroup: Option<String>,
        #[arg(long)]
        mac: Option<String>,
    },
    /// Connects an adapter: the guest sees its link come up.
    Connect { vm: String, index: u32 },
    /// Disconnects an adapter: the guest sees its link go down.
    Disconnect { vm: String, index: u32 },
    /// Removes an adapter (VM powered off).
    Remove { vm: String, index: u32 },
}

pub fn nic(c: &client::Client, cmd: NicCmd, g: &Global) -> anyhow::Result<()> {
    let edit = |vm: &str, index: u32, e: NicEdit| -> anyhow::Result<()> {
        let n = c.vm_nic_edit(vm, index, &e)?;
        if g.json {
            return print_json(&n);
        }
        println!(
            "VM {vm} network adapter {index}: {} on {}",
            if n.connected {
                "connected"
            } else {
                "disconnected"
            },
            n.port_group.as_deref().unwrap_or("its own TAP")
        );
        Ok(())
    };
    match cmd {
        NicCmd::List { vm } => {
            let nics = c.vm_nics(&vm)?;
            if g.json {
                return print_json(&nics);
            }
            let rows = nics
                .iter()
                .map(|n| {
                    vec![
                        n.index.to_string(),
                        n.port_group.clone().unwrap_or_else(|| "-".into()),
                        n.mac.clone(),
                        if n.connected { "yes" } else { "no" }.into(),
                        n.tap.clone().unwrap_or_else(|| "-".into()),
                        n.ip.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect::<Vec<_>>();
            table::print(&["#", "PORT GROUP", "MAC", "CONNECTED", "TAP", "IP"], &rows);
        }
        NicCmd::Add {
            vm,
            portgroup,
            mac,
            disconnected,
        } => {
            let n = c.vm_nic_add(
                &vm,
                &NicCreate {
                    port_group: portgroup,
                    mac,
                    connected: Some(!disconnected),
                },
            )?;
            if g.json {
                return print_json(&n);
            }
            println!(
                "VM {vm}: added network adapter {} ({}) on {}",
                n.index,
                n.mac,
                n.port_group.as_deref().unwrap_or("-")
            );
        }
        NicCmd::Edit {
            vm,
            index,
            portgroup,
            mac,
        } => {
            if portgroup.is_none() && mac.is_none() {
                return Err(usage("Nothing to change: give --portgroup or --mac"));
            }
            edit(
                &vm,
                index,
                NicEdit {
                    port_group: portgroup,
                    mac,
                    connected: None,
                },
            )?;
        }
        NicCmd::Connect { vm, index } => edit(
            &vm,
            index,
            NicEdit {
                connected: Some(true),
                ..Default::default()
            },
        )?,
        NicCmd::Disconnect { vm, index } => edit(
            &vm,
            index,
            NicEdit {
                connected: Some(false),
                ..Default::default()
            },
        )?,
        NicCmd::Remove { vm, index } => {
            c.vm_nic_remove(&vm, index)?;
            if !g.json {
                println!("VM {vm}: removed network adapter {index}");
            }
        }
    }
    Ok(())
}
