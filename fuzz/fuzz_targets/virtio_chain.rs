//! Fuzzes `virtio::chain::validate`, the check every device runs on a
//! descriptor chain before touching its buffers.
//!
//! The input is what a hostile guest controls: the queue size, the head index
//! it puts in the available ring, the descriptor table and the memory that
//! indirect tables point into. Guest memory has a hole (like the PCI hole of
//! a real VM), so buffers that straddle or miss RAM are reachable.
//!
//! Input layout:
//! - byte 0: queue size, `1 << (b % 9)` (1..=256)
//! - bytes 1..3: head index (little endian; may be out of range)
//! - next `16 * size` bytes: the descriptor table
//! - the rest: written at `DATA` (where indirect tables may point)
//!
//! Besides "no panic", a chain that validates is walked again and must
//! match what `validate` reported: the descriptor count within the queue
//! size, every buffer inside guest memory, readable before writable and the
//! byte totals.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use virtio::chain::{validate, ChainInfo};
use virtio::testing::TestQueueLayout;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

/// The rings live here.
const RINGS: u64 = 0x1000;
/// Where the input's tail is written (indirect tables, buffers).
const DATA: u64 = 0x8000;
/// RAM: [0, 128 KiB) and [192 KiB, 256 KiB); the gap between is a hole.
const LOW_END: u64 = 0x2_0000;
const HIGH: (u64, usize) = (0x3_0000, 0x1_0000);

fn memory() -> &'static GuestMemoryMmap {
    static MEM: OnceLock<GuestMemoryMmap> = OnceLock::new();
    MEM.get_or_init(|| {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), LOW_END as usize),
            (GuestAddress(HIGH.0), HIGH.1),
        ])
        .expect("test guest memory")
    })
}

/// Walks the chain again, independently of `validate`, and checks its report.
fn check_report(
    mem: &GuestMemoryMmap,
    chain: impl Iterator<Item = virtio_queue::desc::split::Descriptor>,
    info: ChainInfo,
    size: u16,
) {
    assert!(
        info.descriptors >= 1 && info.descriptors <= size,
        "{info:?} with queue size {size}"
    );
    let (mut count, mut readable, mut writable) = (0u16, 0u64, 0u64);
    let mut seen_writable = false;
    for desc in chain {
        count += 1;
        let len = u64::from(desc.len());
        if len > 0 {
            assert!(
                mem.check_range(desc.addr(), len as usize, vm_memory::Permissions::Read),
                "validated buffer {:#x}+{len:#x} is outside guest memory",
                desc.addr().raw_value()
            );
        }
        if desc.is_write_only() {
            seen_writable = true;
            writable += len;
        } else {
            assert!(
                !seen_writable,
                "validated chain has readable after writable"
            );
            readable += len;
        }
    }
    assert_eq!(count, info.descriptors);
    assert_eq!(readable, u64::from(info.readable));
    assert_eq!(writable, u64::from(info.writable));
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let size: u16 = 1 << (data[0] % 9);
    let head = u16::from_le_bytes([data[1], data[2]]);
    let rest = &data[3..];
    let table_len = (16 * usize::from(size)).min(rest.len());
    let (table, tail) = rest.split_at(table_len);
    let tail = &tail[..tail.len().min((LOW_END - DATA) as usize)];

    let mem = memory();
    // Start from zeroed rings and data, then lay the input over them.
    mem.write_slice(&vec![0u8; (LOW_END - RINGS) as usize], GuestAddress(RINGS))
        .expect("zeroing the rings");
    let layout = TestQueueLayout::new(GuestAddress(RINGS), size);
    assert!(layout.end().raw_value() <= DATA);
    mem.write_slice(table, layout.desc)
        .expect("descriptor table");
    mem.write_slice(tail, GuestAddress(DATA)).expect("data");

    let mut queue = Queue::new(size).expect("queue size is a power of two");
    layout.configure(&mut queue);
    layout.publish(mem, head);
    let Ok(mut chains) = queue.iter(mem) else {
        return;
    };
    let Some(chain) = chains.next() else {
        return;
    };
    if let Ok(info) = validate(&chain, size) {
        check_report(mem, chain.clone(), info, size);
    }
});
