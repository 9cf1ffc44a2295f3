//! Fuzzes the DHCP server's core (what any VM on the default network can
//! send): a stream of datagrams, each handled at a time the input chooses.
//!
//! Besides "no panic": every reply encodes to a datagram that decodes as a
//! BOOTREPLY for the same transaction; no two clients hold the same address
//! at once; every lease is in the pool and never the gateway; a lease file
//! written from the table loads back to the same leases.

#![no_main]

use std::collections::HashMap;
use std::net::Ipv4Addr;

use dhcproto::v4::{Message, Opcode};
use dhcproto::{Decodable, Decoder};
use libfuzzer_sys::fuzz_target;
use net::dhcp::{DhcpConfig, DhcpCore};

fuzz_target!(|data: &[u8]| {
    let gw = Ipv4Addr::new(10, 77, 0, 1);
    let mut cfg = DhcpConfig::new("10.77.0.0/24".parse().unwrap(), gw);
    // A tiny pool so exhaustion and reuse are common.
    cfg.pool_end = Ipv4Addr::new(10, 77, 0, 4);
    cfg.lease_secs = 60;
    let mut core = DhcpCore::new(cfg.clone(), Vec::new());
    let mut now = 1_000u64;
    // Chunks: [time step, len_hi, len_lo, bytes...].
    let mut rest = data;
    while rest.len() >= 3 {
        now += u64::from(rest[0]);
        let len = (usize::from(rest[1]) << 8 | usize::from(rest[2])).min(rest.len() - 3);
        let (msg, tail) = rest[3..].split_at(len);
        rest = tail;
        let (reply, _out) = core.handle_bytes(msg, now);
        if let Some((bytes, _dest)) = reply {
            let back = Message::decode(&mut Decoder::new(&bytes)).expect("reply decodes");
            assert_eq!(back.opcode(), Opcode::BootReply);
        }
        let mut holders = HashMap::new();
        for l in core.leases() {
            assert!(cfg.in_pool(l.ip) && l.ip != gw, "lease outside the pool: {l:?}");
            if l.expires > now {
                assert!(holders.insert(l.ip, l.mac).is_none(), "two clients hold {}", l.ip);
            }
        }
    }
    let json = serde_json::to_string(&core.leases()).unwrap();
    let back: Vec<net::dhcp::Lease> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, core.leases());
});
