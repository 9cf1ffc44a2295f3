//! Direct I/O (`O_DIRECT`, `cache=none`): the alignment a file asks for, and aligned buffers to
//! bounce unaligned requests through.

use std::alloc::{self, Layout};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::ptr::NonNull;

use vm_memory::VolatileSlice;

/// The sector: what a raw image's direct I/O offsets and lengths must be multiples of. Files
/// that want more (4096-byte logical blocks) are refused for direct I/O: a guest's 512-byte
/// writes would need a read-modify-write of a neighbouring sector, which could lose a
/// concurrent write to that sector.
pub const DIRECT_IO_BLOCK: u64 = 512;

/// What direct I/O on an image file needs: buffers at addresses that are multiples of
/// `mem_align`, offsets and lengths (of the request and of each buffer) that are multiples of
/// `block`. Anything else goes through an [`AlignedBuf`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectIo {
    /// Memory alignment of each buffer (a power of two, 1 ..= 4096).
    pub mem_align: usize,
    /// Offset and length granularity (always [`DIRECT_IO_BLOCK`]).
    pub block: u64,
}

impl DirectIo {
    /// Whether a buffer at `addr` of `len` bytes can be handed to the kernel as is.
    pub fn buffer_ok(&self, addr: usize, len: usize) -> bool {
        addr.is_multiple_of(self.mem_align) && (len as u64).is_multiple_of(self.block)
    }

    /// Whether every buffer can be handed to the kernel as is (the offset is checked apart).
    pub fn slices_ok(&self, bufs: &[VolatileSlice<'_>]) -> bool {
        bufs.iter()
            .all(|b| self.buffer_ok(b.ptr_guard().as_ptr() as usize, b.len()))
    }

    /// The alignment of a bounce buffer: enough for memory and for the block.
    pub fn buffer_align(&self) -> usize {
        self.mem_align.max(self.block as usize)
    }
}

/// A zero-filled heap buffer whose address is a multiple of a power of two.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: the buffer is plain owned memory, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads (`as_slice`); writes need `&mut`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` zero bytes at an address that is a multiple of `align` (a power of two). Fails
    /// (instead of aborting) when the memory cannot be had.
    pub fn new(len: usize, align: usize) -> io::Result<Self> {
        let bad = || io::Error::new(io::ErrorKind::InvalidInput, "bad buffer size or alignment");
        // A zero-sized allocation is not allowed: take one aligned unit at least.
        let size = len.max(1).checked_next_multiple_of(align).ok_or_else(bad)?;
        let layout = Layout::from_size_align(size, align).map_err(|_| bad())?;
        // SAFETY: the layout's size is not zero.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(Self { ptr, len, layout })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `layout.size() >= len` initialized (zeroed) bytes, owned by
        // self for the borrow's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout, freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("align", &self.layout.align())
            .finish()
    }
}

