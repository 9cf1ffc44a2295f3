//! Checking a descriptor chain before a device touches its buffers.
//!
//! `virtio-queue`'s chain iterator already refuses to follow a descriptor
//! outside the table, a nested indirect table or a chain longer than 4 GiB,
//! and stops a loop after `queue size` steps; but it stops *silently*, so a
//! device would see a truncated chain as a short, valid one. [`validate`]
//! walks the chain once and says exactly what is wrong with it. It is a pure
//! function of guest memory, so the fuzz targets drive it directly.

use std::ops::Deref;

use vm_memory::{Address, GuestMemory, Permissions};

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;

/// What a well-formed chain holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainInfo {
    /// Number of buffers (indirect tables count their entries, not themselves).
    pub descriptors: u16,
    /// Total bytes of the device-readable buffers.
    pub readable: u32,
    /// Total bytes of the device-writable buffers.
    pub writable: u32,
}

/// Why a chain cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("Descriptor chain is empty (head or indirect table unreadable)")]
    Empty,
    #[error("Descriptor chain is cut short (a loop, a next index outside the table, a bad indirect table or more than 4 GiB)")]
    Truncated,
    #[error("Descriptor chain has more than {0} descriptors")]
    TooLong(u16),
    #[error("Descriptor buffer {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("Device-readable descriptor after a device-writable one")]
    ReadableAfterWritable,
}

