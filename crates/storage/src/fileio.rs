//! Host-file plumbing shared by the backends: opening and locking image files, their size,
//! positioned (vectored) I/O straight into guest memory, and `fallocate`.

use std::fs;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use vm_memory::VolatileSlice;

use crate::aligned::{self, AlignError, DirectIo};
use crate::StorageError;

/// Most iovecs one `preadv`/`pwritev` takes (Linux's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Chunk size when zeroes have to be written out by hand.
const ZERO_CHUNK: usize = 1 << 20;

/// How an image file is locked while it is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lock {
    /// Nobody else may open it (a writable disk).
    Exclusive,
    /// Others may read it too (read-only disks, backing files).
    Shared,
    /// No lock (probing).
    None,
}

/// Opens `path` (a regular file or a block device), writable unless `read_only`, and locks it.
///
/// The lock is `flock(2)` (whole file, non-blocking), released when the file is closed. It
/// stops two Keel VMs (or two disks of one VM) from writing one image, and a VM from writing
/// an image another VM uses as a backing file. It does not interlock with QEMU, which takes
/// OFD byte-range locks; a file system that cannot lock at all is used unlocked.
pub(crate) fn open_file(
    path: &Path,
    read_only: bool,
    lock: Lock,
) -> Result<fs::File, StorageError> {
    let open_err = |source| StorageError::Open {
        path: path.to_path_buf(),
        source,
    };
    // Check the type before open(2): opening a FIFO would block.
    let meta = fs::metadata(path).map_err(open_err)?;
    if !(meta.is_file() || meta.file_type().is_block_device()) {
        return Err(open_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file or block device",
        )));
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .map_err(open_err)?;

    let op = match lock {
        Lock::Exclusive => libc::LOCK_EX,
        Lock::Shared => libc::LOCK_SH,
        Lock::None => return Ok(file),
    };
    loop {
        // SAFETY: flock on a descriptor we own; it touches no memory.
        let ret = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
        if ret == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => {
                return Err(StorageError::Locked {
                    path: path.to_path_buf(),
                })
            }
            // ENOLCK, EOPNOTSUPP…: the file system cannot lock; go on without.
            _ => break,
        }
    }
    Ok(file)
}

/// Turns direct I/O (`O_DIRECT`) on for an open image file (after its header was probed and
/// checked with ordinary reads), and finds the alignment it needs.
pub(crate) fn set_direct(path: &Path, file: &fs::File) -> Result<DirectIo, StorageError> {
    let open_err = |source| StorageError::Open {
        path: path.to_path_buf(),
        source,
    };
    // SAFETY: fcntl F_GETFL on a descriptor we own; no memory involved.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(open_err(io::Error::last_os_error()));
    }
    // SAFETY: fcntl F_SETFL with integer flags on a descriptor we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_DIRECT) } < 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            // The file system cannot do direct I/O (e.g. tmpfs before Linux 6.6, procfs).
            Some(libc::EINVAL) => StorageError::DirectIo {
                path: path.to_path_buf(),
            },
            _ => open_err(err),
        });
    }
    aligned::direct_io_alignment(file).map_err(|e| match e {
        AlignError::Unsupported => StorageError::DirectIo {
            path: path.to_path_buf(),
        },
        AlignError::TooCoarse(align) => StorageError::DirectIoAlignment {
            path: path.to_path_buf(),
            align,
        },
        AlignError::Io(source) => open_err(source),
    })
}

/// The size in bytes of a regular file or a block device.
pub(crate) fn file_size(file: &fs::File) -> io::Result<u64> {
    let mut f = file;
    f.seek(SeekFrom::End(0))
}

