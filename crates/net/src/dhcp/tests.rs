use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Encodable, Encoder};

use super::*;
use crate::mac::Mac;

const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

fn cfg() -> DhcpConfig {
    DhcpConfig::new("10.77.0.0/24".parse().unwrap(), GW)
}

fn mac(n: u8) -> Mac {
    Mac([2, 0x4b, 0, 0, 0, n])
}

fn msg(
    kind: MessageType,
    m: Mac,
    ciaddr: Ipv4Addr,
    requested: Option<Ipv4Addr>,
    server: Option<Ipv4Addr>,
) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(0x1234, ciaddr, z, z, z, &m.0);
    msg.set_flags(Flags::default().set_broadcast());
    msg.opts_mut().insert(DhcpOption::MessageType(kind));
    if let Some(ip) = requested {
        msg.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    }
    if let Some(s) = server {
        msg.opts_mut().insert(DhcpOption::ServerIdentifier(s));
    }
    msg
}

fn kind(out: &Outcome) -> Option<MessageType> {
    out.reply.as_ref().and_then(|r| r.msg.opts().msg_type())
}

fn yiaddr(out: &Outcome) -> Ipv4Addr {
    out.reply
        .as_ref()
        .map(|r| r.msg.yiaddr())
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// DISCOVER, OFFER, REQUEST, ACK: the address the client ends up with.
fn bind(core: &mut DhcpCore, m: Mac, now: u64) -> Ipv4Addr {
    let offer = core.handle(
        &msg(MessageType::Discover, m, Ipv4Addr::UNSPECIFIED, None, None),
        now,
    );
    assert_eq!(kind(&offer), Some(MessageType::Offer), "{:?}", offer.note);
    let ip = yiaddr(&offer);
    let ack = core.handle(
        &msg(
            MessageType::Request,
            m,
            Ipv4Addr::UNSPECIFIED,
            Some(ip),
            Some(GW),
        ),
        now,
    );
    assert_eq!(kind(&ack), Some(MessageType::Ack), "{:?}", ack.note);
    assert_eq!(ack.bound, Some((m, ip)));
    assert!(ack.leases_changed);
    ip
}

#[test]
fn full_exchange_gives_options_and_first_pool_address() {
    let mut core = DhcpCore::new(cfg(), vec![]);
    let offer = core.handle(
        &msg(
            MessageType::Discover,
            mac(1),
            Ipv4Addr::UNSPECIFIED,
            None,
            None,
        ),
        100,
    );
    let r = offer.reply.clone().unwrap();
    assert_eq!(r.dest, Ipv4Addr::BROADCAST);
    assert_eq!(r.msg.opcode(), Opcode::BootReply);
    assert_eq!(r.msg.xid(), 0x1234);
    assert_eq!(r.msg.chaddr(), &mac(1).0);
    assert_eq!(
        r.msg.yiaddr(),
        Ipv4Addr::new(10, 77, 0, 2),
        "the gateway is not in the pool"
    );
    let o = r.msg.opts();
    assert_eq!(
        o.get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![GW]))
    );
    assert_eq!(
        o.get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(GW))
    );
    assert_eq!(
        o.get(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        o.get(OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![GW]))
    );
    assert_eq!(
        o.get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    assert!(!offer.leases_changed && offer.bound.is_none());
    assert_eq!(bind(&mut core, mac(1), 101), Ipv4Addr::new(10, 77, 0, 2));
    assert_eq!(core.lease_of(mac(1), 200).unwrap().expires, 101 + 3600);
    // A second client gets another address.
    assert_eq!(bind(&mut core, mac(2), 102), Ipv4Addr::new(10, 77, 0, 3));
    // Rediscovering keeps the same address.
    assert_eq!(bind(&mut core, mac(1), 103), Ipv4Addr::new(10, 77, 0, 2));
}

