//! Fuzzes virtio-net's parsers of untrusted input: the transmit and receive
//! chains a guest offers (`check_tx_chain`, `check_rx_chain`, after
//! `chain::validate`), the virtio-net header on a frame (`check_tx_frame`),
//! how a received frame is spread over buffers (`split_frame`) and the MAC
//! text a user gives (`MacAddr::from_str`).
//!
//! Input layout:
//! - byte 0: queue size, `1 << (b % 9)` (1..=256)
//! - bytes 1..3: head index (little endian; may be out of range)
//! - byte 3: which offered features the driver accepted (bit i → the i-th
//!   of `FEATURES`)
//! - byte 4: bit 0 mergeable receive buffers
//! - next `16 * size` bytes: the descriptor table
//! - the rest: written at `DATA` (frames, indirect tables); its first 12
//!   bytes are also a header for `check_tx_frame`, its next bytes buffer
//!   sizes for `split_frame` and MAC text.
//!
//! Besides "no panic": an accepted chain's buffers lie in guest memory and
//! add up to the length reported; an accepted frame is within the length
//! bounds, its checksum field inside the frame, its GSO type negotiated
//! with a non-zero segment size; a split covers exactly the frame; a parsed
//! MAC is unicast, non-zero and prints back as given.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use virtio::chain::validate;
use virtio::net::features::{self, effective};
use virtio::net::{
    check_rx_chain, check_tx_chain, check_tx_frame, split_frame, MacAddr, NetHdr, HDR_LEN,
    MAX_FRAME_LEN,
};
use virtio::testing::TestQueueLayout;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

const RINGS: u64 = 0x1000;
const DATA: u64 = 0x8000;
/// RAM: [0, 128 KiB) and [192 KiB, 256 KiB); the gap between is a hole.
const LOW_END: u64 = 0x2_0000;
const HIGH: (u64, usize) = (0x3_0000, 0x1_0000);

const FEATURES: [u64; 8] = [
    features::CSUM,
    features::GUEST_CSUM,
    features::HOST_TSO4,
    features::HOST_TSO6,
    features::HOST_ECN,
    features::GUEST_TSO4,
    features::MRG_RXBUF,
    features::HOST_UFO,
];

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

fn check_buffers(mem: &GuestMemoryMmap, descs: &[(GuestAddress, u32)], len: usize) {
    let mut total = 0usize;
    for &(addr, l) in descs {
        assert!(l > 0);
        assert!(
            mem.check_range(addr, l as usize, vm_memory::Permissions::Read),
            "accepted buffer {:#x}+{l:#x} is outside guest memory",
            addr.raw_value()
        );
        total += l as usize;
    }
    assert_eq!(total, len);
}

fn check_frame(hdr: &[u8; HDR_LEN], len: usize, acked: u64) {
    let Ok(h) = check_tx_frame(hdr, len, acked) else {
        return;
    };
    let f = effective(acked);
    assert_eq!(NetHdr::from_bytes(hdr), h);
    assert_eq!(&h.to_bytes(), hdr);
    assert!(len >= HDR_LEN + 14 && len <= HDR_LEN + MAX_FRAME_LEN, "{len}");
    assert_eq!(h.flags & !3, 0);
    if h.flags & 1 != 0 {
        assert_ne!(f & features::CSUM, 0);
        assert!(usize::from(h.csum_start) + usize::from(h.csum_offset) + 2 <= len - HDR_LEN);
    }
    match h.gso_type & !0x80 {
        0 => assert_eq!(h.gso_type, 0),
        1 => assert_ne!(f & features::HOST_TSO4, 0),
        4 => assert_ne!(f & features::HOST_TSO6, 0),
        t => panic!("accepted GSO type {t}"),
    }
    if h.gso_type != 0 {
        assert_ne!(h.gso_size, 0);
    }
    if h.gso_type & 0x80 != 0 {
        assert_ne!(f & features::HOST_ECN, 0);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let size: u16 = 1 << (data[0] % 9);
    let head = u16::from_le_bytes([data[1], data[2]]);
    let acked = FEATURES
        .iter()
        .enumerate()
        .filter(|(i, _)| data[3] & (1 << i) != 0)
        .fold(0u64, |a, (_, f)| a | f);
    let mrg = data[4] & 1 != 0;
    let rest = &data[5..];
    let table_len = (16 * usize::from(size)).min(rest.len());
    let (table, tail) = rest.split_at(table_len);
    let tail = &tail[..tail.len().min((LOW_END - DATA) as usize)];

    // The pure parsers on the tail itself.
    if tail.len() >= HDR_LEN {
        let hdr: [u8; HDR_LEN] = tail[..HDR_LEN].try_into().expect("12 bytes");
        let more = &tail[HDR_LEN..];
        let len = more
            .get(..4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
        check_frame(&hdr, len % (HDR_LEN + MAX_FRAME_LEN + 64), acked);
        let caps: Vec<usize> = more.chunks(2).map(|c| usize::from(c[0]) * 64).collect();
        let frame = len % 70_000;
        match split_frame(frame, caps.iter().copied()) {
            Some((count, last)) => {
                assert!(count >= 1 && count <= caps.len());
                assert!(last >= 1 && last <= caps[count - 1]);
                assert_eq!(caps[..count - 1].iter().sum::<usize>() + last, frame);
            }
            None => assert!(frame == 0 || caps.iter().sum::<usize>() < frame),
        }
        if let Ok(text) = std::str::from_utf8(more) {
            if let Ok(mac) = text.parse::<MacAddr>() {
                assert_eq!(mac.to_string(), text.to_ascii_lowercase());
                assert_eq!(mac.bytes()[0] & 1, 0);
                assert_ne!(mac.bytes(), [0; 6]);
            }
        }
    }

    // The chain parsers on a queue laid out from the input.
    let mem = memory();
    mem.write_slice(&vec![0u8; (LOW_END - RINGS) as usize], GuestAddress(RINGS))
        .expect("zeroing the rings");
    let layout = TestQueueLayout::new(GuestAddress(RINGS), size);
    assert!(layout.end().raw_value() <= DATA);
    mem.write_slice(table, layout.desc).expect("descriptor table");
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
    let checked = validate(&chain, size);
    let mut descs = Vec::new();
    if let Ok(len) = check_rx_chain(&chain, checked, mrg, &mut descs) {
        assert!(len >= if mrg { HDR_LEN } else { HDR_LEN + 14 });
        check_buffers(mem, &descs, len);
    }
    if let Ok(len) = check_tx_chain(mem, &chain, checked, acked, &mut descs) {
        check_buffers(mem, &descs, len);
        // The header it judged is the one in guest memory.
        let mut hdr = [0u8; HDR_LEN];
        let mut at = 0;
        for &(addr, l) in &descs {
            let n = (l as usize).min(HDR_LEN - at);
            mem.read_slice(&mut hdr[at..at + n], addr).expect("validated buffer");
            at += n;
            if at == HDR_LEN {
                break;
            }
        }
        assert!(check_tx_frame(&hdr, len, acked).is_ok());
        check_frame(&hdr, len, acked);
    }
});
