//! Disk images for virtio-blk and datastores: raw files and block devices, and qcow2 (through
//! imago) with backing chains.
//!
//! [`open`] gives a [`DiskImage`]: a thread-safe object with positioned reads and writes (also
//! vectored, straight between guest memory and the file), flush, discard and write-zeroes.
//! Every offset and length is checked against the disk size before anything touches the file:
//! a request outside the disk is a [`StorageError::OutOfRange`], never a panic and never a write
//! past the end.
//!
//! ```no_run
//! # fn main() -> Result<(), storage::StorageError> {
//! use std::path::Path;
//! let disk = storage::open(Path::new("disk.qcow2"), storage::Format::Auto, false)?;
//! let mut sector = [0u8; 512];
//! disk.read_at(&mut sector, 0)?;
//! disk.write_at(&sector, 512)?;
//! disk.flush()?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::str::FromStr;

use vm_memory::VolatileSlice;

mod aligned;
mod error;
mod fileio;
mod lease;
mod probe;
mod qcow2;
mod raw;

pub use aligned::{copy_from_slices, copy_to_slices, AlignedBuf, DirectIo, DIRECT_IO_BLOCK};
pub use error::StorageError;
pub use lease::Lease;
pub use probe::{probe, QCOW2_MAGIC};
pub use qcow2::{create_qcow2, create_raw, Qcow2Disk};
pub use raw::RawDisk;

/// The deepest backing chain [`open`] follows (QEMU sets no limit; real chains are short).
pub const MAX_BACKING_DEPTH: usize = 16;

/// An image format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// Byte for byte the disk.
    Raw,
    /// QEMU's copy-on-write format (v2 and v3).
    Qcow2,
    /// Decide by the file's magic ([`probe`]); only for [`open`], never an image's format.
    #[default]
    Auto,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Auto => "auto",
        })
    }
}

impl FromStr for Format {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self, StorageError> {
        match s {
            "raw" => Ok(Format::Raw),
            "qcow2" => Ok(Format::Qcow2),
            "auto" => Ok(Format::Auto),
            other => Err(StorageError::UnknownFormat(other.to_string())),
        }
    }
}

/// How an image's data reaches its file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CacheMode {
    /// Through the host's page cache (buffered I/O): writes are copied there and written back
    /// later; reads may be served from it. [`DiskImage::flush`] makes them durable.
    #[default]
    Writeback,
    /// Around the page cache (`O_DIRECT`), like QEMU's `cache=none`: data moves between the
    /// guest's buffers and the device, without a copy in the host's memory. Writes still need
    /// [`DiskImage::flush`] to be durable (the device's own cache). Buffers, offsets and
    /// lengths that direct I/O cannot take go through an aligned bounce buffer.
    None,
}

impl fmt::Display for CacheMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CacheMode::Writeback => "writeback",
            CacheMode::None => "none",
        })
    }
}

impl FromStr for CacheMode {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self, StorageError> {
        match s {
            "writeback" => Ok(CacheMode::Writeback),
            "none" => Ok(CacheMode::None),
            other => Err(StorageError::UnknownCacheMode(other.to_string())),
        }
    }
}

/// An open disk image.
///
/// All methods take `&self` and the type is `Send + Sync`: one image can serve several worker
/// threads (`Arc<dyn DiskImage>`). Offsets and lengths are bytes; they need not be aligned.
/// Every request is checked against [`DiskImage::size`] first ([`StorageError::OutOfRange`]);
/// writes, discards and write-zeroes on a read-only image fail with [`StorageError::ReadOnly`].
pub trait DiskImage: Send + Sync + fmt::Debug {
    /// [`Format::Raw`] or [`Format::Qcow2`].
    fn format(&self) -> Format;

    /// Virtual size in bytes (a raw image's is a multiple of 512).
    fn size(&self) -> u64;

    /// Whether the image was opened read-only.
    fn read_only(&self) -> bool;

    /// The granularity (bytes, a power of two ≥ 512) at which discards free space: the file
    /// system block of a raw image, the cluster of a qcow2 image. For virtio-blk's
    /// `discard_sector_alignment`. Smaller discards are accepted (and may free nothing).
    fn discard_alignment(&self) -> u64;

    /// One line for logs, e.g. `qcow2 v3 /vm/disk.qcow2 (10737418240 bytes, read-write,
    /// backing /vm/base.qcow2)`.
    fn describe(&self) -> String;

