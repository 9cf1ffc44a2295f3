//! A port: its configuration, its queues and its host side (a Unix socket
//! the VMM listens on, one client at a time).

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

use crate::unix::SocketListener;

/// The longest port name (it becomes a file name in the guest).
pub const MAX_NAME_LEN: usize = 255;

/// What the user asks for: `--console-port name=NAME,socket=PATH[,console=on]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// The name the guest sees (`/sys/class/virtio-ports/vportNpM/name`,
    /// `/dev/virtio-ports/NAME` with udev).
    pub name: String,
    /// The Unix socket the VMM listens on for the port's host side.
    pub socket: PathBuf,
    /// The port is a console (the guest makes it an hvc terminal).
    pub console: bool,
}

/// Checks a port name: 1 to 255 characters among `A-Z a-z 0-9 . _ -`, and
/// not `.` or `..` (it names a file in the guest's `/dev/virtio-ports/`).
pub fn check_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The virtio queue a port receives on (host → guest).
pub fn rx_queue(id: u32) -> u32 {
    if id == 0 {
        0
    } else {
        2 * id + 2
    }
}

/// The virtio queue a port transmits on (guest → host).
pub fn tx_queue(id: u32) -> u32 {
    rx_queue(id) + 1
}

/// The control receive (device → driver) queue.
pub const CONTROL_RX: u32 = 2;
/// The control transmit (driver → device) queue.
pub const CONTROL_TX: u32 = 3;

/// What a virtio queue of the device is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueRole {
    PortRx(u32),
    PortTx(u32),
    ControlRx,
    ControlTx,
}

/// The role of virtio queue `index`.
pub fn queue_role(index: u32) -> QueueRole {
    match index {
        0 => QueueRole::PortRx(0),
        1 => QueueRole::PortTx(0),
        CONTROL_RX => QueueRole::ControlRx,
        CONTROL_TX => QueueRole::ControlTx,
        i if i % 2 == 0 => QueueRole::PortRx((i - 2) / 2),
        i => QueueRole::PortTx((i - 3) / 2),
    }
}

/// One port's host side and what the driver told about it.
#[derive(Debug)]
pub(crate) struct Port {
    pub id: u32,
    pub name: String,
    pub console: bool,
    pub listener: Arc<SocketListener>,
    /// The connected host client, if any.
    pub client: Option<UnixStream>,
    /// The listener is in the worker's epoll (no client connected).
    pub listening: bool,
    /// The client may have data to read (edge-triggered: cleared when a
    /// read would block).
    pub readable: bool,
    /// The client closed its sending side (a read gave end of file).
    pub eof: bool,
    /// The client closed the connection entirely.
    pub hup: bool,
    /// The driver answered PORT_READY.
    pub ready: bool,
    /// An application in the guest has the port open.
    pub guest_open: bool,
    /// Bytes from the guest the client has not taken yet.
    pub to_host: Vec<u8>,
    pub to_host_off: usize,
}

impl Port {
    pub fn new(id: u32, spec: &PortSpec, listener: Arc<SocketListener>) -> Self {
        Self {
            id,
            name: spec.name.clone(),
            console: spec.console,
            listener,
            client: None,
            listening: false,
            readable: false,
            eof: false,
            hup: false,
            ready: false,
            guest_open: false,
            to_host: Vec::new(),
            to_host_off: 0,
        }
    }

    /// Forgets what one driver instance said (at activation).
    pub fn reset_driver_state(&mut self) {
        self.ready = false;
        self.guest_open = false;
        self.listening = false;
        self.to_host.clear();
        self.to_host_off = 0;
        // A connected client may have sent data meanwhile.
        self.readable = self.client.is_some();
    }

    /// Bytes waiting for the client.
    pub fn pending(&self) -> &[u8] {
        &self.to_host[self.to_host_off..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in [
            "agent",
            "org.qemu.guest_agent.0",
            "a-b_c.d",
            &"x".repeat(255),
        ] {
            assert!(check_port_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ä", "a\0", &"x".repeat(256)] {
            assert!(!check_port_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn queue_numbering_follows_the_spec() {
        assert_eq!((rx_queue(0), tx_queue(0)), (0, 1));
        assert_eq!((rx_queue(1), tx_queue(1)), (4, 5));
        assert_eq!((rx_queue(3), tx_queue(3)), (8, 9));
        for id in 0..40 {
            assert_eq!(queue_role(rx_queue(id)), QueueRole::PortRx(id));
            assert_eq!(queue_role(tx_queue(id)), QueueRole::PortTx(id));
        }
        assert_eq!(queue_role(2), QueueRole::ControlRx);
        assert_eq!(queue_role(3), QueueRole::ControlTx);
    }
}
