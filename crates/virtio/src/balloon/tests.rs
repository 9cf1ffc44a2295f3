//! virtio-balloon end to end through the transport, in process.

use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

use super::features::{DEFLATE_ON_OOM, REPORTING, STATS_VQ};
use super::*;
use crate::device::VirtioDevice;
use crate::features::VERSION_1;
use crate::testing::*;

const WRITE: u16 = VRING_DESC_F_WRITE as u16;
const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const MEM: u64 = TEST_MEM_SIZE as u64;
/// Pages the tests inflate live here, above the driver's allocations.
const PAGES_AT: u64 = 0x30_0000;

fn all_features() -> BalloonConfig {
    BalloonConfig {
        stats: true,
        deflate_on_oom: true,
        free_page_reporting: true,
        initial_target: 0,
    }
}

/// A driver that negotiated `wants` with a balloon offering `config`, every
/// queue the features call for set up (inflate 0, deflate 1, stats,
/// reporting), MSI-X on.
fn balloon_driver(config: BalloonConfig, wants: u64) -> (TestDriver, BalloonHandle) {
    let b = Balloon::new(config, MEM).unwrap();
    let h = b.handle();
    let mut d = TestDriver::new(Box::new(b));
    d.enable_msix();
    let got = d.init(VERSION_1 | wants).unwrap();
    let mut queues = 2;
    queues += u16::from(got & STATS_VQ != 0) + u16::from(got & REPORTING != 0);
    for q in 0..queues {
        d.setup_queue(q, 16);
    }
    d.driver_ok();
    (d, h)
}

fn config_read(d: &mut TestDriver, off: u64) -> u32 {
    let at = d.caps.device + off;
    d.bar_read(at, 4) as u32
}

/// Offers one readable buffer holding `pfns` on `queue`; returns its address.
fn send_pfns(d: &mut TestDriver, queue: u16, slot: u16, pfns: &[u32]) -> u64 {
    let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
    let buf = d.alloc(bytes.len().max(4) as u64);
    d.mem
        .write_slice(&bytes, vm_memory::GuestAddress(buf))
        .unwrap();
    d.add_chain(queue, slot, &[(buf, bytes.len() as u32, 0)]);
    d.kick(queue);
    buf
}

fn page_is(d: &TestDriver, pfn: u64, byte: u8) -> bool {
    d.read_guest(pfn * PAGE_SIZE, PAGE_SIZE as usize)
        .iter()
        .all(|&b| b == byte)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn stats_buffer(entries: &[(u16, u64)]) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|(t, v)| {
            let mut e = t.to_le_bytes().to_vec();
            e.extend_from_slice(&v.to_le_bytes());
            e
        })
        .collect()
}

use vm_memory::Bytes;

#[test]
fn offers_its_features_and_queues() {
    let (mut d, _) = balloon_driver(BalloonConfig::default(), 0);
    let f = d.device_features();
    assert_eq!(f & (STATS_VQ | DEFLATE_ON_OOM | REPORTING), 0);
    assert_eq!(d.queues.len(), 2);
    let b = Balloon::new(all_features(), MEM).unwrap();
    assert_eq!(b.queue_max_sizes().len(), 4);
    let mut d = TestDriver::new(Box::new(b));
    let f = d.device_features();
    assert_eq!(
        f & (STATS_VQ | DEFLATE_ON_OOM | REPORTING),
        STATS_VQ | DEFLATE_ON_OOM | REPORTING
    );
    assert_ne!(f & VERSION_1, 0);
}

