//! Raw images: a regular file or a block device, byte for byte the disk.

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use vm_memory::VolatileSlice;

use crate::aligned::{copy_from_slices, copy_to_slices, AlignedBuf, DirectIo};
use crate::fileio;
use crate::{check_range, CacheMode, DiskImage, Format, StorageError};

/// Most bytes one bounce buffer of a direct I/O request holds (longer requests are moved in
/// pieces of this size).
const BOUNCE_CHUNK: u64 = 1 << 20;

/// A raw disk image.
///
/// I/O is positioned (`pread`/`pwrite`, `preadv`/`pwritev` straight into guest memory), so
/// any number of threads may use one `RawDisk` at once. `fallocate` modes the file system
/// turns down are remembered and not tried again.
///
/// With [`CacheMode::None`] the file is in `O_DIRECT` mode: requests whose buffers, offset and
/// length suit it go straight to the device; the others are bounced through an aligned buffer
/// (a piece of a sector is read, changed and written back: such a write is not atomic against
/// a concurrent write to the same sector — virtio-blk never issues one).
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
    /// `O_DIRECT` and what it needs; `None`: buffered.
    direct: Option<DirectIo>,
    /// `FALLOC_FL_PUNCH_HOLE` failed as unsupported once.
    no_punch_hole: AtomicBool,
    /// `FALLOC_FL_ZERO_RANGE` failed as unsupported once.
    no_zero_range: AtomicBool,
}

/// Which way a bounced transfer goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bounce {
    Read,
    Write,
}

