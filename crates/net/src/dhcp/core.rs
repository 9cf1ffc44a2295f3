//! The pure DHCPv4 server: a request and the time in, a reply and lease
//! changes out. No sockets, no clock, no files.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::leases::{Entry, Lease, Table};
use super::DhcpConfig;
use crate::mac::Mac;

/// How long an offer reserves its address.
pub const OFFER_SECS: u64 = 60;
/// How long a declined address is not handed out.
pub const DECLINE_SECS: u64 = 600;

/// A reply to send: the message and where to (broadcast or the client's address).
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub msg: Message,
    pub dest: Ipv4Addr,
}

/// What handling one request did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub reply: Option<Reply>,
    /// Set on each ACK of a lease: the client's MAC and address.
    pub bound: Option<(Mac, Ipv4Addr)>,
    /// The bound leases changed: the lease file should be written.
    pub leases_changed: bool,
    /// Why a request was ignored or refused (for logs).
    pub note: Option<String>,
}

/// The server state of one network.
#[derive(Clone, Debug)]
pub struct DhcpCore {
    cfg: DhcpConfig,
    table: Table,
}

impl DhcpCore {
    /// A server with the leases of a previous run; leases outside the pool are dropped.
    pub fn new(cfg: DhcpConfig, leases: Vec<Lease>) -> DhcpCore {
        let mut table = Table::default();
        for l in leases {
            if cfg.in_pool(l.ip)
                && l.mac.validate().is_ok()
                && !table.by_mac.values().any(|e| e.lease.ip == l.ip)
            {
                table.by_mac.insert(
                    l.mac,
                    Entry {
                        lease: l,
                        bound: true,
                    },
                );
            }
        }
        DhcpCore { cfg, table }
    }

    pub fn config(&self) -> &DhcpConfig {
        &self.cfg
    }

    /// The bound leases (also expired ones still remembered).
    pub fn leases(&self) -> Vec<Lease> {
        self.table.bound()
    }

    /// The bound, unexpired lease of a MAC.
    pub fn lease_of(&self, mac: Mac, now: u64) -> Option<Lease> {
        self.table
            .by_mac
            .get(&mac)
            .filter(|e| e.bound && e.lease.expires > now)
            .map(|e| e.lease.clone())
    }

    /// Decodes, handles and encodes: what the server does with a datagram.
    pub fn handle_bytes(&mut self, buf: &[u8], now: u64) -> (Option<(Vec<u8>, Ipv4Addr)>, Outcome) {
        let Some(clean) = sanitize(buf) else {
            let out = Outcome {
                note: Some("Not a DHCP message".into()),
                ..Default::default()
            };
            return (None, out);
        };
        let msg = match Message::decode(&mut Decoder::new(&clean)) {
            Ok(m) => m,
            Err(e) => {
                let out = Outcome {
                    note: Some(format!("Undecodable DHCP message: {e}")),
                    ..Default::default()
                };
                return (None, out);
            }
        };
        let out = self.handle(&msg, now);
        let bytes = out.reply.as_ref().and_then(|r| {
            let mut v = Vec::with_capacity(576);
            r.msg
                .encode(&mut Encoder::new(&mut v))
                .ok()
                .map(|_| (v, r.dest))
        });
        (bytes, out)
    }

    /// Handles one request.
    pub fn handle(&mut self, req: &Message, now: u64) -> Outcome {
        let ignore = |why: &str| Outcome {
            note: Some(why.to_string()),
            ..Default::default()
        };
        if req.opcode() != Opcode::BootRequest {
            return ignore("Not a BOOTREQUEST");
        }
        if req.htype() != HType::Eth || req.hlen() != 6 {
            return ignore("Not an Ethernet client");
        }
        if !req.giaddr().is_unspecified() {
            return ignore("Relayed requests are not served");
        }
        let mut b = [0u8; 6];
        b.copy_from_slice(&req.chaddr()[..6]);
        let mac = Mac(b);
        if mac.validate().is_err() {
            return ignore("Client hardware address is not unicast");
        }
        self.expire_offers(now);
        match req.opts().msg_type() {
            Some(MessageType::Discover) => self.discover(req, mac, now),
            Some(MessageType::Request) => self.request(req, mac, now),
            Some(MessageType::Release) => self.release(req, mac, now),
            Some(MessageType::Decline) => self.decline(req, mac, now),
            Some(MessageType::Inform) => self.inform(req),
            _ => ignore("Not a client message type"),
        }
    }

    fn expire_offers(&mut self, now: u64) {
        self.table
            .by_mac
            .retain(|_, e| e.bound || e.lease.expires > now);
        self.table.declined.retain(|_, until| *until > now);
    }

