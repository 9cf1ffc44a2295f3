//! Fuzzes virtio-vsock's parsers of untrusted input: the packet header a
//! guest writes (`Header::parse`, `check_guest_packet`) and the first line
//! a host client sends (`parse_connect_line`).
//!
//! Input layout: byte 0 picks how many payload bytes the packet's buffers
//! "carry" (scaled up to past 64 KiB), byte 1 the guest CID's low byte; the
//! rest is the packet (header, then payload) and also the CONNECT line.
//!
//! Besides "no panic": a parsed header writes back to the same 44 bytes; an
//! accepted packet comes from the guest's CID, goes to the host, is a
//! stream packet, carries its whole payload, has one only on RW and never
//! more than 64 KiB; an accepted CONNECT line names the port it spells.

#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio::vsock::{
    check_guest_packet, parse_connect_line, Header, Op, HEADER_LEN, HOST_CID, MAX_PAYLOAD,
    TYPE_STREAM,
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let carried = usize::from(data[0]) * 300;
    let cid = 3 + u64::from(data[1]);
    let packet = &data[2..];
    if let Ok(h) = Header::parse(packet) {
        assert_eq!(&h.to_bytes()[..], &packet[..HEADER_LEN]);
        for (carried, cid) in [(carried, cid), (packet.len() - HEADER_LEN, h.src_cid)] {
            if let Ok(op) = check_guest_packet(&h, carried, cid) {
                assert_eq!(h.src_cid, cid);
                assert_eq!(h.dst_cid, HOST_CID);
                assert_eq!(h.type_, TYPE_STREAM);
                assert!(h.len <= MAX_PAYLOAD);
                assert!(h.len as usize <= carried);
                if op != Op::Rw {
                    assert_eq!(h.len, 0);
                }
                if let Op::Shutdown { flags } = op {
                    assert_eq!(flags & !3, 0);
                }
            }
        }
    } else {
        assert!(packet.len() < HEADER_LEN);
    }
    let line = packet.split(|&b| b == b'\n').next().unwrap_or(&[]);
    if let Ok(port) = parse_connect_line(line) {
        let text = std::str::from_utf8(line).expect("accepted lines are UTF-8");
        let text = text.strip_suffix('\r').unwrap_or(text);
        let rest = text.strip_prefix("CONNECT ").expect("accepted lines say CONNECT");
        assert_eq!(rest.trim_matches(' ').parse::<u32>().ok(), Some(port));
    }
});
