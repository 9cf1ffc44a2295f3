//! A synchronous face over `rtnetlink`: a current-thread tokio runtime
//! owned by the handle runs each request to completion, so callers (keeld's
//! blocking threads, tests) never see async code.
//!
//! The netlink socket is opened in the network namespace of the thread that
//! calls [`Netlink::new`]; every request goes to that namespace.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    AfSpecBridge, BridgeVlanInfoFlags, InfoBridge, InfoData, InfoKind, LinkAttribute,
    LinkExtentMask, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteType};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridgeVlan, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

use crate::subnet::Ipv4Net;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("Cannot open a netlink socket: {0}")]
    Open(std::io::Error),
    #[error("Cannot start the netlink runtime: {0}")]
    Runtime(std::io::Error),
    #[error("Netlink {what} failed: {message}")]
    Request {
        what: String,
        message: String,
        errno: Option<i32>,
    },
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request { errno, .. } => *errno,
            _ => None,
        }
    }
}

fn req_err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |e| {
        let errno = match &e {
            rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
            _ => None,
        };
        let message = match errno {
            Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
            None => e.to_string(),
        };
        NetlinkError::Request {
            what,
            message,
            errno,
        }
    }
}

/// What Keel needs to know of a network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `bridge`, `tun`, `veth`, … (None for physical NICs).
    pub kind: Option<String>,
    /// The bridge (or bond) this interface is enslaved to.
    pub master: Option<u32>,
    pub alias: Option<String>,
    pub mtu: u32,
    pub up: bool,
    pub mac: Option<[u8; 6]>,
    /// For bridges: whether VLAN filtering is on.
    pub vlan_filtering: Option<bool>,
}

