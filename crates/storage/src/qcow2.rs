//! qcow2 images through imago (its synchronous build: no async runtime), with backing chains
//! opened through our own gate (locks, loop and depth limits, named errors).

use std::cell::RefCell;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use imago::file::File as ImagoFile;
use imago::format::gate::ImplicitOpenGate;
use imago::io_buffers::{IoVector, IoVectorMut};
use imago::qcow2::Qcow2;
use imago::{
    FormatAccess, FormatCreateBuilder, FormatDriverBuilder, Mapping, Storage, StorageOpenOptions,
};
use vm_memory::VolatileSlice;

use crate::fileio::{self, Lock};
use crate::lease::Leases;
use crate::probe::{self, Qcow2Info};
use crate::{
    check_range, CacheMode, DirectIo, DirectMap, DiskImage, Format, StorageError, MAX_BACKING_DEPTH,
};

/// A qcow2 disk image, possibly on a chain of backing images (qcow2 or raw, opened read-only).
///
/// Reads and writes run concurrently from any number of threads (imago locks its metadata
/// internally); discards and unmapping write-zeroes take the image exclusively, because they
/// free clusters that a concurrent request could still be using. Allocated clusters of the
/// image's own file are also handed out for direct I/O ([`DiskImage::map_direct`]), under a
/// lease that discards and write-zeroes wait for (see [`crate::lease`]).
pub struct Qcow2Disk {
    /// imago's image; `write()` only for discards.
    access: RwLock<FormatAccess<ImagoFile>>,
    /// The image as given (made absolute).
    path: PathBuf,
    /// Virtual size in bytes.
    size: u64,
    /// Opened without write access.
    read_only: bool,
    /// From the header check.
    info: Qcow2Info,
    /// Backing files, nearest first.
    backing: Vec<PathBuf>,
    /// Every file of the chain is in `O_DIRECT` mode, with the top file's needs.
    direct: Option<DirectIo>,
    /// The image's own file (a second descriptor of what imago has), for direct I/O.
    file: fs::File,
    /// Leases on placements handed out by `map_direct`.
    leases: Arc<Leases>,
}

impl std::fmt::Debug for Qcow2Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Disk")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("read_only", &self.read_only)
            .field("backing", &self.backing)
            .finish()
    }
}

/// What the gate saw while imago opened the chain.
#[derive(Default)]
struct GateLog {
    /// The first failure, with its path; imago only passes an `io::Error` back up.
    failure: Option<StorageError>,
    /// Backing files opened, nearest first.
    opened: Vec<PathBuf>,
}

/// Opens the files a qcow2 header names (backing files; external data files are refused by the
/// header check before imago runs): read-only, share-locked, header-checked, at most
/// [`MAX_BACKING_DEPTH`] deep, and never a file already on the chain.
struct Gate {
    /// Canonical paths of the images from the top down to the one being opened.
    chain: Vec<PathBuf>,
    /// Shared by every gate of one `open`.
    log: Rc<RefCell<GateLog>>,
    /// Backing files are switched to `O_DIRECT` too (`cache=none`).
    direct: bool,
}

impl Gate {
    /// Records `err` as the failure and hands imago an `io::Error` to unwind with.
    fn fail(&self, err: StorageError) -> io::Error {
        let msg = err.to_string();
        let mut log = self.log.borrow_mut();
        if log.failure.is_none() {
            log.failure = Some(err);
        }
        io::Error::other(msg)
    }

    /// The image whose header is being followed.
    fn current(&self) -> PathBuf {
        self.chain.last().cloned().unwrap_or_default()
    }
}

impl ImplicitOpenGate<ImagoFile> for Gate {
    fn open_format<F: FormatDriverBuilder<ImagoFile>>(
        &mut self,
        builder: F,
    ) -> io::Result<FormatAccess<ImagoFile>> {
        let path = builder.get_image_path().unwrap_or_default();
        let canonical = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        let mut chain = self.chain.clone();
        chain.push(canonical);
        let child = Gate {
            chain,
            log: Rc::clone(&self.log),
            direct: self.direct,
        };
        let is_qcow2 = F::FORMAT == imago::format::Format::Qcow2;
        match builder.open(child) {
            Ok(image) => Ok(FormatAccess::new(image)),
            Err(err) => {
                let inner = self.log.borrow_mut().failure.take();
                let source = inner.unwrap_or_else(|| imago_open_error(&path, is_qcow2, err));
                Err(self.fail(StorageError::Backing {
                    image: self.current(),
                    backing: path,
                    source: Box::new(source),
                }))
            }
        }
    }

