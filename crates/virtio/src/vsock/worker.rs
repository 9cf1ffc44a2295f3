//! virtio-vsock I/O on the device's worker thread: the guest's packets on
//! the transmit queue, ours on the receive queue, and the host side over
//! Unix sockets, the way Firecracker does it:
//!
//! - a guest connecting to the host (CID 2) port P is connected to the Unix
//!   socket `PATH_P`;
//! - a host program connecting to `PATH` and writing `CONNECT <port>\n` is
//!   connected to the guest's listener on that port, and reads
//!   `OK <hostport>\n` once the guest accepted.
//!
//! Everything a guest can make the VMM hold is bounded: at most
//! [`MAX_CONNECTIONS`] connections, [`super::conn::CONN_BUF`] bytes waiting
//! per connection, [`MAX_CONTROL_PENDING`] answers to packets of no
//! connection (past that, the transmit queue waits for the guest to take
//! them).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use super::conn::{Conn, ConnKey, ConnState};
use super::packet::{self, Header, Op, PacketError, HEADER_LEN, MAX_PAYLOAD};
use crate::chain;
use crate::queue::QueueError;
use crate::unix::{self, SocketListener};
use crate::worker::{QueueHandler, WorkerContext};

pub const RX_QUEUE: u16 = 0;
pub const TX_QUEUE: u16 = 1;
pub const EVENT_QUEUE: u16 = 2;

/// Connections at most (both directions together, host clients still
/// sending their CONNECT line included).
pub const MAX_CONNECTIONS: usize = 128;
/// Host clients that have not sent their CONNECT line yet, at most.
pub const MAX_PENDING_HOST: usize = 32;
/// Answers (RST) to packets of no connection waiting for receive buffers.
pub const MAX_CONTROL_PENDING: usize = 256;
/// How long the guest has to answer a host client's connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a host client has to send its CONNECT line.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection may take to finish.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first port the host side uses for connections it initiates.
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;

const TOKEN_LISTENER: u64 = 0;
const TOKEN_TIMER: u64 = 1;
const FIRST_TOKEN: u64 = 2;
const TICK: Duration = Duration::from_millis(250);

fn log(what: impl std::fmt::Display) {
    eprintln!("keel-vmm: virtio-vsock: {what}");
}

enum Owner {
    Conn(ConnKey),
    Pending,
}

/// A host client that has not sent its CONNECT line yet.
struct PendingHost {
    stream: std::os::unix::net::UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

/// What one receive buffer carries.
struct Outgoing {
    header: Header,
    payload: usize,
    /// The connection ends once this (RST) packet is out.
    remove: Option<ConnKey>,
}

pub(crate) struct VsockHandler {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: Arc<SocketListener>,
    conns: HashMap<ConnKey, Conn>,
    owners: HashMap<u64, Owner>,
    pending: HashMap<u64, PendingHost>,
    next_token: u64,
    next_local_port: u32,
    control: VecDeque<Header>,
    ready: VecDeque<ConnKey>,
    tx_stalled: bool,
    timer: Option<TimerFd>,
    timer_armed: bool,
    rx_pos: Option<usize>,
    tx_pos: Option<usize>,
    dirty: [bool; 2],
    scratch: Vec<u8>,
    bad_packets: u64,
}

impl VsockHandler {
    pub(crate) fn new(guest_cid: u64, uds_path: PathBuf, listener: Arc<SocketListener>) -> Self {
        Self {
            guest_cid,
            uds_path,
            listener,
            conns: HashMap::new(),
            owners: HashMap::new(),
            pending: HashMap::new(),
            next_token: FIRST_TOKEN,
            next_local_port: FIRST_LOCAL_PORT,
            control: VecDeque::new(),
            ready: VecDeque::new(),
            tx_stalled: false,
            timer: None,
            timer_armed: false,
            rx_pos: None,
            tx_pos: None,
            dirty: [false; 2],
            scratch: vec![0; HEADER_LEN + MAX_PAYLOAD as usize],
            bad_packets: 0,
        }
    }