fn parse_link(msg: &LinkMessage) -> Link {
    let mut l = Link {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        master: None,
        alias: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        mac: None,
        vlan_filtering: None,
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::IfAlias(s) => l.alias = Some(s.clone()),
            LinkAttribute::Controller(m) => l.master = Some(*m),
            LinkAttribute::Mtu(m) => l.mtu = *m,
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut b = [0u8; 6];
                b.copy_from_slice(a);
                l.mac = Some(b);
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        NlLinkInfo::Kind(k) => l.kind = Some(kind_name(k)),
                        NlLinkInfo::Data(InfoData::Bridge(opts)) => {
                            for o in opts {
                                if let InfoBridge::VlanFiltering(v) = o {
                                    l.vlan_filtering = Some(*v);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Tun => "tun".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Other(s) => s.clone(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// A VLAN entry of a bridge port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortVlan {
    pub vid: u16,
    pub pvid: bool,
    pub untagged: bool,
}

/// The synchronous netlink handle.
pub struct Netlink {
    /// Always Some until dropped.
    rt: Option<tokio::runtime::Runtime>,
    handle: Handle,
}

impl Drop for Netlink {
    /// Shut down without blocking: a Netlink may be dropped on a thread of
    /// an async runtime (keeld's), where a blocking drop panics.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Netlink {
    /// Opens a route netlink socket in the calling thread's network namespace.
    pub fn new() -> Result<Netlink, NetlinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(NetlinkError::Runtime)?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Open)?;
            tokio::spawn(conn);
            Ok::<_, NetlinkError>(handle)
        })?;
        Ok(Netlink {
            rt: Some(rt),
            handle,
        })
    }

    pub(crate) fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            None => unreachable!("the runtime lives as long as the Netlink"),
        }
    }

    /// Every interface.
    pub fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let msgs: Vec<LinkMessage> = self
            .block(self.handle.link().get().execute().try_collect())
            .map_err(req_err("link dump"))?;
        Ok(msgs.iter().map(parse_link).collect())
    }

    /// The interface called `name`, if there is one.
    pub fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let r: Result<Vec<LinkMessage>, _> = self.block(
            self.handle
                .link()
                .get()
                .match_name(name)
                .execute()
                .try_collect(),
        );
        match r {
            Ok(m) => Ok(m.first().map(parse_link)),
            Err(rtnetlink::Error::NetlinkError(e)) if -e.raw_code() == libc::ENODEV => Ok(None),
            Err(e) => Err(req_err(format!("lookup of {name}"))(e)),
        }
    }

    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let r: Result<Vec<LinkMessage>, _> = self.block(
            self.handle
                .link()
                .get()
                .match_index(index)
                .execute()
                .try_collect(),
        );
        match r {
            Ok(m) => Ok(m.first().map(parse_link)),
            Err(rtnetlink::Error::NetlinkError(e)) if -e.raw_code() == libc::ENODEV => Ok(None),
            Err(e) => Err(req_err(format!("lookup of interface {index}"))(e)),
        }
    }

    /// Sends a new link message (RTM_NEWLINK with create + exclusive).
    pub(crate) fn add_link(&self, msg: LinkMessage, what: &str) -> Result<(), NetlinkError> {
        self.block(self.handle.link().add(msg).execute())
            .map_err(req_err(what))
    }

    /// Changes an existing link (RTM_SETLINK).
    pub(crate) fn set_link(&self, msg: LinkMessage, what: &str) -> Result<(), NetlinkError> {
        self.block(self.handle.link().set(msg).execute())
            .map_err(req_err(what))
    }

    /// Creates a veth pair (both ends down).
    pub fn add_veth(&self, name: &str, peer: &str) -> Result<(), NetlinkError> {
        let msg = rtnetlink::LinkVeth::new(name, peer).build();
        self.add_link(msg, &format!("veth {name} create"))
    }

    pub fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        self.block(self.handle.link().del(index).execute())
            .map_err(req_err(format!("delete of interface {index}")))
    }

    pub fn set_up(&self, index: u32, up: bool) -> Result<(), NetlinkError> {
        let b = LinkUnspec::new_with_index(index);
        let msg = if up { b.up() } else { b.down() }.build();
        self.set_link(msg, if up { "link up" } else { "link down" })
    }

    pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        self.set_link(
            LinkUnspec::new_with_index(index).mtu(mtu).build(),
            "MTU change",
        )
    }

    pub fn set_alias(&self, index: u32, alias: &str) -> Result<(), NetlinkError> {
        self.set_link(
            LinkUnspec::new_with_index(index).alias(alias).build(),
            "alias change",
        )
    }

    /// Enslaves `index` to the bridge `master`, or frees it (None).
    pub fn set_master(&self, index: u32, master: Option<u32>) -> Result<(), NetlinkError> {
        let b = LinkUnspec::new_with_index(index);
        let msg = match master {
            Some(m) => b.controller(m),
            None => b.nocontroller(),
        }
        .build();
        self.set_link(msg, "bridge port change")
    }

    /// Sets a bridge option (e.g. VLAN filtering) on an existing bridge.
    pub(crate) fn set_bridge_opts(
        &self,
        index: u32,
        opts: Vec<InfoBridge>,
    ) -> Result<(), NetlinkError> {
        let mut b =
            LinkMessageBuilder::<rtnetlink::LinkBridge>::new_with_info_kind(InfoKind::Bridge)
                .index(index);
        for o in opts {
            b = b.append_info_data(o);
        }
        // RTM_NEWLINK without NLM_F_CREATE: RTM_SETLINK ignores
        // IFLA_LINKINFO, so a bridge option sent with it is silently dropped.
        self.block(self.handle.link().change(b.build()).execute())
            .map_err(req_err("bridge option change"))
    }

    /// The VLANs of a bridge port (or of the bridge itself).
    pub fn port_vlans(&self, index: u32) -> Result<Vec<PortVlan>, NetlinkError> {
        let req = self
            .handle
            .link()
            .get()
            .set_filter_mask(AddressFamily::Bridge, vec![LinkExtentMask::Brvlan]);
        let msgs: Vec<LinkMessage> = self
            .block(req.execute().try_collect())
            .map_err(req_err("bridge VLAN dump"))?;
        let mut out = Vec::new();
        for m in msgs.iter().filter(|m| m.header.index == index) {
            for a in &m.attributes {
                if let LinkAttribute::AfSpecBridge(specs) = a {
                    for s in specs {
                        if let AfSpecBridge::VlanInfo(v) = s {
                            out.push(PortVlan {
                                vid: v.vid,
                                pvid: v.flags.contains(BridgeVlanInfoFlags::Pvid),
                                untagged: v.flags.contains(BridgeVlanInfoFlags::Untagged),
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// `bridge vlan add vid VID [pvid untagged] dev PORT` (or a range `vid..=end`).
    pub fn vlan_add(
        &self,
        index: u32,
        vid: u16,
        end: u16,
        access: bool,
    ) -> Result<(), NetlinkError> {
        let flags = if access {
            BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged
        } else {
            BridgeVlanInfoFlags::empty()
        };
        let b = LinkBridgeVlan::new(index);
        let b = if end > vid {
            b.vlan_range_start(vid, flags).vlan_range_end(end, flags)
        } else {
            b.vlan(vid, flags)
        };
        // RTM_SETLINK on AF_BRIDGE (rtnl_bridge_setlink), as `bridge vlan
        // add` sends it: the kernel has no AF_BRIDGE RTM_NEWLINK, and the
        // generic one ignores the VLAN list.
        self.block(self.handle.link().set(b.build()).execute())
            .map_err(req_err(format!("bridge VLAN {vid} add")))
    }

    /// `bridge vlan del vid VID dev PORT` (or a range).
    pub fn vlan_del(&self, index: u32, vid: u16, end: u16) -> Result<(), NetlinkError> {
        let f = BridgeVlanInfoFlags::empty();
        let b = LinkBridgeVlan::new(index);
        let b = if end > vid {
            b.vlan_range_start(vid, f).vlan_range_end(end, f)
        } else {
            b.vlan(vid, f)
        };
        self.block(self.handle.link().del_with_message(b.build()).execute())
            .map_err(req_err(format!("bridge VLAN {vid} delete")))
    }

    /// IPv4 addresses: (interface index, address, prefix length).
    pub fn addresses_v4(&self) -> Result<Vec<(u32, Ipv4Addr, u8)>, NetlinkError> {
        let msgs: Vec<_> = self
            .block(self.handle.address().get().execute().try_collect())
            .map_err(req_err("address dump"))?;
        let mut out = Vec::new();
        for m in msgs {
            for a in &m.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip))
                | AddressAttribute::Address(IpAddr::V4(ip)) = a
                {
                    out.push((m.header.index, *ip, m.header.prefix_len));
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Adds an IPv4 address to an interface; an existing identical one is fine.
    pub fn add_address_v4(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<(), NetlinkError> {
        match self.block(
            self.handle
                .address()
                .add(index, IpAddr::V4(ip), prefix)
                .execute(),
        ) {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if -e.raw_code() == libc::EEXIST => Ok(()),
            Err(e) => Err(req_err(format!("address add {ip}/{prefix}"))(e)),
        }
    }

    /// Removes an IPv4 address from an interface; a missing one is fine.
    pub fn del_address_v4(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<(), NetlinkError> {
        let msgs: Vec<_> = self
            .block(
                self.handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .execute()
                    .try_collect(),
            )
            .map_err(req_err("address dump"))?;
        for m in msgs {
            let matches = m.header.prefix_len == prefix
                && m.attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Local(IpAddr::V4(x)) if *x == ip));
            if matches {
                self.block(self.handle.address().del(m).execute())
                    .map_err(req_err(format!("address delete {ip}/{prefix}")))?;
            }
        }
        Ok(())
    }

    /// IPv4 unicast routes of all tables: (destination, output interface).
    pub fn routes_v4(&self) -> Result<Vec<(Ipv4Net, Option<u32>)>, NetlinkError> {
        let q = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let msgs: Vec<_> = self
            .block(self.handle.route().get(q).execute().try_collect())
            .map_err(req_err("route dump"))?;
        let mut out = Vec::new();
        for m in msgs {
            if m.header.kind != RouteType::Unicast {
                continue;
            }
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut oif = None;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            out.push((
                Ipv4Net::new_truncating(dst, m.header.destination_prefix_length),
                oif,
            ));
        }
        Ok(out)
    }
}
