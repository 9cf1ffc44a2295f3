//! A driver-side helper over [`TestDriver`] for devices that stream bytes
//! through several queues (console ports, vsock): offers single-buffer
//! chains, sends bytes, and collects what came back, per queue.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use vm_memory::{Address, Bytes};

use crate::testing::{TestDriver, TIMEOUT};

const WRITE: u16 = VRING_DESC_F_WRITE as u16;

/// One buffer the device returned: its head, the bytes it wrote (for a
/// device-writable buffer) and the length it reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Used {
    pub head: u16,
    pub len: u32,
    pub data: Vec<u8>,
}

pub struct StreamDriver {
    pub d: TestDriver,
    next_slot: HashMap<u16, u16>,
    seen: HashMap<u16, u16>,
    /// (queue, head) → (address, length, writable)
    bufs: HashMap<(u16, u16), (u64, u32, bool)>,
    /// Freed buffers by length, for reuse.
    pool: HashMap<u32, Vec<u64>>,
    /// Buffers a `wait` collected beyond what it was asked for.
    backlog: HashMap<u16, VecDeque<Used>>,
    /// Notify as a driver with VIRTIO_RING_F_EVENT_IDX does: only when the
    /// device's `avail_event` asks for it.
    pub event_idx: bool,
    /// The available index at each queue's last notification decision.
    notified: HashMap<u16, u16>,
}

impl StreamDriver {
    pub fn new(d: TestDriver) -> Self {
        Self {
            d,
            next_slot: HashMap::new(),
            seen: HashMap::new(),
            bufs: HashMap::new(),
            pool: HashMap::new(),
            backlog: HashMap::new(),
            event_idx: false,
            notified: HashMap::new(),
        }
    }

    /// Forgets the queues' progress (after the driver re-initialized).
    pub fn forget_queues(&mut self) {
        self.next_slot.clear();
        self.seen.clear();
        self.bufs.clear();
        self.backlog.clear();
        self.notified.clear();
    }

    /// Notifies `queue` of what was made available since the last call, as
    /// Linux's `virtqueue_kick` does (with EVENT_IDX, only if the device's
    /// `avail_event` lies in the new range).
    pub fn notify(&mut self, queue: u16) {
        let l = self.d.queues[&queue];
        let new = l.avail_idx(&self.d.mem);
        let old = self.notified.insert(queue, new).unwrap_or(0);
        if !self.event_idx {
            self.d.kick(queue);
            return;
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let at = l.used.unchecked_add(4 + 8 * u64::from(l.size));
        let event: u16 = self.d.mem.read_obj(at).unwrap();
        if new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old) {
            self.d.kick(queue);
        }
    }

    fn alloc(&mut self, len: u32) -> u64 {
        if let Some(a) = self.pool.get_mut(&len).and_then(|v| v.pop()) {
            return a;
        }
        self.d.alloc(u64::from(len.max(1)))
    }

    fn slot(&mut self, queue: u16) -> u16 {
        let size = self.d.queues[&queue].size;
        let s = self.next_slot.entry(queue).or_insert(0);
        let slot = *s;
        *s = (slot + 1) % size;
        slot
    }

    /// Offers one device-writable buffer of `len` bytes on `queue` (no kick).
    pub fn offer_nokick(&mut self, queue: u16, len: u32) -> u16 {
        let addr = self.alloc(len);
        self.d.fill_guest(addr, len as usize, 0xee);
        let slot = self.slot(queue);
        self.d.add_chain(queue, slot, &[(addr, len, WRITE)]);
        self.bufs.insert((queue, slot), (addr, len, true));
        slot
    }

    /// Offers one device-writable buffer and kicks.
    pub fn offer(&mut self, queue: u16, len: u32) -> u16 {
        let h = self.offer_nokick(queue, len);
        self.notify(queue);
        h
    }

    /// Sends `bytes` in one device-readable buffer on `queue` and kicks.
    pub fn send(&mut self, queue: u16, bytes: &[u8]) -> u16 {
        let h = self.send_nokick(queue, bytes);
        self.notify(queue);
        h
    }

    pub fn send_nokick(&mut self, queue: u16, bytes: &[u8]) -> u16 {
        let len = bytes.len() as u32;
        let addr = self.alloc(len);
        self.d
            .mem
            .write_slice(bytes, vm_memory::GuestAddress(addr))
            .unwrap();
        let slot = self.slot(queue);
        self.d.add_chain(queue, slot, &[(addr, len, 0)]);
        self.bufs.insert((queue, slot), (addr, len, false));
        slot
    }

    /// What the device returned on `queue` since the last call.
    pub fn poll(&mut self, queue: u16) -> Vec<Used> {
        let l = self.d.queues[&queue];
        let now = l.used_idx(&self.d.mem);
        let from = *self.seen.get(&queue).unwrap_or(&0);
        let mut out: Vec<Used> = self.backlog.remove(&queue).unwrap_or_default().into();
        let mut i = from;
        while i != now {
            let (head, len) = l.used_elem(&self.d.mem, i);
            let head = head as u16;
            let mut data = Vec::new();
            if let Some((addr, size, writable)) = self.bufs.remove(&(queue, head)) {
                if writable {
                    data = self.d.read_guest(addr, len.min(size) as usize);
                }
                self.pool.entry(size).or_default().push(addr);
            }
            out.push(Used { head, len, data });
            i = i.wrapping_add(1);
        }
        self.seen.insert(queue, now);
        out
    }

    /// Waits until `n` more buffers came back on `queue`; returns exactly
    /// those (later ones wait for the next call).
    pub fn wait(&mut self, queue: u16, n: usize) -> Vec<Used> {
        let start = Instant::now();
        let mut out = Vec::new();
        while out.len() < n {
            out.extend(self.poll(queue));
            if out.len() >= n {
                let extra: VecDeque<Used> = out.split_off(n).into();
                if !extra.is_empty() {
                    self.backlog.insert(queue, extra);
                }
                break;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "queue {queue}: {} of {n} buffers came back: {out:?}",
                out.len()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        out
    }

    /// Asserts nothing comes back on `queue` for a little while.
    pub fn quiet(&mut self, queue: u16) {
        std::thread::sleep(Duration::from_millis(50));
        let got = self.poll(queue);
        assert!(got.is_empty(), "queue {queue}: unexpected {got:?}");
    }
}