    fn bad(&mut self, what: impl std::fmt::Display) {
        if self.bad_packets < 8 {
            log(format_args!("dropping a packet from the guest: {what}"));
        }
        self.bad_packets += 1;
    }

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    fn arm_timer(&mut self) {
        if self.timer_armed {
            return;
        }
        if let Some(t) = self.timer.as_mut() {
            if t.reset(TICK, Some(TICK)).is_ok() {
                self.timer_armed = true;
            }
        }
    }

    /// Puts `key` on the ready list if it has something for the guest.
    fn schedule(&mut self, key: ConnKey) {
        if let Some(c) = self.conns.get_mut(&key) {
            if !c.in_ready && c.wants_rx() {
                c.in_ready = true;
                self.ready.push_back(key);
            }
        }
    }

    /// Answers a packet with RST (addressed back to its sender).
    fn rst_reply(&mut self, h: &Header) {
        if h.op == packet::OP_RST || self.control.len() >= MAX_CONTROL_PENDING {
            return;
        }
        self.control.push_back(Header {
            src_cid: h.dst_cid,
            dst_cid: self.guest_cid,
            src_port: h.dst_port,
            dst_port: h.src_port,
            len: 0,
            type_: packet::TYPE_STREAM,
            op: packet::OP_RST,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        });
    }

    fn remove_conn(&mut self, ctx: &WorkerContext, key: ConnKey) {
        if let Some(c) = self.conns.remove(&key) {
            let _ = ctx.unwatch(c.stream.as_raw_fd());
            self.owners.remove(&c.token);
        }
    }

    /// Ends a connection with a RST to the guest (or silently, if the guest
    /// never heard of it).
    fn reset_conn(&mut self, ctx: &WorkerContext, key: ConnKey) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.state == ConnState::Connecting && c.owed.request {
            self.remove_conn(ctx, key);
            return;
        }
        c.owed = super::conn::Owed {
            rst: true,
            ..Default::default()
        };
        c.to_host.clear();
        c.readable = false;
        self.schedule(key);
    }

    /// After a state change: a connection whose both sides are done ends
    /// with a RST.
    fn check_finished(&mut self, key: ConnKey) {
        if let Some(c) = self.conns.get_mut(&key) {
            if c.state == ConnState::Established && c.finished() && !c.owed.rst {
                c.owed = super::conn::Owed {
                    rst: true,
                    ..Default::default()
                };
            }
        }
        self.schedule(key);
    }

    // ---- guest → device -------------------------------------------------

    fn process_tx(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
        let Some(pos) = self.tx_pos else {
            return Ok(());
        };
        let size = ctx.queues[pos].size();
        let mut served = 0u32;
        loop {
            if self.control.len() >= MAX_CONTROL_PENDING {
                // The guest does not take our answers: wait for it.
                self.tx_stalled = true;
                break;
            }
            if served >= u32::from(size) * 2 {
                let _ = ctx.queues[pos].kick().write(1);
                break;
            }
            let mem = &ctx.mem;
            let Some(chain) = ctx.queues[pos].pop_or_arm(mem)? else {
                break;
            };
            let head = chain.head_index();
            let mut got = 0usize;
            let mut carried = 0usize;
            let checked = chain::validate(&chain, size);
            if let Ok(info) = checked {
                carried = (info.readable as usize).saturating_sub(HEADER_LEN);
                let want = (info.readable as usize).min(self.scratch.len());
                if let Ok(mut reader) = chain.reader(mem) {
                    while got < want {
                        match reader.read(&mut self.scratch[got..want]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n,
                        }
                    }
                }
            }
            ctx.queues[pos].add_used(mem, head, 0)?;
            self.dirty[1] = true;
            served += 1;
            match checked {
                Ok(_) => self.guest_packet(ctx, got, carried),
                Err(e) => self.bad(e),
            }
        }
        Ok(())
    }

