//! Fuzzes `virtio::block::parse_request`, which takes a virtio-blk request
//! apart from a descriptor chain's buffers, and the span helpers the worker
//! then uses to reach the data in guest memory.
//!
//! The input is what a hostile guest controls: the buffers of the chain
//! (addresses, lengths, directions, in any order), the header, data and
//! range lists in memory, and the features it accepted. Guest memory has a
//! hole, so buffers that straddle or miss RAM are reachable.
//!
//! Input layout:
//! - byte 0: buffer count (`b % 17`)
//! - 12 bytes per buffer: address (u64 LE; bit 63 set means "near the top
//!   of the address space": `u64::MAX - low 16 bits`), length (u16 LE
//!   scaled by byte 10: `len << (b10 % 12)`), direction (byte 11, bit 0)
//! - 1 byte: flags (read-only, discard, write-zeroes) and capacity choice
//! - the rest: written at `DATA` (headers, range lists)
//!
//! Besides "no panic": the status byte is the chain's last writable byte,
//! an accepted request stays inside the disk and inside its part of the
//! chain, and the slices of its data add up to exactly its length.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use virtio::block::request::{self, Span, SECTOR_SIZE};
use virtio::block::{parse_request, Buffer, Limits, Request, MAX_RANGES};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Where the input's tail is written.
const DATA: u64 = 0x1000;
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

fn buffers(data: &[u8]) -> Option<(Vec<Buffer>, &[u8])> {
    let (&count, mut rest) = data.split_first()?;
    let mut bufs = Vec::new();
    for _ in 0..count % 17 {
        if rest.len() < 12 {
            return None;
        }
        let (b, tail) = rest.split_at(12);
        rest = tail;
        let raw = u64::from_le_bytes(b[0..8].try_into().ok()?);
        let addr = if raw >> 63 == 1 {
            u64::MAX - (raw & 0xffff)
        } else {
            raw % (HIGH.0 + HIGH.1 as u64 + 0x1000)
        };
        let len = u32::from(u16::from_le_bytes([b[8], b[9]])) << (b[10] % 12);
        bufs.push(Buffer {
            addr: GuestAddress(addr),
            len,
            writable: b[11] & 1 == 1,
        });
    }
    Some((bufs, rest))
}

fn check(mem: &GuestMemoryMmap, bufs: &[Buffer], limits: &Limits) {
    let parsed = parse_request(mem, bufs, limits);
    let writable: u64 = bufs
        .iter()
        .filter(|b| b.writable)
        .map(|b| u64::from(b.len))
        .sum();
    let readable: u64 = bufs
        .iter()
        .filter(|b| !b.writable)
        .map(|b| u64::from(b.len))
        .sum();
    let last = bufs.iter().rev().find(|b| b.writable && b.len > 0);
    match (parsed.status, last) {
        (None, None) => return,
        (Some(at), Some(b)) => {
            assert_eq!(at.0, b.addr.0.wrapping_add(u64::from(b.len) - 1));
            assert_eq!(
                u64::from(parsed.writable_len),
                writable.min(u64::from(u32::MAX))
            );
        }
        // A last byte whose address overflows has no status.
        (None, Some(b)) => assert!(b.addr.0.checked_add(u64::from(b.len) - 1).is_none()),
        (Some(_), None) => panic!("a status without a writable byte"),
    }
    let Ok(req) = parsed.request else { return };
    let disk_bytes = limits.capacity.saturating_mul(SECTOR_SIZE);
    let in_disk = |offset: u64, len: u64| offset.checked_add(len).is_some_and(|e| e <= disk_bytes);
    let span_ok = |s: Span| {
        let part = if s.writable { writable - 1 } else { readable };
        s.start.checked_add(s.len).is_some_and(|e| e <= part)
    };
    let mut slices = Vec::new();
    match req {
        Request::Read { offset, data } | Request::Write { offset, data } => {
            assert!(data.len % SECTOR_SIZE == 0 && in_disk(offset, data.len) && span_ok(data));
            assert!(data.writable || !limits.read_only);
            if request::span_slices(mem, bufs, data, &mut slices).is_ok() {
                let total: u64 = slices.iter().map(|s| s.len() as u64).sum();
                assert_eq!(total, data.len);
            }
        }
        Request::GetId { data } => {
            assert!(data.writable && data.len <= 20 && span_ok(data));
            let _ = request::write_span(mem, bufs, data.start, &vec![0u8; data.len as usize]);
        }
        Request::Flush => {}
        Request::Discard(ranges) | Request::WriteZeroes(ranges) => {
            assert!(!limits.read_only);
            assert!(!ranges.is_empty() && ranges.len() as u32 <= MAX_RANGES);
            for r in ranges {
                assert!(in_disk(r.offset, r.len), "{r:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((bufs, rest)) = buffers(data) else {
        return;
    };
    let Some((&flags, payload)) = rest.split_first() else {
        return;
    };
    let mem = memory();
    let n = payload.len().min((LOW_END - DATA) as usize);
    mem.write_slice(&payload[..n], GuestAddress(DATA))
        .expect("in memory");
    let limits = Limits {
        capacity: match flags >> 4 {
            0 => 0,
            1 => u64::MAX >> 9,
            2 => u64::MAX,
            c => u64::from(c) << 12,
        },
        read_only: flags & 1 == 1,
        discard: flags & 2 == 2,
        write_zeroes: flags & 4 == 4,
        max_discard_sectors: 1 << 21,
        max_discard_seg: MAX_RANGES,
        max_write_zeroes_sectors: 1 << 21,
        max_write_zeroes_seg: MAX_RANGES,
    };
    check(mem, &bufs, &limits);
    // Clean the payload up so runs stay independent.
    mem.write_slice(&vec![0u8; n], GuestAddress(DATA))
        .expect("in memory");
});
