//! Host networking for Keel: Linux bridges as standard switches
//! ([`switch`]), TAP ports with VLANs for VM NICs ([`port`]), the default
//! network's NAT ([`nat`]) and DHCP server ([`dhcp`]), and generated MACs
//! ([`mac`]). All of it is synchronous; see docs/networking.md.

pub mod dhcp;
pub mod mac;
pub mod nat;
pub mod nl;
pub mod port;
pub mod subnet;
pub mod switch;
mod sys;

pub use mac::Mac;
pub use nl::{Link, Netlink, NetlinkError};
pub use subnet::Ipv4Net;
