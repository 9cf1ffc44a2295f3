//! One stream connection between a guest port and a host Unix socket: its
//! state, flow control in both directions, and the packets it owes the
//! guest.
//!
//! ```text
//!   host-initiated:  CONNECT line ─▶ Connecting ── guest RESPONSE ─▶ Established
//!                                        │ guest RST / 2 s timeout ─▶ closed (RST)
//!   guest-initiated: guest REQUEST ─▶ connect PATH_<port> ─▶ Established (RESPONSE)
//!                                                  └ fails ─▶ RST
//!   Established: RW both ways under credit; SHUTDOWN halves close each side;
//!   both sides done, a RST from either side, or a socket error ─▶ closed
//! ```
//!
//! Guest → host bytes the host socket does not take at once wait in
//! `to_host`, which the guest's credit (our `buf_alloc`) bounds: a guest
//! that sends past it loses the connection. Host → guest bytes are read from
//! the socket only when the guest has credit and a buffer for them, so
//! nothing waits in the VMM in that direction.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::packet::{Header, SHUTDOWN_RCV, SHUTDOWN_SEND};

/// Receive buffer we advertise per connection (`buf_alloc`): the most
/// guest bytes that wait for a slow host socket.
pub const CONN_BUF: u32 = 256 * 1024;
/// Forwarded bytes after which we tell the guest its credit grew.
pub const CREDIT_UPDATE_THRESHOLD: u32 = 64 * 1024;

/// Where a connection key's two ports sit: ours (host side) and the
/// guest's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub local_port: u32,
    pub peer_port: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Host-initiated: REQUEST sent (or to send), waiting for RESPONSE.
    Connecting,
    Established,
}

/// Packets the connection owes the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owed {
    pub request: bool,
    pub response: bool,
    pub rst: bool,
    pub credit_update: bool,
    pub credit_request: bool,
    /// SHUTDOWN flags to send (0: none).
    pub shutdown: u32,
}

#[derive(Debug)]
pub struct Conn {
    pub token: u64,
    pub stream: UnixStream,
    pub state: ConnState,
    pub owed: Owed,
    /// Queued in the handler's ready list.
    pub in_ready: bool,
    /// A deadline: connect (host-initiated), or the end of a close.
    pub deadline: Option<Instant>,

    /// The host socket may have data (edge-triggered).
    pub readable: bool,
    /// The host socket closed its sending side (read gave end of file).
    pub host_eof: bool,
    /// The host socket closed entirely.
    pub host_hup: bool,
    /// SHUTDOWN flags we sent the guest.
    pub shut_sent: u32,
    /// SHUTDOWN flags the guest sent.
    pub guest_shut: u32,
    /// We shut the host socket's write side (the guest sends no more).
    pub host_write_shut: bool,

    /// Guest bytes the host socket has not taken yet.
    pub to_host: VecDeque<u8>,
    /// Guest payload bytes received / forwarded to the host socket, and the
    /// `fwd_cnt` we last told the guest (all wrapping, as on the wire).
    pub recv_cnt: u32,
    pub fwd_cnt: u32,
    pub reported_fwd: u32,

    /// The guest's receive buffer and what it consumed, and what we sent.
    pub peer_buf_alloc: u32,
    pub peer_fwd_cnt: u32,
    pub tx_cnt: u32,
    /// A CREDIT_REQUEST went out and no credit came since.
    pub credit_requested: bool,
}

impl Conn {
    pub fn new(token: u64, stream: UnixStream, state: ConnState) -> Self {
        Self {
            token,
            stream,
            state,
            owed: Owed::default(),
            in_ready: false,
            deadline: None,
            readable: true,
            host_eof: false,
            host_hup: false,
            shut_sent: 0,
            guest_shut: 0,
            host_write_shut: false,
            to_host: VecDeque::new(),
            recv_cnt: 0,
            fwd_cnt: 0,
            reported_fwd: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            credit_requested: false,
        }
    }

    /// Takes the guest's view of its receive buffer from any packet.
    pub fn update_peer_credit(&mut self, h: &Header) {
        let grew = h.buf_alloc != self.peer_buf_alloc || h.fwd_cnt != self.peer_fwd_cnt;
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = h.fwd_cnt;
        if grew {
            self.credit_requested = false;
        }
    }

    /// Bytes we may send the guest now. A guest that reports more consumed
    /// than we sent, or a buffer smaller than what is in flight, gets none.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether host data may flow to the guest at all (credit aside).
    pub fn may_send_data(&self) -> bool {
        self.state == ConnState::Established
            && !self.host_eof
            && self.guest_shut & SHUTDOWN_RCV == 0
            && !self.owed.rst
    }

    /// Whether the connection has a packet for the guest now.
    pub fn wants_rx(&self) -> bool {
        let o = &self.owed;
        if o.rst || o.request || o.response || o.credit_update || o.shutdown != 0 {
            return true;
        }
        if !(self.may_send_data() && self.readable) {
            return false;
        }
        self.peer_credit() > 0 || !self.credit_requested
    }

    /// Accepts `len` payload bytes from the guest if its credit allows:
    /// false when it sent past our buffer (the connection must be reset).
    pub fn accept_payload(&mut self, len: u32) -> bool {
        let buffered = self.to_host.len() as u64;
        if buffered + u64::from(len) > u64::from(CONN_BUF) {
            return false;
        }
        self.recv_cnt = self.recv_cnt.wrapping_add(len);
        true
    }

