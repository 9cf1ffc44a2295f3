//! Raw images: a regular file or a block device, byte for byte the disk.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use vm_memory::VolatileSlice;

use crate::fileio;
use crate::{check_range, DiskImage, Format, StorageError};

/// A raw disk image.
///
/// I/O is positioned (`pread`/`pwrite`, `preadv`/`pwritev` straight into guest memory), so
/// any number of threads may use one `RawDisk` at once. `fallocate` modes the file system
/// turns down are remembered and not tried again.
#[derive(Debug)]
pub struct RawDisk {
    /// The open (and locked) file.
    file: fs::File,
    /// For messages.
    path: PathBuf,
    /// Bytes; fixed at open.
    size: u64,
    /// Opened without write access.
    read_only: bool,
    /// Preferred I/O block of the file system (discard granularity).
    block_size: u64,
    /// `FALLOC_FL_PUNCH_HOLE` failed as unsupported once.
    no_punch_hole: AtomicBool,
    /// `FALLOC_FL_ZERO_RANGE` failed as unsupported once.
    no_zero_range: AtomicBool,
}

impl RawDisk {
    /// Wraps an open, locked file. Its size must be a multiple of 512.
    pub(crate) fn new(path: &Path, file: fs::File, read_only: bool) -> Result<Self, StorageError> {
        let size = fileio::file_size(&file).map_err(|source| StorageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        if !size.is_multiple_of(512) {
            return Err(StorageError::RawSize {
                path: path.to_path_buf(),
                size,
            });
        }
        let block_size = file
            .metadata()
            .map(|m| m.blksize())
            .unwrap_or(4096)
            .clamp(512, 1 << 20);
        Ok(RawDisk {
            file,
            path: path.to_path_buf(),
            size,
            read_only,
            block_size,
            no_punch_hole: AtomicBool::new(false),
            no_zero_range: AtomicBool::new(false),
        })
    }

    /// Refuses writes to a read-only disk and requests outside it.
    fn check_write(&self, offset: u64, len: u64) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        check_range(offset, len, self.size)
    }

