//! Request parsing: Linux's layouts, and headers, ranges, directions and lengths that are wrong.

use super::*;
use virtio_bindings::virtio_blk::VIRTIO_BLK_S_OK;

const MEM: usize = 1 << 20;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap()
}

fn limits() -> Limits {
    Limits {
        capacity: 1000,
        read_only: false,
        discard: true,
        write_zeroes: true,
        max_discard_sectors: 100,
        max_discard_seg: 4,
        max_write_zeroes_sectors: 100,
        max_write_zeroes_seg: 4,
    }
}

fn header(mem: &GuestMemoryMmap, at: u64, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(at)).unwrap();
}

fn r(addr: u64, len: u32) -> Buffer {
    Buffer {
        addr: GuestAddress(addr),
        len,
        writable: false,
    }
}

fn w(addr: u64, len: u32) -> Buffer {
    Buffer {
        addr: GuestAddress(addr),
        len,
        writable: true,
    }
}

#[test]
fn read_request_in_linux_layout() {
    let m = mem();
    header(&m, 0x1000, VIRTIO_BLK_T_IN, 8);
    let p = parse_request(
        &m,
        &[r(0x1000, 16), w(0x2000, 4096), w(0x3000, 1)],
        &limits(),
    );
    assert_eq!(p.status, Some(GuestAddress(0x3000)));
    assert_eq!(p.writable_len, 4097);
    assert_eq!(
        p.request,
        Ok(Request::Read {
            offset: 4096,
            data: Span {
                writable: true,
                start: 0,
                len: 4096
            }
        })
    );
}

#[test]
fn framing_is_by_bytes_not_descriptors() {
    let m = mem();
    // Header split over two buffers, data + status in one.
    header(&m, 0x1000, VIRTIO_BLK_T_IN, 1);
    let bufs = [r(0x1000, 10), r(0x100a, 6), w(0x2000, 513)];
    let p = parse_request(&m, &bufs, &limits());
    assert_eq!(p.status, Some(GuestAddress(0x2200)));
    assert!(matches!(p.request, Ok(Request::Read { offset: 512, .. })));
    // A write whose header and data share one buffer.
    header(&m, 0x4000, VIRTIO_BLK_T_OUT, 2);
    let p = parse_request(&m, &[r(0x4000, 16 + 1024), w(0x9000, 1)], &limits());
    assert_eq!(
        p.request,
        Ok(Request::Write {
            offset: 1024,
            data: Span {
                writable: false,
                start: 16,
                len: 1024
            }
        })
    );
}

#[test]
fn no_writable_byte_means_no_status() {
    let m = mem();
    header(&m, 0x1000, VIRTIO_BLK_T_FLUSH, 0);
    let p = parse_request(&m, &[r(0x1000, 16), w(0x2000, 0)], &limits());
    assert_eq!(p.status, None);
    assert_eq!(p.request, Err(RequestError::NoStatus));
    let p = parse_request(&m, &[], &limits());
    assert_eq!(p.status, None);
}

#[test]
fn short_or_unreadable_header_is_an_ioerr() {
    let m = mem();
    let p = parse_request(&m, &[r(0x1000, 8), w(0x2000, 1)], &limits());
    assert_eq!(p.request, Err(RequestError::ShortHeader(8)));
    assert_eq!(p.request.unwrap_err().status(), VIRTIO_BLK_S_IOERR as u8);
    // Only writable buffers: no header at all.
    let p = parse_request(&m, &[w(0x1000, 16), w(0x2000, 1)], &limits());
    assert_eq!(p.request, Err(RequestError::ShortHeader(0)));
    let p = parse_request(&m, &[r(MEM as u64 - 8, 16), w(0x2000, 1)], &limits());
    assert_eq!(p.request, Err(RequestError::HeaderUnreadable));
    let p = parse_request(&m, &[r(u64::MAX - 3, 16), w(0x2000, 1)], &limits());
    assert_eq!(p.request, Err(RequestError::HeaderUnreadable));
}

