//! Fuzzes virtio-balloon's parsers of guest buffers: page-frame-number
//! lists (inflate/deflate), their grouping into runs, the stats buffer, and
//! `discard` on what a guest could name, in a guest memory with a hole.
//!
//! Besides "no panic": runs cover exactly the page numbers given, in order;
//! `discard` succeeds only for ranges wholly inside RAM, and never touches
//! a marker page outside the range it was given.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use virtio::balloon::{discard, parse_pfns, parse_stats, pfn_runs, PAGE_SIZE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// RAM: pages [0, 32) and [48, 64); pages 32..48 are a hole.
const LOW_PAGES: u64 = 32;
const HIGH_START: u64 = 48;
const HIGH_PAGES: u64 = 16;
/// A page that holds a marker and is never discarded on purpose.
const MARKER_PAGE: u64 = 31;

fn memory() -> &'static GuestMemoryMmap {
    static MEM: OnceLock<GuestMemoryMmap> = OnceLock::new();
    MEM.get_or_init(|| {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), (LOW_PAGES * PAGE_SIZE) as usize),
            (
                GuestAddress(HIGH_START * PAGE_SIZE),
                (HIGH_PAGES * PAGE_SIZE) as usize,
            ),
        ])
        .expect("guest memory")
    })
}

fn in_ram(page: u64) -> bool {
    page < LOW_PAGES || (HIGH_START..HIGH_START + HIGH_PAGES).contains(&page)
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_stats(data);
    let pfns = parse_pfns(data);
    let runs = pfn_runs(&pfns);
    let flat: Vec<u64> = runs
        .iter()
        .flat_map(|&(start, count)| (0..count).map(move |i| start + i))
        .collect();
    let given: Vec<u64> = pfns.iter().map(|&p| u64::from(p)).collect();
    assert_eq!(flat, given);

    let mem = memory();
    for (start, count) in runs.into_iter().take(64) {
        mem.write_obj(0xa5u8, GuestAddress(MARKER_PAGE * PAGE_SIZE))
            .expect("marker");
        let ok = discard(mem, start * PAGE_SIZE, count * PAGE_SIZE).is_ok();
        let inside = (start..start + count).all(in_ram);
        assert_eq!(ok, inside, "{start}+{count}");
        let covers_marker = (start..start + count).contains(&MARKER_PAGE);
        let marker: u8 = mem
            .read_obj(GuestAddress(MARKER_PAGE * PAGE_SIZE))
            .expect("marker");
        if !(ok && covers_marker) {
            assert_eq!(marker, 0xa5, "{start}+{count} touched the marker");
        }
    }
    // Byte ranges as the reporting queue gives them (any alignment).
    for pair in data.chunks_exact(16).take(16) {
        let addr = u64::from_le_bytes(pair[..8].try_into().expect("8 bytes")) % (80 * PAGE_SIZE);
        let len = u64::from_le_bytes(pair[8..].try_into().expect("8 bytes")) % (40 * PAGE_SIZE);
        let _ = discard(mem, addr, len);
    }
});