    /// Tries one `fallocate` mode unless it is known to be unsupported; `Ok(false)` when the
    /// file system cannot do it.
    fn try_fallocate(
        &self,
        mode: libc::c_int,
        unsupported: &AtomicBool,
        offset: u64,
        len: u64,
    ) -> std::io::Result<bool> {
        if unsupported.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match fileio::fallocate(&self.file, mode, offset, len) {
            Ok(()) => Ok(true),
            Err(e) if fileio::is_unsupported(&e) => {
                unsupported.store(true, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

impl DiskImage for RawDisk {
    fn format(&self) -> Format {
        Format::Raw
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn discard_alignment(&self) -> u64 {
        self.block_size
    }

    fn describe(&self) -> String {
        format!(
            "raw {} ({} bytes, {})",
            self.path.display(),
            self.size,
            if self.read_only {
                "read-only"
            } else {
                "read-write"
            }
        )
    }

    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError> {
        let len = buf.len() as u64;
        check_range(offset, len, self.size)?;
        fileio::read_full_at(&self.file, buf, offset).map_err(|source| StorageError::Read {
            offset,
            len,
            source,
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), StorageError> {
        let len = buf.len() as u64;
        self.check_write(offset, len)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|source| StorageError::Write {
                offset,
                len,
                source,
            })
    }

    fn read_vectored_at(
        &self,
        bufs: &[VolatileSlice<'_>],
        offset: u64,
    ) -> Result<(), StorageError> {
        let len = fileio::total_len(bufs).unwrap_or(u64::MAX);
        check_range(offset, len, self.size)?;
        fileio::read_vectored_at(&self.file, bufs, offset).map_err(|source| StorageError::Read {
            offset,
            len,
            source,
        })
    }

    fn write_vectored_at(
        &self,
        bufs: &[VolatileSlice<'_>],
        offset: u64,
    ) -> Result<(), StorageError> {
        let len = fileio::total_len(bufs).unwrap_or(u64::MAX);
        self.check_write(offset, len)?;
        fileio::write_vectored_at(&self.file, bufs, offset).map_err(|source| StorageError::Write {
            offset,
            len,
            source,
        })
    }

    fn flush(&self) -> Result<(), StorageError> {
        if self.read_only {
            return Ok(());
        }
        // fdatasync(2): the data and the metadata needed to read it back.
        self.file
            .sync_data()
            .map_err(|source| StorageError::Flush { source })
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), StorageError> {
        self.check_write(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        // A discard is a hint: where holes cannot be punched, it does nothing.
        self.try_fallocate(libc::FALLOC_FL_PUNCH_HOLE, &self.no_punch_hole, offset, len)
            .map(|_| ())
            .map_err(|source| StorageError::Discard {
                offset,
                len,
                source,
            })
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<(), StorageError> {
        self.check_write(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let err = |source| StorageError::WriteZeroes {
            offset,
            len,
            source,
        };
        if may_unmap
            && self
                .try_fallocate(libc::FALLOC_FL_PUNCH_HOLE, &self.no_punch_hole, offset, len)
                .map_err(err)?
        {
            return Ok(());
        }
        if self
            .try_fallocate(libc::FALLOC_FL_ZERO_RANGE, &self.no_zero_range, offset, len)
            .map_err(err)?
        {
            return Ok(());
        }
        fileio::write_zeroes_by_writing(&self.file, offset, len).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn disk(dir: &TempDir, size: u64, read_only: bool) -> RawDisk {
        let path = dir.file("disk.raw", size);
        let file = fileio::open_file(&path, read_only, fileio::Lock::None).unwrap();
        RawDisk::new(&path, file, read_only).unwrap()
    }

    #[test]
    fn fallbacks_zero_when_fallocate_is_unsupported() {
        let dir = TempDir::new("raw-fallback");
        let d = disk(&dir, 1 << 20, false);
        d.write_at(&[0xaa; 8192], 4096).unwrap();
        // Pretend the file system has neither mode: the write fallback must zero.
        d.no_punch_hole.store(true, Ordering::Relaxed);
        d.no_zero_range.store(true, Ordering::Relaxed);
        d.write_zeroes(4096 + 100, 5000, true).unwrap();
        let mut buf = vec![0u8; 8192];
        d.read_at(&mut buf, 4096).unwrap();
        assert!(buf[..100].iter().all(|b| *b == 0xaa));
        assert!(buf[100..5100].iter().all(|b| *b == 0));
        assert!(buf[5100..].iter().all(|b| *b == 0xaa));
        // And a discard that cannot punch holes is a successful no-op.
        d.discard(0, 4096).unwrap();
    }

    #[test]
    fn raw_fd_is_the_image_file() {
        let dir = TempDir::new("raw-fd");
        let d = disk(&dir, 4096, false);
        d.write_at(b"keel", 512).unwrap();
        let fd = d.raw_fd().unwrap().try_clone_to_owned().unwrap();
        let mut buf = [0u8; 4];
        fs::File::from(fd).read_exact_at(&mut buf, 512).unwrap();
        assert_eq!(&buf, b"keel");
    }

    #[test]
    fn discard_alignment_is_a_power_of_two_of_at_least_512() {
        let dir = TempDir::new("raw-align");
        let d = disk(&dir, 4096, false);
        assert!(d.discard_alignment() >= 512);
        assert!(d.discard_alignment().is_power_of_two());
    }

    #[test]
    fn size_must_be_whole_sectors() {
        let dir = TempDir::new("raw-size");
        let path = dir.file("odd.raw", 1000);
        let file = fileio::open_file(&path, true, fileio::Lock::None).unwrap();
        let err = RawDisk::new(&path, file, true).unwrap_err();
        assert!(
            matches!(err, StorageError::RawSize { size: 1000, .. }),
            "{err}"
        );
    }
}