    /// The address for `mac`: its own (even expired), the requested one, a
    /// free one, or the longest-expired one of another client.
    fn choose(&self, mac: Mac, requested: Option<Ipv4Addr>, now: u64) -> Option<Ipv4Addr> {
        if let Some(e) = self.table.by_mac.get(&mac) {
            if self.cfg.in_pool(e.lease.ip) && self.table.free_for(e.lease.ip, mac, now) {
                return Some(e.lease.ip);
            }
        }
        if let Some(ip) = requested {
            if self.cfg.in_pool(ip)
                && self.table.free_for(ip, mac, now)
                && !self
                    .table
                    .by_mac
                    .values()
                    .any(|e| e.lease.ip == ip && e.lease.mac != mac)
            {
                return Some(ip);
            }
        }
        let unused = self.cfg.pool().find(|ip| {
            self.table.free_for(*ip, mac, now)
                && !self.table.by_mac.values().any(|e| e.lease.ip == *ip)
        });
        if unused.is_some() {
            return unused;
        }
        self.table
            .by_mac
            .values()
            .filter(|e| {
                e.lease.mac != mac && e.lease.expires <= now && self.cfg.in_pool(e.lease.ip)
            })
            .filter(|e| self.table.free_for(e.lease.ip, mac, now))
            .min_by_key(|e| e.lease.expires)
            .map(|e| e.lease.ip)
    }

    fn discover(&mut self, req: &Message, mac: Mac, now: u64) -> Outcome {
        let Some(ip) = self.choose(mac, requested_ip(req), now) else {
            return Outcome {
                note: Some(format!("Address pool exhausted: no offer to {mac}")),
                ..Default::default()
            };
        };
        self.table.evict_ip(ip, mac);
        let hostname = hostname(req);
        let bound_before = self
            .table
            .by_mac
            .get(&mac)
            .is_some_and(|e| e.bound && e.lease.ip == ip);
        let entry = self.table.by_mac.entry(mac).or_insert(Entry {
            lease: Lease {
                mac,
                ip,
                expires: 0,
                hostname: None,
            },
            bound: false,
        });
        if !bound_before {
            *entry = Entry {
                lease: Lease {
                    mac,
                    ip,
                    expires: now + OFFER_SECS,
                    hostname,
                },
                bound: false,
            };
        }
        let reply = self.reply(req, MessageType::Offer, ip);
        Outcome {
            reply: Some(reply),
            ..Default::default()
        }
    }

