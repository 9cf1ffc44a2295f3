//! The virtio-rng device: identity, features, lifecycle.

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

use super::worker::RngHandler;
use crate::device::{ActivateError, Activation, VirtioDevice};
use crate::worker::{self, WorkerHandle};

/// The queue size the device offers.
pub const QUEUE_SIZE: u16 = 256;

/// A virtio entropy device backed by the host's getrandom.
pub struct Rng {
    worker: Option<WorkerHandle<RngHandler>>,
}

impl Rng {
    pub fn new() -> Self {
        Self { worker: None }
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // virtio-rng has no configuration space.
        data.fill(0);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if activation.queues.iter().all(|q| q.index() != 0) {
            return Err(ActivateError::MissingQueue(0));
        }
        let handle = worker::spawn("virtio-rng", activation, RngHandler::new())
            .map_err(ActivateError::Worker)?;
        self.worker = Some(handle);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }

    fn pause(&mut self) -> Result<(), ActivateError> {
        match &mut self.worker {
            Some(w) => w.pause().map_err(ActivateError::Worker),
            None => Ok(()),
        }
    }

    fn resume(&mut self) -> Result<(), ActivateError> {
        match &mut self.worker {
            Some(w) => w.resume().map_err(ActivateError::Worker),
            None => Ok(()),
        }
    }

    fn describe(&self) -> String {
        "virtio-rng: entropy from the host's getrandom".to_string()
    }
}