#[test]
fn requests_for_wrong_addresses_are_naked() {
    let mut core = DhcpCore::new(cfg(), vec![]);
    let a = bind(&mut core, mac(1), 10);
    // Someone else's address.
    let out = core.handle(
        &msg(
            MessageType::Request,
            mac(2),
            Ipv4Addr::UNSPECIFIED,
            Some(a),
            None,
        ),
        11,
    );
    assert_eq!(kind(&out), Some(MessageType::Nak));
    // Outside the subnet (INIT-REBOOT after moving networks).
    let out = core.handle(
        &msg(
            MessageType::Request,
            mac(2),
            Ipv4Addr::UNSPECIFIED,
            Some(Ipv4Addr::new(192, 168, 1, 5)),
            None,
        ),
        11,
    );
    assert_eq!(kind(&out), Some(MessageType::Nak));
    // The gateway.
    let out = core.handle(
        &msg(
            MessageType::Request,
            mac(2),
            Ipv4Addr::UNSPECIFIED,
            Some(GW),
            None,
        ),
        11,
    );
    assert_eq!(kind(&out), Some(MessageType::Nak));
    // SELECTING an address that was not offered.
    let out = core.handle(
        &msg(
            MessageType::Request,
            mac(3),
            Ipv4Addr::UNSPECIFIED,
            Some(Ipv4Addr::new(10, 77, 0, 50)),
            Some(GW),
        ),
        11,
    );
    assert_eq!(kind(&out), Some(MessageType::Nak));
    // No address at all.
    let out = core.handle(
        &msg(
            MessageType::Request,
            mac(3),
            Ipv4Addr::UNSPECIFIED,
            None,
            None,
        ),
        11,
    );
    assert_eq!(kind(&out), Some(MessageType::Nak));
    // Choosing another server: silence, and the offer is dropped.
    let offer = core.handle(
        &msg(
            MessageType::Discover,
            mac(4),
            Ipv4Addr::UNSPECIFIED,
            None,
            None,
        ),
        12,
    );
    let out = core.handle(
        &msg(
            MessageType::Request,
            mac(4),
            Ipv4Addr::UNSPECIFIED,
            Some(yiaddr(&offer)),
            Some(Ipv4Addr::new(10, 77, 0, 254)),
        ),
        12,
    );
    assert!(out.reply.is_none());
}

#[test]
fn init_reboot_and_renew() {
    let mut core = DhcpCore::new(cfg(), vec![]);
    let a = bind(&mut core, mac(1), 10);
    // INIT-REBOOT with the own address.
    let out = core.handle(
        &msg(
            MessageType::Request,
            mac(1),
            Ipv4Addr::UNSPECIFIED,
            Some(a),
            None,
        ),
        20,
    );
    assert_eq!(kind(&out), Some(MessageType::Ack));
    // RENEWING: ciaddr, unicast reply when the broadcast flag is off.
    let mut m = msg(MessageType::Request, mac(1), a, None, None);
    m.set_flags(Flags::default());
    let out = core.handle(&m, 30);
    assert_eq!(kind(&out), Some(MessageType::Ack));
    assert_eq!(out.reply.unwrap().dest, a);
    assert_eq!(core.lease_of(mac(1), 31).unwrap().expires, 30 + 3600);
    // INIT-REBOOT for a free address we have no record of: granted.
    let b = Ipv4Addr::new(10, 77, 0, 77);
    let out = core.handle(
        &msg(
            MessageType::Request,
            mac(9),
            Ipv4Addr::UNSPECIFIED,
            Some(b),
            None,
        ),
        40,
    );
    assert_eq!(out.bound, Some((mac(9), b)));
}

#[test]
fn pool_exhaustion_and_expiry() {
    let mut c = cfg();
    c.pool_start = Ipv4Addr::new(10, 77, 0, 1);
    c.pool_end = Ipv4Addr::new(10, 77, 0, 3);
    c.lease_secs = 60;
    let mut core = DhcpCore::new(c, vec![]);
    // Pool 10.77.0.1-3 without the gateway: two addresses.
    let a = bind(&mut core, mac(1), 0);
    let b = bind(&mut core, mac(2), 0);
    assert_ne!(a, b);
    let out = core.handle(
        &msg(
            MessageType::Discover,
            mac(3),
            Ipv4Addr::UNSPECIFIED,
            None,
            None,
        ),
        10,
    );
    assert!(out.reply.is_none());
    assert!(out.note.unwrap().contains("exhausted"));
    // After mac(1)'s lease expired, mac(3) gets its address; mac(2) keeps its own.
    assert_eq!(bind(&mut core, mac(3), 61), a);
    assert_eq!(bind(&mut core, mac(2), 62), b);
    assert!(core.lease_of(mac(1), 62).is_none());
    // mac(1) comes back: nothing free now.
    let out = core.handle(
        &msg(
            MessageType::Discover,
            mac(1),
            Ipv4Addr::UNSPECIFIED,
            None,
            None,
        ),
        63,
    );
    assert!(out.reply.is_none());
}