    /// Handles one packet, its bytes in `scratch[..got]`.
    fn guest_packet(&mut self, ctx: &mut WorkerContext, got: usize, carried: usize) {
        let h = match Header::parse(&self.scratch[..got]) {
            Ok(h) => h,
            Err(e) => return self.bad(e),
        };
        // What the reader could not copy does not count as carried.
        let carried = carried.min(got.saturating_sub(HEADER_LEN));
        let op = match packet::check_guest_packet(&h, carried, self.guest_cid) {
            Ok(op) => op,
            Err(PacketError::BadSource(cid)) => {
                // Not from the guest's address: nobody to answer.
                return self.bad(PacketError::BadSource(cid));
            }
            Err(e) => {
                self.bad(e);
                if h.dst_cid == packet::HOST_CID {
                    let key = ConnKey {
                        local_port: h.dst_port,
                        peer_port: h.src_port,
                    };
                    self.remove_conn(ctx, key);
                }
                self.rst_reply(&h);
                return;
            }
        };
        let key = ConnKey {
            local_port: h.dst_port,
            peer_port: h.src_port,
        };
        let Some(conn) = self.conns.get_mut(&key) else {
            match op {
                Op::Request => self.guest_connects(ctx, &h, key),
                Op::Rst => {}
                _ => self.rst_reply(&h),
            }
            return;
        };
        conn.update_peer_credit(&h);
        match op {
            Op::Request => self.reset_conn(ctx, key),
            Op::Response => {
                if conn.state != ConnState::Connecting || conn.owed.request {
                    return self.reset_conn(ctx, key);
                }
                conn.state = ConnState::Established;
                conn.deadline = None;
                conn.readable = true;
                let line = format!("OK {}\n", key.local_port);
                if conn.stream.write_all(line.as_bytes()).is_err() {
                    return self.reset_conn(ctx, key);
                }
            }
            Op::Rst => return self.remove_conn(ctx, key),
            Op::Shutdown { flags } => {
                conn.guest_shut |= flags;
                if conn.flush_to_host().is_err() {
                    return self.reset_conn(ctx, key);
                }
                if conn.guest_shut == packet::SHUTDOWN_RCV | packet::SHUTDOWN_SEND {
                    conn.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
                    self.arm_timer();
                }
                return self.check_finished(key);
            }
            Op::Rw => {
                if conn.state != ConnState::Established
                    || conn.guest_shut & packet::SHUTDOWN_SEND != 0
                    || !conn.accept_payload(h.len)
                {
                    // Data out of place, or past the credit we gave.
                    return self.reset_conn(ctx, key);
                }
                let payload = &self.scratch[HEADER_LEN..HEADER_LEN + h.len as usize];
                if conn.write_to_host(payload).is_err() {
                    return self.reset_conn(ctx, key);
                }
            }
            Op::CreditUpdate => {}
            Op::CreditRequest => conn.owed.credit_update = true,
        }
        self.schedule(key);
    }

