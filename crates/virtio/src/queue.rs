//! One activated split virtqueue: `virtio_queue::Queue` plus its index and
//! kick EventFd, with errors that tell a broken ring (the device must ask
//! for a reset) from an empty one.

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueState, QueueT};

/// A ring the driver broke: the device cannot trust the queue any more and
/// sets DEVICE_NEEDS_RESET.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("Queue {index}: ring is unusable")]
    Ring {
        index: u16,
        #[source]
        source: virtio_queue::Error,
    },
    #[error("Queue {index}: descriptor head {head} is outside the {size}-entry table")]
    HeadOutOfRange { index: u16, head: u16, size: u16 },
}

/// A chain popped from a [`VirtQueue`], borrowing guest memory.
pub type Chain<'a> = DescriptorChain<&'a GuestMemoryMmap>;

/// An enabled, validated virtqueue handed to a device at activation.
#[derive(Debug)]
pub struct VirtQueue {
    index: u16,
    queue: Queue,
    kick: EventFd,
}

impl VirtQueue {
    /// Wraps `queue` (already checked with `Queue::is_valid` against guest
    /// memory and marked ready) as queue number `index`.
    pub fn new(index: u16, queue: Queue, kick: EventFd) -> Self {
        Self { index, queue, kick }
    }

    /// The queue's number in the device (0 for rng's only queue, ...).
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The size the driver chose (a power of two).
    pub fn size(&self) -> u16 {
        self.queue.size()
    }

    /// The EventFd the driver's notifications for this queue signal.
    pub fn kick(&self) -> &EventFd {
        &self.kick
    }

    /// Takes the next available chain, or `None` when the driver has not
    /// made more available. The chain is not validated yet (see
    /// [`crate::chain::validate`]); only its head index is.
    pub fn pop<'a>(&mut self, mem: &'a GuestMemoryMmap) -> Result<Option<Chain<'a>>, QueueError> {
        let index = self.index;
        let size = self.queue.size();
        let mut iter = self
            .queue
            .iter(mem)
            .map_err(|source| QueueError::Ring { index, source })?;
        let Some(chain) = iter.next() else {
            return Ok(None);
        };
        let head = chain.head_index();
        if head >= size {
            // It can never go back to the used ring: the ring is broken.
            return Err(QueueError::HeadOutOfRange { index, head, size });
        }
        Ok(Some(chain))
    }

    /// [`pop`](Self::pop) for devices that take chains one at a time when
    /// they have a use for them (outside [`crate::worker::WorkerContext::process_chains`]):
    /// when the ring is empty, asks the driver to notify the next chain
    /// (with EVENT_IDX it would not, otherwise) and looks once more.
    pub fn pop_or_arm<'a>(
        &mut self,
        mem: &'a GuestMemoryMmap,
    ) -> Result<Option<Chain<'a>>, QueueError> {
        if let Some(chain) = self.pop(mem)? {
            return Ok(Some(chain));
        }
        if self.enable_notification(mem)? {
            return self.pop(mem);
        }
        Ok(None)
    }

    /// Puts back the chain the last [`pop`](Self::pop) took: the next `pop`
    /// returns it again. For devices that learn only after popping a buffer
    /// that they have nothing to put in it (a socket that would block).
    pub fn undo_pop(&mut self) {
        let next = self.queue.next_avail();
        self.queue.set_next_avail(next.wrapping_sub(1));
    }

    /// Returns chain `head` to the driver with `len` bytes written.
    pub fn add_used(
        &mut self,
        mem: &GuestMemoryMmap,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        let index = self.index;
        self.queue
            .add_used(mem, head, len)
            .map_err(|source| QueueError::Ring { index, source })
    }

    /// Asks the driver for notifications again; true if more chains arrived
    /// meanwhile (process them before sleeping).
    pub fn enable_notification(&mut self, mem: &GuestMemoryMmap) -> Result<bool, QueueError> {
        let index = self.index;
        self.queue
            .enable_notification(mem)
            .map_err(|source| QueueError::Ring { index, source })
    }

    /// Tells the driver not to notify while the device is busy on the queue.
    pub fn disable_notification(&mut self, mem: &GuestMemoryMmap) -> Result<(), QueueError> {
        let index = self.index;
        self.queue
            .disable_notification(mem)
            .map_err(|source| QueueError::Ring { index, source })
    }

    /// Whether the driver wants an interrupt for what was added to the used
    /// ring since the last call (EVENT_IDX aware).
    pub fn needs_notification(&mut self, mem: &GuestMemoryMmap) -> Result<bool, QueueError> {
        let index = self.index;
        self.queue
            .needs_notification(mem)
            .map_err(|source| QueueError::Ring { index, source })
    }

    /// The ring state (indexes, addresses), for snapshots.
    pub fn state(&self) -> QueueState {
        self.queue.state()
    }
}
