//! virtio-rng (entropy device, virtio 1.x section 5.4): one request queue;
//! every device-writable buffer the driver offers is filled from the host's
//! `getrandom(2)`.

mod device;
mod worker;

pub use device::Rng;
pub use worker::{fill_request, MAX_REQUEST_BYTES};

#[cfg(test)]
mod tests;