    /// A guest connects to host port `h.dst_port`: `PATH_<port>`.
    fn guest_connects(&mut self, ctx: &WorkerContext, h: &Header, key: ConnKey) {
        if self.conns.len() + self.pending.len() >= MAX_CONNECTIONS {
            return self.rst_reply(h);
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", h.dst_port));
        let Ok(stream) = unix::connect_nonblocking(std::path::Path::new(&path)) else {
            return self.rst_reply(h);
        };
        let token = self.token();
        if ctx
            .watch(stream.as_raw_fd(), token, stream_events())
            .is_err()
        {
            return self.rst_reply(h);
        }
        let mut conn = Conn::new(token, stream, ConnState::Established);
        conn.update_peer_credit(h);
        conn.owed.response = true;
        self.conns.insert(key, conn);
        self.owners.insert(token, Owner::Conn(key));
        self.schedule(key);
    }

    // ---- device → guest -------------------------------------------------

    /// The next packet of connection `key`, for a buffer of `cap` bytes.
    fn conn_packet(&mut self, key: ConnKey, cap: usize) -> Option<Outgoing> {
        let cid = self.guest_cid;
        let conn = self.conns.get_mut(&key)?;
        for _ in 0..2 {
            let o = &mut conn.owed;
            let op = if o.rst {
                return Some(Outgoing {
                    header: conn.header(cid, key, packet::OP_RST),
                    payload: 0,
                    remove: Some(key),
                });
            } else if o.request {
                o.request = false;
                conn.deadline = Some(Instant::now() + CONNECT_TIMEOUT);
                Some(packet::OP_REQUEST)
            } else if o.response {
                o.response = false;
                Some(packet::OP_RESPONSE)
            } else if o.credit_update {
                o.credit_update = false;
                Some(packet::OP_CREDIT_UPDATE)
            } else {
                None
            };
            if let Some(op) = op {
                return Some(Outgoing {
                    header: conn.header(cid, key, op),
                    payload: 0,
                    remove: None,
                });
            }
            if conn.may_send_data() && conn.readable {
                let credit = conn.peer_credit() as usize;
                if credit == 0 {
                    if !conn.credit_requested {
                        conn.credit_requested = true;
                        return Some(Outgoing {
                            header: conn.header(cid, key, packet::OP_CREDIT_REQUEST),
                            payload: 0,
                            remove: None,
                        });
                    }
                } else {
                    let want = (cap - HEADER_LEN).min(credit).min(MAX_PAYLOAD as usize);
                    if want > 0 {
                        let buf = &mut self.scratch[HEADER_LEN..HEADER_LEN + want];
                        match conn.stream.read(buf) {
                            Ok(0) => {
                                conn.host_eof = true;
                                conn.readable = false;
                                conn.owed.shutdown |= packet::SHUTDOWN_SEND;
                                if conn.host_hup {
                                    conn.owed.shutdown |= packet::SHUTDOWN_RCV;
                                }
                                if conn.finished() {
                                    conn.owed = super::conn::Owed {
                                        rst: true,
                                        ..Default::default()
                                    };
                                }
                                continue;
                            }
                            Ok(n) => {
                                conn.tx_cnt = conn.tx_cnt.wrapping_add(n as u32);
                                let mut header = conn.header(cid, key, packet::OP_RW);
                                header.len = n as u32;
                                return Some(Outgoing {
                                    header,
                                    payload: n,
                                    remove: None,
                                });
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                conn.readable = false;
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => {
                                conn.owed = super::conn::Owed {
                                    rst: true,
                                    ..Default::default()
                                };
                                continue;
                            }
                        }
                    }
                }
            }
            if conn.owed.shutdown != 0 {
                let flags = std::mem::take(&mut conn.owed.shutdown);
                conn.shut_sent |= flags;
                if conn.shut_sent == packet::SHUTDOWN_RCV | packet::SHUTDOWN_SEND {
                    conn.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
                }
                let mut header = conn.header(cid, key, packet::OP_SHUTDOWN);
                header.flags = flags;
                return Some(Outgoing {
                    header,
                    payload: 0,
                    remove: None,
                });
            }
            return None;
        }
        None
    }

    fn process_rx(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
        let Some(pos) = self.rx_pos else {
            return Ok(());
        };
        let size = ctx.queues[pos].size();
        let mut served = 0u32;
        while !(self.control.is_empty() && self.ready.is_empty()) {
            if served >= u32::from(size) * 2 {
                let _ = ctx.queues[pos].kick().write(1);
                break;
            }
            let mem = &ctx.mem;
            let Some(chain) = ctx.queues[pos].pop_or_arm(mem)? else {
                break;
            };
            let head = chain.head_index();
            let cap = chain::validate(&chain, size).map_or(0, |i| i.writable as usize);
            if cap < HEADER_LEN {
                ctx.queues[pos].add_used(mem, head, 0)?;
                self.dirty[0] = true;
                served += 1;
                continue;
            }
            let mut out = self.control.pop_front().map(|header| Outgoing {
                header,
                payload: 0,
                remove: None,
            });
            let mut tries = self.ready.len();
            while out.is_none() && tries > 0 {
                tries -= 1;
                let Some(key) = self.ready.pop_front() else {
                    break;
                };
                let Some(c) = self.conns.get_mut(&key) else {
                    continue;
                };
                c.in_ready = false;
                out = self.conn_packet(key, cap);
                if self.conns.contains_key(&key) {
                    self.schedule(key);
                }
            }
            let Some(out) = out else {
                ctx.queues[pos].undo_pop();
                break;
            };
            let mut written = 0usize;
            if let Ok(mut w) = chain.writer(mem) {
                let mut header = out.header;
                header.len = out.payload as u32;
                let payload = &self.scratch[HEADER_LEN..HEADER_LEN + out.payload];
                if w.write_all(&header.to_bytes()).is_ok() && w.write_all(payload).is_ok() {
                    written = HEADER_LEN + out.payload;
                }
            }
            ctx.queues[pos].add_used(mem, head, written as u32)?;
            self.dirty[0] = true;
            served += 1;
            if let Some(key) = out.remove {
                self.remove_conn(ctx, key);
            }
        }
        Ok(())
    }

    /// Moves everything that can move and interrupts the driver.
    fn pump(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
        loop {
            self.process_rx(ctx)?;
            if self.tx_stalled && self.control.len() < MAX_CONTROL_PENDING / 2 {
                self.tx_stalled = false;
                self.process_tx(ctx)?;
                continue;
            }
            break;
        }
        for (i, pos) in [self.rx_pos, self.tx_pos].into_iter().enumerate() {
            if let Some(pos) = pos {
                if std::mem::take(&mut self.dirty[i]) {
                    ctx.signal_used(pos)?;
                }
            }
        }
        Ok(())
    }

    // ---- host side ------------------------------------------------------

    fn accept_host(&mut self, ctx: &WorkerContext) {
        loop {
            let stream = match self.listener.accept() {
                Ok(Some(s)) => s,
                Ok(None) => return,
                Err(e) => {
                    log(format_args!("accept failed: {e}"));
                    return;
                }
            };
            if self.pending.len() >= MAX_PENDING_HOST
                || self.conns.len() + self.pending.len() >= MAX_CONNECTIONS
            {
                continue; // dropped: the client sees the connection close
            }
            let token = self.token();
            if ctx
                .watch(stream.as_raw_fd(), token, stream_events())
                .is_err()
            {
                continue;
            }
            self.pending.insert(
                token,
                PendingHost {
                    stream,
                    line: Vec::new(),
                    deadline: Instant::now() + HANDSHAKE_TIMEOUT,
                },
            );
            self.owners.insert(token, Owner::Pending);
            self.arm_timer();
            self.read_connect_line(ctx, token);
        }
    }

    fn drop_pending(&mut self, ctx: &WorkerContext, token: u64) {
        if let Some(p) = self.pending.remove(&token) {
            let _ = ctx.unwatch(p.stream.as_raw_fd());
        }
        self.owners.remove(&token);
    }

    /// Reads a host client's `CONNECT <port>\n` byte by byte (what follows
    /// the line is the stream's data, left in the socket).
    fn read_connect_line(&mut self, ctx: &WorkerContext, token: u64) {
        let Some(p) = self.pending.get_mut(&token) else {
            return;
        };
        loop {
            let mut b = [0u8; 1];
            match p.stream.read(&mut b) {
                Ok(0) => return self.drop_pending(ctx, token),
                Ok(_) if b[0] == b'\n' => break,
                Ok(_) => {
                    p.line.push(b[0]);
                    if p.line.len() >= packet::MAX_CONNECT_LINE {
                        return self.drop_pending(ctx, token);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.drop_pending(ctx, token),
            }
        }
        let port = match packet::parse_connect_line(&p.line) {
            Ok(port) => port,
            Err(_) => return self.drop_pending(ctx, token),
        };
        let Some(p) = self.pending.remove(&token) else {
            return;
        };
        let key = ConnKey {
            local_port: self.local_port(port),
            peer_port: port,
        };
        let mut conn = Conn::new(token, p.stream, ConnState::Connecting);
        conn.owed.request = true;
        conn.deadline = Some(Instant::now() + CONNECT_TIMEOUT);
        self.conns.insert(key, conn);
        self.owners.insert(token, Owner::Conn(key));
        self.arm_timer();
        self.schedule(key);
    }

    /// A host-side port for a connection to guest port `peer`.
    fn local_port(&mut self, peer: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = p.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            let key = ConnKey {
                local_port: p,
                peer_port: peer,
            };
            if !self.conns.contains_key(&key) {
                return p;
            }
        }
    }

    fn conn_event(&mut self, ctx: &WorkerContext, key: ConnKey, events: EventSet) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if events
            .intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR)
        {
            c.readable = true;
        }
        if events.intersects(EventSet::HANG_UP | EventSet::ERROR) && !c.host_hup {
            c.host_hup = true;
            if c.host_eof && c.shut_sent & packet::SHUTDOWN_RCV == 0 {
                c.owed.shutdown |= packet::SHUTDOWN_RCV | packet::SHUTDOWN_SEND;
            }
        }
        if events.contains(EventSet::OUT) && c.flush_to_host().is_err() {
            return self.reset_conn(ctx, key);
        }
        self.check_finished(key);
    }

    /// Ends what passed its deadline.
    fn sweep(&mut self, ctx: &WorkerContext) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            self.drop_pending(ctx, t);
        }
        let late: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now) && !c.owed.rst)
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            if let Some(c) = self.conns.get_mut(&key) {
                c.deadline = None;
            }
            self.reset_conn(ctx, key);
        }
        let waiting = !self.pending.is_empty() || self.conns.values().any(|c| c.deadline.is_some());
        if !waiting && self.timer_armed {
            if let Some(t) = self.timer.as_mut() {
                if t.reset(Duration::ZERO, None).is_ok() {
                    self.timer_armed = false;
                }
            }
        }
    }
}

