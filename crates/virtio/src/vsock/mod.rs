//! virtio-vsock (virtio 1.x section 5.10): stream sockets between the guest
//! and host programs, the host side over Unix sockets as in Firecracker.
//!
//! ```text
//!   guest connect(CID 2, port P)   ─▶ REQUEST ─▶ connect(PATH_P)  ─▶ RESPONSE
//!   host: connect(PATH), "CONNECT P\n" ─▶ REQUEST to guest port P ─▶ guest RESPONSE
//!                                      ◀─ "OK <hostport>\n"
//!   then RW packets both ways under credit-based flow control,
//!   SHUTDOWN/RST to close
//! ```
//!
//! The packet parsers ([`Header::parse`], [`check_guest_packet`],
//! [`parse_connect_line`]) are pure functions for the fuzz target.

mod conn;
mod device;
mod packet;
mod worker;

pub use conn::{CONN_BUF, CREDIT_UPDATE_THRESHOLD};
pub use device::{
    bind_vsock_socket, check_vsock, Vsock, VsockError, EVENT_QUEUE_SIZE, MAX_GUEST_CID,
    MIN_GUEST_CID, QUEUE_SIZE,
};
pub use packet::{
    check_guest_packet, op_name, parse_connect_line, ConnectLineError, Header, Op, PacketError,
    HEADER_LEN, HOST_CID, MAX_CONNECT_LINE, MAX_PAYLOAD, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE,
    OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
pub use worker::{
    CLOSE_TIMEOUT, CONNECT_TIMEOUT, EVENT_QUEUE, FIRST_LOCAL_PORT, HANDSHAKE_TIMEOUT,
    MAX_CONNECTIONS, MAX_CONTROL_PENDING, MAX_PENDING_HOST, RX_QUEUE, TX_QUEUE,
};

#[cfg(test)]
mod tests;