    /// The open file that [`DiskImage::map_direct`] places requests in, for I/O that bypasses
    /// this trait (virtio-blk's io_uring path): a raw image's file (byte `n` of the disk is byte
    /// `n` of the file), a qcow2 image's own file (its allocated clusters). The descriptor stays
    /// valid as long as the image is open. `None`: every request goes through the trait's methods.
    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Where the `len` bytes at `offset` lie, in one piece, in [`DiskImage::raw_fd`]'s file, so
    /// that they can be moved there directly; with `write`, only a place that may be written in
    /// place. `None`: not in one piece there (qcow2: unallocated, zero, compressed or backing
    /// data, clusters that are not contiguous, a copy-on-write cluster for a write, a discard
    /// under way), outside the disk, or a write to a read-only disk: use the trait's methods.
    /// The placement stays valid while the returned lease lives.
    fn map_direct(&self, offset: u64, len: u64, write: bool) -> Option<DirectMap> {
        let ok = check_range(offset, len, self.size()).is_ok() && !(write && self.read_only());
        (ok && self.raw_fd().is_some()).then_some(DirectMap {
            offset,
            lease: None,
        })
    }

    /// With [`CacheMode::None`], what [`DiskImage::raw_fd`]'s direct I/O needs: whoever does
    /// I/O on that descriptor must use buffers, offsets and lengths aligned accordingly (the
    /// trait's own methods take any). `None`: buffered I/O, or no raw descriptor.
    fn direct_io(&self) -> Option<DirectIo> {
        None
    }

    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError>;

    /// Writes `buf` at `offset`. Not durable until [`DiskImage::flush`].
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), StorageError>;

    /// Reads into guest memory buffers, in order, starting at `offset`, without a bounce buffer.
    ///
    /// Guest memory with a dirty bitmap is not supported yet (`VolatileSlice<'_, ()>`).
    fn read_vectored_at(
        &self,
        bufs: &[VolatileSlice<'_>],
        offset: u64,
    ) -> Result<(), StorageError> {
        let len = bufs.iter().map(|b| b.len()).sum();
        let mut bounce = vec![0u8; len];
        self.read_at(&mut bounce, offset)?;
        let mut done = 0;
        for b in bufs {
            b.copy_from(&bounce[done..done + b.len()]);
            done += b.len();
        }
        Ok(())
    }

    /// Writes guest memory buffers, in order, starting at `offset`, without a bounce buffer.
    fn write_vectored_at(
        &self,
        bufs: &[VolatileSlice<'_>],
        offset: u64,
    ) -> Result<(), StorageError> {
        let len = bufs.iter().map(|b| b.len()).sum();
        let mut bounce = vec![0u8; len];
        let mut done = 0;
        for b in bufs {
            b.copy_to(&mut bounce[done..done + b.len()]);
            done += b.len();
        }
        self.write_at(&bounce, offset)
    }

    /// Makes every completed write durable: raw `fdatasync`; qcow2 writes its metadata caches
    /// back and `fsync`s. Data written before a successful flush survives a host crash.
    /// A no-op on read-only images.
    fn flush(&self) -> Result<(), StorageError>;

    /// Tells the image the range is unused. Space may be freed (raw: `FALLOC_FL_PUNCH_HOLE`;
    /// qcow2: clusters freed, and the range reads as zeroes, also over a backing file); where
    /// that is impossible, nothing happens and the call still succeeds. Afterwards the range's
    /// contents are unspecified (they read as zeroes where space was freed).
    fn discard(&self, offset: u64, len: u64) -> Result<(), StorageError>;

    /// Makes the range read as zeroes. With `may_unmap` the space may be freed (raw:
    /// `PUNCH_HOLE`, then `ZERO_RANGE`, then writing zeroes; qcow2: clusters discarded to zero),
    /// without it the allocation is kept (raw: `ZERO_RANGE`, then writing zeroes; qcow2: zero
    /// clusters that keep their allocation; v2 images get zero buffers written).
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<(), StorageError>;
}

/// Where a request's bytes are in [`DiskImage::raw_fd`]'s file ([`DiskImage::map_direct`]).
#[derive(Debug)]
pub struct DirectMap {
    /// The offset in that file.
    pub offset: u64,
    /// Keeps the placement valid until dropped (qcow2); `None` where it never moves (raw).
    pub lease: Option<Lease>,
}

/// Checks that `len` bytes at `offset` lie inside a disk of `size` bytes (no overflow).
pub fn check_range(offset: u64, len: u64, size: u64) -> Result<(), StorageError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(StorageError::OutOfRange { offset, len, size }),
    }
}