#[test]
fn offers_reserve_only_for_a_while() {
    let mut c = cfg();
    c.pool_end = Ipv4Addr::new(10, 77, 0, 2);
    let mut core = DhcpCore::new(c, vec![]);
    let offer = core.handle(
        &msg(
            MessageType::Discover,
            mac(1),
            Ipv4Addr::UNSPECIFIED,
            None,
            None,
        ),
        0,
    );
    assert_eq!(yiaddr(&offer), Ipv4Addr::new(10, 77, 0, 2));
    let out = core.handle(
        &msg(
            MessageType::Discover,
            mac(2),
            Ipv4Addr::UNSPECIFIED,
            None,
            None,
        ),
        1,
    );
    assert!(out.reply.is_none(), "the offer holds the only address");
    let out = core.handle(
        &msg(
            MessageType::Discover,
            mac(2),
            Ipv4Addr::UNSPECIFIED,
            None,
            None,
        ),
        OFFER_SECS + 1,
    );
    assert_eq!(yiaddr(&out), Ipv4Addr::new(10, 77, 0, 2));
}

#[test]
fn release_and_decline() {
    let mut core = DhcpCore::new(cfg(), vec![]);
    let a = bind(&mut core, mac(1), 0);
    let out = core.handle(&msg(MessageType::Release, mac(1), a, None, None), 5);
    assert!(out.reply.is_none() && out.leases_changed);
    assert!(core.lease_of(mac(1), 6).is_none());
    // Released but remembered: the client gets the same address back.
    assert_eq!(bind(&mut core, mac(1), 7), a);
    // DECLINE: the address is in use by someone unknown; not handed out for a while.
    let out = core.handle(
        &msg(
            MessageType::Decline,
            mac(1),
            Ipv4Addr::UNSPECIFIED,
            Some(a),
            None,
        ),
        8,
    );
    assert!(out.reply.is_none() && out.leases_changed);
    let next = bind(&mut core, mac(1), 9);
    assert_ne!(next, a);
    let other = bind(&mut core, mac(5), 10);
    assert_ne!(other, a);
    assert_ne!(
        bind(&mut core, mac(6), DECLINE_SECS + 9),
        Ipv4Addr::UNSPECIFIED
    );
}

#[test]
fn ignores_what_is_not_a_client_request() {
    let mut core = DhcpCore::new(cfg(), vec![]);
    let mut m = msg(
        MessageType::Discover,
        mac(1),
        Ipv4Addr::UNSPECIFIED,
        None,
        None,
    );
    m.set_opcode(Opcode::BootReply);
    assert!(core.handle(&m, 0).reply.is_none());
    let m = msg(
        MessageType::Offer,
        mac(1),
        Ipv4Addr::UNSPECIFIED,
        None,
        None,
    );
    assert!(core.handle(&m, 0).reply.is_none());
    let m = msg(
        MessageType::Discover,
        Mac([1, 0, 0, 0, 0, 1]),
        Ipv4Addr::UNSPECIFIED,
        None,
        None,
    );
    assert!(core.handle(&m, 0).reply.is_none());
    let mut m = msg(
        MessageType::Discover,
        mac(1),
        Ipv4Addr::UNSPECIFIED,
        None,
        None,
    );
    m.set_giaddr(Ipv4Addr::new(1, 2, 3, 4));
    assert!(core.handle(&m, 0).reply.is_none());
    let (r, out) = core.handle_bytes(&[1, 2, 3], 0);
    assert!(r.is_none() && out.note.is_some());
    // A header claiming a 200-byte hardware address must not panic.
    let mut bytes = Vec::new();
    msg(
        MessageType::Discover,
        mac(1),
        Ipv4Addr::UNSPECIFIED,
        None,
        None,
    )
    .encode(&mut Encoder::new(&mut bytes))
    .unwrap();
    bytes[2] = 200;
    assert!(core.handle_bytes(&bytes, 0).0.is_none());
    bytes[2] = 6;
    let (r, _) = core.handle_bytes(&bytes, 0);
    assert!(r.is_some_and(|(b, d)| b.len() >= 240 && d == Ipv4Addr::BROADCAST));
}

