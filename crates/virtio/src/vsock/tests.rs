//! virtio-vsock end to end through the transport, in process: the test
//! plays the guest's driver (its packets) and host programs (Unix sockets).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::features::{RING_EVENT_IDX, VERSION_1};
use crate::stream_testing::{StreamDriver, Used};
use crate::testing::*;
use vm_memory::Bytes;

const CID: u64 = 3;
const RX: u16 = RX_QUEUE;
const TX: u16 = TX_QUEUE;
const RXBUF: u32 = 4096 + HEADER_LEN as u32;

struct Rig {
    s: StreamDriver,
    dir: PathBuf,
    path: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rig {
    fn new(name: &str) -> Self {
        Self::with_queue(name, 64)
    }

    fn with_queue(name: &str, size: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("keel-vsock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.sock");
        let dev = Vsock::new(CID, &path).unwrap();
        let mut d = TestDriver::new(Box::new(dev));
        d.enable_msix();
        // As Linux: with EVENT_IDX, so kicks come only when asked for.
        d.init(VERSION_1 | RING_EVENT_IDX).unwrap();
        d.setup_queue(RX, size);
        d.setup_queue(TX, size);
        d.setup_queue(EVENT_QUEUE, 8);
        d.driver_ok();
        let mut s = StreamDriver::new(d);
        s.event_idx = true;
        Self { s, dir, path }
    }

    /// A host listener on `PATH_<port>`.
    fn host_listener(&self, port: u32) -> UnixListener {
        let p = format!("{}_{port}", self.path.display());
        UnixListener::bind(p).unwrap()
    }

    fn send(&mut self, h: Header, payload: &[u8]) {
        let mut b = h.to_bytes().to_vec();
        b.extend_from_slice(payload);
        self.s.send(TX, &b);
        self.s.wait(TX, 1);
    }

    fn give_rx(&mut self, n: usize) {
        for _ in 0..n {
            self.s.offer_nokick(RX, RXBUF);
        }
        self.s.notify(RX);
    }

    /// Waits for `n` packets on the receive queue (offering as many again).
    fn recv(&mut self, n: usize) -> Vec<(Header, Vec<u8>)> {
        let got = self.s.wait(RX, n);
        self.give_rx(n);
        got.iter().map(decode).collect()
    }

    fn recv_one(&mut self) -> (Header, Vec<u8>) {
        self.recv(1).remove(0)
    }

    fn status_ok(&mut self) {
        assert_eq!(self.s.d.status() & S_NEEDS_RESET, 0, "device broke");
    }
}

fn decode(u: &Used) -> (Header, Vec<u8>) {
    assert!(u.data.len() >= HEADER_LEN, "short packet {u:?}");
    let h = Header::parse(&u.data).unwrap();
    assert_eq!(u.len as usize, HEADER_LEN + h.len as usize);
    (h, u.data[HEADER_LEN..].to_vec())
}

fn pkt(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 1 << 20,
        fwd_cnt: 0,
    }
}

fn rw(src_port: u32, dst_port: u32, len: usize) -> Header {
    Header {
        len: len as u32,
        ..pkt(OP_RW, src_port, dst_port)
    }
}

fn timed(c: &UnixStream) {
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
}

fn read_n(c: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    c.read_exact(&mut b).unwrap();
    b
}