/// Whether the concatenated `bufs` hold bytes `skip..skip + len`.
fn fits(bufs: &[VolatileSlice<'_>], skip: usize, len: usize) -> bool {
    let total = bufs
        .iter()
        .try_fold(0usize, |acc, b| acc.checked_add(b.len()));
    matches!((total, skip.checked_add(len)), (Some(t), Some(end)) if end <= t)
}

/// Copies bytes `skip..skip + dst.len()` of the concatenated `bufs` into `dst`; false if the
/// buffers are too short (then nothing is copied).
pub fn copy_from_slices(bufs: &[VolatileSlice<'_>], mut skip: usize, dst: &mut [u8]) -> bool {
    if !fits(bufs, skip, dst.len()) {
        return false;
    }
    let mut done = 0;
    for b in bufs {
        if done == dst.len() {
            break;
        }
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        let n = (b.len() - skip).min(dst.len() - done);
        match b.subslice(skip, n) {
            Ok(s) => s.copy_to(&mut dst[done..done + n]),
            Err(_) => return false,
        };
        done += n;
        skip = 0;
    }
    done == dst.len()
}

/// Copies `src` into bytes `skip..skip + src.len()` of the concatenated `bufs`; false if the
/// buffers are too short (then nothing is copied).
pub fn copy_to_slices(bufs: &[VolatileSlice<'_>], mut skip: usize, src: &[u8]) -> bool {
    if !fits(bufs, skip, src.len()) {
        return false;
    }
    let mut done = 0;
    for b in bufs {
        if done == src.len() {
            break;
        }
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        let n = (b.len() - skip).min(src.len() - done);
        match b.subslice(skip, n) {
            Ok(s) => s.copy_from(&src[done..done + n]),
            Err(_) => return false,
        }
        done += n;
        skip = 0;
    }
    done == src.len()
}

/// Why the alignment of a direct I/O file is not usable.
#[derive(Debug)]
pub(crate) enum AlignError {
    /// The file system says it cannot do direct I/O on this file.
    Unsupported,
    /// Offsets must be multiples of this (more than [`DIRECT_IO_BLOCK`]).
    TooCoarse(u64),
    /// The alignment could not be found out.
    Io(io::Error),
}

/// The alignment direct I/O on `file` (opened with `O_DIRECT`) needs: what `statx` reports
/// (`STATX_DIOALIGN`, Linux 6.1+; block devices 6.11+), else a block device's logical block
/// size (`BLKSSZGET`), else what a 512-byte read at offset 0 into a 512-byte aligned buffer
/// says (EINVAL: more is needed).
pub(crate) fn direct_io_alignment(file: &fs::File) -> Result<DirectIo, AlignError> {
    let (mem, offset) = match statx_dio(file) {
        Some((_, 0)) => return Err(AlignError::Unsupported),
        Some((mem, offset)) => (u64::from(mem.max(1)), u64::from(offset)),
        None => match blksszget(file) {
            Some(lbs) => (lbs, lbs),
            None => probe(file).map_err(AlignError::Io)?,
        },
    };
    if offset > DIRECT_IO_BLOCK {
        return Err(AlignError::TooCoarse(offset));
    }
    if !mem.is_power_of_two() || mem > 4096 {
        return Err(AlignError::TooCoarse(mem));
    }
    Ok(DirectIo {
        mem_align: mem as usize,
        block: DIRECT_IO_BLOCK,
    })
}

/// `(stx_dio_mem_align, stx_dio_offset_align)`, if the kernel reports them for this file.
fn statx_dio(file: &fs::File) -> Option<(u32, u32)> {
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx on our descriptor with an empty path and AT_EMPTY_PATH; it writes only
    // into `stx`, which lives across the call.
    let ret = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if ret != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    Some((stx.stx_dio_mem_align, stx.stx_dio_offset_align))
}

/// A block device's logical block size.
fn blksszget(file: &fs::File) -> Option<u64> {
    if !file.metadata().ok()?.file_type().is_block_device() {
        return None;
    }
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which is valid for the call.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::BLKSSZGET, &mut size) };
    if ret != 0 || size <= 0 {
        return None;
    }
    u64::try_from(size).ok().filter(|s| s.is_power_of_two())
}

/// Tries a 512-byte direct read at offset 0 into a buffer that is 512- but not 1024-byte
/// aligned: (512, 512) if the file takes it, (4096, 4096) if it says EINVAL.
fn probe(file: &fs::File) -> io::Result<(u64, u64)> {
    let mut buf = AlignedBuf::new(4096, 4096)?;
    let piece = &mut buf.as_mut_slice()[512..1024];
    loop {
        // SAFETY: pread into a live buffer of exactly the length passed.
        let ret = unsafe { libc::pread(file.as_raw_fd(), piece.as_mut_ptr().cast(), 512, 0) };
        if ret >= 0 {
            return Ok((DIRECT_IO_BLOCK, DIRECT_IO_BLOCK));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EINVAL) => return Ok((4096, 4096)),
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned_zeroed_and_any_size() {
        for (len, align) in [(0, 512), (1, 512), (4096, 4096), (5000, 512), (100, 64)] {
            let mut b = AlignedBuf::new(len, align).unwrap();
            assert_eq!(b.len(), len);
            assert_eq!(b.as_slice().as_ptr() as usize % align, 0, "{len} {align}");
            assert!(b.as_slice().iter().all(|&x| x == 0));
            b.as_mut_slice().fill(7);
            assert!(b.as_slice().iter().all(|&x| x == 7));
        }
        assert!(AlignedBuf::new(16, 3).is_err(), "not a power of two");
        assert!(AlignedBuf::new(usize::MAX, 4096).is_err());
    }

    #[test]
    fn copies_cross_slice_boundaries() {
        let mut a = [0u8; 5];
        let mut b = [0u8; 7];
        // SAFETY: the arrays outlive the slices.
        let bufs = unsafe {
            [
                VolatileSlice::new(a.as_mut_ptr(), a.len()),
                VolatileSlice::new(b.as_mut_ptr(), b.len()),
            ]
        };
        assert!(copy_to_slices(&bufs, 3, &[1, 2, 3, 4]));
        let mut out = [0u8; 6];
        assert!(copy_from_slices(&bufs, 2, &mut out));
        assert_eq!(out, [0, 1, 2, 3, 4, 0]);
        assert!(!copy_to_slices(&bufs, 10, &[1, 2, 3]), "past the end");
        assert!(!copy_from_slices(&bufs, 0, &mut [0u8; 13]));
        let _ = bufs;
        assert_eq!(a, [0, 0, 0, 1, 2]);
        assert_eq!(b, [3, 4, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn buffer_checks_follow_the_alignment() {
        let d = DirectIo {
            mem_align: 512,
            block: 512,
        };
        assert!(d.buffer_ok(4096, 512));
        assert!(d.buffer_ok(512, 8192));
        assert!(!d.buffer_ok(4097, 512), "address");
        assert!(!d.buffer_ok(4096, 100), "length");
        assert_eq!(d.buffer_align(), 512);
    }
}
