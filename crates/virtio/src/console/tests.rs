//! virtio-console end to end through the transport, in process: the test
//! plays the guest's driver on one side and host clients on the sockets.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::events::*;
use super::*;
use crate::features::{RING_EVENT_IDX, VERSION_1};
use crate::stream_testing::{StreamDriver, Used};
use crate::testing::*;

const CRX: u16 = 2;
const CTX: u16 = 3;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("keel-vcon-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spec(dir: &TempDir, name: &str, console: bool) -> PortSpec {
    PortSpec {
        name: name.into(),
        socket: dir.path(&format!("{name}.sock")),
        console,
    }
}

fn msg(id: u32, event: u16, value: u16) -> Vec<u8> {
    ControlHeader { id, event, value }.to_bytes().to_vec()
}

/// Parses what came back on the control receive queue.
fn decode(used: &[Used]) -> Vec<(u32, u16, u16, String)> {
    used.iter()
        .map(|u| {
            let h = ControlHeader::parse(&u.data).unwrap();
            let extra = String::from_utf8_lossy(&u.data[HEADER_LEN..]).into_owned();
            (h.id, h.event, h.value, extra)
        })
        .collect()
}

struct Rig {
    s: StreamDriver,
    queues: u16,
}

impl Rig {
    /// Plugs a console with `specs`, negotiates `features` and sets every
    /// queue up; gives the control receive queue `ctrl_bufs` buffers.
    fn new(specs: &[PortSpec], features: u64, ctrl_bufs: usize) -> Self {
        let d = TestDriver::new(Box::new(Console::bind(specs).unwrap()));
        let mut r = Rig {
            s: StreamDriver::new(d),
            queues: 0,
        };
        r.init(features, ctrl_bufs);
        r
    }

    fn from_device(console: Console) -> Self {
        let mut r = Rig {
            s: StreamDriver::new(TestDriver::new(Box::new(console))),
            queues: 0,
        };
        r.init(VERSION_1 | F_MULTIPORT, 8);
        r
    }

    fn init(&mut self, features: u64, ctrl_bufs: usize) {
        let d = &mut self.s.d;
        if !d.msix {
            d.enable_msix();
        }
        // As Linux: with EVENT_IDX, so kicks come only when asked for.
        let negotiated = d.init(features | RING_EVENT_IDX).unwrap();
        let max_ports = d.bar_read(d.caps.device + 4, 4) as u16;
        self.queues = 2 * max_ports + 2;
        for q in 0..self.queues {
            let size = if q == CRX || q == CTX {
                CONTROL_QUEUE_SIZE
            } else {
                PORT_QUEUE_SIZE
            };
            d.setup_queue(q, size.min(32));
        }
        d.driver_ok();
        self.s.forget_queues();
        self.s.event_idx = negotiated & RING_EVENT_IDX != 0;
        for _ in 0..ctrl_bufs {
            self.s.offer_nokick(CRX, 512);
        }
        self.s.notify(CRX);
    }

    /// Sends a control message and waits until the device took it.
    fn ctrl(&mut self, id: u32, event: u16, value: u16) {
        self.s.send(CTX, &msg(id, event, value));
        self.s.wait(CTX, 1);
    }

    fn expect_ctrl(&mut self, n: usize) -> Vec<(u32, u16, u16, String)> {
        let got = decode(&self.s.wait(CRX, n));
        for _ in 0..n {
            self.s.offer_nokick(CRX, 512);
        }
        self.s.notify(CRX);
        got
    }