/// Opens a disk image (a file or a block device).
///
/// `format`: [`Format::Auto`] probes the magic (qcow2 if the file starts with `QFI\xfb`,
/// else raw; see [`probe`] on when probing is safe); [`Format::Qcow2`] refuses a file without
/// the magic; [`Format::Raw`] serves any file byte for byte, even one holding a qcow2 image
/// (the user forced it).
///
/// The image is locked (`flock`): exclusively when writable, shared when `read_only`; backing
/// files are opened read-only with shared locks, so a base shared by several overlays works,
/// but nobody can open it writable meanwhile.
///
/// A qcow2 image's backing chain is opened from its header (relative paths against the
/// directory of the image naming them, as QEMU does; the backing format from the header, else
/// probed), at most [`MAX_BACKING_DEPTH`] deep and without loops. Refused with a named feature
/// ([`StorageError::Unsupported`]): encryption, external data files, zstd compression,
/// extended L2 entries, the dirty bit (lazy refcounts after an unclean shutdown).
pub fn open(
    path: &Path,
    format: Format,
    read_only: bool,
) -> Result<Box<dyn DiskImage>, StorageError> {
    open_with_cache(path, format, read_only, CacheMode::Writeback)
}

/// [`open`] with a [`CacheMode`]. With [`CacheMode::None`] the image file (and every backing
/// file of a qcow2 image) is switched to `O_DIRECT` once its header was probed and checked; a
/// file system that cannot do direct I/O is a [`StorageError::DirectIo`], a raw image whose
/// direct I/O needs more than 512-byte alignment (a 4096-byte logical block device) a
/// [`StorageError::DirectIoAlignment`].
pub fn open_with_cache(
    path: &Path,
    format: Format,
    read_only: bool,
    cache: CacheMode,
) -> Result<Box<dyn DiskImage>, StorageError> {
    let lock = if read_only {
        fileio::Lock::Shared
    } else {
        fileio::Lock::Exclusive
    };
    let file = fileio::open_file(path, read_only, lock)?;
    let format = match format {
        Format::Auto => probe::probe_file(path, &file)?,
        f => f,
    };
    match format {
        Format::Qcow2 => Ok(Box::new(Qcow2Disk::open(path, file, read_only, cache)?)),
        _ => Ok(Box::new(RawDisk::new(path, file, read_only, cache)?)),
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Temporary directories for tests.

    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory under the system temp dir, removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("keel-storage-{tag}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// A new zero-filled (sparse) file of `size` bytes in the directory.
        pub fn file(&self, name: &str, size: u64) -> PathBuf {
            let p = self.0.join(name);
            let f = std::fs::File::create(&p).unwrap();
            f.set_len(size).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_range_accepts_the_disk_and_nothing_past_it() {
        assert!(check_range(0, 4096, 4096).is_ok());
        assert!(check_range(4096, 0, 4096).is_ok());
        assert!(check_range(4096, 1, 4096).is_err());
        assert!(check_range(4097, 0, 4096).is_err());
        assert!(check_range(u64::MAX, 2, 4096).is_err());
        assert!(check_range(1, u64::MAX, u64::MAX).is_err());
    }

    #[test]
    fn formats_parse_and_print() {
        for f in [Format::Raw, Format::Qcow2, Format::Auto] {
            assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
        }
        let err = "vmdk".parse::<Format>().unwrap_err();
        assert!(err.to_string().contains("vmdk"));
    }

    #[test]
    fn cache_modes_parse_and_print() {
        for c in [CacheMode::Writeback, CacheMode::None] {
            assert_eq!(c.to_string().parse::<CacheMode>().unwrap(), c);
        }
        assert_eq!(CacheMode::default(), CacheMode::Writeback);
        for bad in ["", "directsync", "None", "unsafe"] {
            let err = bad.parse::<CacheMode>().unwrap_err().to_string();
            assert!(err.contains("none or writeback"), "{bad}: {err}");
        }
    }
}
