//! virtio devices (block, net, rng, console, vsock, balloon) and the virtio-pci transport.