#[test]
fn target_is_in_config_space_and_raises_the_config_interrupt() {
    let cfg = BalloonConfig {
        initial_target: 1 << 20,
        ..Default::default()
    };
    let (mut d, h) = balloon_driver(cfg, 0);
    assert_eq!(config_read(&mut d, 0), 256, "num_pages for 1 MiB");
    assert_eq!(config_read(&mut d, 4), 0, "actual");
    h.set_target((2 << 20) + 123).unwrap();
    d.wait_config_irq();
    assert_eq!(config_read(&mut d, 0), 512, "rounded down to pages");
    assert_eq!(h.info().target_bytes, 2 << 20);
    // The driver writes actual; num_pages is the device's.
    let at = d.caps.device;
    d.bar_write(at + 4, 4, 300);
    d.bar_write(at, 4, 7);
    assert_eq!(config_read(&mut d, 4), 300);
    assert_eq!(config_read(&mut d, 0), 512);
    assert_eq!(h.info().actual_bytes, 300 * PAGE_SIZE);
    // Byte-wide writes to actual work too; reads past the end are zero.
    d.bar_write(at + 5, 1, 0);
    assert_eq!(config_read(&mut d, 4), 300 & 0xff);
    assert_eq!(config_read(&mut d, 8), 0);
    assert_eq!(
        h.set_target(MEM + 1),
        Err(BalloonError::TargetTooLarge {
            target: MEM + 1,
            memory: MEM
        })
    );
    assert_eq!(h.info().target_bytes, 2 << 20, "refused target not kept");
    assert!(Balloon::new(
        BalloonConfig {
            initial_target: MEM * 2,
            ..Default::default()
        },
        MEM
    )
    .is_err());
}

#[test]
fn inflate_gives_pages_back_and_deflate_counts_them() {
    let (mut d, h) = balloon_driver(BalloonConfig::default(), 0);
    let first = PAGES_AT / PAGE_SIZE;
    d.fill_guest(PAGES_AT, 4 * PAGE_SIZE as usize, 0xaa);
    let pfns = [first as u32, first as u32 + 1, first as u32 + 3];
    send_pfns(&mut d, 0, 0, &pfns);
    assert_eq!(d.wait_used(0, 0, 1), vec![(0, 0)]);
    d.wait_queue_irq(0);
    assert!(page_is(&d, first, 0));
    assert!(page_is(&d, first + 1, 0));
    assert!(page_is(&d, first + 2, 0xaa), "a page not in the list");
    assert!(page_is(&d, first + 3, 0));
    let info = h.info();
    assert_eq!((info.inflated_pages, info.rejected_pages), (3, 0));
    assert!(info.driver_ready);
    // The guest takes them back.
    send_pfns(&mut d, 1, 0, &pfns[..2]);
    assert_eq!(d.wait_used(1, 0, 1), vec![(0, 0)]);
    assert_eq!(h.info().deflated_pages, 2);
}

