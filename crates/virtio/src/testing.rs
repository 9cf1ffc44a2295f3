//! An in-process virtio driver for tests and device benchmarks: it owns
//! guest memory, lays out split virtqueues in it, plugs a
//! [`VirtioPciDevice`] into a real `pci::PciRoot` (which places its BAR as
//! firmware would) and drives it through ECAM and the BAR window, in the
//! order Linux's `virtio_pci_modern` does, with fake KVM plumbing (MSI
//! routes, ioeventfds, an INTx line) whose fds are real EventFds.
//!
//! ```ignore
//! let mut d = TestDriver::new(Box::new(Rng::new()));
//! d.enable_msix();
//! d.init(VERSION_1).unwrap();
//! d.setup_queue(0, 16);
//! d.driver_ok();
//! let buf = d.alloc(64);
//! d.add_chain(0, &[(buf, 64, WRITE)]);
//! d.kick(0);
//! let used = d.wait_used(0, 1);
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use devices::{BusDevice, IoEvents, IrqLine, MsiMessage, MsiRoutes, MsiVector};
use pci::{BarWindow, Ecam, PciRoot, PciWindows};
use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::device::VirtioDevice;
use crate::transport::pci::VirtioPciDevice;

/// Size of the test guest's memory (one region at 0).
pub const TEST_MEM_SIZE: usize = 4 << 20;
/// The PCI memory window of the test bus (BAR 0 lands at its start).
pub const TEST_MMIO_WINDOW: std::ops::Range<u64> = 0xc000_0000..0xe000_0000;
/// How long waits last before a test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A descriptor as the driver writes it into a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescSpec {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

impl DescSpec {
    pub fn new(addr: u64, len: u32, flags: u16, next: u16) -> Self {
        Self {
            addr,
            len,
            flags,
            next,
        }
    }

    /// Writes the 16-byte descriptor at `at`.
    pub fn write_at(&self, mem: &GuestMemoryMmap, at: GuestAddress) {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..16].copy_from_slice(&self.next.to_le_bytes());
        mem.write_slice(&b, at).unwrap();
    }
}

/// Where a split virtqueue's three parts sit in guest memory.
#[derive(Clone, Copy, Debug)]
pub struct TestQueueLayout {
    pub size: u16,
    pub desc: GuestAddress,
    pub avail: GuestAddress,
    pub used: GuestAddress,
}

impl TestQueueLayout {
    /// Lays a queue of `size` entries out from `base` (16-byte aligned).
    pub fn new(base: GuestAddress, size: u16) -> Self {
        let n = u64::from(size);
        let desc = base;
        let avail = desc.unchecked_add(16 * n);
        // flags, idx, ring[n], used_event
        let used_at = (avail.0 + 6 + 2 * n + 3) & !3;
        Self {
            size,
            desc,
            avail,
            used: GuestAddress(used_at),
        }
    }

    /// The first byte after the used ring.
    pub fn end(&self) -> GuestAddress {
        self.used.unchecked_add(6 + 8 * u64::from(self.size))
    }

    /// Zeroes the rings.
    pub fn init(&self, mem: &GuestMemoryMmap) {
        let len = (self.end().0 - self.desc.0) as usize;
        mem.write_slice(&vec![0u8; len], self.desc).unwrap();
    }