#[test]
fn ranges_outside_the_disk_and_overflows_are_refused() {
    let m = mem();
    let l = limits();
    for (sector, len) in [
        (999, 1024),
        (1000, 512),
        (u64::MAX, 512),
        (u64::MAX / 512, 512),
    ] {
        header(&m, 0x1000, VIRTIO_BLK_T_IN, sector);
        let p = parse_request(&m, &[r(0x1000, 16), w(0x2000, len + 1)], &l);
        assert!(
            matches!(p.request, Err(RequestError::OutOfRange { .. })),
            "{sector}: {:?}",
            p.request
        );
    }
    // A disk as big as u64 sectors still refuses offsets that overflow.
    let huge = Limits {
        capacity: u64::MAX,
        ..l
    };
    header(&m, 0x1000, VIRTIO_BLK_T_IN, u64::MAX / 512);
    let p = parse_request(&m, &[r(0x1000, 16), w(0x2000, 1025)], &huge);
    assert!(matches!(p.request, Err(RequestError::OutOfRange { .. })));
    // The last sector is fine; zero sectors at the end too.
    header(&m, 0x1000, VIRTIO_BLK_T_IN, 999);
    assert!(parse_request(&m, &[r(0x1000, 16), w(0x2000, 513)], &l)
        .request
        .is_ok());
    header(&m, 0x1000, VIRTIO_BLK_T_IN, 1000);
    assert!(parse_request(&m, &[r(0x1000, 16), w(0x2000, 1)], &l)
        .request
        .is_ok());
}

#[test]
fn data_must_be_whole_sectors() {
    let m = mem();
    header(&m, 0x1000, VIRTIO_BLK_T_IN, 0);
    let p = parse_request(&m, &[r(0x1000, 16), w(0x2000, 101)], &limits());
    assert_eq!(p.request, Err(RequestError::Unaligned(100)));
    header(&m, 0x1000, VIRTIO_BLK_T_OUT, 0);
    let p = parse_request(
        &m,
        &[r(0x1000, 16), r(0x2000, 513), w(0x3000, 1)],
        &limits(),
    );
    assert_eq!(p.request, Err(RequestError::Unaligned(513)));
}

#[test]
fn wrong_directions_are_layout_errors() {
    let m = mem();
    header(&m, 0x1000, VIRTIO_BLK_T_IN, 0);
    let p = parse_request(&m, &[r(0x1000, 16 + 512), w(0x2000, 513)], &limits());
    assert_eq!(p.request, Err(RequestError::Layout(VIRTIO_BLK_T_IN)));
    header(&m, 0x1000, VIRTIO_BLK_T_OUT, 0);
    let p = parse_request(&m, &[r(0x1000, 16), w(0x2000, 513)], &limits());
    assert_eq!(p.request, Err(RequestError::Layout(VIRTIO_BLK_T_OUT)));
    header(&m, 0x1000, VIRTIO_BLK_T_FLUSH, 0);
    let p = parse_request(&m, &[r(0x1000, 16), w(0x2000, 2)], &limits());
    assert_eq!(p.request, Err(RequestError::Layout(VIRTIO_BLK_T_FLUSH)));
}

#[test]
fn read_only_refuses_writes_with_ioerr() {
    let m = mem();
    let l = Limits {
        read_only: true,
        ..limits()
    };
    header(&m, 0x1000, VIRTIO_BLK_T_OUT, 0);
    let p = parse_request(&m, &[r(0x1000, 16), r(0x2000, 512), w(0x3000, 1)], &l);
    assert_eq!(p.request, Err(RequestError::ReadOnly));
    assert_eq!(RequestError::ReadOnly.status(), VIRTIO_BLK_S_IOERR as u8);
    header(&m, 0x1000, VIRTIO_BLK_T_IN, 0);
    assert!(parse_request(&m, &[r(0x1000, 16), w(0x2000, 513)], &l)
        .request
        .is_ok());
}

#[test]
fn unknown_and_unnegotiated_types_are_unsupp() {
    let m = mem();
    header(&m, 0x1000, 2, 0);
    let p = parse_request(&m, &[r(0x1000, 16), w(0x2000, 1)], &limits());
    assert_eq!(p.request, Err(RequestError::Unsupported(2)));
    assert_eq!(p.request.unwrap_err().status(), VIRTIO_BLK_S_UNSUPP as u8);
    header(&m, 0x1000, VIRTIO_BLK_T_DISCARD, 0);
    let l = Limits {
        discard: false,
        ..limits()
    };
    let p = parse_request(&m, &[r(0x1000, 32), w(0x2000, 1)], &l);
    assert_eq!(
        p.request,
        Err(RequestError::NotNegotiated(VIRTIO_BLK_T_DISCARD))
    );
    assert_ne!(VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP);
}

fn range(mem: &GuestMemoryMmap, at: u64, sector: u64, sectors: u32, flags: u32) {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&sector.to_le_bytes());
    b[8..12].copy_from_slice(&sectors.to_le_bytes());
    b[12..16].copy_from_slice(&flags.to_le_bytes());
    mem.write_slice(&b, GuestAddress(at)).unwrap();
}