#[test]
fn hostile_page_numbers_and_chains_are_refused_and_the_device_keeps_going() {
    let (mut d, h) = balloon_driver(BalloonConfig::default(), 0);
    let good = (PAGES_AT / PAGE_SIZE) as u32;
    d.fill_guest(PAGES_AT, PAGE_SIZE as usize, 0xaa);
    let mem_pages = (MEM / PAGE_SIZE) as u32;
    // Outside RAM, at the very end of the 32-bit range, one in RAM.
    let pfns = [mem_pages, mem_pages + 1, u32::MAX, u32::MAX - 1, good];
    send_pfns(&mut d, 0, 0, &pfns);
    d.wait_used(0, 0, 1);
    assert!(page_is(&d, u64::from(good), 0));
    let info = h.info();
    assert_eq!((info.inflated_pages, info.rejected_pages), (1, 4));
    // Deflating pages outside RAM is refused the same way.
    send_pfns(&mut d, 1, 0, &[u32::MAX, good]);
    d.wait_used(1, 0, 1);
    assert_eq!((h.info().deflated_pages, h.info().rejected_pages), (1, 5));

    // Malformed chains come back unused and touch nothing.
    d.fill_guest(PAGES_AT, PAGE_SIZE as usize, 0xaa);
    let list = d.alloc(64);
    d.mem
        .write_slice(&good.to_le_bytes(), vm_memory::GuestAddress(list))
        .unwrap();
    let q = d.queues[&0];
    let hostile: Vec<(&str, Vec<DescSpec>)> = vec![
        (
            "loop",
            vec![
                DescSpec::new(list, 4, NEXT, 1),
                DescSpec::new(list, 4, NEXT, 0),
            ],
        ),
        ("outside memory", vec![DescSpec::new(MEM - 2, 8, 0, 0)]),
        ("address wraps", vec![DescSpec::new(u64::MAX - 1, 8, 0, 0)]),
        (
            "next outside the table",
            vec![DescSpec::new(list, 4, NEXT, 500)],
        ),
        (
            "readable after writable",
            vec![
                DescSpec::new(list, 4, WRITE | NEXT, 1),
                DescSpec::new(list, 4, 0, 0),
            ],
        ),
    ];
    let mut idx = 1u16;
    for (name, descs) in hostile {
        for (i, desc) in descs.iter().enumerate() {
            q.write_desc(&d.mem, i as u16, *desc);
        }
        q.publish(&d.mem, 0);
        d.kick(0);
        assert_eq!(d.wait_used(0, idx, idx + 1), vec![(0, 0)], "{name}");
        assert!(page_is(&d, u64::from(good), 0xaa), "{name}: page discarded");
        assert_eq!(d.status() & S_NEEDS_RESET, 0, "{name}");
        idx += 1;
    }
    // A writable-only buffer and a 3-byte list carry no page number.
    let w = d.alloc(16);
    d.add_chain(0, 0, &[(w, 16, WRITE)]);
    d.add_chain(0, 1, &[(list, 3, 0)]);
    d.kick(0);
    d.wait_used(0, idx, idx + 2);
    idx += 2;
    assert!(page_is(&d, u64::from(good), 0xaa));
    // And it still serves a good request.
    send_pfns(&mut d, 0, 2, &[good]);
    d.wait_used(0, idx, idx + 1);
    assert!(page_is(&d, u64::from(good), 0));
    assert_eq!(h.info().inflated_pages, 2);
}

#[test]
fn stats_are_held_until_asked_for_again() {
    let (mut d, h) = balloon_driver(all_features(), STATS_VQ);
    assert!(h.info().stats && !h.info().free_page_reporting);
    assert!(h.stats().is_none());
    let q = 2;
    let first = stats_buffer(&[(4, 100 << 20), (5, 1 << 30), (6, 200 << 20), (42, 7)]);
    let buf = d.alloc(first.len() as u64);
    d.mem
        .write_slice(&first, vm_memory::GuestAddress(buf))
        .unwrap();
    d.add_chain(q, 0, &[(buf, first.len() as u32, 0)]);
    d.kick(q);
    wait_until("the first stats", || h.stats().is_some());
    let (s, _) = h.stats().unwrap();
    assert_eq!(s.free_memory, Some(100 << 20));
    assert_eq!(s.total_memory, Some(1 << 30));
    assert_eq!(s.available_memory, Some(200 << 20));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(d.queues[&q].used_idx(&d.mem), 0, "the buffer is held");
    // Asking for fresh numbers hands the buffer back.
    assert!(h.request_stats());
    assert_eq!(d.wait_used(q, 0, 1), vec![(0, 0)]);
    d.wait_queue_irq(q);
    let second = stats_buffer(&[(4, 50 << 20)]);
    d.mem
        .write_slice(&second, vm_memory::GuestAddress(buf))
        .unwrap();
    d.add_chain(q, 1, &[(buf, second.len() as u32, 0)]);
    d.kick(q);
    wait_until("the second stats", || {
        h.stats()
            .is_some_and(|(s, _)| s.free_memory == Some(50 << 20))
    });
    // A malformed stats chain is returned at once; the held one stays.
    d.add_chain(q, 2, &[(MEM - 4, 20, 0)]);
    d.kick(q);
    assert_eq!(d.wait_used(q, 1, 3).len(), 2);
    assert!(h.stats().is_some());
}