    /// Points a `virtio_queue::Queue` at this layout (for tests without a
    /// transport).
    pub fn configure(&self, q: &mut Queue) {
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.desc.0 as u32), Some((self.desc.0 >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail.0 as u32), Some((self.avail.0 >> 32) as u32));
        q.set_used_ring_address(Some(self.used.0 as u32), Some((self.used.0 >> 32) as u32));
        q.set_ready(true);
    }

    pub fn write_desc(&self, mem: &GuestMemoryMmap, index: u16, d: DescSpec) {
        d.write_at(mem, self.desc.unchecked_add(16 * u64::from(index)));
    }

    pub fn avail_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(self.avail.unchecked_add(2)).unwrap()
    }

    /// Offers chain `head` in the available ring.
    pub fn publish(&self, mem: &GuestMemoryMmap, head: u16) {
        let idx = self.avail_idx(mem);
        let slot = self.avail.unchecked_add(4 + 2 * u64::from(idx % self.size));
        mem.write_obj(head, slot).unwrap();
        std::sync::atomic::fence(Ordering::SeqCst);
        mem.write_obj(idx.wrapping_add(1), self.avail.unchecked_add(2))
            .unwrap();
    }

    /// Writes the avail ring's `idx` directly (for hostile tests).
    pub fn set_avail_idx(&self, mem: &GuestMemoryMmap, idx: u16) {
        mem.write_obj(idx, self.avail.unchecked_add(2)).unwrap();
    }

    pub fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(self.used.unchecked_add(2)).unwrap()
    }

    /// Used ring element `i` (mod size): (descriptor head, bytes written).
    pub fn used_elem(&self, mem: &GuestMemoryMmap, i: u16) -> (u32, u32) {
        let at = self.used.unchecked_add(4 + 8 * u64::from(i % self.size));
        let id: u32 = mem.read_obj(at).unwrap();
        let len: u32 = mem.read_obj(at.unchecked_add(4)).unwrap();
        (id, len)
    }
}

/// MSI routes on plain EventFds; remembers routes and keeps a clone of
/// every irqfd so tests can see interrupts.
#[derive(Default)]
pub struct FakeMsiRoutes {
    next_gsi: AtomicU32,
    pub routes: Mutex<HashMap<u32, Option<MsiMessage>>>,
    pub irqfds: Mutex<HashMap<u32, EventFd>>,
    pub released: Mutex<Vec<u32>>,
}

impl MsiRoutes for FakeMsiRoutes {
    fn allocate(&self) -> std::io::Result<MsiVector> {
        let gsi = 24 + self.next_gsi.fetch_add(1, Ordering::SeqCst);
        let irqfd = EventFd::new(EFD_NONBLOCK)?;
        self.irqfds.lock().unwrap().insert(gsi, irqfd.try_clone()?);
        self.routes.lock().unwrap().insert(gsi, None);
        Ok(MsiVector { gsi, irqfd })
    }

    fn route(&self, gsi: u32, msg: Option<MsiMessage>) -> std::io::Result<()> {
        self.routes.lock().unwrap().insert(gsi, msg);
        Ok(())
    }

    fn release(&self, vector: MsiVector) {
        self.released.lock().unwrap().push(vector.gsi);
    }
}

impl FakeMsiRoutes {
    /// Consumes the interrupts pending on the irqfd of the GSI routed to
    /// MSI data `data`; returns how many there were.
    pub fn take_irqs(&self, data: u32) -> u64 {
        let gsi = self
            .routes
            .lock()
            .unwrap()
            .iter()
            .find(|(_, m)| m.is_some_and(|m| m.data == data))
            .map(|(g, _)| *g);
        let Some(gsi) = gsi else { return 0 };
        self.irqfds.lock().unwrap()[&gsi].read().unwrap_or(0)
    }
}

/// ioeventfds as a table of (address → EventFd clone).
#[derive(Default)]
pub struct FakeIoEvents {
    pub registered: Mutex<HashMap<u64, EventFd>>,
}

impl IoEvents for FakeIoEvents {
    fn register(&self, addr: u64, fd: &EventFd) -> std::io::Result<()> {
        self.registered
            .lock()
            .unwrap()
            .insert(addr, fd.try_clone()?);
        Ok(())
    }

    fn unregister(&self, addr: u64, _fd: &EventFd) -> std::io::Result<()> {
        self.registered.lock().unwrap().remove(&addr);
        Ok(())
    }
}

/// An INTx line that remembers its level and counts rising edges.
#[derive(Default)]
pub struct FakeIrqLine {
    pub level: AtomicBool,
    pub raised: AtomicU32,
}

impl IrqLine for FakeIrqLine {
    fn set_level(&self, high: bool) {
        if high && !self.level.swap(true, Ordering::SeqCst) {
            self.raised.fetch_add(1, Ordering::SeqCst);
        } else if !high {
            self.level.store(false, Ordering::SeqCst);
        }
    }
}

