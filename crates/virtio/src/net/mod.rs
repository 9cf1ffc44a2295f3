//! virtio-net (network device, virtio 1.x section 5.1) over a TAP device.
//!
//! One receive queue (0) and one transmit queue (1); no control queue. Every
//! frame, in both directions, is preceded by the 12-byte
//! `virtio_net_hdr_v1`, which is also what the TAP carries (it is opened
//! with `IFF_VNET_HDR` and a header size of 12), so frames go between guest
//! memory and the TAP with `readv`/`writev` and no copy:
//!
//! ```text
//!   guest TX ring ──▶ chain [hdr|frame] ──writev──▶ TAP ──▶ host stack / bridge
//!   guest RX ring ──▶ free buffers ◀──readv── TAP ◀── host stack / bridge
//! ```
//!
//! Offloads: the device offers checksum offload and TSO (IPv4, IPv6, ECN)
//! in both directions and mergeable receive buffers. What the driver accepts
//! for its receive side (`GUEST_*`) is handed to the TAP with
//! `TUNSETOFFLOAD`, so the host sends the guest 64 KiB TCP segments with
//! partial checksums; what it accepts for transmit (`HOST_*`, `CSUM`) lets
//! the guest send them. With neither, frames are at most 1514 bytes.
//!
//! Per-NIC policies ([`NetPolicy`], [`NetLink`]; see `policy.rs`): forged
//! transmits rejected, promiscuous mode rejected (received frames then go
//! through host memory, to be checked before the guest sees them), a token
//! bucket per direction, and a link state the control plane sets at run
//! time (`VIRTIO_NET_F_STATUS` with a configuration interrupt).
//!
//! The backend is a [`NetBackend`]: a [`Tap`] in keel-vmm, a
//! [`SocketBackend`] (a `SOCK_SEQPACKET` pair) in tests and benchmarks.

mod backend;
mod device;
pub mod header;
mod mac;
mod policy;
mod tap;
mod worker;

pub use backend::{NetBackend, SocketBackend, SocketPeer};
pub use device::{Net, NetStats, QUEUE_SIZE};
pub use header::{check_tx_frame, NetHdr, TxFrameError, HDR_LEN, MAX_FRAME_LEN};
pub use mac::{MacAddr, MacError, KEEL_MAC_PREFIX};
pub use policy::{NetLink, NetPolicy, Shaping, ShapingError};
pub use tap::{check_name, Tap, TapError, TUN_PATH};
pub use worker::{check_rx_chain, check_tx_chain, split_frame, tun_offloads, NetChainError};

/// virtio-net feature bits as masks.
pub mod features {
    use virtio_bindings::virtio_net as n;

    /// The device takes frames with partial checksums (guest → host).
    pub const CSUM: u64 = 1 << n::VIRTIO_NET_F_CSUM;
    /// The driver takes frames with partial checksums (host → guest).
    pub const GUEST_CSUM: u64 = 1 << n::VIRTIO_NET_F_GUEST_CSUM;
    /// The device has a MAC address in its configuration space.
    pub const MAC: u64 = 1 << n::VIRTIO_NET_F_MAC;
    pub const GUEST_TSO4: u64 = 1 << n::VIRTIO_NET_F_GUEST_TSO4;
    pub const GUEST_TSO6: u64 = 1 << n::VIRTIO_NET_F_GUEST_TSO6;
    pub const GUEST_ECN: u64 = 1 << n::VIRTIO_NET_F_GUEST_ECN;
    pub const GUEST_UFO: u64 = 1 << n::VIRTIO_NET_F_GUEST_UFO;
    pub const HOST_TSO4: u64 = 1 << n::VIRTIO_NET_F_HOST_TSO4;
    pub const HOST_TSO6: u64 = 1 << n::VIRTIO_NET_F_HOST_TSO6;
    pub const HOST_ECN: u64 = 1 << n::VIRTIO_NET_F_HOST_ECN;
    pub const HOST_UFO: u64 = 1 << n::VIRTIO_NET_F_HOST_UFO;
    /// A received frame may span several receive buffers (`num_buffers`).
    pub const MRG_RXBUF: u64 = 1 << n::VIRTIO_NET_F_MRG_RXBUF;
    /// The configuration space has a link status.
    pub const STATUS: u64 = 1 << n::VIRTIO_NET_F_STATUS;

    /// What the device offers.
    pub const OFFERED: u64 = CSUM
        | GUEST_CSUM
        | MAC
        | GUEST_TSO4
        | GUEST_TSO6
        | GUEST_ECN
        | HOST_TSO4
        | HOST_TSO6
        | HOST_ECN
        | MRG_RXBUF
        | STATUS;

    /// `acked` with every feature whose prerequisite is missing removed
    /// (virtio 1.x 5.1.3.1: TSO needs the checksum feature of the same
    /// direction, ECN needs TSO), so a driver that broke the rules gets the
    /// consistent subset.
    pub fn effective(acked: u64) -> u64 {
        let mut f = acked;
        if f & GUEST_CSUM == 0 {
            f &= !(GUEST_TSO4 | GUEST_TSO6 | GUEST_UFO);
        }
        if f & (GUEST_TSO4 | GUEST_TSO6) == 0 {
            f &= !GUEST_ECN;
        }
        if f & CSUM == 0 {
            f &= !(HOST_TSO4 | HOST_TSO6 | HOST_UFO);
        }
        if f & (HOST_TSO4 | HOST_TSO6) == 0 {
            f &= !HOST_ECN;
        }
        f
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tap_tests;

#[cfg(test)]
mod policy_tests;
