//! The virtio-balloon device: identity, features, configuration space,
//! lifecycle, and the handle the VMM's control plane keeps.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ids::VIRTIO_ID_BALLOON;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::features::{DEFLATE_ON_OOM, REPORTING, STATS_VQ};
use super::worker::{BalloonHandler, PAGE_SIZE};
use crate::device::{read_config_bytes, ActivateError, Activation, VirtioDevice, VirtioInterrupt};
use crate::worker::{self, WorkerHandle};

/// The size of every queue the device offers.
pub const QUEUE_SIZE: u16 = 256;

/// Errors of the balloon's control side.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BalloonError {
    #[error("Balloon target {target} bytes is larger than guest memory ({memory} bytes)")]
    TargetTooLarge { target: u64, memory: u64 },
    #[error("Cannot create the balloon's stats EventFd: {0}")]
    EventFd(String),
}

/// What the balloon offers the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BalloonConfig {
    /// Offer VIRTIO_BALLOON_F_STATS_VQ.
    pub stats: bool,
    /// Offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM.
    pub deflate_on_oom: bool,
    /// Offer VIRTIO_BALLOON_F_REPORTING (free page reporting).
    pub free_page_reporting: bool,
    /// The target the device starts with, in bytes.
    pub initial_target: u64,
}

impl BalloonConfig {
    /// The device feature bits this configuration offers.
    pub fn features(&self) -> u64 {
        let mut f = 0;
        if self.stats {
            f |= STATS_VQ;
        }
        if self.deflate_on_oom {
            f |= DEFLATE_ON_OOM;
        }
        if self.free_page_reporting {
            f |= REPORTING;
        }
        f
    }
}

/// The guest's memory statistics (VIRTIO_BALLOON_S_*); `None` when the
/// guest did not send that one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestStats {
    pub swap_in: Option<u64>,
    pub swap_out: Option<u64>,
    pub major_faults: Option<u64>,
    pub minor_faults: Option<u64>,
    pub free_memory: Option<u64>,
    pub total_memory: Option<u64>,
    pub available_memory: Option<u64>,
    pub disk_caches: Option<u64>,
    pub hugetlb_allocations: Option<u64>,
    pub hugetlb_failures: Option<u64>,
}

/// A snapshot of the balloon for status reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BalloonInfo {
    pub target_bytes: u64,
    pub actual_bytes: u64,
    pub driver_ready: bool,
    /// Negotiated features.
    pub stats: bool,
    pub deflate_on_oom: bool,
    pub free_page_reporting: bool,
    pub inflated_pages: u64,
    pub deflated_pages: u64,
    pub reported_bytes: u64,
    pub rejected_pages: u64,
}

/// State shared by the device (vCPU side), its worker and the handle.
pub(crate) struct Shared {
    memory_bytes: u64,
    num_pages: AtomicU32,
    actual: AtomicU32,
    /// Set while the driver has the device started.
    interrupt: Mutex<Option<Arc<dyn VirtioInterrupt>>>,
    driver_features: AtomicU64,
    pub(crate) stats: Mutex<Option<(GuestStats, Instant)>>,
    /// Written by the handle to ask the worker for fresh statistics.
    pub(crate) stats_request: EventFd,
    pub(crate) inflated: AtomicU64,
    pub(crate) deflated: AtomicU64,
    pub(crate) reported: AtomicU64,
    pub(crate) rejected: AtomicU64,
    active: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The control side of a balloon, cheap to clone: the VMM keeps one to set
/// the target and read the state while the transport owns the device.
#[derive(Clone)]
pub struct BalloonHandle {
    shared: Arc<Shared>,
}

impl BalloonHandle {
    /// Asks the guest to give back `bytes` of its memory (rounded down to
    /// 4 KiB pages); raises the configuration interrupt when the driver is
    /// running, else the guest reads it when its driver starts.
    pub fn set_target(&self, bytes: u64) -> Result<(), BalloonError> {
        let s = &self.shared;
        if bytes > s.memory_bytes {
            return Err(BalloonError::TargetTooLarge {
                target: bytes,
                memory: s.memory_bytes,
            });
        }
        // Guest memory is at most 16 TiB, so this fits 32 bits.
        let pages = u32::try_from(bytes / PAGE_SIZE).unwrap_or(u32::MAX);
        s.num_pages.store(pages, Ordering::SeqCst);
        if let Some(irq) = lock(&s.interrupt).as_ref() {
            irq.signal_config();
        }
        Ok(())
    }

    /// The balloon's state.
    pub fn info(&self) -> BalloonInfo {
        let s = &self.shared;
        let f = s.driver_features.load(Ordering::SeqCst);
        BalloonInfo {
            target_bytes: u64::from(s.num_pages.load(Ordering::SeqCst)) * PAGE_SIZE,
            actual_bytes: u64::from(s.actual.load(Ordering::SeqCst)) * PAGE_SIZE,
            driver_ready: s.active.load(Ordering::SeqCst),
            stats: f & STATS_VQ != 0,
            deflate_on_oom: f & DEFLATE_ON_OOM != 0,
            free_page_reporting: f & REPORTING != 0,
            inflated_pages: s.inflated.load(Ordering::SeqCst),
            deflated_pages: s.deflated.load(Ordering::SeqCst),
            reported_bytes: s.reported.load(Ordering::SeqCst),
            rejected_pages: s.rejected.load(Ordering::SeqCst),
        }
    }