/// Where the virtio structures are in BAR 0, as the driver found them.
#[derive(Clone, Copy, Debug, Default)]
pub struct VirtioCaps {
    pub common: u64,
    pub notify: u64,
    pub notify_len: u32,
    pub notify_multiplier: u32,
    pub isr: u64,
    pub device: u64,
    pub pci_cfg: usize,
    pub msix: usize,
    pub msix_table: u64,
    pub msix_pba: u64,
    pub msix_size: u16,
}

// Common configuration offsets, as in Linux's struct virtio_pci_common_cfg.
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const CONFIG_MSIX_VECTOR: u64 = 0x10;
const DEVICE_STATUS: u64 = 0x14;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;

pub const S_ACKNOWLEDGE: u8 = 1;
pub const S_DRIVER: u8 = 2;
pub const S_DRIVER_OK: u8 = 4;
pub const S_FEATURES_OK: u8 = 8;
pub const S_NEEDS_RESET: u8 = 64;

/// Base of the MSI data values the driver programs (vector v gets
/// `MSI_DATA_BASE + v`).
pub const MSI_DATA_BASE: u32 = 0x40;

/// The test driver. Tests reach everything: fields are public.
pub struct TestDriver {
    pub dev: Arc<Mutex<VirtioPciDevice>>,
    pub root: PciRoot,
    pub slot: u8,
    ecam: Ecam,
    bar_window: BarWindow,
    pub mem: GuestMemoryMmap,
    pub msi: Arc<FakeMsiRoutes>,
    pub ioevents: Arc<FakeIoEvents>,
    pub irq: Arc<FakeIrqLine>,
    pub caps: VirtioCaps,
    pub queues: HashMap<u16, TestQueueLayout>,
    pub msix: bool,
    next_alloc: u64,
}