    fn open_storage(&mut self, opts: StorageOpenOptions) -> io::Result<ImagoFile> {
        let Some(path) = opts.get_filename().map(Path::to_path_buf) else {
            return Err(io::Error::other("Storage without a file name"));
        };
        let backing_err = |source: StorageError| StorageError::Backing {
            image: self.current(),
            backing: path.clone(),
            source: Box::new(source),
        };
        let canonical = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if self.chain.len() > MAX_BACKING_DEPTH || self.chain.contains(&canonical) {
            let err = backing_err(StorageError::BackingChain {
                backing: path.clone(),
            });
            return Err(self.fail(err));
        }
        let checked = fileio::open_file(&path, true, Lock::Shared).and_then(|file| {
            if probe::probe_file(&path, &file)? == Format::Qcow2 {
                probe::check_qcow2(&path, &file, false)?;
            }
            if self.direct {
                fileio::set_direct(&path, &file)?;
            }
            Ok(file)
        });
        let file = match checked {
            Ok(file) => file,
            Err(e) => return Err(self.fail(backing_err(e))),
        };
        self.log.borrow_mut().opened.push(path);
        ImagoFile::from_open_file(file, opts.write(false).direct(self.direct))
    }
}

/// Maps an error imago returned while opening `path`.
fn imago_open_error(path: &Path, is_qcow2: bool, source: io::Error) -> StorageError {
    let path = path.to_path_buf();
    match (is_qcow2, source.kind()) {
        (true, io::ErrorKind::Unsupported) => StorageError::Unsupported {
            path,
            feature: source.to_string(),
        },
        (true, _) => StorageError::InvalidQcow2 { path, source },
        (false, _) => StorageError::Open { path, source },
    }
}

impl Qcow2Disk {
    /// Opens a qcow2 image from its open, locked file, and its backing chain. With
    /// [`CacheMode::None`] every file of the chain is switched to `O_DIRECT` after its header
    /// was checked; imago then bounces what is not aligned (and serializes the
    /// read-modify-write cycles of partial blocks).
    pub(crate) fn open(
        path: &Path,
        file: fs::File,
        read_only: bool,
        cache: CacheMode,
    ) -> Result<Self, StorageError> {
        let info = probe::check_qcow2(path, &file, !read_only)?;
        let direct = match cache {
            CacheMode::None => Some(fileio::set_direct(path, &file)?),
            CacheMode::Writeback => None,
        };
        let own = file.try_clone().map_err(|source| StorageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let opts = StorageOpenOptions::new()
            .filename(&path)
            .write(!read_only)
            .direct(direct.is_some());
        let storage =
            ImagoFile::from_open_file(file, opts).map_err(|source| StorageError::Open {
                path: path.clone(),
                source,
            })?;
        let log = Rc::new(RefCell::new(GateLog::default()));
        let gate = Gate {
            chain: vec![fs::canonicalize(&path).unwrap_or_else(|_| path.clone())],
            log: Rc::clone(&log),
            direct: direct.is_some(),
        };
        let opened = Qcow2::<ImagoFile>::builder(storage)
            .write(!read_only)
            .open(gate);
        let mut log = log.take();
        let image = match opened {
            Ok(image) => image,
            Err(err) => {
                return Err(log
                    .failure
                    .take()
                    .unwrap_or_else(|| imago_open_error(&path, true, err)))
            }
        };
        let access = FormatAccess::new(image);
        Ok(Qcow2Disk {
            size: access.size(),
            access: RwLock::new(access),
            path,
            read_only,
            info,
            backing: log.opened,
            direct,
            file: own,
            leases: Arc::default(),
        })
    }

    /// Shared access for reads and writes.
    fn shared(&self) -> RwLockReadGuard<'_, FormatAccess<ImagoFile>> {
        self.access.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses writes to a read-only disk and requests outside it.
    fn check_write(&self, offset: u64, len: u64) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        check_range(offset, len, self.size)
    }