#[test]
fn stats_request_without_the_feature_is_refused() {
    let (_d, h) = balloon_driver(all_features(), 0);
    assert!(!h.request_stats());
    let b = Balloon::new(BalloonConfig::default(), MEM).unwrap();
    assert!(!b.handle().request_stats(), "no driver");
}

#[test]
fn free_page_reporting_discards_whole_reported_pages() {
    let (mut d, h) = balloon_driver(all_features(), STATS_VQ | REPORTING);
    assert!(h.info().free_page_reporting);
    // With stats negotiated, reporting is queue 3.
    d.fill_guest(PAGES_AT, 8 * PAGE_SIZE as usize, 0xaa);
    let p = PAGES_AT / PAGE_SIZE;
    d.add_chain(
        3,
        0,
        &[
            (PAGES_AT, 2 * PAGE_SIZE as u32, WRITE),
            // Unaligned: only the whole page inside is discarded.
            (PAGES_AT + 4 * PAGE_SIZE - 16, PAGE_SIZE as u32 + 32, WRITE),
        ],
    );
    d.kick(3);
    assert_eq!(d.wait_used(3, 0, 1), vec![(0, 0)]);
    assert!(page_is(&d, p, 0) && page_is(&d, p + 1, 0));
    assert!(page_is(&d, p + 2, 0xaa));
    assert!(page_is(&d, p + 3, 0xaa), "partly reported page kept");
    assert!(page_is(&d, p + 4, 0));
    assert!(page_is(&d, p + 5, 0xaa), "partly reported page kept");
    assert_eq!(h.info().reported_bytes, 3 * PAGE_SIZE);
    // Reporting only (no stats): reporting is queue 2.
    let (mut d, h) = balloon_driver(all_features(), REPORTING);
    d.fill_guest(PAGES_AT, PAGE_SIZE as usize, 0xaa);
    d.add_chain(2, 0, &[(PAGES_AT, PAGE_SIZE as u32, WRITE)]);
    d.kick(2);
    d.wait_used(2, 0, 1);
    assert!(page_is(&d, p, 0));
    assert_eq!(h.info().reported_bytes, PAGE_SIZE);
}

#[test]
fn reset_forgets_the_driver_but_keeps_the_target() {
    let (mut d, h) = balloon_driver(all_features(), STATS_VQ);
    h.set_target(1 << 20).unwrap();
    let at = d.caps.device;
    d.bar_write(at + 4, 4, 256);
    assert_eq!(h.info().actual_bytes, 1 << 20);
    d.reset();
    let info = h.info();
    assert!(!info.driver_ready && !info.stats);
    assert_eq!((info.target_bytes, info.actual_bytes), (1 << 20, 0));
    // Setting a target with no driver raises nothing and is kept.
    h.set_target(2 << 20).unwrap();
    d.init(VERSION_1).unwrap();
    d.setup_queue(0, 16);
    d.setup_queue(1, 16);
    d.driver_ok();
    assert_eq!(config_read(&mut d, 0), 512);
    assert!(h.info().driver_ready);
}

#[test]
fn missing_inflate_or_deflate_queue_needs_reset() {
    let b = Balloon::new(BalloonConfig::default(), MEM).unwrap();
    let mut d = TestDriver::new(Box::new(b));
    d.init(VERSION_1).unwrap();
    d.setup_queue(0, 16);
    d.driver_ok();
    d.wait_needs_reset();
}

#[test]
fn pause_holds_inflation_until_resume() {
    let (mut d, h) = balloon_driver(BalloonConfig::default(), 0);
    d.dev().pause().unwrap();
    let pfn = PAGES_AT / PAGE_SIZE;
    d.fill_guest(PAGES_AT, PAGE_SIZE as usize, 0xaa);
    send_pfns(&mut d, 0, 0, &[pfn as u32]);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(d.queues[&0].used_idx(&d.mem), 0);
    assert!(page_is(&d, pfn, 0xaa));
    d.dev().resume().unwrap();
    d.wait_used(0, 0, 1);
    assert!(page_is(&d, pfn, 0));
    assert_eq!(h.info().inflated_pages, 1);
}
