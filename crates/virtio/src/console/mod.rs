//! virtio-console with named ports (virtio 1.x section 5.3, MULTIPORT).
//!
//! Each port's host side is a Unix socket the VMM listens on; one client at
//! a time is connected (the next waits in the backlog). The guest sees the
//! port as `/dev/vportNpM` with its name in
//! `/sys/class/virtio-ports/vportNpM/name` (udev links it as
//! `/dev/virtio-ports/NAME`).
//!
//! ```text
//!   driver                                   device
//!   DEVICE_READY(1)  ───────────────────────▶
//!                    ◀─────────────────────── PORT_ADD(id)         for every port
//!   PORT_READY(id,1) ───────────────────────▶
//!                    ◀─────────────────────── CONSOLE_PORT(id)     console=on only
//!                    ◀─────────────────────── PORT_NAME(id) + name
//!                    ◀─────────────────────── PORT_OPEN(id,1|0)    a host client (dis)connects
//!   PORT_OPEN(id,1|0) ──────────────────────▶                      a guest program opens/closes
//! ```

mod control;
mod device;
mod port;
mod worker;

pub use control::{
    parse_driver_message, ControlError, ControlHeader, DeviceMessage, DriverMessage,
};
pub use device::{
    Console, ConsoleError, ConsoleSockets, CONTROL_QUEUE_SIZE, MAX_PORTS, PORT_QUEUE_SIZE,
};
pub use port::{
    check_port_name, queue_role, rx_queue, tx_queue, PortSpec, QueueRole, MAX_NAME_LEN,
};
pub use worker::{F_MULTIPORT, MAX_CONTROL_PENDING, MAX_TX_CHAIN};

/// Control message constants (event numbers, header size).
pub mod events {
    pub use super::control::{
        BAD_ID, CONSOLE_PORT, DEVICE_READY, HEADER_LEN, PORT_ADD, PORT_NAME, PORT_OPEN, PORT_READY,
        PORT_REMOVE, RESIZE,
    };
}

#[cfg(test)]
mod tests;