#[test]
fn discard_and_write_zeroes_ranges() {
    let m = mem();
    header(&m, 0x1000, VIRTIO_BLK_T_WRITE_ZEROES, 0);
    range(&m, 0x1010, 10, 2, 1);
    range(&m, 0x1020, 20, 4, 0);
    let p = parse_request(&m, &[r(0x1000, 48), w(0x2000, 1)], &limits());
    assert_eq!(
        p.request,
        Ok(Request::WriteZeroes(vec![
            Range {
                offset: 5120,
                len: 1024,
                unmap: true
            },
            Range {
                offset: 10240,
                len: 2048,
                unmap: false
            },
        ]))
    );
    // Discard refuses the unmap flag (UNSUPP), too many ranges, too long
    // ranges, ranges off the disk, a partial range.
    header(&m, 0x1000, VIRTIO_BLK_T_DISCARD, 0);
    let p = parse_request(&m, &[r(0x1000, 48), w(0x2000, 1)], &limits());
    assert_eq!(p.request, Err(RequestError::RangeFlags(1)));
    assert_eq!(
        RequestError::RangeFlags(1).status(),
        VIRTIO_BLK_S_UNSUPP as u8
    );
    let p = parse_request(&m, &[r(0x1000, 16 + 5 * 16), w(0x2000, 1)], &limits());
    assert_eq!(p.request, Err(RequestError::TooManyRanges(5)));
    range(&m, 0x1010, 0, 101, 0);
    let p = parse_request(&m, &[r(0x1000, 32), w(0x2000, 1)], &limits());
    assert_eq!(p.request, Err(RequestError::RangeTooLong(101)));
    range(&m, 0x1010, u64::MAX, 2, 0);
    let p = parse_request(&m, &[r(0x1000, 32), w(0x2000, 1)], &limits());
    assert!(matches!(p.request, Err(RequestError::OutOfRange { .. })));
    let p = parse_request(&m, &[r(0x1000, 24), w(0x2000, 1)], &limits());
    assert_eq!(p.request, Err(RequestError::Layout(VIRTIO_BLK_T_DISCARD)));
    let p = parse_request(&m, &[r(0x1000, 16), w(0x2000, 1)], &limits());
    assert_eq!(p.request, Err(RequestError::Layout(VIRTIO_BLK_T_DISCARD)));
    // The range list runs off guest memory.
    header(&m, MEM as u64 - 16, VIRTIO_BLK_T_DISCARD, 0);
    let p = parse_request(&m, &[r(MEM as u64 - 16, 32), w(0x2000, 1)], &limits());
    assert_eq!(p.request, Err(RequestError::RangesUnreadable));
}

#[test]
fn get_id_takes_at_most_20_bytes() {
    let m = mem();
    header(&m, 0x1000, VIRTIO_BLK_T_GET_ID, 0);
    let p = parse_request(&m, &[r(0x1000, 16), w(0x2000, 64), w(0x3000, 1)], &limits());
    assert_eq!(
        p.request,
        Ok(Request::GetId {
            data: Span {
                writable: true,
                start: 0,
                len: 20
            }
        })
    );
    assert_eq!(p.writable_len, 65);
}

#[test]
fn slices_follow_the_span_across_buffers() {
    let m = mem();
    let bufs = [r(0x1000, 16), w(0x2000, 100), w(0x3000, 412), w(0x4000, 1)];
    let mut v = Vec::new();
    let span = Span {
        writable: true,
        start: 50,
        len: 400,
    };
    span_slices(&m, &bufs, span, &mut v).unwrap();
    let pieces: Vec<_> = v.iter().map(|s| s.len()).collect();
    assert_eq!(pieces, vec![50, 350]);
    // A buffer outside memory makes the span unusable.
    let bufs = [w(MEM as u64 - 10, 100)];
    let span = Span {
        writable: true,
        start: 0,
        len: 100,
    };
    assert!(span_slices(&m, &bufs, span, &mut v).is_err());
    // Writes across buffers land in order.
    let bufs = [w(0x5000, 3), w(0x6000, 3)];
    write_span(&m, &bufs, 1, b"abcd").unwrap();
    let mut got = [0u8; 6];
    read_span(&m, &bufs, true, 0, &mut got).unwrap();
    assert_eq!(&got, b"\0abcd\0");
}