impl RawDisk {
    /// Wraps an open, locked file. Its size must be a multiple of 512. With
    /// [`CacheMode::None`] the file is switched to `O_DIRECT`.
    pub(crate) fn new(
        path: &Path,
        file: fs::File,
        read_only: bool,
        cache: CacheMode,
    ) -> Result<Self, StorageError> {
        let direct = match cache {
            CacheMode::Writeback => None,
            CacheMode::None => Some(fileio::set_direct(path, &file)?),
        };
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
            direct,
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

    /// The direct I/O needs of a request that cannot go to the file as it is: `None` when it
    /// can (buffered I/O, or every buffer, the offset and the length aligned).
    fn must_bounce(
        &self,
        offset: u64,
        len: u64,
        buffers_ok: impl FnOnce(&DirectIo) -> bool,
    ) -> Option<DirectIo> {
        let d = self.direct?;
        let aligned =
            offset.is_multiple_of(d.block) && len.is_multiple_of(d.block) && buffers_ok(&d);
        (!aligned).then_some(d)
    }

    /// Moves `len` bytes at `offset` (inside the disk) through aligned buffers of at most
    /// [`BOUNCE_CHUNK`] bytes (plus the partial sectors at either end). A read hands each
    /// piece to `data(done, bytes)`, `done` being the bytes of the request before it; a write
    /// has `data` fill it, after the partial sectors were read (read-modify-write).
    fn bounce(
        &self,
        d: DirectIo,
        offset: u64,
        len: u64,
        dir: Bounce,
        mut data: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let block = d.block;
        let mut buf: Option<AlignedBuf> = None;
        let mut done = 0u64;
        while done < len {
            let pos = offset + done;
            let want = (len - done).min(BOUNCE_CHUNK);
            let start = pos - pos % block;
            // The disk is whole sectors (and block is one sector): this stays inside it.
            let end = (pos + want).next_multiple_of(block);
            let span = (end - start) as usize;
            let b = match &mut buf {
                Some(b) if b.len() >= span => b,
                _ => buf.insert(AlignedBuf::new(span, d.buffer_align())?),
            };
            let whole = &mut b.as_mut_slice()[..span];
            let skip = (pos - start) as usize;
            let piece = skip..skip + want as usize;
            match dir {
                Bounce::Read => {
                    fileio::read_full_at(&self.file, whole, start)?;
                    data(done, &mut whole[piece])?;
                }
                Bounce::Write => {
                    let bs = block as usize;
                    if skip != 0 {
                        fileio::read_full_at(&self.file, &mut whole[..bs], start)?;
                    }
                    if piece.end != span {
                        fileio::read_full_at(&self.file, &mut whole[span - bs..], end - block)?;
                    }
                    data(done, &mut whole[piece])?;
                    self.file.write_all_at(whole, start)?;
                }
            }
            done += want;
        }
        Ok(())
    }

    /// Writes zeroes over the range (the last resort of write-zeroes): through aligned zero
    /// buffers with direct I/O.
    fn write_zeroes_by_writing(&self, offset: u64, len: u64) -> io::Result<()> {
        let Some(d) = self.direct else {
            return fileio::write_zeroes_by_writing(&self.file, offset, len);
        };
        self.bounce(d, offset, len, Bounce::Write, |_, piece| {
            piece.fill(0);
            Ok(())
        })
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

/// The error a copy between a bounce buffer and guest buffers that turned out too short gives.
fn short_buffers() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "guest buffers shorter than the request",
    )
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
            "raw {} ({} bytes, {}{})",
            self.path.display(),
            self.size,
            if self.read_only {
                "read-only"
            } else {
                "read-write"
            },
            if self.direct.is_some() {
                ", cache=none"
            } else {
                ""
            }
        )
    }

    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }

    fn direct_io(&self) -> Option<DirectIo> {
        self.direct
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError> {
        let len = buf.len() as u64;
        check_range(offset, len, self.size)?;
        let addr = buf.as_ptr() as usize;
        let res = match self.must_bounce(offset, len, |d| d.buffer_ok(addr, buf.len())) {
            None => fileio::read_full_at(&self.file, buf, offset),
            Some(d) => self.bounce(d, offset, len, Bounce::Read, |done, piece| {
                let at = done as usize;
                buf[at..at + piece.len()].copy_from_slice(piece);
                Ok(())
            }),
        };
        res.map_err(|source| StorageError::Read {
            offset,
            len,
            source,
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), StorageError> {
        let len = buf.len() as u64;
        self.check_write(offset, len)?;
        let addr = buf.as_ptr() as usize;
        let res = match self.must_bounce(offset, len, |d| d.buffer_ok(addr, buf.len())) {
            None => self.file.write_all_at(buf, offset),
            Some(d) => self.bounce(d, offset, len, Bounce::Write, |done, piece| {
                let at = done as usize;
                piece.copy_from_slice(&buf[at..at + piece.len()]);
                Ok(())
            }),
        };
        res.map_err(|source| StorageError::Write {
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
        let res = match self.must_bounce(offset, len, |d| d.slices_ok(bufs)) {
            None => fileio::read_vectored_at(&self.file, bufs, offset),
            Some(d) => self.bounce(d, offset, len, Bounce::Read, |done, piece| {
                copy_to_slices(bufs, done as usize, piece)
                    .then_some(())
                    .ok_or_else(short_buffers)
            }),
        };
        res.map_err(|source| StorageError::Read {
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
        let res = match self.must_bounce(offset, len, |d| d.slices_ok(bufs)) {
            None => fileio::write_vectored_at(&self.file, bufs, offset),
            Some(d) => self.bounce(d, offset, len, Bounce::Write, |done, piece| {
                copy_from_slices(bufs, done as usize, piece)
                    .then_some(())
                    .ok_or_else(short_buffers)
            }),
        };
        res.map_err(|source| StorageError::Write {
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
        self.write_zeroes_by_writing(offset, len).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn disk(dir: &TempDir, size: u64, read_only: bool) -> RawDisk {
        let path = dir.file("disk.raw", size);
        let file = fileio::open_file(&path, read_only, fileio::Lock::None).unwrap();
        RawDisk::new(&path, file, read_only, CacheMode::Writeback).unwrap()
    }

    #[test]
    fn fallbacks_zero_when_fallocate_is_unsupported() {
        for cache in [CacheMode::Writeback, CacheMode::None] {
            let dir = TempDir::new("raw-fallback");
            let path = dir.file("disk.raw", 1 << 20);
            let file = fileio::open_file(&path, false, fileio::Lock::None).unwrap();
            let d = match RawDisk::new(&path, file, false, cache) {
                Ok(d) => d,
                Err(e @ StorageError::DirectIo { .. }) => {
                    println!("fallbacks_zero ({cache}): SKIPPED ({e})");
                    continue;
                }
                Err(e) => panic!("{e}"),
            };
            assert_eq!(d.direct.is_some(), cache == CacheMode::None);
            d.write_at(&[0xaa; 8192], 4096).unwrap();
            // Pretend the file system has neither mode: the write fallback must zero (with
            // direct I/O: through aligned buffers, the partial sectors read back first).
            d.no_punch_hole.store(true, Ordering::Relaxed);
            d.no_zero_range.store(true, Ordering::Relaxed);
            d.write_zeroes(4096 + 100, 5000, true).unwrap();
            let mut buf = vec![0u8; 8192];
            d.read_at(&mut buf, 4096).unwrap();
            assert!(buf[..100].iter().all(|b| *b == 0xaa), "{cache}");
            assert!(buf[100..5100].iter().all(|b| *b == 0), "{cache}");
            assert!(buf[5100..].iter().all(|b| *b == 0xaa), "{cache}");
            // And a discard that cannot punch holes is a successful no-op.
            d.discard(0, 4096).unwrap();
        }
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
        let err = RawDisk::new(&path, file, true, CacheMode::Writeback).unwrap_err();
        assert!(
            matches!(err, StorageError::RawSize { size: 1000, .. }),
            "{err}"
        );
    }
}
