//! Virtual networking: standard switches (Linux bridges keeld owns), port
//! groups with a VLAN and a security/shaping policy, and VM NICs attached to
//! port groups. `/api/v1/network/...` and `/api/v1/vms/{name}/nics/...`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The switch keeld creates on first start.
pub const DEFAULT_SWITCH: &str = "vSwitch0";
/// The port group keeld creates on first start, on [`DEFAULT_SWITCH`].
pub const DEFAULT_PORT_GROUP: &str = "VM Network";

/// A standard switch: a Linux bridge that keeld created and owns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Switch {
    pub name: String,
    /// The Linux bridge's interface name (like `keelbr1`).
    pub bridge: String,
    pub mtu: u32,
    /// Host NICs enslaved to the bridge (trunks: every VLAN tagged).
    pub uplinks: Vec<String>,
    /// Host-only network with NAT to the host's default route, when set.
    pub nat: Option<NatInfo>,
    /// The port groups on this switch.
    pub port_groups: Vec<String>,
    /// `up` when the bridge exists and is up, else what is wrong.
    pub status: String,
}

/// A switch's NAT network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NatInfo {
    /// Like `10.77.0.0/24`.
    pub subnet: String,
    /// The host's address on the switch (the guests' router), the first
    /// address of the subnet.
    pub gateway: String,
    /// keeld's DHCP server hands out the subnet's other addresses.
    pub dhcp: bool,
}

/// `POST /api/v1/network/switches`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchCreate {
    pub name: String,
    /// 68–9000; default 1500.
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub uplinks: Vec<String>,
    /// Make the switch a host-only NAT network.
    #[serde(default)]
    pub nat: Option<NatCreate>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NatCreate {
    /// Like `10.78.0.0/24` (/8–/29); must not overlap the host's own
    /// networks or another switch's.
    pub subnet: String,
    /// Default true.
    #[serde(default = "crate::default_true")]
    pub dhcp: bool,
}

/// `PATCH /api/v1/network/switches/{name}`: every field optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchEdit {
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The new list of uplinks (replaces the old one).
    #[serde(default)]
    pub uplinks: Option<Vec<String>>,
}

/// ESXi's words for a security policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Accept {
    #[default]
    Accept,
    Reject,
}

/// A port group's policy, applied by keel-vmm to every NIC on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetPolicy {
    /// Reject: a NIC receives only frames for its own MAC, broadcast and
    /// multicast. Default reject.
    #[serde(default = "reject")]
    pub promiscuous: Accept,
    /// Reject: the guest cannot change its NIC's MAC. Default accept.
    #[serde(default)]
    pub mac_changes: Accept,
    /// Reject: frames the guest sends from another source MAC are dropped.
    /// Default accept.
    #[serde(default)]
    pub forged_transmits: Accept,
    /// Traffic shaping, the same in each direction; none by default.
    #[serde(default)]
    pub shaping: Option<Shaping>,
}

fn reject() -> Accept {
    Accept::Reject
}

impl Default for NetPolicy {
    fn default() -> Self {
        NetPolicy {
            promiscuous: Accept::Reject,
            mac_changes: Accept::Accept,
            forged_transmits: Accept::Accept,
            shaping: None,
        }
    }
}

/// A token bucket: `average_kbps` sustained, bursts of `burst_kib` at up to
/// `peak_kbps` (kbit/s = 1000 bit/s).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Shaping {
    pub average_kbps: u64,
    /// Default: `average_kbps`.
    #[serde(default)]
    pub peak_kbps: Option<u64>,
    /// Default 64 KiB.
    #[serde(default)]
    pub burst_kib: Option<u64>,
}

/// A port group: where VM NICs connect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortGroup {
    pub name: String,
    pub switch: String,
    /// 0 untagged, 1–4094 tagged.
    pub vlan: u16,
    pub policy: NetPolicy,
    /// VMs with a NIC on this port group.
    pub vms: Vec<String>,
}

/// `POST /api/v1/network/portgroups`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortGroupCreate {
    pub name: String,
    pub switch: String,
    /// 0 (default) untagged, 1–4094 tagged.
    #[serde(default)]
    pub vlan: u32,
    #[serde(default)]
    pub policy: NetPolicy,
}

/// `PATCH /api/v1/network/portgroups/{name}`: applied at once to the NICs
/// of running VMs (the VLAN) or at their next power-on (the policy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortGroupEdit {
    #[serde(default)]
    pub vlan: Option<u32>,
    #[serde(default)]
    pub policy: Option<NetPolicy>,
}

/// A VM's NIC as it is now: its configuration plus what the host knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NicInfo {
    /// Position in the VM's config (0 = the guest's first virtio NIC).
    pub index: u32,
    pub port_group: Option<String>,
    pub mac: String,
    /// Connected (link up) — at power-on and, while the VM runs, now.
    pub connected: bool,
    /// The TAP on the host while the VM runs.
    pub tap: Option<String>,
    /// The address keeld's DHCP server gave the guest.
    pub ip: Option<String>,
    /// The VMM's counters while the VM runs (in `GET .../nics` only).
    #[serde(default)]
    pub stats: Option<NicStats>,
}

/// A running NIC's counters since its VMM started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NicStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames for the guest it did not take in time.
    pub rx_dropped: u64,
    /// Frames from the guest that were malformed, refused or sent while
    /// disconnected.
    pub tx_errors: u64,
    /// Frames from the guest with a source MAC not its own, dropped
    /// (forged transmits reject).
    pub tx_forged: u64,
    /// Frames for another MAC not delivered (promiscuous reject).
    pub rx_filtered: u64,
}

/// `POST /api/v1/vms/{name}/nics`: a new NIC (the VM must be off).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NicCreate {
    /// Default `VM Network`.
    #[serde(default)]
    pub port_group: Option<String>,
    /// A unicast MAC not used on the host; generated when absent.
    #[serde(default)]
    pub mac: Option<String>,
    /// Default true.
    #[serde(default)]
    pub connected: Option<bool>,
}

/// `PATCH /api/v1/vms/{name}/nics/{index}`: `connected` and `port_group`
/// also while the VM runs (the guest sees its link go down and up); `mac`
/// only while it is off.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NicEdit {
    #[serde(default)]
    pub port_group: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub connected: Option<bool>,
}