    /// The last statistics the guest sent and how old they are.
    pub fn stats(&self) -> Option<(GuestStats, Duration)> {
        lock(&self.shared.stats)
            .as_ref()
            .map(|(s, at)| (s.clone(), at.elapsed()))
    }

    /// Asks the guest for fresh statistics (the worker hands its stats
    /// buffer back); false when the driver did not negotiate the stats queue.
    pub fn request_stats(&self) -> bool {
        let s = &self.shared;
        if !s.active.load(Ordering::SeqCst)
            || s.driver_features.load(Ordering::SeqCst) & STATS_VQ == 0
        {
            return false;
        }
        s.stats_request.write(1).is_ok()
    }
}

/// A virtio memory balloon.
pub struct Balloon {
    config: BalloonConfig,
    queue_sizes: Vec<u16>,
    shared: Arc<Shared>,
    worker: Option<WorkerHandle<BalloonHandler>>,
}

impl Balloon {
    /// A balloon for a guest with `memory_bytes` of RAM.
    pub fn new(config: BalloonConfig, memory_bytes: u64) -> Result<Self, BalloonError> {
        let stats_request =
            EventFd::new(EFD_NONBLOCK).map_err(|e| BalloonError::EventFd(e.to_string()))?;
        let shared = Arc::new(Shared {
            memory_bytes,
            num_pages: AtomicU32::new(0),
            actual: AtomicU32::new(0),
            interrupt: Mutex::new(None),
            driver_features: AtomicU64::new(0),
            stats: Mutex::new(None),
            stats_request,
            inflated: AtomicU64::new(0),
            deflated: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            active: AtomicBool::new(false),
        });
        let handle = BalloonHandle {
            shared: shared.clone(),
        };
        handle.set_target(config.initial_target)?;
        let mut queue_sizes = vec![QUEUE_SIZE, QUEUE_SIZE];
        if config.stats {
            queue_sizes.push(QUEUE_SIZE);
        }
        if config.free_page_reporting {
            queue_sizes.push(QUEUE_SIZE);
        }
        Ok(Balloon {
            config,
            queue_sizes,
            shared,
            worker: None,
        })
    }

    /// The control handle.
    pub fn handle(&self) -> BalloonHandle {
        BalloonHandle {
            shared: self.shared.clone(),
        }
    }

    fn config_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.shared.num_pages.load(Ordering::SeqCst).to_le_bytes());
        b[4..].copy_from_slice(&self.shared.actual.load(Ordering::SeqCst).to_le_bytes());
        b
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.config.features()
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_bytes(), offset, data);
    }

    /// Only `actual` (bytes 4..8) is the driver's to write; any width.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut actual = self.shared.actual.load(Ordering::SeqCst).to_le_bytes();
        let mut changed = false;
        for (i, &byte) in data.iter().enumerate() {
            let at = offset.checked_add(i as u64);
            if let Some(at @ 4..=7) = at {
                actual[(at - 4) as usize] = byte;
                changed = true;
            }
        }
        if changed {
            self.shared
                .actual
                .store(u32::from_le_bytes(actual), Ordering::SeqCst);
        }
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        for needed in [0, 1] {
            if activation.queues.iter().all(|q| q.index() != needed) {
                return Err(ActivateError::MissingQueue(needed));
            }
        }
        let features = activation.features & self.config.features();
        let interrupt = activation.interrupt.clone();
        let stats_request = self
            .shared
            .stats_request
            .try_clone()
            .map_err(ActivateError::Backend)?;
        // Forget a request made while no driver ran.
        let _ = stats_request.read();
        let handler = BalloonHandler::new(
            self.shared.clone(),
            features,
            &activation.queues,
            stats_request,
        );
        let handle =
            worker::spawn("virtio-balloon", activation, handler).map_err(ActivateError::Worker)?;
        self.worker = Some(handle);
        self.shared
            .driver_features
            .store(features, Ordering::SeqCst);
        *lock(&self.shared.interrupt) = Some(interrupt);
        self.shared.active.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn reset(&mut self) {
        *lock(&self.shared.interrupt) = None;
        self.shared.active.store(false, Ordering::SeqCst);
        if let Some(w) = self.worker.take() {
            w.stop();
        }
        // A new driver starts with an empty balloon; the target stays.
        self.shared.actual.store(0, Ordering::SeqCst);
        self.shared.driver_features.store(0, Ordering::SeqCst);
        *lock(&self.shared.stats) = None;
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
        let mut extra = Vec::new();
        if self.config.stats {
            extra.push("stats");
        }
        if self.config.deflate_on_oom {
            extra.push("deflate-on-oom");
        }
        if self.config.free_page_reporting {
            extra.push("free page reporting");
        }
        if extra.is_empty() {
            "virtio-balloon".to_string()
        } else {
            format!("virtio-balloon ({})", extra.join(", "))
        }
    }
}
