//! Parsing a virtio-blk request (virtio 1.x section 5.2.6) out of a
//! descriptor chain: a pure function of guest memory and the chain's
//! buffers, so a fuzz target can call it with anything.
//!
//! ```text
//!   device-readable part                     device-writable part
//!   ┌──────────────┬──────────────────────┐  ┌──────────────────────┬────────┐
//!   │ header (16)  │ OUT data / segments  │  │ IN data / GET_ID id  │ status │
//!   └──────────────┴──────────────────────┘  └──────────────────────┴────────┘
//! ```
//!
//! Framing is by bytes, not by descriptors (virtio 1.x: the device makes no
//! assumption about how the driver splits a request into buffers): the
//! header is the first 16 readable bytes, the status the last writable
//! byte, the data what lies between. Every length is computed in `u64`,
//! every guest access goes through vm-memory's bounds checks, and nothing is
//! trusted from an earlier walk of the chain (the guest may have changed
//! the descriptors since).

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};

/// Bytes per sector: the unit of `sector`, capacity and data lengths.
pub const SECTOR_SIZE: u64 = 512;
/// log2 of [`SECTOR_SIZE`].
pub const SECTOR_SHIFT: u32 = 9;
/// Bytes of the request header (`struct virtio_blk_outhdr`).
pub const HEADER_LEN: u64 = 16;
/// Bytes of the device ID GET_ID returns (`VIRTIO_BLK_ID_BYTES`).
pub const ID_BYTES: usize = 20;
/// Bytes of one discard / write-zeroes range
/// (`struct virtio_blk_discard_write_zeroes`).
pub const RANGE_LEN: u64 = 16;

/// One buffer of a descriptor chain, as the device sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub addr: GuestAddress,
    pub len: u32,
    /// Device-writable (`VIRTQ_DESC_F_WRITE`).
    pub writable: bool,
}

/// What requests the device accepts: its size and the features in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Disk size in sectors.
    pub capacity: u64,
    /// Writes, discards and write-zeroes are refused (VIRTIO_BLK_S_IOERR).
    pub read_only: bool,
    /// VIRTIO_BLK_F_DISCARD was negotiated.
    pub discard: bool,
    /// VIRTIO_BLK_F_WRITE_ZEROES was negotiated.
    pub write_zeroes: bool,
    /// Most sectors in one discard range.
    pub max_discard_sectors: u32,
    /// Most ranges in one discard request.
    pub max_discard_seg: u32,
    /// Most sectors in one write-zeroes range.
    pub max_write_zeroes_sectors: u32,
    /// Most ranges in one write-zeroes request.
    pub max_write_zeroes_seg: u32,
}

/// Bytes `start..start + len` of the chain's readable or writable part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub writable: bool,
    pub start: u64,
    pub len: u64,
}

/// One discard or write-zeroes range, checked against the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First byte on the disk.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
    /// Write-zeroes may free the space (VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP).
    pub unmap: bool,
}

/// A well-formed request the disk can serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Disk bytes at `offset` into `data` (writable).
    Read {
        offset: u64,
        data: Span,
    },
    /// `data` (readable) to the disk at `offset`.
    Write {
        offset: u64,
        data: Span,
    },
    /// Make completed writes durable.
    Flush,
    /// The device ID into `data` (writable; at most [`ID_BYTES`] are written).
    GetId {
        data: Span,
    },
    Discard(Vec<Range>),
    WriteZeroes(Vec<Range>),
}