    fn request(&mut self, req: &Message, mac: Mac, now: u64) -> Outcome {
        let server_id = match req.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        };
        if let Some(sid) = server_id {
            if sid != self.cfg.gateway {
                // The client chose another server: forget our offer.
                let changed = self.table.by_mac.get(&mac).is_some_and(|e| !e.bound);
                if changed {
                    self.table.by_mac.remove(&mac);
                }
                return Outcome {
                    note: Some(format!("{mac} chose server {sid}")),
                    ..Default::default()
                };
            }
        }
        let ciaddr = req.ciaddr();
        let wanted = requested_ip(req).or(if ciaddr.is_unspecified() {
            None
        } else {
            Some(ciaddr)
        });
        let Some(ip) = wanted else {
            return self.nak(req, "REQUEST names no address");
        };
        if !self.cfg.in_pool(ip) {
            return self.nak(req, &format!("{ip} is not in this network's pool"));
        }
        if !self.table.free_for(ip, mac, now) {
            return self.nak(req, &format!("{ip} is leased to another client"));
        }
        if server_id.is_some() {
            // SELECTING: must match what we offered (or the client's lease).
            let ours = self.table.by_mac.get(&mac).map(|e| e.lease.ip);
            if ours != Some(ip) {
                return self.nak(req, &format!("{ip} was not offered to {mac}"));
            }
        }
        self.table.evict_ip(ip, mac);
        let lease = Lease {
            mac,
            ip,
            expires: now + u64::from(self.cfg.lease_secs),
            hostname: hostname(req).or_else(|| {
                self.table
                    .by_mac
                    .get(&mac)
                    .and_then(|e| e.lease.hostname.clone())
            }),
        };
        self.table.by_mac.insert(mac, Entry { lease, bound: true });
        let mut reply = self.reply(req, MessageType::Ack, ip);
        if !ciaddr.is_unspecified() && !req.flags().broadcast() {
            reply.dest = ciaddr;
        }
        Outcome {
            reply: Some(reply),
            bound: Some((mac, ip)),
            leases_changed: true,
            note: None,
        }
    }

    fn release(&mut self, req: &Message, mac: Mac, now: u64) -> Outcome {
        let mut out = Outcome::default();
        if let Some(e) = self.table.by_mac.get_mut(&mac) {
            if e.lease.ip == req.ciaddr() && e.lease.expires > now {
                e.lease.expires = now;
                out.leases_changed = e.bound;
            }
        }
        out
    }

    fn decline(&mut self, req: &Message, mac: Mac, now: u64) -> Outcome {
        let Some(ip) = requested_ip(req) else {
            return Outcome {
                note: Some("DECLINE names no address".into()),
                ..Default::default()
            };
        };
        let mut out = Outcome {
            note: Some(format!("{mac} declined {ip}: in use on the network")),
            ..Default::default()
        };
        if self
            .table
            .by_mac
            .get(&mac)
            .is_some_and(|e| e.lease.ip == ip)
        {
            out.leases_changed = self.table.by_mac.remove(&mac).is_some_and(|e| e.bound);
            if self.cfg.in_pool(ip) {
                self.table.declined.insert(ip, now + DECLINE_SECS);
            }
        }
        out
    }

    fn inform(&mut self, req: &Message) -> Outcome {
        let mut reply = self.reply(req, MessageType::Ack, Ipv4Addr::UNSPECIFIED);
        reply.msg.opts_mut().remove(OptionCode::AddressLeaseTime);
        reply.msg.opts_mut().remove(OptionCode::Renewal);
        reply.msg.opts_mut().remove(OptionCode::Rebinding);
        if !req.ciaddr().is_unspecified() {
            reply.dest = req.ciaddr();
        }
        Outcome {
            reply: Some(reply),
            ..Default::default()
        }
    }

    fn nak(&mut self, req: &Message, why: &str) -> Outcome {
        let mut msg = base_reply(req);
        msg.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Nak));
        msg.opts_mut()
            .insert(DhcpOption::ServerIdentifier(self.cfg.gateway));
        msg.opts_mut().insert(DhcpOption::Message(why.to_string()));
        Outcome {
            reply: Some(Reply {
                msg,
                dest: Ipv4Addr::BROADCAST,
            }),
            note: Some(why.to_string()),
            ..Default::default()
        }
    }

    fn reply(&self, req: &Message, kind: MessageType, ip: Ipv4Addr) -> Reply {
        let c = &self.cfg;
        let mut msg = base_reply(req);
        msg.set_yiaddr(ip).set_siaddr(c.gateway);
        let o = msg.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(c.gateway));
        o.insert(DhcpOption::AddressLeaseTime(c.lease_secs));
        o.insert(DhcpOption::Renewal(c.lease_secs / 2));
        o.insert(DhcpOption::Rebinding(c.lease_secs / 8 * 7));
        o.insert(DhcpOption::SubnetMask(c.subnet.netmask()));
        o.insert(DhcpOption::BroadcastAddr(c.subnet.broadcast()));
        o.insert(DhcpOption::Router(vec![c.gateway]));
        if !c.dns.is_empty() {
            o.insert(DhcpOption::DomainNameServer(c.dns.clone()));
        }
        if let Some(d) = &c.domain {
            o.insert(DhcpOption::DomainName(d.clone()));
        }
        Reply {
            msg,
            dest: Ipv4Addr::BROADCAST,
        }
    }
}

/// Options whose decoding in dhcproto 0.14 asserts on the length (a panic
/// in debug builds, a misparse otherwise); a server needs none of them.
const UNSAFE_OPTIONS: [u8; 7] = [80, 81, 94, 152, 153, 154, 155];
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const HEADER_LEN: usize = 236;

/// Checks the fixed header and magic cookie and rebuilds the options area
/// without [`UNSAFE_OPTIONS`], stopping at the end option or at a truncated
/// option. None when the datagram cannot be a DHCP message.
pub fn sanitize(buf: &[u8]) -> Option<Vec<u8>> {
    if buf.len() < HEADER_LEN + 4 || buf[HEADER_LEN..HEADER_LEN + 4] != MAGIC {
        return None;
    }
    let mut out = Vec::with_capacity(buf.len() + 1);
    out.extend_from_slice(&buf[..HEADER_LEN + 4]);
    let mut i = HEADER_LEN + 4;
    while i < buf.len() {
        let code = buf[i];
        if code == 0 {
            i += 1;
            continue;
        }
        if code == 255 {
            break;
        }
        let Some(&len) = buf.get(i + 1) else { break };
        let end = i + 2 + usize::from(len);
        if end > buf.len() {
            break;
        }
        if !UNSAFE_OPTIONS.contains(&code) {
            out.extend_from_slice(&buf[i..end]);
        }
        i = end;
    }
    out.push(255);
    Some(out)
}

fn base_reply(req: &Message) -> Message {
    let mut msg = Message::new_with_id(
        req.xid(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &req.chaddr()[..6],
    );
    msg.set_opcode(Opcode::BootReply)
        .set_flags(Flags::new(u16::from(req.flags())));
    msg
}

fn requested_ip(req: &Message) -> Option<Ipv4Addr> {
    match req.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    }
}

fn hostname(req: &Message) -> Option<String> {
    match req.opts().get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) if !h.is_empty() && h.len() <= 63 => Some(
            h.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
                .collect(),
        ),
        _ => None,
    }
}
