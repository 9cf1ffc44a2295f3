//! The virtio-net device: identity, features, configuration space,
//! lifecycle.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_S_LINK_UP;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::NetBackend;
use super::features;
use super::mac::MacAddr;
use super::policy::{NetLink, NetPolicy};
use super::worker::{tun_offloads, NetHandler, RX_QUEUE, TX_QUEUE};
use crate::device::{read_config_bytes, ActivateError, Activation, VirtioDevice};
use crate::worker::{self, WorkerHandle};

/// The size of each queue the device offers (what Linux then uses).
pub const QUEUE_SIZE: u16 = 256;

/// Bytes of the configuration space: `mac[6]`, `status`,
/// `max_virtqueue_pairs`.
const CONFIG_LEN: usize = 10;

/// Frame counters, shared with whoever wants them (the control socket's
/// `counters`, tests), updated with relaxed atomic adds on the worker.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Frames delivered to the guest, and their bytes (headers excluded).
    pub rx_frames: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Frames from the backend lost for lack of guest buffer room, or
    /// while the link was down.
    pub rx_dropped: AtomicU64,
    /// Receive chains the guest got back unused (malformed).
    pub bad_rx_chains: AtomicU64,
    /// Frames sent to the backend, and their bytes (headers excluded).
    pub tx_frames: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Frames from the guest that were dropped (malformed, refused by the
    /// backend, or sent while the link was down).
    pub tx_dropped: AtomicU64,
    /// Frames from the guest dropped because their source MAC is not the
    /// NIC's (forged transmits rejected).
    pub tx_forged: AtomicU64,
    /// Frames from the backend dropped because their destination MAC is
    /// another NIC's unicast address (promiscuous mode rejected).
    pub rx_filtered: AtomicU64,
    /// Times the backend could not take a frame at once (it waited).
    pub tx_blocked: AtomicU64,
}

/// A virtio-net device with one queue pair on a [`NetBackend`].
pub struct Net {
    backend: Arc<dyn NetBackend>,
    mac: MacAddr,
    config: [u8; CONFIG_LEN],
    stats: Arc<NetStats>,
    policy: NetPolicy,
    link: NetLink,
    /// The generation of our attachment to `link` while active.
    attached: Option<u64>,
    worker: Option<WorkerHandle<NetHandler>>,
}

impl Net {
    /// A NIC with address `mac` whose frames go to `backend`, with
    /// counters of its own.
    pub fn new(backend: Arc<dyn NetBackend>, mac: MacAddr) -> Self {
        Self::with_stats(backend, mac, Arc::default())
    }

    /// A NIC that counts its frames in `stats` (which may outlive it: the
    /// next boot's device can go on counting in the same ones).
    pub fn with_stats(backend: Arc<dyn NetBackend>, mac: MacAddr, stats: Arc<NetStats>) -> Self {
        let mut config = [0u8; CONFIG_LEN];
        config[..6].copy_from_slice(&mac.bytes());
        // Bytes 6..8 (status) come from the link at each read.
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        Net {
            backend,
            mac,
            config,
            stats,
            policy: NetPolicy::default(),
            link: NetLink::default(),
            attached: None,
            worker: None,
        }
    }

    /// Applies `policy` (forged transmits, promiscuous mode, shaping) from the next
    /// activation on.
    pub fn with_policy(mut self, policy: NetPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Takes its link state from `link` (which may outlive the device, so
    /// that a link set down stays down across guest reboots).
    pub fn with_link(mut self, link: NetLink) -> Self {
        self.link = link;
        self
    }

    /// The link state's handle.
    pub fn link(&self) -> NetLink {
        self.link.clone()
    }

    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// The device's frame counters (they survive resets).
    pub fn stats(&self) -> Arc<NetStats> {
        self.stats.clone()
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        features::OFFERED
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = self.config;
        let status = if self.link.is_up() {
            VIRTIO_NET_S_LINK_UP as u16
        } else {
            0
        };
        config[6..8].copy_from_slice(&status.to_le_bytes());
        read_config_bytes(&config, offset, data);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        for index in [RX_QUEUE, TX_QUEUE] {
            if activation.queues.iter().all(|q| q.index() != index) {
                return Err(ActivateError::MissingQueue(index));
            }
        }
        self.backend
            .set_offload(tun_offloads(activation.features))
            .map_err(ActivateError::Backend)?;
        let wake = EventFd::new(EFD_NONBLOCK).map_err(ActivateError::Backend)?;
        let link_wake = wake.try_clone().map_err(ActivateError::Backend)?;
        let interrupt = activation.interrupt.clone();
        let handler = NetHandler::new(
            self.backend.clone(),
            format!("virtio-net {}", self.backend.describe()),
            activation.features,
            self.stats.clone(),
        )
        .with_policy(self.mac, &self.policy, self.link.clone(), wake);
        // Thread names show 15 characters: `net-keel0`.
        let name = format!("net-{}", self.backend.name());
        let handle = worker::spawn(&name, activation, handler).map_err(ActivateError::Worker)?;
        self.worker = Some(handle);
        self.attached = Some(self.link.attach(interrupt, link_wake));
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(g) = self.attached.take() {
            self.link.detach(g);
        }
        if let Some(w) = self.worker.take() {
            w.stop();
            // The next driver may take fewer offloads.
            let _ = self.backend.set_offload(0);
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
        format!("virtio-net: {}, MAC {}", self.backend.describe(), self.mac)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(g) = self.attached.take() {
            self.link.detach(g);
        }
    }
}