/// Why a request is refused; [`RequestError::status`] is what the driver
/// gets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("Request has no device-writable byte for its status")]
    NoStatus,
    #[error("Request header is {0} bytes of device-readable memory, not 16")]
    ShortHeader(u64),
    #[error("Request header is not in guest memory")]
    HeaderUnreadable,
    #[error("Request type {0} is not supported")]
    Unsupported(u32),
    #[error("Request type {0} needs a feature the driver did not accept")]
    NotNegotiated(u32),
    #[error("Disk is read-only")]
    ReadOnly,
    #[error("Request buffers do not fit type {0}")]
    Layout(u32),
    #[error("Data length {0} is not a multiple of 512")]
    Unaligned(u64),
    #[error("Request of {sectors} sectors at sector {sector} is outside the disk")]
    OutOfRange { sector: u64, sectors: u64 },
    #[error("Request has {0} ranges, more than the device allows")]
    TooManyRanges(u64),
    #[error("Range of {0} sectors is longer than the device allows")]
    RangeTooLong(u32),
    #[error("Range flags {0:#x} are not supported")]
    RangeFlags(u32),
    #[error("Range list is not in guest memory")]
    RangesUnreadable,
}

impl RequestError {
    /// The status byte for the driver: VIRTIO_BLK_S_UNSUPP for what the
    /// device does not do, VIRTIO_BLK_S_IOERR for everything else.
    pub fn status(&self) -> u8 {
        match self {
            Self::Unsupported(_) | Self::NotNegotiated(_) | Self::RangeFlags(_) => {
                VIRTIO_BLK_S_UNSUPP as u8
            }
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// A chain taken apart: where the status goes and what is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The last device-writable byte, where the status goes; `None` when
    /// the chain has no writable byte (the request cannot be answered and
    /// is returned with nothing written).
    pub status: Option<GuestAddress>,
    /// Total bytes of the writable part: the used length once the status
    /// is written.
    pub writable_len: u32,
    pub request: Result<Request, RequestError>,
}

/// Total bytes of the readable or writable buffers.
fn part_len(bufs: &[Buffer], writable: bool) -> u64 {
    bufs.iter()
        .filter(|b| b.writable == writable)
        .map(|b| u64::from(b.len))
        .sum()
}

/// Calls `f(addr, len)` for the pieces of guest memory that make up `span`
/// (in order); stops at the first error. The span must lie in its part.
fn for_each_piece<E>(
    bufs: &[Buffer],
    span: Span,
    mut f: impl FnMut(GuestAddress, u64) -> Result<(), E>,
) -> Result<(), E> {
    let mut skip = span.start;
    let mut left = span.len;
    for b in bufs.iter().filter(|b| b.writable == span.writable) {
        if left == 0 {
            break;
        }
        let len = u64::from(b.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let take = (len - skip).min(left);
        // addr + skip may wrap for a hostile address: vm-memory then finds
        // no region and refuses the access.
        f(GuestAddress(b.addr.raw_value().wrapping_add(skip)), take)?;
        skip = 0;
        left -= take;
    }
    Ok(())
}

/// Reads `out.len()` bytes of the chain's part from `start` on.
pub fn read_span(
    mem: &GuestMemoryMmap,
    bufs: &[Buffer],
    writable: bool,
    start: u64,
    out: &mut [u8],
) -> Result<(), vm_memory::GuestMemoryError> {
    let span = Span {
        writable,
        start,
        len: out.len() as u64,
    };
    let mut done = 0usize;
    for_each_piece::<vm_memory::GuestMemoryError>(bufs, span, |addr, len| {
        let len = len as usize;
        mem.read_slice(&mut out[done..done + len], addr)?;
        done += len;
        Ok(())
    })?;
    if done == out.len() {
        Ok(())
    } else {
        Err(vm_memory::GuestMemoryError::PartialBuffer {
            expected: out.len(),
            completed: done,
        })
    }
}

/// Writes `data` into the chain's writable part from `start` on.
pub fn write_span(
    mem: &GuestMemoryMmap,
    bufs: &[Buffer],
    start: u64,
    data: &[u8],
) -> Result<(), vm_memory::GuestMemoryError> {
    let span = Span {
        writable: true,
        start,
        len: data.len() as u64,
    };
    let mut done = 0usize;
    for_each_piece(bufs, span, |addr, len| {
        let len = len as usize;
        mem.write_slice(&data[done..done + len], addr)?;
        done += len;
        Ok(())
    })
}

/// The guest memory of `span` as volatile slices (split where a buffer
/// crosses a memory region), for vectored I/O straight into the guest.
pub fn span_slices<'m>(
    mem: &'m GuestMemoryMmap,
    bufs: &[Buffer],
    span: Span,
    out: &mut Vec<VolatileSlice<'m>>,
) -> Result<(), vm_memory::GuestMemoryError> {
    out.clear();
    let mut total = 0u64;
    for_each_piece::<vm_memory::GuestMemoryError>(bufs, span, |addr, len| {
        let len = usize::try_from(len)
            .map_err(|_| vm_memory::GuestMemoryError::InvalidGuestAddress(addr))?;
        for slice in mem.get_slices(addr, len) {
            let slice = slice?;
            total += slice.len() as u64;
            out.push(slice);
        }
        Ok(())
    })?;
    if total == span.len {
        Ok(())
    } else {
        Err(vm_memory::GuestMemoryError::PartialBuffer {
            expected: span.len as usize,
            completed: total as usize,
        })
    }
}

/// The last writable byte of the chain, if any.
fn status_byte(bufs: &[Buffer]) -> Option<GuestAddress> {
    let last = bufs.iter().rev().find(|b| b.writable && b.len > 0)?;
    last.addr.checked_add(u64::from(last.len) - 1)
}

/// Checks `sectors` sectors at `sector` against the disk; the byte offset
/// (the end in bytes is known not to overflow either).
fn check_sectors(limits: &Limits, sector: u64, sectors: u64) -> Result<u64, RequestError> {
    let end = sector
        .checked_add(sectors)
        .filter(|&end| end <= limits.capacity)
        .and_then(|end| end.checked_mul(SECTOR_SIZE));
    match end {
        // sector ≤ end, so this cannot overflow.
        Some(_) => Ok(sector * SECTOR_SIZE),
        None => Err(RequestError::OutOfRange { sector, sectors }),
    }
}

/// Checks a data length in bytes: whole sectors; the number of sectors.
fn data_sectors(len: u64) -> Result<u64, RequestError> {
    if !len.is_multiple_of(SECTOR_SIZE) {
        return Err(RequestError::Unaligned(len));
    }
    Ok(len >> SECTOR_SHIFT)
}

/// Decodes and checks the ranges of a discard or write-zeroes request
/// (readable bytes `HEADER_LEN..`).
fn parse_ranges(
    mem: &GuestMemoryMmap,
    bufs: &[Buffer],
    readable: u64,
    limits: &Limits,
    kind: u32,
) -> Result<Vec<Range>, RequestError> {
    let (max_sectors, max_seg, flags_allowed) = if kind == VIRTIO_BLK_T_DISCARD {
        (limits.max_discard_sectors, limits.max_discard_seg, 0)
    } else {
        (
            limits.max_write_zeroes_sectors,
            limits.max_write_zeroes_seg,
            VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
        )
    };
    let bytes = readable - HEADER_LEN;
    if bytes == 0 || !bytes.is_multiple_of(RANGE_LEN) {
        return Err(RequestError::Layout(kind));
    }
    let count = bytes / RANGE_LEN;
    if count > u64::from(max_seg) {
        return Err(RequestError::TooManyRanges(count));
    }
    let mut raw = vec![0u8; bytes as usize];
    read_span(mem, bufs, false, HEADER_LEN, &mut raw)
        .map_err(|_| RequestError::RangesUnreadable)?;
    let mut ranges = Vec::with_capacity(count as usize);
    for r in raw.chunks_exact(RANGE_LEN as usize) {
        let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let mut s = [0u8; 8];
        s.copy_from_slice(&r[0..8]);
        let sector = u64::from_le_bytes(s);
        let sectors = le32(&r[8..12]);
        let flags = le32(&r[12..16]);
        if flags & !flags_allowed != 0 {
            return Err(RequestError::RangeFlags(flags));
        }
        if sectors > max_sectors {
            return Err(RequestError::RangeTooLong(sectors));
        }
        let offset = check_sectors(limits, sector, u64::from(sectors))?;
        ranges.push(Range {
            offset,
            len: u64::from(sectors) << SECTOR_SHIFT,
            unmap: flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0,
        });
    }
    Ok(ranges)
}

/// Takes a chain's buffers apart into a request for a disk with `limits`.
///
/// Never panics and touches guest memory only to read the header and the
/// range list (through vm-memory's checks). Layouts, per type:
/// IN: 16 readable bytes, then data + status writable; OUT: 16 + data
/// readable, the status alone writable; FLUSH: 16 readable, status;
/// GET_ID: 16 readable, id + status writable; DISCARD and WRITE_ZEROES:
/// 16 + n × 16 readable, status. Data lengths are whole sectors.
pub fn parse_request(mem: &GuestMemoryMmap, bufs: &[Buffer], limits: &Limits) -> Parsed {
    let writable = part_len(bufs, true);
    let readable = part_len(bufs, false);
    let status = status_byte(bufs);
    let writable_len = u32::try_from(writable).unwrap_or(u32::MAX);
    let request = match status {
        None => Err(RequestError::NoStatus),
        Some(_) => parse_body(mem, bufs, limits, readable, writable),
    };
    Parsed {
        status,
        writable_len,
        request,
    }
}

/// [`parse_request`] once a status byte exists (`writable` ≥ 1).
fn parse_body(
    mem: &GuestMemoryMmap,
    bufs: &[Buffer],
    limits: &Limits,
    readable: u64,
    writable: u64,
) -> Result<Request, RequestError> {
    if readable < HEADER_LEN {
        return Err(RequestError::ShortHeader(readable));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    read_span(mem, bufs, false, 0, &mut header).map_err(|_| RequestError::HeaderUnreadable)?;
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut s = [0u8; 8];
    s.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(s);
    // The data between the header and the status.
    let in_data = writable - 1;
    let out_data = readable - HEADER_LEN;
    match kind {
        VIRTIO_BLK_T_IN => {
            if out_data != 0 {
                return Err(RequestError::Layout(kind));
            }
            let sectors = data_sectors(in_data)?;
            let offset = check_sectors(limits, sector, sectors)?;
            Ok(Request::Read {
                offset,
                data: Span {
                    writable: true,
                    start: 0,
                    len: in_data,
                },
            })
        }
        VIRTIO_BLK_T_OUT => {
            if in_data != 0 {
                return Err(RequestError::Layout(kind));
            }
            if limits.read_only {
                return Err(RequestError::ReadOnly);
            }
            let sectors = data_sectors(out_data)?;
            let offset = check_sectors(limits, sector, sectors)?;
            Ok(Request::Write {
                offset,
                data: Span {
                    writable: false,
                    start: HEADER_LEN,
                    len: out_data,
                },
            })
        }
        VIRTIO_BLK_T_FLUSH => {
            if in_data != 0 || out_data != 0 {
                return Err(RequestError::Layout(kind));
            }
            Ok(Request::Flush)
        }
        VIRTIO_BLK_T_GET_ID => {
            if out_data != 0 {
                return Err(RequestError::Layout(kind));
            }
            Ok(Request::GetId {
                data: Span {
                    writable: true,
                    start: 0,
                    len: in_data.min(ID_BYTES as u64),
                },
            })
        }
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
            let negotiated = if kind == VIRTIO_BLK_T_DISCARD {
                limits.discard
            } else {
                limits.write_zeroes
            };
            if !negotiated {
                return Err(RequestError::NotNegotiated(kind));
            }
            if in_data != 0 {
                return Err(RequestError::Layout(kind));
            }
            if limits.read_only {
                return Err(RequestError::ReadOnly);
            }
            let ranges = parse_ranges(mem, bufs, readable, limits, kind)?;
            Ok(if kind == VIRTIO_BLK_T_DISCARD {
                Request::Discard(ranges)
            } else {
                Request::WriteZeroes(ranges)
            })
        }
        other => Err(RequestError::Unsupported(other)),
    }
}

#[cfg(test)]
mod tests;
