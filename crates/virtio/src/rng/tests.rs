//! virtio-rng end to end through the transport, in process.

use std::time::Duration;

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::GuestAddress;

use super::{Rng, MAX_REQUEST_BYTES};
use crate::features::{RING_EVENT_IDX, RING_INDIRECT_DESC, VERSION_1};
use crate::testing::*;

const WRITE: u16 = VRING_DESC_F_WRITE as u16;
const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;
const SENTINEL: u8 = 0xa5;

/// A driver with MSI-X (or INTx), an active rng and queue 0 of `size`.
fn rng_driver(msix: bool, features: u64, size: u16) -> TestDriver {
    let mut d = TestDriver::new(Box::new(Rng::new()));
    if msix {
        d.enable_msix();
    }
    d.init(features).unwrap();
    d.setup_queue(0, size);
    d.driver_ok();
    d
}

/// Offers one writable buffer of `len` at a fresh address; returns it.
fn request(d: &mut TestDriver, slot: u16, len: u32) -> u64 {
    let buf = d.alloc(u64::from(len) + 64);
    d.fill_guest(buf, len as usize + 64, SENTINEL);
    d.add_chain(0, slot, &[(buf, len, WRITE)]);
    buf
}

fn looks_random(bytes: &[u8]) -> bool {
    bytes.iter().filter(|&&b| b == SENTINEL).count() < bytes.len() / 16 + 2
}

/// Serves one good request and checks it, used index `idx` → `idx + 1`.
fn assert_serves(d: &mut TestDriver, slot: u16, idx: u16) {
    let buf = request(d, slot, 32);
    d.kick(0);
    let used = d.wait_used(0, idx, idx + 1);
    assert_eq!(used, vec![(u32::from(slot), 32)]);
    assert!(looks_random(&d.read_guest(buf, 32)));
    assert_eq!(
        d.read_guest(buf + 32, 64),
        vec![SENTINEL; 64],
        "wrote past the buffer"
    );
}

#[test]
fn fills_the_guest_buffer_and_interrupts() {
    let mut d = rng_driver(true, VERSION_1, 16);
    let buf = request(&mut d, 0, 64);
    d.kick(0);
    assert_eq!(d.wait_used(0, 0, 1), vec![(0, 64)]);
    d.wait_queue_irq(0);
    let bytes = d.read_guest(buf, 64);
    assert!(looks_random(&bytes), "{bytes:?}");
    assert_eq!(d.read_guest(buf + 64, 64), vec![SENTINEL; 64]);
    // Two requests give different bytes.
    let buf2 = request(&mut d, 1, 64);
    d.kick(0);
    d.wait_used(0, 1, 2);
    assert_ne!(d.read_guest(buf2, 64), bytes);
}

#[test]
fn works_with_intx_event_idx_and_mmio_notifications() {
    let mut d = rng_driver(false, VERSION_1 | RING_EVENT_IDX, 8);
    assert_serves(&mut d, 0, 0);
    d.wait_queue_irq(0);
    // A notification that reaches the BAR (no ioeventfd) kicks too.
    d.ioevents.registered.lock().unwrap().clear();
    let buf = request(&mut d, 1, 16);
    let notify = d.caps.notify;
    d.bar_write(notify, 2, 0);
    d.wait_used(0, 1, 2);
    assert!(looks_random(&d.read_guest(buf, 16)));
}

#[test]
fn large_requests_are_capped() {
    let mut d = rng_driver(true, VERSION_1, 16);
    let len = 3 * MAX_REQUEST_BYTES as u32;
    let buf = request(&mut d, 0, len);
    d.kick(0);
    assert_eq!(d.wait_used(0, 0, 1), vec![(0, MAX_REQUEST_BYTES as u32)]);
    let bytes = d.read_guest(buf, len as usize);
    assert!(looks_random(&bytes[..MAX_REQUEST_BYTES]));
    assert!(bytes[MAX_REQUEST_BYTES..].iter().all(|&b| b == SENTINEL));
}

#[test]
fn scattered_and_indirect_buffers_are_filled() {
    let mut d = rng_driver(true, VERSION_1 | RING_INDIRECT_DESC, 16);
    let a = d.alloc(128);
    let b = d.alloc(128);
    d.fill_guest(a, 128, SENTINEL);
    d.fill_guest(b, 128, SENTINEL);
    d.add_chain(0, 0, &[(a, 16, WRITE), (b, 16, WRITE)]);
    // An indirect table with two more buffers.
    let table = d.alloc(32);
    DescSpec::new(a + 64, 8, WRITE | NEXT, 1).write_at(&d.mem, GuestAddress(table));
    DescSpec::new(b + 64, 8, WRITE, 0).write_at(&d.mem, GuestAddress(table + 16));
    d.add_chain(0, 2, &[(table, 32, INDIRECT)]);
    d.kick(0);
    assert_eq!(d.wait_used(0, 0, 2), vec![(0, 32), (2, 16)]);
    for (addr, len) in [(a, 16), (b, 16), (a + 64, 8), (b + 64, 8)] {
        assert!(looks_random(&d.read_guest(addr, len)));
        assert_eq!(d.read_guest(addr + len as u64, 8), vec![SENTINEL; 8]);
    }
}