/// Reads `buf.len()` bytes at `offset`; what lies past the end of the file reads as zeroes.
pub(crate) fn read_full_at(file: &fs::File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => {
                buf.fill(0);
                break;
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Total length of a list of guest buffers, `None` on overflow.
pub(crate) fn total_len(bufs: &[VolatileSlice<'_>]) -> Option<u64> {
    bufs.iter()
        .try_fold(0u64, |acc, b| acc.checked_add(b.len() as u64))
}

/// Converts an offset to `off_t`.
fn off_t(offset: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset exceeds off_t"))
}

/// Drops the first `n` bytes of `iovs[*idx..]`, moving `*idx` past the buffers used up.
fn advance(iovs: &mut [libc::iovec], idx: &mut usize, mut n: usize) {
    while n > 0 && *idx < iovs.len() {
        let iov = &mut iovs[*idx];
        if n >= iov.iov_len {
            n -= iov.iov_len;
            *idx += 1;
        } else {
            // Stays inside the buffer: iov_len > n.
            iov.iov_base = iov.iov_base.cast::<u8>().wrapping_add(n).cast();
            iov.iov_len -= n;
            n = 0;
        }
    }
}

/// The direction of a vectored transfer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// File → guest memory.
    Read,
    /// Guest memory → file.
    Write,
}

/// `preadv`/`pwritev` between `file` at `offset` and guest buffers, without a bounce copy.
///
/// Reads past the end of the file fill the rest with zeroes; a write that makes no progress is
/// an error. Short transfers are resumed.
fn transfer_vectored(
    file: &fs::File,
    bufs: &[VolatileSlice<'_>],
    offset: u64,
    dir: Dir,
) -> io::Result<()> {
    // The guards keep the guest mappings valid until the syscalls are done.
    let guards: Vec<_> = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| b.ptr_guard_mut())
        .collect();
    let mut iovs: Vec<libc::iovec> = guards
        .iter()
        .map(|g| libc::iovec {
            iov_base: g.as_ptr().cast(),
            iov_len: g.len(),
        })
        .collect();
    let mut idx = 0;
    let mut pos = offset;
    while idx < iovs.len() {
        let rest = &iovs[idx..];
        let count = rest.len().min(IOV_MAX) as libc::c_int;
        let at = off_t(pos)?;
        let ret = match dir {
            // SAFETY: every iovec points into a guest buffer kept mapped by `guards` and is
            // valid for iov_len bytes; count ≤ rest.len(). The kernel writes only into them.
            Dir::Read => unsafe { libc::preadv(file.as_raw_fd(), rest.as_ptr(), count, at) },
            // SAFETY: as above; the kernel only reads from the buffers.
            Dir::Write => unsafe { libc::pwritev(file.as_raw_fd(), rest.as_ptr(), count, at) },
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let n = ret as usize;
        if n == 0 {
            if dir == Dir::Write {
                return Err(io::ErrorKind::WriteZero.into());
            }
            for iov in &iovs[idx..] {
                // SAFETY: the iovec is a live guest buffer of iov_len bytes (see above).
                unsafe { std::ptr::write_bytes(iov.iov_base.cast::<u8>(), 0, iov.iov_len) };
            }
            return Ok(());
        }
        advance(&mut iovs, &mut idx, n);
        pos += n as u64;
    }
    Ok(())
}

/// Reads from `file` at `offset` straight into guest buffers (`preadv`).
pub(crate) fn read_vectored_at(
    file: &fs::File,
    bufs: &[VolatileSlice<'_>],
    offset: u64,
) -> io::Result<()> {
    transfer_vectored(file, bufs, offset, Dir::Read)
}

/// Writes guest buffers to `file` at `offset` (`pwritev`).
pub(crate) fn write_vectored_at(
    file: &fs::File,
    bufs: &[VolatileSlice<'_>],
    offset: u64,
) -> io::Result<()> {
    transfer_vectored(file, bufs, offset, Dir::Write)
}

/// `fallocate(2)` with `mode | FALLOC_FL_KEEP_SIZE`.
pub(crate) fn fallocate(
    file: &fs::File,
    mode: libc::c_int,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    let (off, len) = (off_t(offset)?, off_t(len)?);
    loop {
        // SAFETY: fallocate on a descriptor we own with integer arguments; no memory involved.
        let ret = unsafe {
            libc::fallocate(file.as_raw_fd(), mode | libc::FALLOC_FL_KEEP_SIZE, off, len)
        };
        if ret == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Whether an `fallocate` error means "this file (system) cannot do that mode".
pub(crate) fn is_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::EOPNOTSUPP
                | libc::ENOSYS
                | libc::ENODEV
                | libc::ENOTTY
                | libc::ENXIO
                | libc::EINVAL
        )
    )
}

/// Zeroes `len` bytes at `offset` by writing zero buffers: the fallback of last resort.
pub(crate) fn write_zeroes_by_writing(file: &fs::File, offset: u64, len: u64) -> io::Result<()> {
    let chunk = usize::try_from(len).unwrap_or(ZERO_CHUNK).min(ZERO_CHUNK);
    let zeroes = vec![0u8; chunk];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(chunk as u64) as usize;
        file.write_all_at(&zeroes[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(len: usize) -> libc::iovec {
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: len,
        }
    }

    #[test]
    fn advance_skips_used_buffers_and_trims_the_partial_one() {
        let mut iovs = [iov(10), iov(20), iov(30)];
        let mut idx = 0;
        advance(&mut iovs, &mut idx, 15);
        assert_eq!(idx, 1);
        assert_eq!(iovs[1].iov_len, 15);
        assert_eq!(iovs[1].iov_base as usize, 5);
        advance(&mut iovs, &mut idx, 15);
        assert_eq!(idx, 2);
        assert_eq!(iovs[2].iov_len, 30);
        advance(&mut iovs, &mut idx, 30);
        assert_eq!(idx, 3);
    }

    #[test]
    fn total_len_sums_and_detects_nothing_odd() {
        let mut a = [0u8; 8];
        let mut b = [0u8; 24];
        // SAFETY: the arrays outlive the slices.
        let bufs = unsafe {
            [
                VolatileSlice::new(a.as_mut_ptr(), a.len()),
                VolatileSlice::new(b.as_mut_ptr(), b.len()),
            ]
        };
        assert_eq!(total_len(&bufs), Some(32));
        assert_eq!(total_len(&[]), Some(0));
    }

    #[test]
    fn opening_a_directory_is_a_clear_error() {
        let err = open_file(&std::env::temp_dir(), true, Lock::None).unwrap_err();
        assert!(matches!(err, StorageError::Open { .. }), "{err}");
    }
}
