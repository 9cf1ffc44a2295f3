//! The one error type of the storage crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong opening, creating or doing I/O on a disk image.
///
/// Messages name the file and never repeat the `#[source]`; print the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// `format=` was not one of raw, qcow2, auto.
    #[error("Unknown disk format {0:?} (expected raw, qcow2 or auto)")]
    UnknownFormat(String),
    /// The file does not exist, cannot be opened, or is not a file or block device.
    #[error("Cannot open disk image {}", path.display())]
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another process (or another disk of this one) holds a conflicting lock.
    #[error("Disk image {} is in use (locked by another process or disk)", path.display())]
    Locked {
        /// The image.
        path: PathBuf,
    },
    /// `cache=none` on a file system that cannot do direct I/O (`O_DIRECT`).
    #[error("{} is on a file system without direct I/O (O_DIRECT); use cache=writeback", path.display())]
    DirectIo {
        /// The image.
        path: PathBuf,
    },
    /// `cache=none` on a file whose direct I/O needs more than 512-byte alignment.
    #[error(
        "Direct I/O on {} needs {align}-byte alignment, more than a 512-byte sector; use cache=writeback",
        path.display()
    )]
    DirectIoAlignment {
        /// The image.
        path: PathBuf,
        /// The alignment it needs.
        align: u64,
    },
    /// `cache=` was not one of none, writeback.
    #[error("Unknown cache mode {0:?} (expected none or writeback)")]
    UnknownCacheMode(String),
    /// The first bytes of the image could not be read.
    #[error("Cannot read the header of {}", path.display())]
    Header {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `format=qcow2` was asked for, but the file has no qcow2 magic.
    #[error("{} is not a qcow2 image (no QFI\\xfb magic)", path.display())]
    NotQcow2 {
        /// The image.
        path: PathBuf,
    },
    /// A raw image must hold whole 512-byte sectors.
    #[error("Raw image {} is {size} bytes, not a multiple of 512", path.display())]
    RawSize {
        /// The image.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// The qcow2 image uses something this crate (or imago) cannot do.
    #[error("qcow2 image {} uses {feature}, which is not supported", path.display())]
    Unsupported {
        /// The image.
        path: PathBuf,
        /// What it uses.
        feature: String,
    },
    /// The qcow2 metadata is broken (or unreadable).
    #[error("Invalid or corrupt qcow2 image {}", path.display())]
    InvalidQcow2 {
        /// The image.
        path: PathBuf,
        /// What imago (or the header check) found.
        #[source]
        source: io::Error,
    },
    /// A backing file named in a qcow2 header cannot be opened.
    #[error("Backing file of {} cannot be used", image.display())]
    Backing {
        /// The image whose header names the backing file.
        image: PathBuf,
        /// The backing file, resolved against the image's directory.
        backing: PathBuf,
        /// Why.
        #[source]
        source: Box<StorageError>,
    },
    /// The backing chain loops or is deeper than [`crate::MAX_BACKING_DEPTH`].
    #[error("Backing chain at {} loops or is too deep", backing.display())]
    BackingChain {
        /// The backing file where the chain was cut.
        backing: PathBuf,
    },
    /// A new image could not be created.
    #[error("Cannot create disk image {}", path.display())]
    Create {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Sizes of new images are whole 512-byte sectors.
    #[error("Invalid disk size {size}: must be a positive multiple of 512")]
    CreateSize {
        /// The size asked for.
        size: u64,
    },
    /// A request reaches past the end of the disk (or its offset + length overflows).
    #[error("Request of {len} bytes at offset {offset} is outside the disk ({size} bytes)")]
    OutOfRange {
        /// First byte.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Disk size in bytes.
        size: u64,
    },
    /// A write, discard or write-zeroes on a read-only disk.
    #[error("Disk is read-only")]
    ReadOnly,
    /// A read failed in the host.
    #[error("Read of {len} bytes at offset {offset} failed")]
    Read {
        /// First byte.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A write failed in the host (ENOSPC, EIO, …).
    #[error("Write of {len} bytes at offset {offset} failed")]
    Write {
        /// First byte.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Making written data durable failed.
    #[error("Flush failed")]
    Flush {
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A discard failed (unsupported discards are not errors: they do nothing).
    #[error("Discard of {len} bytes at offset {offset} failed")]
    Discard {
        /// First byte.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Zeroing a range failed (after every fallback).
    #[error("Write-zeroes of {len} bytes at offset {offset} failed")]
    WriteZeroes {
        /// First byte.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    /// Whether this is a guest request outside the disk ([`StorageError::OutOfRange`]) or one
    /// a read-only disk refuses ([`StorageError::ReadOnly`]): the guest's fault, not the host's.
    pub fn is_guest_error(&self) -> bool {
        matches!(self, Self::OutOfRange { .. } | Self::ReadOnly)
    }
}