impl TestDriver {
    /// Plugs `device` into a PCI root (BAR placed in [`TEST_MMIO_WINDOW`])
    /// and finds its capabilities.
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), TEST_MEM_SIZE)]).unwrap();
        let msi = Arc::new(FakeMsiRoutes::default());
        let ioevents = Arc::new(FakeIoEvents::default());
        let irq = Arc::new(FakeIrqLine::default());
        let dev = VirtioPciDevice::new(
            device,
            mem.clone(),
            msi.clone(),
            ioevents.clone(),
            irq.clone(),
        )
        .unwrap();
        let dev = Arc::new(Mutex::new(dev));
        let mut root = PciRoot::new(PciWindows {
            mmio: TEST_MMIO_WINDOW,
            io: 0xc000..0x1_0000,
        });
        let slot = root.add(dev.clone()).unwrap();
        let ecam = root.ecam();
        let bar_window = root.mmio_bars(TEST_MMIO_WINDOW.start);
        let mut d = Self {
            dev,
            root,
            slot,
            ecam,
            bar_window,
            mem,
            msi,
            ioevents,
            irq,
            caps: VirtioCaps::default(),
            queues: HashMap::new(),
            msix: false,
            next_alloc: 0x10_0000,
        };
        d.caps = d.find_caps();
        d
    }

    /// The device (locked, as a vCPU would hold it).
    pub fn dev(&self) -> MutexGuard<'_, VirtioPciDevice> {
        self.dev.lock().unwrap()
    }

    /// Where BAR 0 decodes now.
    pub fn bar_addr(&self) -> u64 {
        use pci::PciDevice;
        self.dev().bars()[0].addr
    }

    /// Bump-allocates `len` bytes of guest memory (16-byte aligned).
    pub fn alloc(&mut self, len: u64) -> u64 {
        let at = self.next_alloc;
        self.next_alloc = (at + len + 15) & !15;
        assert!(
            self.next_alloc <= TEST_MEM_SIZE as u64,
            "test memory exhausted"
        );
        at
    }

    fn ecam_offset(&self, off: usize) -> u64 {
        (u64::from(self.slot) << 15) | off as u64
    }

    /// Reads configuration space through ECAM, as the guest does.
    pub fn cfg_read(&mut self, off: usize, data: &mut [u8]) {
        let at = self.ecam_offset(off);
        self.ecam.read(at, data);
    }

    pub fn cfg_read8(&mut self, off: usize) -> u8 {
        let mut b = [0u8; 1];
        self.cfg_read(off, &mut b);
        b[0]
    }

    pub fn cfg_read16(&mut self, off: usize) -> u16 {
        let mut b = [0u8; 2];
        self.cfg_read(off, &mut b);
        u16::from_le_bytes(b)
    }

    pub fn cfg_read32(&mut self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        self.cfg_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    /// Writes configuration space through ECAM.
    pub fn cfg_write(&mut self, off: usize, data: &[u8]) {
        let at = self.ecam_offset(off);
        self.ecam.write(at, data);
    }

    /// Walks the capability list like `virtio_pci_find_capability`.
    pub fn find_caps(&mut self) -> VirtioCaps {
        let mut caps = VirtioCaps::default();
        let mut pos = usize::from(self.cfg_read8(0x34));
        let mut guard = 0;
        while pos != 0 && guard < 48 {
            guard += 1;
            let id = self.cfg_read8(pos);
            if id == 0x11 {
                caps.msix = pos;
                let ctrl = self.cfg_read16(pos + 2);
                caps.msix_size = (ctrl & 0x7ff) + 1;
                let table = self.cfg_read32(pos + 4);
                let pba = self.cfg_read32(pos + 8);
                assert_eq!(table & 7, 0, "MSI-X table in BAR 0");
                assert_eq!(pba & 7, 0, "MSI-X PBA in BAR 0");
                caps.msix_table = u64::from(table & !7);
                caps.msix_pba = u64::from(pba & !7);
            } else if id == 0x09 {
                let cfg_type = self.cfg_read8(pos + 3);
                let bar = self.cfg_read8(pos + 4);
                let offset = u64::from(self.cfg_read32(pos + 8));
                let length = self.cfg_read32(pos + 12);
                if cfg_type != 5 {
                    assert_eq!(bar, 0, "virtio structure in BAR 0");
                }
                match cfg_type {
                    1 => {
                        assert!(length >= 0x38);
                        caps.common = offset;
                    }
                    2 => {
                        caps.notify = offset;
                        caps.notify_len = length;
                        caps.notify_multiplier = self.cfg_read32(pos + 16);
                    }
                    3 => caps.isr = offset,
                    4 => caps.device = offset,
                    5 => caps.pci_cfg = pos,
                    _ => {}
                }
            }
            pos = usize::from(self.cfg_read8(pos + 1));
        }
        caps
    }

    /// Reads BAR 0 at `off` through the PCI root's MMIO window.
    pub fn bar_read(&mut self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        let at = self.bar_addr() + off - TEST_MMIO_WINDOW.start;
        self.bar_window.read(at, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    /// Writes BAR 0 at `off` through the PCI root's MMIO window.
    pub fn bar_write(&mut self, off: u64, len: usize, v: u64) {
        let at = self.bar_addr() + off - TEST_MMIO_WINDOW.start;
        self.bar_window.write(at, &v.to_le_bytes()[..len]);
    }

    pub fn common_read(&mut self, off: u64, len: usize) -> u64 {
        self.bar_read(self.caps.common + off, len)
    }

    pub fn common_write(&mut self, off: u64, len: usize, v: u64) {
        self.bar_write(self.caps.common + off, len, v)
    }

    pub fn status(&mut self) -> u8 {
        self.common_read(DEVICE_STATUS, 1) as u8
    }

    pub fn set_status(&mut self, s: u8) {
        self.common_write(DEVICE_STATUS, 1, u64::from(s))
    }

    fn add_status(&mut self, bit: u8) {
        let s = self.status();
        self.set_status(s | bit);
    }

    /// Enables MSI-X like `pci_alloc_irq_vectors` + `request_irq`: every
    /// vector v routed to data `MSI_DATA_BASE + v`, then unmasked.
    pub fn enable_msix(&mut self) {
        let ctrl = self.caps.msix + 2;
        let c = self.cfg_read16(ctrl);
        self.cfg_write(ctrl, &(c | 0xc000).to_le_bytes());
        for v in 0..u64::from(self.caps.msix_size) {
            let e = self.caps.msix_table + 16 * v;
            self.bar_write(e, 4, 0xfee0_0000);
            self.bar_write(e + 4, 4, 0);
            self.bar_write(e + 8, 4, u64::from(MSI_DATA_BASE) + v);
            self.bar_write(e + 12, 4, 0);
        }
        let c = self.cfg_read16(ctrl);
        self.cfg_write(ctrl, &((c | 0x8000) & !0x4000).to_le_bytes());
        self.msix = true;
    }

    /// Resets the device and waits for status 0, as `vp_reset` does.
    pub fn reset(&mut self) {
        self.set_status(0);
        let start = Instant::now();
        while self.status() != 0 {
            assert!(start.elapsed() < TIMEOUT, "device did not reset");
            std::thread::sleep(Duration::from_millis(1));
        }
        self.queues.clear();
    }

    /// The features the device offers.
    pub fn device_features(&mut self) -> u64 {
        self.common_write(DEVICE_FEATURE_SELECT, 4, 0);
        let lo = self.common_read(DEVICE_FEATURE, 4);
        self.common_write(DEVICE_FEATURE_SELECT, 4, 1);
        let hi = self.common_read(DEVICE_FEATURE, 4);
        lo | (hi << 32)
    }

    /// Reset, ACKNOWLEDGE, DRIVER, write `features` verbatim, FEATURES_OK;
    /// returns the status read back.
    pub fn negotiate_raw(&mut self, features: u64) -> u8 {
        self.reset();
        self.add_status(S_ACKNOWLEDGE);
        self.add_status(S_DRIVER);
        self.common_write(DRIVER_FEATURE_SELECT, 4, 0);
        self.common_write(DRIVER_FEATURE, 4, features & 0xffff_ffff);
        self.common_write(DRIVER_FEATURE_SELECT, 4, 1);
        self.common_write(DRIVER_FEATURE, 4, features >> 32);
        self.add_status(S_FEATURES_OK);
        self.status()
    }

    /// The driver's side of feature negotiation: accepts what it `wants`
    /// of what is offered; Err(status) if the device refuses FEATURES_OK.
    pub fn init(&mut self, wants: u64) -> Result<u64, u8> {
        self.reset();
        self.add_status(S_ACKNOWLEDGE);
        self.add_status(S_DRIVER);
        let features = self.device_features() & wants;
        self.common_write(DRIVER_FEATURE_SELECT, 4, 0);
        self.common_write(DRIVER_FEATURE, 4, features & 0xffff_ffff);
        self.common_write(DRIVER_FEATURE_SELECT, 4, 1);
        self.common_write(DRIVER_FEATURE, 4, features >> 32);
        self.add_status(S_FEATURES_OK);
        let s = self.status();
        if s & S_FEATURES_OK == 0 {
            return Err(s);
        }
        if self.msix {
            self.common_write(CONFIG_MSIX_VECTOR, 2, 0);
            assert_eq!(self.common_read(CONFIG_MSIX_VECTOR, 2), 0);
        }
        Ok(features)
    }

    /// Sets queue `index` up with `size` entries as `vp_modern` setup_vq
    /// does (MSI-X vector index + 1); returns its layout.
    pub fn setup_queue(&mut self, index: u16, size: u16) -> TestQueueLayout {
        self.common_write(QUEUE_SELECT, 2, u64::from(index));
        let max = self.common_read(QUEUE_SIZE, 2) as u16;
        assert!(max >= size, "queue {index} max size {max} < {size}");
        assert_eq!(self.common_read(QUEUE_ENABLE, 2), 0);
        let base = self
            .alloc(16 * u64::from(size) + 8 + 2 * u64::from(size) + 8 + 8 * u64::from(size) + 16);
        let layout = TestQueueLayout::new(GuestAddress(base), size);
        layout.init(&self.mem);
        self.common_write(QUEUE_SIZE, 2, u64::from(size));
        for (reg, addr) in [
            (QUEUE_DESC, layout.desc),
            (QUEUE_DRIVER, layout.avail),
            (QUEUE_DEVICE, layout.used),
        ] {
            self.common_write(reg, 4, addr.0 & 0xffff_ffff);
            self.common_write(reg + 4, 4, addr.0 >> 32);
        }
        if self.msix {
            let v = u64::from(index) + 1;
            self.common_write(QUEUE_MSIX_VECTOR, 2, v);
            assert_eq!(self.common_read(QUEUE_MSIX_VECTOR, 2), v, "vector refused");
        }
        self.common_write(QUEUE_ENABLE, 2, 1);
        self.queues.insert(index, layout);
        layout
    }

    pub fn driver_ok(&mut self) {
        self.add_status(S_DRIVER_OK);
    }

    /// Writes descriptors at table slots `first..` chained in order, and
    /// offers the chain. `bufs` are (address, length, flags without NEXT).
    pub fn add_chain(&mut self, queue: u16, first: u16, bufs: &[(u64, u32, u16)]) -> u16 {
        let l = self.queues[&queue];
        for (i, &(addr, len, flags)) in bufs.iter().enumerate() {
            let slot = (first + i as u16) % l.size;
            let last = i + 1 == bufs.len();
            let (flags, next) = if last {
                (flags, 0)
            } else {
                (flags | VRING_DESC_F_NEXT as u16, (slot + 1) % l.size)
            };
            l.write_desc(&self.mem, slot, DescSpec::new(addr, len, flags, next));
        }
        l.publish(&self.mem, first);
        first
    }

    /// Notifies queue `index` the way a vCPU would: through its ioeventfd
    /// when one is registered (as KVM would), else through an MMIO write.
    pub fn kick(&mut self, index: u16) {
        let off = self.caps.notify + u64::from(index) * u64::from(self.caps.notify_multiplier);
        let addr = self.bar_addr() + off;
        if let Some(fd) = self.ioevents.registered.lock().unwrap().get(&addr) {
            fd.write(1).unwrap();
            return;
        }
        self.bar_write(off, 2, u64::from(index));
    }

    /// Waits until queue `index`'s used ring reaches `idx`; returns the
    /// elements from `from` on.
    pub fn wait_used(&mut self, index: u16, from: u16, idx: u16) -> Vec<(u32, u32)> {
        let l = self.queues[&index];
        let start = Instant::now();
        while l.used_idx(&self.mem) != idx {
            assert!(
                start.elapsed() < TIMEOUT,
                "queue {index}: used idx {} never reached {idx}",
                l.used_idx(&self.mem)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        (from..idx).map(|i| l.used_elem(&self.mem, i)).collect()
    }

    /// Waits for an interrupt on queue `index` (its MSI-X vector, or INTx
    /// with the ISR queue bit).
    pub fn wait_queue_irq(&mut self, index: u16) {
        let start = Instant::now();
        loop {
            if self.msix {
                if self.msi.take_irqs(MSI_DATA_BASE + u32::from(index) + 1) > 0 {
                    return;
                }
            } else if self.irq.level.load(Ordering::SeqCst) {
                let isr = self.bar_read(self.caps.isr, 1);
                assert_eq!(isr & 1, 1, "INTx without the ISR queue bit");
                return;
            }
            assert!(start.elapsed() < TIMEOUT, "no interrupt for queue {index}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits for the configuration interrupt (MSI-X vector 0 or ISR bit 1).
    pub fn wait_config_irq(&mut self) {
        let start = Instant::now();
        loop {
            if self.msix {
                if self.msi.take_irqs(MSI_DATA_BASE) > 0 {
                    return;
                }
            } else if self.irq.level.load(Ordering::SeqCst) {
                let isr = self.bar_read(self.caps.isr, 1);
                if isr & 2 == 2 {
                    return;
                }
            }
            assert!(start.elapsed() < TIMEOUT, "no configuration interrupt");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until the device sets DEVICE_NEEDS_RESET.
    pub fn wait_needs_reset(&mut self) {
        let start = Instant::now();
        while self.status() & S_NEEDS_RESET == 0 {
            assert!(start.elapsed() < TIMEOUT, "device never asked for a reset");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The notify offset the device gives queue `index`.
    pub fn queue_notify_off(&mut self, index: u16) -> u16 {
        self.common_write(QUEUE_SELECT, 2, u64::from(index));
        self.common_read(QUEUE_NOTIFY_OFF, 2) as u16
    }

    pub fn read_guest(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    pub fn fill_guest(&self, addr: u64, len: usize, byte: u8) {
        self.mem
            .write_slice(&vec![byte; len], GuestAddress(addr))
            .unwrap();
    }
}
