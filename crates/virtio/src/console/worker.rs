//! virtio-console I/O: the control queues and every port's data queues,
//! and each port's Unix socket, on the device's worker thread.
//!
//! Host → guest data is read from a port's client only while an application
//! in the guest has the port open and the driver gave receive buffers (the
//! guest's driver drops data for a closed port, so it waits in the socket).
//! Guest → host data is written to the client as it comes; while the client
//! does not take it, the port's transmit queue is left alone (at most one
//! chain's bytes, capped at [`MAX_TX_CHAIN`], wait in the VMM). Without a
//! client, what the guest writes is dropped.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

use vmm_sys_util::epoll::EventSet;

use super::control::{self, DeviceMessage, DriverMessage, HEADER_LEN};
use super::port::{self, Port, QueueRole};
use crate::chain;
use crate::queue::QueueError;
use crate::worker::{QueueHandler, WorkerContext};

/// Bytes of one transmit chain the device forwards; a chain longer than
/// this (Linux writes at most 32 KiB) has its tail dropped.
pub const MAX_TX_CHAIN: usize = 1 << 20;
/// Bytes read from a client into one receive buffer at most.
const RX_CHUNK: usize = 64 * 1024;
/// Control messages waiting for receive buffers at most: a driver that
/// repeats DEVICE_READY without taking the answers loses the surplus.
pub const MAX_CONTROL_PENDING: usize = 256;

/// The feature bit of multiport support.
pub const F_MULTIPORT: u64 = 1 << 1;

pub(crate) struct ConsoleHandler {
    ports: Vec<Port>,
    multiport: bool,
    driver_ready: bool,
    control_out: VecDeque<DeviceMessage>,
    /// Virtio queue index → position in the activated queues.
    positions: Vec<Option<usize>>,
    /// Positions whose used ring changed since the last interrupt check.
    dirty: Vec<bool>,
    scratch: Vec<u8>,
    /// Malformed control messages seen (logged once).
    bad_control: u64,
}

fn listener_token(i: usize) -> u64 {
    2 * i as u64
}

fn client_token(i: usize) -> u64 {
    2 * i as u64 + 1
}

fn log(what: impl std::fmt::Display) {
    eprintln!("keel-vmm: virtio-console: {what}");
}

impl ConsoleHandler {
    pub(crate) fn new(mut ports: Vec<Port>, features: u64) -> Self {
        let multiport = features & F_MULTIPORT != 0;
        for p in &mut ports {
            p.reset_driver_state();
            if !multiport && p.id == 0 {
                // A single-port driver has port 0 and no control queues.
                p.ready = true;
                p.guest_open = true;
            }
        }
        Self {
            ports,
            multiport,
            driver_ready: false,
            control_out: VecDeque::new(),
            positions: Vec::new(),
            dirty: Vec::new(),
            scratch: vec![0; RX_CHUNK],
            bad_control: 0,
        }
    }

    /// Hands the ports back (when the device stops).
    pub(crate) fn into_ports(self) -> Vec<Port> {
        self.ports
    }

    fn port_index(&self, id: u32) -> Option<usize> {
        self.ports.iter().position(|p| p.id == id)
    }

    fn position(&self, index: u32) -> Option<usize> {
        self.positions.get(index as usize).copied().flatten()
    }

    fn push_control(&mut self, msg: DeviceMessage) {
        if !self.multiport {
            return;
        }
        if self.control_out.len() >= MAX_CONTROL_PENDING {
            if self.bad_control == 0 {
                log("the driver takes no control messages; dropping some");
            }
            self.bad_control += 1;
            return;
        }
        self.control_out.push_back(msg);
    }

    fn mark(&mut self, pos: usize) {
        if let Some(d) = self.dirty.get_mut(pos) {
            *d = true;
        }
    }

    /// Interrupts the driver for every queue whose used ring changed.
    fn signal(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
        for pos in 0..self.dirty.len() {
            if std::mem::take(&mut self.dirty[pos]) {
                ctx.signal_used(pos)?;
            }
        }
        Ok(())
    }