#[test]
fn leases_persist_across_a_restart() {
    let dir = std::env::temp_dir().join(format!("keel-net-leases-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("leases.json");
    let mut core = DhcpCore::new(cfg(), leases::load(&file).unwrap());
    let a = bind(&mut core, mac(1), 1000);
    let b = bind(&mut core, mac(2), 1000);
    leases::save(&file, &core.leases()).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("02:4b:00:00:00:01") && text.contains("10.77.0.2"),
        "{text}"
    );
    // Restart: the leases are kept, a returning client gets its address
    // and a new one does not get a leased address.
    let mut core = DhcpCore::new(cfg(), leases::load(&file).unwrap());
    assert_eq!(core.lease_of(mac(1), 1001).unwrap().ip, a);
    assert_eq!(bind(&mut core, mac(2), 1002), b);
    let c = bind(&mut core, mac(3), 1003);
    assert!(c != a && c != b);
    // Leases of another subnet (config changed) are dropped on load.
    let other = DhcpConfig::new("10.88.0.0/24".parse().unwrap(), Ipv4Addr::new(10, 88, 0, 1));
    assert!(DhcpCore::new(other, leases::load(&file).unwrap())
        .leases()
        .is_empty());
    // A corrupt file is a clear error, not a panic.
    std::fs::write(&file, "{not json").unwrap();
    let e = leases::load(&file).unwrap_err().to_string();
    assert!(
        e.starts_with("Lease file") && e.contains("not valid"),
        "{e}"
    );
    assert!(leases::load(&dir.join("missing.json")).unwrap().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_validation_and_resolvers() {
    assert!(cfg().validate().is_ok());
    let mut c = cfg();
    c.gateway = Ipv4Addr::new(10, 77, 0, 255);
    assert!(matches!(c.validate(), Err(ConfigError::Gateway(..))));
    let mut c = cfg();
    c.pool_start = Ipv4Addr::new(10, 77, 0, 9);
    c.pool_end = Ipv4Addr::new(10, 77, 0, 8);
    assert!(matches!(c.validate(), Err(ConfigError::Pool(..))));
    let mut c = cfg();
    c.pool_start = GW;
    c.pool_end = GW;
    assert!(matches!(c.validate(), Err(ConfigError::EmptyPool(..))));
    let mut c = cfg();
    c.lease_secs = 5;
    assert!(matches!(c.validate(), Err(ConfigError::LeaseTime(5))));
    let rc = "# x\nnameserver 127.0.0.53\nnameserver 9.9.9.9\nnameserver ::1\nsearch lan\nnameserver 1.1.1.1 # c\n";
    assert_eq!(
        resolvers_from(rc),
        vec![Ipv4Addr::new(9, 9, 9, 9), Ipv4Addr::new(1, 1, 1, 1)]
    );
    assert!(!default_dns(GW).is_empty());
}

#[test]
fn duplicate_or_foreign_leases_in_a_file_are_dropped_on_load() {
    let l = |m: u8, ip: [u8; 4], expires: u64| Lease {
        mac: mac(m),
        ip: Ipv4Addr::from(ip),
        expires,
        hostname: None,
    };
    let loaded = vec![
        l(1, [10, 77, 0, 5], 0),
        l(2, [10, 77, 0, 5], 0),
        l(3, [10, 77, 0, 1], 99),
        l(4, [10, 77, 1, 5], 99),
        Lease {
            mac: Mac([1, 0, 0, 0, 0, 1]),
            ip: Ipv4Addr::new(10, 77, 0, 9),
            expires: 99,
            hostname: None,
        },
    ];
    let core = DhcpCore::new(cfg(), loaded);
    assert_eq!(core.leases(), vec![l(1, [10, 77, 0, 5], 0)]);
}

#[test]
fn options_that_crash_the_decoder_are_stripped() {
    let mut core = DhcpCore::new(cfg(), vec![]);
    let mut bytes = Vec::new();
    msg(
        MessageType::Discover,
        mac(1),
        Ipv4Addr::UNSPECIFIED,
        None,
        None,
    )
    .encode(&mut Encoder::new(&mut bytes))
    .unwrap();
    assert_eq!(bytes.pop(), Some(255));
    // Bulk-leasequery base time with 2 bytes instead of 4, a rapid-commit
    // with a payload, a truncated option at the end.
    bytes.extend_from_slice(&[152, 2, 0, 0, 80, 1, 7, 12, 40, b'x']);
    let (r, out) = core.handle_bytes(&bytes, 0);
    assert!(r.is_some(), "{:?}", out.note);
    assert!(core::sanitize(&bytes[..200]).is_none());
    let mut bad_magic = bytes.clone();
    bad_magic[236] = 0;
    assert!(core::sanitize(&bad_magic).is_none());
}