fn stream_events() -> EventSet {
    EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED
}

impl QueueHandler for VsockHandler {
    fn start(&mut self, ctx: &mut WorkerContext) -> io::Result<()> {
        for (pos, q) in ctx.queues.iter().enumerate() {
            match q.index() {
                RX_QUEUE => self.rx_pos = Some(pos),
                TX_QUEUE => self.tx_pos = Some(pos),
                _ => {}
            }
        }
        let timer = TimerFd::new()?;
        // SAFETY: fcntl on a timerfd we own; no pointers involved.
        let r = unsafe { libc::fcntl(timer.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        ctx.watch(timer.as_raw_fd(), TOKEN_TIMER, EventSet::IN)?;
        self.timer = Some(timer);
        ctx.watch(self.listener.as_raw_fd(), TOKEN_LISTENER, EventSet::IN)?;
        Ok(())
    }

    fn process_queue(&mut self, ctx: &mut WorkerContext, queue: usize) -> Result<(), QueueError> {
        if Some(queue) == self.tx_pos {
            self.process_tx(ctx)?;
        }
        // The event queue's buffers stay with us: no event is ever sent
        // (the device is new at every boot, so no transport reset).
        self.pump(ctx)
    }

    fn handle_event(
        &mut self,
        ctx: &mut WorkerContext,
        token: u64,
        events: EventSet,
    ) -> Result<(), QueueError> {
        match token {
            TOKEN_LISTENER => self.accept_host(ctx),
            TOKEN_TIMER => {
                if let Some(t) = self.timer.as_mut() {
                    let _ = t.wait();
                }
                self.sweep(ctx);
            }
            t => match self.owners.get(&t) {
                Some(Owner::Pending) => self.read_connect_line(ctx, t),
                Some(Owner::Conn(key)) => {
                    let key = *key;
                    self.conn_event(ctx, key, events);
                }
                None => {}
            },
        }
        self.pump(ctx)
    }
}