    /// DEVICE_READY, then PORT_READY for each port added; returns the
    /// messages after PORT_ADD (CONSOLE_PORT, PORT_NAME, PORT_OPEN).
    fn handshake(&mut self, ports: usize) -> Vec<(u32, u16, u16, String)> {
        self.ctrl(BAD_ID, DEVICE_READY, 1);
        let adds = self.expect_ctrl(ports);
        let mut rest = Vec::new();
        for (id, event, value, _) in adds {
            assert_eq!((event, value), (PORT_ADD, 1));
            self.ctrl(id, PORT_READY, 1);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(100) {
            let got = self.s.poll(CRX);
            for _ in 0..got.len() {
                self.s.offer_nokick(CRX, 512);
            }
            self.s.notify(CRX);
            rest.extend(decode(&got));
            std::thread::sleep(Duration::from_millis(5));
        }
        rest
    }
}

fn connect(path: &Path) -> UnixStream {
    let c = UnixStream::connect(path).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c
}

fn read_exactly(c: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    c.read_exact(&mut b).unwrap();
    b
}

#[test]
fn offers_multiport_and_announces_named_ports() {
    let dir = TempDir::new("announce");
    let specs = [
        spec(&dir, "agent", false),
        spec(&dir, "org.keel.two", false),
    ];
    let mut r = Rig::new(&specs, VERSION_1 | F_MULTIPORT, 8);
    assert_eq!(r.queues, 8, "ports 0..2: 2 * 3 + 2 queues");
    assert_ne!(r.s.d.device_features() & F_MULTIPORT, 0);
    let rest = r.handshake(2);
    let mut names: Vec<(u32, String)> = rest
        .iter()
        .filter(|m| m.1 == PORT_NAME)
        .map(|m| (m.0, m.3.clone()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![(1, "agent".to_string()), (2, "org.keel.two".to_string())]
    );
    // No host client: no PORT_OPEN, no CONSOLE_PORT.
    assert!(rest.iter().all(|m| m.1 == PORT_NAME), "{rest:?}");
    assert_eq!(r.s.d.status() & S_NEEDS_RESET, 0);
}

#[test]
fn line_from_the_host_reaches_the_guest_and_the_answer_comes_back() {
    let dir = TempDir::new("echo");
    let specs = [spec(&dir, "agent", false)];
    let mut r = Rig::new(&specs, VERSION_1 | F_MULTIPORT, 8);
    r.handshake(1);
    // The host connects: the guest hears PORT_OPEN(1, 1).
    let mut host = connect(&specs[0].socket);
    assert_eq!(r.expect_ctrl(1), vec![(1, PORT_OPEN, 1, String::new())]);
    // The host writes before the guest opens the port: it waits.
    host.write_all(b"hello guest\n").unwrap();
    let (rx, tx) = (rx_queue(1) as u16, tx_queue(1) as u16);
    r.s.offer(rx, 4096);
    r.s.quiet(rx);
    // The guest opens the port and gets the line.
    r.ctrl(1, PORT_OPEN, 1);
    let got = r.s.wait(rx, 1);
    assert_eq!(got[0].data, b"hello guest\n");
    // The guest answers.
    r.s.send(tx, b"hello host\n");
    assert_eq!(r.s.wait(tx, 1)[0].len, 0);
    assert_eq!(read_exactly(&mut host, 11), b"hello host\n");
    // Big host writes are split over the guest's buffers.
    let big: Vec<u8> = (0..20000u32).map(|i| i as u8).collect();
    host.write_all(&big).unwrap();
    let mut got = Vec::new();
    while got.len() < big.len() {
        r.s.offer(rx, 4096);
        for u in r.s.wait(rx, 1) {
            assert!(u.data.len() <= 4096);
            got.extend(u.data);
        }
    }
    assert_eq!(got, big);
}

#[test]
fn host_disconnect_and_reconnect_are_reflected_as_port_open() {
    let dir = TempDir::new("reconnect");
    let specs = [spec(&dir, "agent", false)];
    let mut r = Rig::new(&specs, VERSION_1 | F_MULTIPORT, 8);
    r.handshake(1);
    let host = connect(&specs[0].socket);
    assert_eq!(r.expect_ctrl(1), vec![(1, PORT_OPEN, 1, String::new())]);
    // A second client waits while the first is connected.
    let mut second = connect(&specs[0].socket);
    r.s.quiet(CRX);
    drop(host);
    // The first leaves (closed port in the guest), the second is taken.
    let got = r.expect_ctrl(2);
    assert_eq!(
        got,
        vec![
            (1, PORT_OPEN, 0, String::new()),
            (1, PORT_OPEN, 1, String::new())
        ]
    );
    r.ctrl(1, PORT_OPEN, 1);
    r.s.send(tx_queue(1) as u16, b"to second");
    assert_eq!(read_exactly(&mut second, 9), b"to second");
}

#[test]
fn half_closed_client_still_gets_the_answer() {
    let dir = TempDir::new("halfclose");
    let specs = [spec(&dir, "agent", false)];
    let mut r = Rig::new(&specs, VERSION_1 | F_MULTIPORT, 8);
    r.handshake(1);
    r.ctrl(1, PORT_OPEN, 1);
    let mut host = connect(&specs[0].socket);
    assert_eq!(r.expect_ctrl(1), vec![(1, PORT_OPEN, 1, String::new())]);
    host.write_all(b"ping\n").unwrap();
    host.shutdown(std::net::Shutdown::Write).unwrap();
    let rx = rx_queue(1) as u16;
    r.s.offer(rx, 64);
    assert_eq!(r.s.wait(rx, 1)[0].data, b"ping\n");
    r.s.offer(rx, 64);
    r.s.quiet(rx);
    r.s.send(tx_queue(1) as u16, b"pong\n");
    assert_eq!(read_exactly(&mut host, 5), b"pong\n");
    // Closing entirely is a disconnect.
    drop(host);
    assert_eq!(r.expect_ctrl(1), vec![(1, PORT_OPEN, 0, String::new())]);
}

#[test]
fn guest_writes_without_a_client_are_dropped() {
    let dir = TempDir::new("noclient");
    let specs = [spec(&dir, "agent", false)];
    let mut r = Rig::new(&specs, VERSION_1 | F_MULTIPORT, 8);
    r.handshake(1);
    let tx = tx_queue(1) as u16;
    for _ in 0..3 {
        r.s.send(tx, b"into the void");
    }
    assert_eq!(r.s.wait(tx, 3).len(), 3);
    let mut host = connect(&specs[0].socket);
    r.expect_ctrl(1);
    r.s.send(tx, b"seen");
    r.s.wait(tx, 1);
    assert_eq!(read_exactly(&mut host, 4), b"seen");
}

#[test]
fn console_port_is_port_zero_and_announced_as_console() {
    let dir = TempDir::new("consoleport");
    let specs = [spec(&dir, "agent", false), spec(&dir, "con", true)];
    let mut r = Rig::new(&specs, VERSION_1 | F_MULTIPORT, 8);
    assert_eq!(r.queues, 6, "ports 0 (console) and 1");
    let _host = connect(&specs[1].socket);
    let rest = r.handshake(2);
    assert!(
        rest.contains(&(0, CONSOLE_PORT, 1, String::new())),
        "{rest:?}"
    );
    assert!(rest.contains(&(0, PORT_NAME, 1, "con".into())), "{rest:?}");
    assert!(rest.contains(&(0, PORT_OPEN, 1, String::new())), "{rest:?}");
    assert!(
        rest.contains(&(1, PORT_NAME, 1, "agent".into())),
        "{rest:?}"
    );
}

#[test]
fn hostile_control_messages_are_ignored() {
    let dir = TempDir::new("hostile");
    let specs = [spec(&dir, "agent", false)];
    let mut r = Rig::new(&specs, VERSION_1 | F_MULTIPORT, 0);
    // Bad ids, lengths and events, and PORT_READY before DEVICE_READY.
    let hostile: Vec<Vec<u8>> = vec![
        msg(77, PORT_READY, 1),
        msg(u32::MAX, PORT_OPEN, 1),
        msg(1, PORT_ADD, 1),
        msg(1, PORT_NAME, 1),
        msg(1, 999, 1),
        vec![1, 2, 3],
        vec![],
    ];
    for m in &hostile {
        r.s.send(CTX, m);
    }
    assert_eq!(r.s.wait(CTX, hostile.len()).len(), hostile.len());
    // A control buffer too small for a header comes back empty; the message
    // goes into the next one.
    let small = r.s.offer_nokick(CRX, 4);
    let big = r.s.offer(CRX, 512);
    r.ctrl(BAD_ID, DEVICE_READY, 1);
    let got = r.s.wait(CRX, 2);
    assert_eq!((got[0].head, got[0].len), (small, 0));
    assert_eq!(got[1].head, big);
    assert_eq!(decode(&got[1..]), vec![(1, PORT_ADD, 1, String::new())]);
    assert_eq!(r.s.d.status() & S_NEEDS_RESET, 0);
    // A flood of DEVICE_READY with no receive buffers stays bounded, and
    // the device still answers afterwards.
    for _ in 0..(MAX_CONTROL_PENDING + 64) / 16 {
        for _ in 0..16 {
            r.s.send_nokick(CTX, &msg(BAD_ID, DEVICE_READY, 1));
        }
        r.s.notify(CTX);
        r.s.wait(CTX, 16);
    }
    let mut answers = 0;
    'offer: loop {
        r.s.offer(CRX, 512);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            let n = r.s.poll(CRX).len();
            if n > 0 {
                answers += n;
                continue 'offer;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        break;
    }
    assert_eq!(answers, MAX_CONTROL_PENDING, "the surplus was dropped");
    r.ctrl(1, PORT_READY, 1);
    assert_eq!(r.s.wait(CRX, 1)[0].data[HEADER_LEN..], *b"agent");
    assert_eq!(r.s.d.status() & S_NEEDS_RESET, 0);
}

#[test]
fn hostile_data_chains_are_returned_and_the_port_keeps_working() {
    let dir = TempDir::new("hostiledata");
    let specs = [spec(&dir, "agent", false)];
    let mut r = Rig::new(&specs, VERSION_1 | F_MULTIPORT, 8);
    r.handshake(1);
    r.ctrl(1, PORT_OPEN, 1);
    let mut host = connect(&specs[0].socket);
    r.expect_ctrl(1);
    let (rx, tx) = (rx_queue(1) as u16, tx_queue(1) as u16);
    let q = r.s.d.queues[&tx];
    let mem_end = TEST_MEM_SIZE as u64;
    // A transmit buffer outside guest memory, and a writable one.
    q.write_desc(&r.s.d.mem, 20, DescSpec::new(mem_end - 4, 64, 0, 0));
    q.publish(&r.s.d.mem, 20);
    q.write_desc(&r.s.d.mem, 21, DescSpec::new(0x20_0000, 64, 2, 0));
    q.publish(&r.s.d.mem, 21);
    r.s.notify(tx);
    let start = Instant::now();
    while q.used_idx(&r.s.d.mem) != 2 {
        assert!(start.elapsed() < TIMEOUT);
        std::thread::sleep(Duration::from_millis(1));
    }
    r.s.poll(tx);
    // A read-only receive buffer is returned empty; the data waits.
    let rq = r.s.d.queues[&rx];
    rq.write_desc(&r.s.d.mem, 20, DescSpec::new(0x20_0000, 64, 0, 0));
    rq.publish(&r.s.d.mem, 20);
    host.write_all(b"after").unwrap();
    r.s.notify(rx);
    let start = Instant::now();
    while rq.used_idx(&r.s.d.mem) != 1 {
        assert!(start.elapsed() < TIMEOUT);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(rq.used_elem(&r.s.d.mem, 0), (20, 0));
    r.s.poll(rx);
    r.s.offer(rx, 64);
    assert_eq!(r.s.wait(rx, 1)[0].data, b"after");
    r.s.send(tx, b"ok");
    r.s.wait(tx, 1);
    assert_eq!(read_exactly(&mut host, 2), b"ok");
    assert_eq!(r.s.d.status() & S_NEEDS_RESET, 0);
}

#[test]
fn reset_keeps_the_client_and_a_new_driver_sees_it() {
    let dir = TempDir::new("reset");
    let specs = [spec(&dir, "agent", false)];
    let mut r = Rig::new(&specs, VERSION_1 | F_MULTIPORT, 8);
    r.handshake(1);
    let mut host = connect(&specs[0].socket);
    r.expect_ctrl(1);
    r.s.d.reset();
    r.init(VERSION_1 | F_MULTIPORT, 8);
    let rest = r.handshake(1);
    assert!(rest.contains(&(1, PORT_OPEN, 1, String::new())), "{rest:?}");
    r.ctrl(1, PORT_OPEN, 1);
    r.s.send(tx_queue(1) as u16, b"again");
    assert_eq!(read_exactly(&mut host, 5), b"again");
}

#[test]
fn single_port_driver_uses_port_zero() {
    let dir = TempDir::new("single");
    let specs = [spec(&dir, "con", true)];
    let d = TestDriver::new(Box::new(Console::bind(&specs).unwrap()));
    let mut s = StreamDriver::new(d);
    s.d.enable_msix();
    s.d.init(VERSION_1).unwrap();
    s.d.setup_queue(0, 16);
    s.d.setup_queue(1, 16);
    s.d.driver_ok();
    let mut host = connect(&specs[0].socket);
    host.write_all(b"x").unwrap();
    s.offer(0, 16);
    assert_eq!(s.wait(0, 1)[0].data, b"x");
    s.send(1, b"y");
    assert_eq!(read_exactly(&mut host, 1), b"y");
}

#[test]
fn bad_port_lists_are_refused() {
    let dir = TempDir::new("badspecs");
    let err = |specs: &[PortSpec]| Console::bind(specs).err().unwrap();
    assert!(matches!(err(&[]), ConsoleError::NoPorts));
    let a = spec(&dir, "a", false);
    let mut same_name = spec(&dir, "b", false);
    same_name.name = "a".into();
    assert!(matches!(
        err(&[a.clone(), same_name]),
        ConsoleError::DuplicateName(_)
    ));
    let mut same_socket = spec(&dir, "b", false);
    same_socket.socket = a.socket.clone();
    assert!(matches!(
        err(&[a.clone(), same_socket]),
        ConsoleError::DuplicateSocket(_)
    ));
    assert!(matches!(
        err(&[spec(&dir, "c1", true), spec(&dir, "c2", true)]),
        ConsoleError::TwoConsoles
    ));
    let mut bad = a.clone();
    bad.name = "../x".into();
    assert!(matches!(err(&[bad]), ConsoleError::BadName(_)));
    let many: Vec<PortSpec> = (0..=MAX_PORTS)
        .map(|i| spec(&dir, &format!("p{i}"), false))
        .collect();
    assert!(matches!(err(&many), ConsoleError::TooManyPorts(_)));
    let mut missing = a.clone();
    missing.socket = dir.path("no/such/dir/s.sock");
    assert!(matches!(err(&[missing]), ConsoleError::Socket { .. }));
    // A live socket is not stolen; the first device's socket stays usable.
    let first = Console::bind(std::slice::from_ref(&a)).unwrap();
    assert!(matches!(
        err(std::slice::from_ref(&a)),
        ConsoleError::Socket { .. }
    ));
    drop(first);
    assert!(!a.socket.exists(), "socket removed with the device");
}

#[test]
fn sockets_outlive_the_device_across_reboots() {
    let dir = TempDir::new("reboot");
    let specs = [spec(&dir, "agent", false)];
    let sockets = ConsoleSockets::bind(&specs).unwrap();
    let first = Rig::from_device(Console::new(&sockets));
    drop(first);
    assert!(specs[0].socket.exists(), "the socket stays between boots");
    // A client that connects between two boots waits for the next device.
    let mut host = connect(&specs[0].socket);
    let mut r = Rig::from_device(Console::new(&sockets));
    let rest = r.handshake(1);
    assert!(rest.contains(&(1, PORT_OPEN, 1, String::new())), "{rest:?}");
    r.ctrl(1, PORT_OPEN, 1);
    r.s.send(tx_queue(1) as u16, b"next boot");
    assert_eq!(read_exactly(&mut host, 9), b"next boot");
    drop(r);
    drop(sockets);
    assert!(!specs[0].socket.exists());
}
