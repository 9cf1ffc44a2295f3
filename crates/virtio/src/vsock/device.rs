//! The virtio-vsock device: identity, configuration (the guest's CID),
//! lifecycle.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;

use super::worker::{VsockHandler, EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use crate::device::{read_config_bytes, ActivateError, Activation, VirtioDevice};
use crate::unix::{SocketError, SocketListener, MAX_SOCKET_PATH};
use crate::worker::{self, WorkerHandle};

/// Size of the receive and transmit queues.
pub const QUEUE_SIZE: u16 = 256;
/// Size of the event queue.
pub const EVENT_QUEUE_SIZE: u16 = 16;
/// The lowest CID a guest may have (0-2 are the hypervisor, local, host).
pub const MIN_GUEST_CID: u64 = 3;
/// The highest (u32::MAX is VMADDR_CID_ANY in the guest).
pub const MAX_GUEST_CID: u64 = u32::MAX as u64 - 1;
/// What `_<port>` adds to the socket path at most.
const PORT_SUFFIX_LEN: usize = "_4294967295".len();

/// Errors of [`Vsock::new`]: about what the user asked for.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("Guest CID {0} is reserved or too large: expected {MIN_GUEST_CID} to {MAX_GUEST_CID}")]
    BadCid(u64),
    #[error("vsock socket path {0} is too long: at most {max} bytes, to leave room for _<port>", max = MAX_SOCKET_PATH - PORT_SUFFIX_LEN)]
    PathTooLong(PathBuf),
    #[error("Cannot set up the vsock socket")]
    Socket(#[source] SocketError),
}

/// Checks a guest CID and a host socket path for [`Vsock`].
pub fn check_vsock(cid: u64, path: &Path) -> Result<(), VsockError> {
    if !(MIN_GUEST_CID..=MAX_GUEST_CID).contains(&cid) {
        return Err(VsockError::BadCid(cid));
    }
    if path.as_os_str().is_empty() || path.as_os_str().len() + PORT_SUFFIX_LEN > MAX_SOCKET_PATH {
        return Err(VsockError::PathTooLong(path.to_path_buf()));
    }
    Ok(())
}

/// Binds the host side's listening socket (once per VMM process: it stays
/// across guest reboots).
pub fn bind_vsock_socket(cid: u64, path: &Path) -> Result<Arc<SocketListener>, VsockError> {
    check_vsock(cid, path)?;
    SocketListener::bind(path)
        .map(Arc::new)
        .map_err(VsockError::Socket)
}

/// A virtio-vsock device whose host side is Unix sockets.
pub struct Vsock {
    cid: u64,
    uds_path: PathBuf,
    listener: Arc<SocketListener>,
    worker: Option<WorkerHandle<VsockHandler>>,
    config: [u8; 8],
}

impl Vsock {
    /// A device for guest CID `cid`, listening on `path`.
    pub fn new(cid: u64, path: &Path) -> Result<Self, VsockError> {
        let listener = bind_vsock_socket(cid, path)?;
        Self::with_listener(cid, listener)
    }

    /// A device over a socket [`bind_vsock_socket`] bound.
    pub fn with_listener(cid: u64, listener: Arc<SocketListener>) -> Result<Self, VsockError> {
        let uds_path = listener.path().to_path_buf();
        check_vsock(cid, &uds_path)?;
        Ok(Self {
            cid,
            uds_path,
            listener,
            worker: None,
            config: cid.to_le_bytes(),
        })
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, EVENT_QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        // Stream sockets only (no VIRTIO_VSOCK_F_SEQPACKET).
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        for q in [RX_QUEUE, TX_QUEUE, EVENT_QUEUE] {
            if activation.queues.iter().all(|aq| aq.index() != q) {
                return Err(ActivateError::MissingQueue(q));
            }
        }
        let handler = VsockHandler::new(self.cid, self.uds_path.clone(), self.listener.clone());
        let handle =
            worker::spawn("virtio-vsock", activation, handler).map_err(ActivateError::Worker)?;
        self.worker = Some(handle);
        Ok(())
    }

    fn reset(&mut self) {
        // Every connection ends with the worker; the listener stays.
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
        format!(
            "virtio-vsock: guest CID {}, host sockets {}[_<port>]",
            self.cid,
            self.uds_path.display()
        )
    }
}