    /// Writes what waits for the host socket, then as much of `data` as it
    /// takes; the rest of `data` waits. Err when the socket failed.
    pub fn write_to_host(&mut self, data: &[u8]) -> io::Result<()> {
        self.flush_to_host()?;
        let mut data = data;
        if self.to_host.is_empty() {
            while !data.is_empty() {
                match self.stream.write(data) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        data = &data[n..];
                        self.forwarded(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.to_host.extend(data);
        Ok(())
    }

    /// Writes what waits for the host socket; Ok(true) once all is written.
    pub fn flush_to_host(&mut self) -> io::Result<bool> {
        while !self.to_host.is_empty() {
            let (a, _) = self.to_host.as_slices();
            match self.stream.write(a) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.to_host.drain(..n);
                    self.forwarded(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.to_host.capacity() > 64 * 1024 {
            self.to_host = VecDeque::new();
        }
        if self.guest_shut & SHUTDOWN_SEND != 0 && !self.host_write_shut {
            // The guest sends no more: pass its end of stream on.
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
            self.host_write_shut = true;
        }
        Ok(true)
    }

    fn forwarded(&mut self, n: usize) {
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
        if self.fwd_cnt.wrapping_sub(self.reported_fwd) >= CREDIT_UPDATE_THRESHOLD {
            self.owed.credit_update = true;
        }
    }

    /// Both directions are finished: the guest sends no more and every
    /// byte it sent reached the host, and the host sends no more (or the
    /// guest receives no more).
    pub fn finished(&self) -> bool {
        let guest_done = self.guest_shut & SHUTDOWN_SEND != 0 && self.to_host.is_empty();
        let host_done = self.host_eof || self.guest_shut & SHUTDOWN_RCV != 0;
        guest_done && host_done
    }

    /// The header of a packet from us to the guest, with our credit; marks
    /// the credit as told.
    pub fn header(&mut self, guest_cid: u64, key: ConnKey, op: u16) -> Header {
        self.reported_fwd = self.fwd_cnt;
        Header {
            src_cid: super::packet::HOST_CID,
            dst_cid: guest_cid,
            src_port: key.local_port,
            dst_port: key.peer_port,
            len: 0,
            type_: super::packet::TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: CONN_BUF,
            fwd_cnt: self.fwd_cnt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> (Conn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Conn::new(7, a, ConnState::Established), b)
    }

    fn credit(buf_alloc: u32, fwd_cnt: u32) -> Header {
        Header {
            buf_alloc,
            fwd_cnt,
            ..Header::default()
        }
    }

    #[test]
    fn peer_credit_follows_the_guest_and_never_underflows() {
        let (mut c, _peer) = conn();
        assert_eq!(c.peer_credit(), 0);
        c.update_peer_credit(&credit(4096, 0));
        assert_eq!(c.peer_credit(), 4096);
        c.tx_cnt = 4000;
        assert_eq!(c.peer_credit(), 96);
        c.update_peer_credit(&credit(4096, 4000));
        assert_eq!(c.peer_credit(), 4096);
        // Wrapping counters.
        c.tx_cnt = 10;
        c.update_peer_credit(&credit(100, u32::MAX - 9));
        assert_eq!(c.peer_credit(), 80);
        // A guest claiming it consumed more than we sent gets nothing.
        c.update_peer_credit(&credit(100, 50));
        assert_eq!(c.peer_credit(), 0, "in flight wraps past buf_alloc");
    }

    #[test]
    fn guest_past_our_buffer_is_refused() {
        let (mut c, _peer) = conn();
        assert!(c.accept_payload(CONN_BUF));
        c.to_host.extend(vec![0u8; CONN_BUF as usize]);
        assert!(!c.accept_payload(1));
        c.to_host.clear();
        assert!(!c.accept_payload(u32::MAX));
        assert!(c.accept_payload(0));
    }

    #[test]
    fn writes_go_through_then_wait_and_credit_is_told() {
        let (mut c, mut peer) = conn();
        c.write_to_host(b"hello").unwrap();
        assert!(c.to_host.is_empty());
        assert_eq!(c.fwd_cnt, 5);
        let mut b = [0u8; 5];
        std::io::Read::read_exact(&mut peer, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        // Fill the socket until it would block: the rest waits.
        let chunk = vec![1u8; 64 * 1024];
        for _ in 0..64 {
            c.write_to_host(&chunk).unwrap();
            if !c.to_host.is_empty() {
                break;
            }
        }
        assert!(!c.to_host.is_empty());
        assert!(c.owed.credit_update, "forwarded more than the threshold");
        let h = c.header(
            3,
            ConnKey {
                local_port: 1,
                peer_port: 2,
            },
            5,
        );
        assert_eq!(h.fwd_cnt, c.fwd_cnt);
        assert_eq!(c.reported_fwd, c.fwd_cnt);
        assert_eq!(h.buf_alloc, CONN_BUF);
        // The host reads: everything drains.
        peer.set_nonblocking(true).unwrap();
        let mut sink = vec![0u8; 1 << 20];
        loop {
            let _ = std::io::Read::read(&mut peer, &mut sink);
            if c.flush_to_host().unwrap() {
                break;
            }
        }
        assert!(c.to_host.is_empty());
    }

    #[test]
    fn guest_end_of_stream_reaches_the_host_after_the_data() {
        let (mut c, mut peer) = conn();
        c.write_to_host(b"last").unwrap();
        c.guest_shut = SHUTDOWN_SEND;
        assert!(c.flush_to_host().unwrap());
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut peer, &mut all).unwrap();
        assert_eq!(all, b"last");
        assert!(!c.finished(), "the host may still send");
        c.host_eof = true;
        assert!(c.finished());
    }
}