fn read_line(c: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while c.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

/// The guest connects from port 1000 to host port `port` (which listens):
/// returns the host's side.
fn guest_connect(r: &mut Rig, l: &UnixListener, port: u32) -> UnixStream {
    r.send(pkt(OP_REQUEST, 1000, port), b"");
    let (h, _) = r.recv_one();
    assert_eq!(h.op, OP_RESPONSE, "{h:?}");
    let (c, _) = l.accept().unwrap();
    timed(&c);
    c
}

#[test]
fn config_has_the_guest_cid_and_no_features() {
    let mut r = Rig::new("config");
    let d = &mut r.s.d;
    let lo = d.bar_read(d.caps.device, 4);
    let hi = d.bar_read(d.caps.device + 4, 4);
    assert_eq!(lo | (hi << 32), CID);
    assert_eq!(
        d.device_features() & 0xff_ffff,
        0,
        "no device-specific feature"
    );
    for bad in [0, 1, 2, u64::from(u32::MAX), u64::MAX] {
        assert!(matches!(
            Vsock::new(bad, &r.dir.join("x")),
            Err(VsockError::BadCid(_))
        ));
    }
    let long = r.dir.join("y".repeat(100));
    assert!(matches!(
        Vsock::new(5, &long),
        Err(VsockError::PathTooLong(_))
    ));
}

#[test]
fn guest_connects_to_a_host_socket_and_data_flows_both_ways() {
    let mut r = Rig::new("guestconn");
    r.give_rx(8);
    let l = r.host_listener(1234);
    r.send(pkt(OP_REQUEST, 1000, 1234), b"");
    let (h, _) = r.recv_one();
    assert_eq!(
        (h.op, h.src_cid, h.dst_cid, h.src_port, h.dst_port),
        (OP_RESPONSE, HOST_CID, CID, 1234, 1000)
    );
    assert_eq!(h.buf_alloc, CONN_BUF);
    let (mut host, _) = l.accept().unwrap();
    timed(&host);
    // Guest → host, in a two-descriptor packet as Linux 6.1 sends it.
    let hdr = rw(1000, 1234, 5).to_bytes();
    let a = r.s.d.alloc(HEADER_LEN as u64);
    let b = r.s.d.alloc(5);
    r.s.d
        .mem
        .write_slice(&hdr, vm_memory::GuestAddress(a))
        .unwrap();
    r.s.d
        .mem
        .write_slice(b"hello", vm_memory::GuestAddress(b))
        .unwrap();
    r.s.d
        .add_chain(TX, 40, &[(a, HEADER_LEN as u32, 0), (b, 5, 0)]);
    r.s.notify(TX);
    r.s.wait(TX, 1);
    assert_eq!(read_n(&mut host, 5), b"hello");
    // Host → guest.
    host.write_all(b"world!").unwrap();
    let (h, data) = r.recv_one();
    assert_eq!(
        (h.op, h.len, h.src_port, h.dst_port),
        (OP_RW, 6, 1234, 1000)
    );
    assert_eq!(data, b"world!");
    assert_eq!(h.fwd_cnt, 5, "our credit counts what reached the host");
    // The guest closes: SHUTDOWN both, we flush, RST, and the host sees EOF.
    let mut s = pkt(OP_SHUTDOWN, 1000, 1234);
    s.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    r.send(s, b"");
    let (h, _) = r.recv_one();
    assert_eq!(h.op, OP_RST);
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    r.status_ok();
}

#[test]
fn guest_connect_to_nothing_is_reset() {
    let mut r = Rig::new("refused");
    r.give_rx(4);
    r.send(pkt(OP_REQUEST, 1000, 4321), b"");
    let (h, _) = r.recv_one();
    assert_eq!(
        (h.op, h.src_port, h.dst_port, h.dst_cid),
        (OP_RST, 4321, 1000, CID)
    );
}

#[test]
fn host_connects_to_a_guest_listener() {
    let mut r = Rig::new("hostconn");
    r.give_rx(8);
    let mut host = UnixStream::connect(&r.path).unwrap();
    timed(&host);
    // Data right after the line belongs to the stream.
    host.write_all(b"CONNECT 5000\nearly").unwrap();
    let (req, _) = r.recv_one();
    assert_eq!(
        (req.op, req.src_cid, req.dst_cid, req.dst_port),
        (OP_REQUEST, HOST_CID, CID, 5000)
    );
    assert!(req.src_port >= FIRST_LOCAL_PORT);
    let hp = req.src_port;
    r.send(pkt(OP_RESPONSE, 5000, hp), b"");
    assert_eq!(read_line(&mut host), format!("OK {hp}"));
    let (h, data) = r.recv_one();
    assert_eq!((h.op, h.dst_port), (OP_RW, 5000));
    assert_eq!(data, b"early");
    r.send(rw(5000, hp, 4), b"pong");
    assert_eq!(read_n(&mut host, 4), b"pong");
    // The host half-closes: the guest hears SHUTDOWN(SEND) and may answer.
    host.shutdown(std::net::Shutdown::Write).unwrap();
    let (h, _) = r.recv_one();
    assert_eq!((h.op, h.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
    r.send(rw(5000, hp, 3), b"bye");
    assert_eq!(read_n(&mut host, 3), b"bye");
    // The guest is done sending too: both sides are done, RST ends it.
    let mut s = pkt(OP_SHUTDOWN, 5000, hp);
    s.flags = SHUTDOWN_SEND;
    r.send(s, b"");
    let (h, _) = r.recv_one();
    assert_eq!(h.op, OP_RST);
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn host_connect_unanswered_times_out_and_refused_closes() {
    let mut r = Rig::new("timeout");
    r.give_rx(8);
    let mut host = UnixStream::connect(&r.path).unwrap();
    timed(&host);
    host.write_all(b"CONNECT 77\n").unwrap();
    let (req, _) = r.recv_one();
    assert_eq!(req.op, OP_REQUEST);
    // The guest never answers: RST after the timeout, the host sees EOF.
    let start = Instant::now();
    let (h, _) = r.recv_one();
    assert_eq!((h.op, h.src_port), (OP_RST, req.src_port));
    assert!(start.elapsed() >= CONNECT_TIMEOUT - Duration::from_millis(300));
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "no OK line");
    // A guest refusing with RST closes the host's stream at once.
    let mut host = UnixStream::connect(&r.path).unwrap();
    timed(&host);
    host.write_all(b"CONNECT 78\n").unwrap();
    let (req, _) = r.recv_one();
    r.send(pkt(OP_RST, 78, req.src_port), b"");
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    // A bad first line closes too.
    let mut host = UnixStream::connect(&r.path).unwrap();
    timed(&host);
    host.write_all(b"HELLO\n").unwrap();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    r.s.quiet(RX);
}

#[test]
fn host_to_guest_data_respects_the_guest_credit() {
    let mut r = Rig::new("credit");
    r.give_rx(8);
    let l = r.host_listener(99);
    let mut req = pkt(OP_REQUEST, 1000, 99);
    req.buf_alloc = 100;
    r.send(req, b"");
    assert_eq!(r.recv_one().0.op, OP_RESPONSE);
    let (mut host, _) = l.accept().unwrap();
    host.write_all(&[7u8; 250]).unwrap();
    let (h, data) = r.recv_one();
    assert_eq!((h.op, data.len()), (OP_RW, 100));
    // No credit left: one CREDIT_REQUEST, then silence.
    let (h, _) = r.recv_one();
    assert_eq!(h.op, OP_CREDIT_REQUEST);
    r.s.quiet(RX);
    // The guest consumed 100 bytes.
    let mut up = pkt(OP_CREDIT_UPDATE, 1000, 99);
    up.buf_alloc = 100;
    up.fwd_cnt = 100;
    r.send(up, b"");
    let (h, data) = r.recv_one();
    assert_eq!((h.op, data.len()), (OP_RW, 100));
    assert_eq!(r.recv_one().0.op, OP_CREDIT_REQUEST);
    // A guest claiming it consumed more than it got gains nothing.
    up.fwd_cnt = 10_000;
    r.send(up, b"");
    assert_eq!(r.recv_one().0.op, OP_CREDIT_REQUEST);
    r.s.quiet(RX);
    // A credit request from the guest is answered.
    r.send(pkt(OP_CREDIT_REQUEST, 1000, 99), b"");
    let (h, _) = r.recv_one();
    assert_eq!(h.op, OP_CREDIT_UPDATE);
    r.status_ok();
}

#[test]
fn guest_past_our_credit_is_reset_and_buffering_stays_bounded() {
    let mut r = Rig::new("overflow");
    r.give_rx(8);
    let l = r.host_listener(5);
    let host = guest_connect(&mut r, &l, 5);
    // The host never reads: the socket fills, then our buffer, then RST.
    let chunk = vec![1u8; 4096];
    let mut sent = 0usize;
    loop {
        r.send(rw(1000, 5, chunk.len()), &chunk);
        sent += chunk.len();
        let got: Vec<u16> = r.s.poll(RX).iter().map(|u| decode(u).0.op).collect();
        assert!(
            got.iter().all(|&op| op == OP_RST || op == OP_CREDIT_UPDATE),
            "{got:?}"
        );
        r.give_rx(got.len());
        if got.contains(&OP_RST) {
            break;
        }
        assert!(sent < 64 << 20, "never reset after {sent} bytes");
    }
    // At most the socket's buffer plus CONN_BUF was taken.
    assert!(sent < CONN_BUF as usize + (8 << 20), "{sent}");
    drop(host);
    r.status_ok();
}

#[test]
fn hostile_packets_get_rst_or_are_dropped_and_the_device_lives() {
    let mut r = Rig::new("hostile");
    r.give_rx(32);
    let l = r.host_listener(7);
    let _host = guest_connect(&mut r, &l, 7);
    // (packet, payload bytes carried, expect a RST)
    let mut cases: Vec<(&str, Header, Vec<u8>, bool)> = vec![
        ("unknown op", pkt(42, 1, 2), vec![], true),
        ("op 0", pkt(0, 1, 2), vec![], true),
        ("RW for no connection", rw(1, 2, 3), b"abc".to_vec(), true),
        (
            "RESPONSE for no connection",
            pkt(OP_RESPONSE, 1, 2),
            vec![],
            true,
        ),
        ("RST for no connection", pkt(OP_RST, 1, 2), vec![], false),
        ("len past the buffer", rw(1, 2, 100), vec![0; 10], true),
        ("len past 64 KiB", rw(1, 2, 70_000), vec![], true),
        ("len u32::MAX", rw(1, 2, u32::MAX as usize), vec![], true),
        (
            "payload on REQUEST",
            Header {
                len: 3,
                ..pkt(OP_REQUEST, 1, 2)
            },
            b"abc".to_vec(),
            true,
        ),
        (
            "seqpacket",
            Header {
                type_: 2,
                ..pkt(OP_REQUEST, 1, 2)
            },
            vec![],
            true,
        ),
        (
            "spoofed source CID",
            Header {
                src_cid: 9,
                ..pkt(OP_REQUEST, 1, 2)
            },
            vec![],
            false,
        ),
    ];
    let mut other_cid = pkt(OP_REQUEST, 1, 2);
    other_cid.dst_cid = 5;
    cases.push(("another VM's CID", other_cid, vec![], true));
    for (name, h, payload, want_rst) in cases {
        r.send(h, &payload);
        if want_rst {
            let (got, _) = r.recv_one();
            assert_eq!(got.op, OP_RST, "{name}");
            assert_eq!(
                (got.src_cid, got.src_port, got.dst_port),
                (h.dst_cid, h.dst_port, h.src_port),
                "{name}"
            );
            assert_eq!(got.dst_cid, CID, "{name}");
        } else {
            r.s.quiet(RX);
        }
    }
    // Packets shorter than a header, and buffers outside memory: dropped.
    r.s.send(TX, &[0u8; 20]);
    r.s.wait(TX, 1);
    let q = r.s.d.queues[&TX];
    q.write_desc(
        &r.s.d.mem,
        50,
        DescSpec::new(TEST_MEM_SIZE as u64 - 8, 64, 0, 0),
    );
    q.publish(&r.s.d.mem, 50);
    r.s.notify(TX);
    r.s.wait(TX, 1);
    r.s.quiet(RX);
    // A REQUEST on an existing connection is a protocol error: RST.
    r.send(pkt(OP_REQUEST, 1000, 7), b"");
    assert_eq!(r.recv_one().0.op, OP_RST);
    r.status_ok();
    // Still works.
    let l2 = r.host_listener(8);
    r.give_rx(8);
    let mut h2 = {
        r.send(pkt(OP_REQUEST, 1001, 8), b"");
        let (h, _) = r.recv(1).remove(0);
        assert_eq!(h.op, OP_RESPONSE);
        l2.accept().unwrap().0
    };
    r.send(rw(1001, 8, 2), b"ok");
    assert_eq!(read_n(&mut h2, 2), b"ok");
}

#[test]
fn receive_buffers_too_small_for_a_header_come_back_empty() {
    let mut r = Rig::new("smallrx");
    let small = r.s.offer_nokick(RX, 10);
    let big = r.s.offer(RX, RXBUF);
    r.send(pkt(OP_RW, 3, 3), b"");
    let got = r.s.wait(RX, 2);
    assert_eq!((got[0].head, got[0].len), (small, 0));
    assert_eq!(got[1].head, big);
    assert_eq!(decode(&got[1]).0.op, OP_RST);
    r.status_ok();
}

#[test]
fn a_flood_of_refused_requests_stalls_the_queue_instead_of_growing() {
    let mut r = Rig::with_queue("floodrst", 256);
    // No receive buffers: every answer must wait. The device takes
    // requests until MAX_CONTROL_PENDING answers wait, then stops.
    let mut published = 0u32;
    let mut consumed = 0usize;
    while published < MAX_CONTROL_PENDING as u32 + 192 {
        for _ in 0..64 {
            r.s.send_nokick(TX, &pkt(OP_REQUEST, 10_000 + published, 1).to_bytes());
            published += 1;
        }
        r.s.notify(TX);
        // Let the device take what it will.
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            consumed += r.s.poll(TX).len();
            if consumed == published as usize {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert_eq!(
        consumed, MAX_CONTROL_PENDING,
        "taken while no answer could go out"
    );
    r.status_ok();
    // Buffers arrive: answers flow, the rest of the requests are taken and
    // answered too.
    let (mut rsts, mut given) = (0usize, 0usize);
    let start = Instant::now();
    while rsts < published as usize {
        if given - rsts < 128 {
            r.give_rx(32);
            given += 32;
        }
        std::thread::sleep(Duration::from_millis(2));
        for u in r.s.poll(RX) {
            let (h, _) = decode(&u);
            assert_eq!(h.op, OP_RST);
            rsts += 1;
        }
        consumed += r.s.poll(TX).len();
        assert!(start.elapsed() < TIMEOUT * 4, "{rsts} answers");
    }
    assert_eq!(consumed, published as usize);
    r.status_ok();
}

#[test]
fn a_flood_of_connections_is_capped() {
    let mut r = Rig::with_queue("floodconn", 256);
    let _l = r.host_listener(9); // never accepts
    let mut responses = 0;
    let mut rsts = 0;
    let total = MAX_CONNECTIONS + 40;
    for i in 0..total {
        r.s.offer(RX, RXBUF);
        r.send(pkt(OP_REQUEST, 20_000 + i as u32, 9), b"");
        let (h, _) = decode(&r.s.wait(RX, 1)[0]);
        match h.op {
            OP_RESPONSE => responses += 1,
            OP_RST => rsts += 1,
            op => panic!("op {op}"),
        }
    }
    assert!(responses <= MAX_CONNECTIONS, "{responses}");
    assert_eq!(responses + rsts, total);
    assert!(rsts >= 40);
    r.status_ok();
}

#[test]
fn reset_ends_connections_and_a_new_driver_works() {
    let mut r = Rig::new("reset");
    r.give_rx(8);
    let l = r.host_listener(3);
    let mut host = guest_connect(&mut r, &l, 3);
    r.s.d.reset();
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "connection closed with the driver");
    let d = &mut r.s.d;
    d.init(VERSION_1 | RING_EVENT_IDX).unwrap();
    d.setup_queue(RX, 64);
    d.setup_queue(TX, 64);
    d.setup_queue(EVENT_QUEUE, 8);
    d.driver_ok();
    r.s.forget_queues();
    r.give_rx(8);
    let mut host = guest_connect(&mut r, &l, 3);
    r.send(rw(1000, 3, 1), b"x");
    assert_eq!(read_n(&mut host, 1), b"x");
    // The listener survived the reset.
    let mut c = UnixStream::connect(&r.path).unwrap();
    c.write_all(b"CONNECT 1\n").unwrap();
    assert_eq!(r.recv_one().0.op, OP_REQUEST);
}

#[test]
fn host_clients_that_never_send_their_line_are_bounded() {
    let mut r = Rig::new("pendinghost");
    r.give_rx(8);
    let extra = 8;
    let clients: Vec<UnixStream> = (0..MAX_PENDING_HOST + extra)
        .map(|_| UnixStream::connect(&r.path).unwrap())
        .collect();
    // The surplus is closed at once; the others wait for their line.
    let mut closed = 0;
    for c in &clients {
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut b = [0u8; 1];
        if matches!((&*c).read(&mut b), Ok(0)) {
            closed += 1;
        }
    }
    assert_eq!(closed, extra);
    // While the slots are taken, a new client is refused too (it may
    // already be closed when it writes its line).
    let c = UnixStream::connect(&r.path).unwrap();
    assert!(refused(c, b"CONNECT 1\n"), "a client past the cap was kept");
    r.s.quiet(RX);
    // The silent clients leave: the slots free up once the worker has seen
    // the hang-ups, which a busy machine may delay; bounded retries.
    drop(clients);
    let kept = (0..100).find_map(|_| {
        let c = UnixStream::connect(&r.path).unwrap();
        if refused(c.try_clone().unwrap(), b"CONNECT 2\n") {
            std::thread::sleep(Duration::from_millis(50));
            return None;
        }
        Some(c) // stays open until the request is checked
    });
    assert!(kept.is_some(), "the slots never freed up");
    let (h, _) = r.recv_one();
    assert_eq!((h.op, h.dst_port), (OP_REQUEST, 2));
}

/// Sends `line` and reports whether the worker closed the connection
/// instead of keeping it (a kept one stays open past a short wait).
fn refused(mut c: UnixStream, line: &[u8]) -> bool {
    if c.write_all(line).is_err() {
        return true;
    }
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut b = [0u8; 1];
    match c.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}
