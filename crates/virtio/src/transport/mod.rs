//! Transports: how a driver finds a device and reaches its registers.
//! Only virtio-pci (modern, virtio 1.x) for now.

pub mod pci;