    /// Writes zero buffers over the range: for v2 images, which cannot mark clusters as zero.
    fn write_zero_buffers(&self, offset: u64, len: u64) -> io::Result<()> {
        let chunk = len.min(1 << 20) as usize;
        let zeroes = vec![0u8; chunk];
        let access = self.shared();
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk as u64) as usize;
            access.write(&zeroes[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

impl DiskImage for Qcow2Disk {
    fn format(&self) -> Format {
        Format::Qcow2
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn discard_alignment(&self) -> u64 {
        self.info.cluster_size
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "qcow2 v{} {} ({} bytes, {}",
            self.info.version,
            self.path.display(),
            self.size,
            if self.read_only {
                "read-only"
            } else {
                "read-write"
            }
        );
        for b in &self.backing {
            s.push_str(", backing ");
            s.push_str(&b.display().to_string());
        }
        if self.direct.is_some() {
            s.push_str(", cache=none");
        }
        s.push(')');
        s
    }

    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }

    fn map_direct(&self, offset: u64, len: u64, write: bool) -> Option<DirectMap> {
        if len == 0 || check_range(offset, len, self.size).is_err() || (write && self.read_only) {
            return None;
        }
        // Leased before looking, so that what is found stays so.
        let lease = self.leases.lease()?;
        let access = self.shared();
        let (mapping, mapped) = access.get_mapping(offset, len).ok()?;
        match mapping {
            Mapping::Raw {
                storage,
                offset: at,
                writable,
                ..
            } if mapped >= len
                && (writable || !write)
                && storage.get_filename().as_deref() == Some(self.path.as_path()) =>
            {
                Some(DirectMap {
                    offset: at,
                    lease: Some(lease),
                })
            }
            _ => None,
        }
    }

    fn direct_io(&self) -> Option<DirectIo> {
        self.direct
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError> {
        let len = buf.len() as u64;
        check_range(offset, len, self.size)?;
        self.shared()
            .read(buf, offset)
            .map_err(|source| StorageError::Read {
                offset,
                len,
                source,
            })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), StorageError> {
        let len = buf.len() as u64;
        self.check_write(offset, len)?;
        self.shared()
            .write(buf, offset)
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
        let (vector, guard) = IoVectorMut::from_volatile_slice(bufs.iter());
        let res = self.shared().readv(vector, offset);
        drop(guard);
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
        let (vector, guard) = IoVector::from_volatile_slice(bufs.iter());
        let res = self.shared().writev(vector, offset);
        drop(guard);
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
        // Metadata caches to the file, then fsync the file (data and metadata).
        let access = self.shared();
        access
            .flush()
            .and_then(|()| access.sync())
            .map_err(|source| StorageError::Flush { source })
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), StorageError> {
        self.check_write(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        // Before the metadata lock (see crate::lease).
        let _barrier = self.leases.barrier();
        let mut access = self.access.write().unwrap_or_else(PoisonError::into_inner);
        match access.discard_to_any(offset, len) {
            // v2 images cannot discard; a discard is a hint.
            Err(e) if e.kind() == io::ErrorKind::Unsupported => Ok(()),
            res => res.map_err(|source| StorageError::Discard {
                offset,
                len,
                source,
            }),
        }
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<(), StorageError> {
        self.check_write(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        // Clusters may change from data to zero: no direct I/O meanwhile (see crate::lease).
        let _barrier = self.leases.barrier();
        let res = if may_unmap {
            let mut access = self.access.write().unwrap_or_else(PoisonError::into_inner);
            access.discard_to_zero(offset, len)
        } else {
            self.shared().write_zeroes(offset, len)
        };
        match res {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                self.write_zero_buffers(offset, len)
            }
            res => res,
        }
        .map_err(|source| StorageError::WriteZeroes {
            offset,
            len,
            source,
        })
    }
}

/// Creates a new, empty qcow2 (v3, 64 KiB clusters) image of `size` bytes at `path`.
///
/// `size` must be a positive multiple of 512. The file must not exist yet. With `backing`,
/// the new image is an overlay: its header names `backing` exactly as given (a relative path is
/// relative to the new image's directory, as with `qemu-img create -b`) with the backing
/// file's probed format, and unwritten clusters read from it. The backing file is opened
/// (read-only) first, so a missing or broken one is an error here rather than at the first open.
pub fn create_qcow2(path: &Path, size: u64, backing: Option<&Path>) -> Result<(), StorageError> {
    if size == 0 || !size.is_multiple_of(512) {
        return Err(StorageError::CreateSize { size });
    }
    let create_err = |source| StorageError::Create {
        path: path.to_path_buf(),
        source,
    };
    let backing = match backing {
        None => None,
        Some(b) => {
            let resolved = match path.parent() {
                Some(dir) if b.is_relative() => dir.join(b),
                _ => b.to_path_buf(),
            };
            let format = crate::open(&resolved, Format::Auto, true)
                .map_err(|e| StorageError::Backing {
                    image: path.to_path_buf(),
                    backing: resolved.clone(),
                    source: Box::new(e),
                })?
                .format();
            let name = b.to_str().ok_or_else(|| {
                create_err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "backing file name is not UTF-8",
                ))
            })?;
            Some((name.to_string(), format.to_string()))
        }
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(create_err)?;
    let result = (|| {
        let sync_handle = file.try_clone()?;
        let opts = StorageOpenOptions::new().filename(path).write(true);
        let storage = ImagoFile::from_open_file(file, opts)?;
        let mut builder = Qcow2::<ImagoFile>::create_builder(storage).size(size);
        if let Some((name, format)) = backing {
            builder = builder.backing(name, format);
        }
        builder.create()?;
        sync_handle.sync_all()
    })();
    result.map_err(|source| {
        // The file is ours (create_new): do not leave a half-written image behind.
        let _ = fs::remove_file(path);
        create_err(source)
    })
}

/// Creates a new raw image of `size` bytes at `path` (sparse: it takes no space until written).
///
/// `size` must be a positive multiple of 512; the file must not exist yet.
pub fn create_raw(path: &Path, size: u64) -> Result<(), StorageError> {
    if size == 0 || !size.is_multiple_of(512) {
        return Err(StorageError::CreateSize { size });
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| StorageError::Create {
            path: path.to_path_buf(),
            source,
        })?;
    file.set_len(size)
        .and_then(|()| file.sync_all())
        .map_err(|source| {
            let _ = fs::remove_file(path);
            StorageError::Create {
                path: path.to_path_buf(),
                source,
            }
        })
}