/// Walks `chain` (a clone of it: the caller keeps its own) and checks that
/// it ends properly, has at most `max_descriptors` buffers (the queue size:
/// virtio 1.x forbids longer chains, indirect or not), that every buffer lies
/// in guest memory, and that readable buffers come before writable ones.
pub fn validate<M>(
    chain: &DescriptorChain<M>,
    max_descriptors: u16,
) -> Result<ChainInfo, ChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let mem = chain.memory();
    let mut info = ChainInfo::default();
    let mut last: Option<Descriptor> = None;
    let mut seen_writable = false;
    for desc in chain.clone() {
        if info.descriptors == max_descriptors {
            return Err(ChainError::TooLong(max_descriptors));
        }
        info.descriptors += 1;
        let len = desc.len();
        let access = if desc.is_write_only() {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if len > 0 && !mem.check_range(desc.addr(), len as usize, access) {
            return Err(ChainError::OutsideMemory {
                addr: desc.addr().raw_value(),
                len,
            });
        }
        // The iterator already stops before the total passes 4 GiB, so
        // these cannot overflow; the total of both stays below 2^32 too.
        if desc.is_write_only() {
            seen_writable = true;
            info.writable = info
                .writable
                .checked_add(len)
                .ok_or(ChainError::Truncated)?;
        } else {
            if seen_writable {
                return Err(ChainError::ReadableAfterWritable);
            }
            info.readable = info
                .readable
                .checked_add(len)
                .ok_or(ChainError::Truncated)?;
        }
        last = Some(desc);
    }
    match last {
        None => Err(ChainError::Empty),
        // The iterator stopped although the last buffer names a successor.
        Some(d) if d.has_next() => Err(ChainError::Truncated),
        Some(_) => Ok(info),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{DescSpec, TestQueueLayout, TEST_MEM_SIZE};
    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use virtio_queue::{Queue, QueueOwnedT, QueueT};
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    const NEXT: u16 = VRING_DESC_F_NEXT as u16;
    const WRITE: u16 = VRING_DESC_F_WRITE as u16;
    const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

    fn setup(size: u16) -> (GuestMemoryMmap, TestQueueLayout, Queue) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), TEST_MEM_SIZE)]).unwrap();
        let layout = TestQueueLayout::new(GuestAddress(0x1000), size);
        layout.init(&mem);
        let mut q = Queue::new(size).unwrap();
        layout.configure(&mut q);
        (mem, layout, q)
    }

    fn check(descs: &[DescSpec], size: u16) -> Result<ChainInfo, ChainError> {
        let (mem, layout, mut q) = setup(size);
        for (i, d) in descs.iter().enumerate() {
            layout.write_desc(&mem, i as u16, *d);
        }
        layout.publish(&mem, 0);
        let chain = q.iter(&mem).unwrap().next().unwrap();
        validate(&chain, size)
    }

    #[test]
    fn good_chain_is_summarized() {
        let info = check(
            &[
                DescSpec::new(0x10000, 16, NEXT, 1),
                DescSpec::new(0x11000, 100, NEXT | WRITE, 2),
                DescSpec::new(0x12000, 1, WRITE, 0),
            ],
            16,
        )
        .unwrap();
        assert_eq!(
            info,
            ChainInfo {
                descriptors: 3,
                readable: 16,
                writable: 101
            }
        );
    }

    #[test]
    fn loop_is_truncated() {
        let r = check(
            &[
                DescSpec::new(0x10000, 16, NEXT, 1),
                DescSpec::new(0x11000, 16, NEXT, 0),
            ],
            16,
        );
        assert_eq!(r, Err(ChainError::Truncated));
    }

    #[test]
    fn self_loop_is_truncated() {
        let r = check(&[DescSpec::new(0x10000, 16, NEXT | WRITE, 0)], 4);
        assert_eq!(r, Err(ChainError::Truncated));
    }

    #[test]
    fn next_outside_table_is_truncated() {
        let r = check(&[DescSpec::new(0x10000, 16, NEXT, 200)], 16);
        assert_eq!(r, Err(ChainError::Truncated));
    }

    #[test]
    fn buffer_outside_memory_is_refused() {
        let r = check(&[DescSpec::new(TEST_MEM_SIZE as u64 - 8, 16, WRITE, 0)], 16);
        assert_eq!(
            r,
            Err(ChainError::OutsideMemory {
                addr: TEST_MEM_SIZE as u64 - 8,
                len: 16
            })
        );
        let r = check(&[DescSpec::new(u64::MAX - 4, 16, 0, 0)], 16);
        assert!(matches!(r, Err(ChainError::OutsideMemory { .. })));
    }

    #[test]
    fn length_overflow_is_truncated() {
        let r = check(
            &[
                DescSpec::new(0x10000, u32::MAX, NEXT | WRITE, 1),
                DescSpec::new(0x10000, 2, WRITE, 0),
            ],
            16,
        );
        // The first buffer alone is 4 GiB, far outside memory: either error
        // is a refusal, and neither touches memory.
        assert!(r.is_err());
        let r = check(
            &[
                DescSpec::new(0x10000, 0x10, NEXT | WRITE, 1),
                DescSpec::new(0x10000, u32::MAX - 8, WRITE, 0),
            ],
            16,
        );
        assert_eq!(r, Err(ChainError::Truncated));
    }

    #[test]
    fn readable_after_writable_is_refused() {
        let r = check(
            &[
                DescSpec::new(0x10000, 16, NEXT | WRITE, 1),
                DescSpec::new(0x11000, 16, 0, 0),
            ],
            16,
        );
        assert_eq!(r, Err(ChainError::ReadableAfterWritable));
    }

    #[test]
    fn indirect_table_is_followed_and_bounded() {
        let (mem, layout, mut q) = setup(4);
        // An indirect table of 3 entries at 0x20000.
        let table = GuestAddress(0x20000);
        let entries = [
            DescSpec::new(0x10000, 8, NEXT, 1),
            DescSpec::new(0x11000, 8, NEXT | WRITE, 2),
            DescSpec::new(0x12000, 8, WRITE, 0),
        ];
        for (i, d) in entries.iter().enumerate() {
            d.write_at(&mem, table.unchecked_add(16 * i as u64));
        }
        layout.write_desc(&mem, 0, DescSpec::new(table.0, 48, INDIRECT, 0));
        layout.publish(&mem, 0);
        let chain = q.iter(&mem).unwrap().next().unwrap();
        assert_eq!(
            validate(&chain, 4),
            Ok(ChainInfo {
                descriptors: 3,
                readable: 8,
                writable: 16
            })
        );
        // The same table is longer than a 2-entry queue allows.
        assert_eq!(validate(&chain, 2), Err(ChainError::TooLong(2)));
    }

    #[test]
    fn nested_indirect_table_is_refused() {
        let (mem, layout, mut q) = setup(4);
        let table = GuestAddress(0x20000);
        DescSpec::new(0x20000, 16, INDIRECT, 0).write_at(&mem, table);
        layout.write_desc(&mem, 0, DescSpec::new(table.0, 16, INDIRECT, 0));
        layout.publish(&mem, 0);
        let chain = q.iter(&mem).unwrap().next().unwrap();
        assert_eq!(validate(&chain, 4), Err(ChainError::Empty));
    }

    #[test]
    fn indirect_table_outside_memory_is_empty() {
        let (mem, layout, mut q) = setup(4);
        layout.write_desc(&mem, 0, DescSpec::new(u64::MAX - 15, 16, INDIRECT, 0));
        layout.publish(&mem, 0);
        let chain = q.iter(&mem).unwrap().next().unwrap();
        assert_eq!(validate(&chain, 4), Err(ChainError::Empty));
    }
}