    /// A client connected to port `i`'s socket.
    fn accept(&mut self, ctx: &mut WorkerContext, i: usize) {
        let port = &mut self.ports[i];
        if port.client.is_some() {
            return;
        }
        let stream = match port.listener.accept() {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                log(format_args!("port {}: accept failed: {e}", port.name));
                return;
            }
        };
        let events =
            EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
        if let Err(e) = ctx.watch(stream.as_raw_fd(), client_token(i), events) {
            log(format_args!(
                "port {}: cannot watch the client: {e}",
                port.name
            ));
            return;
        }
        if port.listening {
            let _ = ctx.unwatch(port.listener.as_raw_fd());
            port.listening = false;
        }
        port.client = Some(stream);
        port.readable = true;
        port.eof = false;
        port.hup = false;
        let (id, ready) = (port.id, port.ready);
        if ready && self.driver_ready {
            self.push_control(DeviceMessage::PortOpen { id, open: true });
        }
    }

    /// Port `i`'s client went away (or failed): listen for the next one.
    fn disconnect(&mut self, ctx: &mut WorkerContext, i: usize) {
        let port = &mut self.ports[i];
        let Some(client) = port.client.take() else {
            return;
        };
        let _ = ctx.unwatch(client.as_raw_fd());
        drop(client);
        port.readable = false;
        port.to_host.clear();
        port.to_host_off = 0;
        if !port.listening {
            match ctx.watch(port.listener.as_raw_fd(), listener_token(i), EventSet::IN) {
                Ok(()) => port.listening = true,
                Err(e) => log(format_args!("port {}: cannot listen: {e}", port.name)),
            }
        }
        let (id, ready) = (port.id, port.ready);
        if ready && self.driver_ready {
            self.push_control(DeviceMessage::PortOpen { id, open: false });
        }
    }

    /// Writes what port `i` holds for its client; true when nothing is
    /// left (written, or dropped for want of a client).
    fn flush_to_host(&mut self, ctx: &mut WorkerContext, i: usize) -> bool {
        loop {
            let port = &mut self.ports[i];
            if port.pending().is_empty() {
                port.to_host.clear();
                port.to_host_off = 0;
                return true;
            }
            let Some(client) = port.client.as_mut() else {
                port.to_host.clear();
                port.to_host_off = 0;
                return true;
            };
            match client.write(&port.to_host[port.to_host_off..]) {
                Ok(0) => {
                    self.disconnect(ctx, i);
                    return true;
                }
                Ok(n) => port.to_host_off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.disconnect(ctx, i);
                    return true;
                }
            }
        }
    }

    /// Forwards what the guest wrote on port `i` to its client.
    fn port_tx(&mut self, ctx: &mut WorkerContext, i: usize) -> Result<(), QueueError> {
        let Some(pos) = self.position(port::tx_queue(self.ports[i].id)) else {
            return Ok(());
        };
        let size = ctx.queues[pos].size();
        let mut served = 0u32;
        loop {
            if !self.flush_to_host(ctx, i) {
                // The client is full: come back on EPOLLOUT.
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
            let checked = chain::validate(&chain, size);
            let port = &mut self.ports[i];
            if let (Ok(info), true) = (checked, port.client.is_some()) {
                let len = (info.readable as usize).min(MAX_TX_CHAIN);
                if let Ok(mut reader) = chain.reader(mem) {
                    port.to_host.resize(len, 0);
                    port.to_host_off = 0;
                    let mut got = 0;
                    while got < len {
                        match reader.read(&mut port.to_host[got..]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n,
                        }
                    }
                    port.to_host.truncate(got);
                }
            }
            ctx.queues[pos].add_used(mem, head, 0)?;
            self.mark(pos);
            served += 1;
        }
        Ok(())
    }

    /// Moves data from port `i`'s client into the guest's receive buffers.
    fn port_rx(&mut self, ctx: &mut WorkerContext, i: usize) -> Result<(), QueueError> {
        let Some(pos) = self.position(port::rx_queue(self.ports[i].id)) else {
            return Ok(());
        };
        let size = ctx.queues[pos].size();
        let mut served = 0u32;
        loop {
            let port = &mut self.ports[i];
            if !(port.guest_open && port.readable) || port.eof {
                break;
            }
            let Some(client) = port.client.as_mut() else {
                break;
            };
            if served >= u32::from(size) * 2 {
                let _ = ctx.queues[pos].kick().write(1);
                break;
            }
            let mem = &ctx.mem;
            let Some(chain) = ctx.queues[pos].pop_or_arm(mem)? else {
                // No buffers: the driver's next kick brings us back.
                break;
            };
            let head = chain.head_index();
            let writable = match chain::validate(&chain, size) {
                Ok(info) => info.writable as usize,
                Err(_) => 0,
            };
            if writable == 0 {
                ctx.queues[pos].add_used(mem, head, 0)?;
                self.mark(pos);
                served += 1;
                continue;
            }
            let want = writable.min(self.scratch.len());
            match client.read(&mut self.scratch[..want]) {
                Ok(0) => {
                    // The client may still read what the guest answers:
                    // it is gone only once it closes entirely.
                    ctx.queues[pos].undo_pop();
                    port.eof = true;
                    port.readable = false;
                    if port.hup {
                        self.disconnect(ctx, i);
                    }
                    break;
                }
                Ok(n) => {
                    let written = match chain.writer(mem) {
                        Ok(mut w) => match w.write_all(&self.scratch[..n]) {
                            Ok(()) => n,
                            Err(_) => w.bytes_written(),
                        },
                        Err(_) => 0,
                    };
                    ctx.queues[pos].add_used(mem, head, written as u32)?;
                    self.mark(pos);
                    served += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ctx.queues[pos].undo_pop();
                    port.readable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    ctx.queues[pos].undo_pop();
                }
                Err(_) => {
                    ctx.queues[pos].undo_pop();
                    self.disconnect(ctx, i);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Handles the driver's control messages.
    fn control_tx(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
        let Some(pos) = self.position(port::CONTROL_TX) else {
            return Ok(());
        };
        let mut messages = Vec::new();
        ctx.process_chains(pos, |mem, chain, checked| {
            if checked.is_err() {
                messages.push(Err(control::ControlError::TooShort(0)));
                return 0;
            }
            let mut buf = [0u8; HEADER_LEN];
            let mut got = 0;
            if let Ok(mut reader) = chain.reader(mem) {
                while got < HEADER_LEN {
                    match reader.read(&mut buf[got..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
            }
            messages.push(control::parse_driver_message(&buf[..got]));
            0
        })?;
        for m in messages {
            match m {
                Ok(msg) => self.driver_message(msg),
                Err(e) => {
                    if self.bad_control == 0 {
                        log(format_args!("ignoring a control message: {e}"));
                    }
                    self.bad_control += 1;
                }
            }
        }
        self.reap(ctx);
        Ok(())
    }

    fn driver_message(&mut self, msg: DriverMessage) {
        match msg {
            DriverMessage::DeviceReady { ok: true } => {
                self.driver_ready = true;
                let ids: Vec<u32> = self.ports.iter().map(|p| p.id).collect();
                for id in ids {
                    self.push_control(DeviceMessage::PortAdd(id));
                }
            }
            DriverMessage::DeviceReady { ok: false } => {
                log("the guest driver failed to initialize the device");
            }
            DriverMessage::PortReady { id, ok } => {
                let Some(i) = self.port_index(id) else {
                    return;
                };
                if !ok {
                    log(format_args!(
                        "the guest could not set port {} up",
                        self.ports[i].name
                    ));
                    return;
                }
                let port = &mut self.ports[i];
                port.ready = true;
                let (console, connected) = (port.console, port.client.is_some());
                if console {
                    self.push_control(DeviceMessage::ConsolePort(id));
                }
                self.push_control(DeviceMessage::PortName(id));
                if connected {
                    self.push_control(DeviceMessage::PortOpen { id, open: true });
                }
            }
            DriverMessage::PortOpen { id, open } => {
                if let Some(i) = self.port_index(id) {
                    self.ports[i].guest_open = open;
                }
            }
        }
    }

    /// Drops the clients that left while no one in the guest was reading.
    fn reap(&mut self, ctx: &mut WorkerContext) {
        for i in 0..self.ports.len() {
            let p = &self.ports[i];
            if p.hup && p.client.is_some() && !p.guest_open {
                self.disconnect(ctx, i);
            }
        }
    }

    /// Sends pending control messages to the driver.
    fn control_rx(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
        let Some(pos) = self.position(port::CONTROL_RX) else {
            return Ok(());
        };
        let size = ctx.queues[pos].size();
        while let Some(&msg) = self.control_out.front() {
            let mem = &ctx.mem;
            let Some(chain) = ctx.queues[pos].pop_or_arm(mem)? else {
                break;
            };
            let head = chain.head_index();
            let writable = chain::validate(&chain, size).map_or(0, |i| i.writable as usize);
            let mut written = 0;
            if writable >= HEADER_LEN {
                let mut bytes = msg.header().to_bytes().to_vec();
                if let DeviceMessage::PortName(id) = msg {
                    if let Some(i) = self.port_index(id) {
                        bytes.extend_from_slice(self.ports[i].name.as_bytes());
                    }
                }
                bytes.truncate(writable);
                if let Ok(mut w) = chain.writer(mem) {
                    written = match w.write_all(&bytes) {
                        Ok(()) => bytes.len(),
                        Err(_) => w.bytes_written(),
                    };
                }
                self.control_out.pop_front();
            }
            // A buffer too small for a header goes back empty; the message
            // waits for the next one.
            ctx.queues[pos].add_used(mem, head, written as u32)?;
            self.mark(pos);
        }
        Ok(())
    }

    /// Moves everything that can move, then interrupts the driver once per
    /// queue that changed.
    fn pump(&mut self, ctx: &mut WorkerContext) -> Result<(), QueueError> {
        for i in 0..self.ports.len() {
            self.port_rx(ctx, i)?;
        }
        self.control_rx(ctx)?;
        self.signal(ctx)
    }
}

impl QueueHandler for ConsoleHandler {
    fn start(&mut self, ctx: &mut WorkerContext) -> io::Result<()> {
        let max = ctx.queues.iter().map(|q| q.index()).max().unwrap_or(0);
        self.positions = vec![None; usize::from(max) + 1];
        for (pos, q) in ctx.queues.iter().enumerate() {
            self.positions[usize::from(q.index())] = Some(pos);
        }
        self.dirty = vec![false; ctx.queues.len()];
        for (i, p) in self.ports.iter_mut().enumerate() {
            match &p.client {
                Some(c) => {
                    let events = EventSet::IN
                        | EventSet::OUT
                        | EventSet::READ_HANG_UP
                        | EventSet::EDGE_TRIGGERED;
                    ctx.watch(c.as_raw_fd(), client_token(i), events)?;
                }
                None => {
                    ctx.watch(p.listener.as_raw_fd(), listener_token(i), EventSet::IN)?;
                    p.listening = true;
                }
            }
        }
        Ok(())
    }

    fn process_queue(&mut self, ctx: &mut WorkerContext, queue: usize) -> Result<(), QueueError> {
        let Some(index) = ctx.queues.get(queue).map(|q| u32::from(q.index())) else {
            return Ok(());
        };
        match port::queue_role(index) {
            QueueRole::ControlTx => self.control_tx(ctx)?,
            QueueRole::PortTx(id) => {
                if let Some(i) = self.port_index(id) {
                    self.port_tx(ctx, i)?;
                } else {
                    // A queue without a port: return what the driver puts there.
                    ctx.process_chains(queue, |_, _, _| 0)?;
                }
            }
            QueueRole::ControlRx | QueueRole::PortRx(_) => {}
        }
        self.pump(ctx)
    }

    fn handle_event(
        &mut self,
        ctx: &mut WorkerContext,
        token: u64,
        events: EventSet,
    ) -> Result<(), QueueError> {
        let i = (token / 2) as usize;
        if i >= self.ports.len() {
            return Ok(());
        }
        if token.is_multiple_of(2) {
            self.accept(ctx, i);
        } else {
            if events.intersects(
                EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR,
            ) {
                self.ports[i].readable = true;
            }
            if events.intersects(EventSet::HANG_UP | EventSet::ERROR) {
                self.ports[i].hup = true;
                // Deliver what the client sent before it left, if the guest
                // reads; then it is gone.
                self.port_rx(ctx, i)?;
                let port = &self.ports[i];
                if port.eof || !port.guest_open {
                    self.disconnect(ctx, i);
                }
            }
            self.port_tx(ctx, i)?;
        }
        self.pump(ctx)
    }
}