#[test]
fn hostile_chains_are_returned_unused_and_the_device_keeps_serving() {
    let size = 16u16;
    let mut d = rng_driver(true, VERSION_1 | RING_INDIRECT_DESC, size);
    let q = d.queues[&0];
    let buf = d.alloc(4096);
    d.fill_guest(buf, 4096, SENTINEL);
    let mem_end = TEST_MEM_SIZE as u64;
    let table = d.alloc(16 * 32);
    // An indirect table longer than the queue (32 > 16 descriptors).
    for i in 0..32u16 {
        let flags = if i < 31 { WRITE | NEXT } else { WRITE };
        DescSpec::new(buf, 8, flags, i + 1)
            .write_at(&d.mem, GuestAddress(table + 16 * u64::from(i)));
    }
    let hostile: Vec<(&str, Vec<DescSpec>)> = vec![
        (
            "loop",
            vec![
                DescSpec::new(buf, 8, WRITE | NEXT, 1),
                DescSpec::new(buf, 8, WRITE | NEXT, 0),
            ],
        ),
        (
            "next outside the table",
            vec![DescSpec::new(buf, 8, WRITE | NEXT, 999)],
        ),
        (
            "outside guest memory",
            vec![DescSpec::new(mem_end - 4, 64, WRITE, 0)],
        ),
        (
            "address wraps",
            vec![DescSpec::new(u64::MAX - 7, 64, WRITE, 0)],
        ),
        (
            "length overflow",
            vec![
                DescSpec::new(buf, 0x10, WRITE | NEXT, 1),
                DescSpec::new(buf, u32::MAX - 8, WRITE, 0),
            ],
        ),
        (
            "indirect longer than the queue",
            vec![DescSpec::new(table, 16 * 32, INDIRECT, 0)],
        ),
        (
            "indirect table outside memory",
            vec![DescSpec::new(mem_end - 8, 64, INDIRECT, 0)],
        ),
        ("readable only", vec![DescSpec::new(buf, 64, 0, 0)]),
        (
            "readable after writable",
            vec![
                DescSpec::new(buf, 8, WRITE | NEXT, 1),
                DescSpec::new(buf, 8, 0, 0),
            ],
        ),
    ];
    let mut idx = 0u16;
    for (name, descs) in hostile {
        // Each chain starts at slot 0 (the previous one was consumed).
        for (i, desc) in descs.iter().enumerate() {
            q.write_desc(&d.mem, i as u16, *desc);
        }
        q.publish(&d.mem, 0);
        d.kick(0);
        let used = d.wait_used(0, idx, idx + 1);
        assert_eq!(used, vec![(0, 0)], "{name}: returned with nothing written");
        assert_eq!(
            d.read_guest(buf, 4096),
            vec![SENTINEL; 4096],
            "{name}: touched memory"
        );
        assert_eq!(d.status() & S_NEEDS_RESET, 0, "{name}: not a broken ring");
        idx += 1;
        assert_serves(&mut d, 4, idx);
        idx += 1;
    }
}

#[test]
fn broken_avail_index_needs_reset_and_reinit_recovers() {
    let mut d = rng_driver(true, VERSION_1, 16);
    assert_serves(&mut d, 0, 0);
    let q = d.queues[&0];
    // The driver claims 100 new chains in a 16-entry ring.
    q.set_avail_idx(&d.mem, 101);
    d.kick(0);
    d.wait_needs_reset();
    d.wait_config_irq();
    // Kicks are ignored while broken.
    d.kick(0);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(q.used_idx(&d.mem), 1);
    // Linux resets and starts over.
    d.init(VERSION_1).unwrap();
    assert_eq!(d.status() & S_NEEDS_RESET, 0);
    d.setup_queue(0, 16);
    d.driver_ok();
    assert_serves(&mut d, 0, 0);
}

#[test]
fn head_outside_the_table_needs_reset() {
    let mut d = rng_driver(true, VERSION_1, 16);
    let q = d.queues[&0];
    q.publish(&d.mem, 16);
    d.kick(0);
    d.wait_needs_reset();
    assert_eq!(q.used_idx(&d.mem), 0);
}

#[test]
fn reset_stops_the_worker_and_a_new_driver_works() {
    let mut d = rng_driver(true, VERSION_1, 16);
    assert_serves(&mut d, 0, 0);
    let old = d.queues[&0];
    let ioevents: Vec<_> = d
        .ioevents
        .registered
        .lock()
        .unwrap()
        .values()
        .map(|fd| fd.try_clone().unwrap())
        .collect();
    d.reset();
    assert!(!d.dev().state().active);
    // The old ring gets a request and a kick: nobody serves it.
    let buf = d.alloc(64);
    d.fill_guest(buf, 64, SENTINEL);
    old.write_desc(&d.mem, 1, DescSpec::new(buf, 64, WRITE, 0));
    old.publish(&d.mem, 1);
    for fd in &ioevents {
        fd.write(1).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(old.used_idx(&d.mem), 1);
    assert_eq!(d.read_guest(buf, 64), vec![SENTINEL; 64]);
    // A second initialization, with another queue size, works.
    d.init(VERSION_1).unwrap();
    d.setup_queue(0, 64);
    d.driver_ok();
    assert_serves(&mut d, 0, 0);
    assert_serves(&mut d, 1, 1);
}

#[test]
fn pause_holds_requests_until_resume() {
    let mut d = rng_driver(true, VERSION_1, 16);
    d.dev().pause().unwrap();
    let buf = request(&mut d, 0, 32);
    d.kick(0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(d.queues[&0].used_idx(&d.mem), 0);
    d.dev().resume().unwrap();
    assert_eq!(d.wait_used(0, 0, 1), vec![(0, 32)]);
    assert!(looks_random(&d.read_guest(buf, 32)));
}

#[test]
fn many_requests_keep_the_ring_going() {
    let mut d = rng_driver(true, VERSION_1 | RING_EVENT_IDX, 8);
    let mut idx = 0u16;
    // 40 rounds wrap the 8-entry ring several times.
    for round in 0..40u16 {
        assert_serves(&mut d, round % 8, idx);
        idx = idx.wrapping_add(1);
    }
}
