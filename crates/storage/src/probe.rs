//! Format probing and the qcow2 feature check done before imago opens an image.
//!
//! This is not a qcow2 parser: it reads the fixed header fields that decide whether an image
//! can be used at all (magic, version, encryption, incompatible feature bits) so that the
//! error names the feature. imago validates everything else (tables, refcounts, extensions).
//! It exists because imago does not look at `crypt_method` (an encrypted image would open and
//! hand the guest ciphertext) and reports feature bits only as numbers.

use std::fs;
use std::io;
use std::path::Path;

use crate::fileio::{self, Lock};
use crate::{Format, StorageError};

/// The first four bytes of every qcow2 image.
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Bytes of the fixed qcow2 v2 header.
const V2_HEADER_LEN: usize = 72;
/// Bytes of the fixed qcow2 v3 header (up to and including `header_length`).
const V3_HEADER_LEN: usize = 104;

/// What the feature check learnt about a qcow2 image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Qcow2Info {
    /// 2 or 3.
    pub version: u32,
    /// Bytes per cluster (the unit of allocation and of discard).
    pub cluster_size: u64,
    /// Offset and length in bytes of the L1 table.
    l1_table: (u64, u64),
    /// Offset and length in bytes of the refcount table.
    refcount_table: (u64, u64),
    /// Bits per refcount (1 to 64).
    refcount_bits: u32,
}

/// Tells a qcow2 image from a raw one by its magic, without locking or changing the file.
///
/// Only the magic decides: a file starting with `QFI\xfb` is qcow2 even if its header is broken
/// (opening it then fails), so a broken qcow2 is never mistaken for a raw disk. Anything else
/// (including a file shorter than four bytes) is raw.
///
/// Probing is a trust decision: a guest that can write a raw image can write a qcow2 header
/// into it, naming any host file as its backing file. Probe an image once, before any guest
/// wrote to it, and keep the answer (as QEMU's documentation advises).
pub fn probe(path: &Path) -> Result<Format, StorageError> {
    let file = fileio::open_file(path, true, Lock::None)?;
    probe_file(path, &file)
}

/// [`probe`] on an open file.
pub(crate) fn probe_file(path: &Path, file: &fs::File) -> Result<Format, StorageError> {
    let mut magic = [0u8; 4];
    fileio::read_full_at(file, &mut magic, 0).map_err(|source| StorageError::Header {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(if magic == QCOW2_MAGIC {
        Format::Qcow2
    } else {
        Format::Raw
    })
}

/// Reads the fixed header of a qcow2 image and refuses what cannot be served; for an image
/// that will be written, also checks that the refcounts protect the header and the tables.
pub(crate) fn check_qcow2(
    path: &Path,
    file: &fs::File,
    writable: bool,
) -> Result<Qcow2Info, StorageError> {
    let size = fileio::file_size(file).map_err(|source| StorageError::Header {
        path: path.to_path_buf(),
        source,
    })?;
    let mut header = [0u8; V3_HEADER_LEN];
    let have = usize::try_from(size)
        .unwrap_or(V3_HEADER_LEN)
        .min(V3_HEADER_LEN);
    fileio::read_full_at(file, &mut header[..have], 0).map_err(|source| StorageError::Header {
        path: path.to_path_buf(),
        source,
    })?;
    let info = check_header(path, &header[..have], size)?;
    if writable {
        check_refcounts(path, file, &info, size)?;
    }
    Ok(info)
}

/// Refuses a writable image whose refcounts would let imago hand out the header or a table
/// cluster as free space: imago, unlike QEMU, has no metadata overlap check, so such an image
/// gets its header overwritten by the next guest write (a guest-controlled header then names
/// any host file as its backing file). Checks that every refcount block lies inside the file
/// and that the header, refcount table and L1 table clusters have nonzero refcounts. It does
/// not find every corruption: that is `qemu-img check`'s job.
fn check_refcounts(
    path: &Path,
    file: &fs::File,
    info: &Qcow2Info,
    file_len: u64,
) -> Result<(), StorageError> {
    let invalid = |msg: String| StorageError::InvalidQcow2 {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, msg),
    };
    let read_err = |source| StorageError::Header {
        path: path.to_path_buf(),
        source,
    };
    let cs = info.cluster_size;
    let (rt_offset, rt_len) = info.refcount_table;
    // imago refuses tables over 4 Mi entries (32 MiB); so do we, before allocating.
    if rt_len > 32 << 20 {
        return Err(invalid(format!(
            "refcount table of {rt_len} bytes is too big"
        )));
    }
    let mut table = vec![0u8; rt_len as usize];
    fileio::read_full_at(file, &mut table, rt_offset).map_err(read_err)?;
    let blocks: Vec<u64> = table.chunks_exact(8).map(|e| be64(e, 0) & !0x1ff).collect();
    for (i, &block) in blocks.iter().enumerate() {
        if block != 0 && (block % cs != 0 || block.checked_add(cs).is_none_or(|e| e > file_len)) {
            return Err(invalid(format!(
                "refcount block {i} at {block:#x} lies outside the {file_len}-byte file"
            )));
        }
    }
    let bits = u64::from(info.refcount_bits);
    let per_block = cs * 8 / bits;
    let refcount = |cluster: u64| -> Result<u64, StorageError> {
        let block = usize::try_from(cluster / per_block)
            .ok()
            .and_then(|i| blocks.get(i).copied())
            .unwrap_or(0);
        if block == 0 {
            return Ok(0);
        }
        let bit = (cluster % per_block) * bits;
        let mut raw = [0u8; 8];
        let n = (bits / 8).max(1) as usize;
        fileio::read_full_at(file, &mut raw[..n], block + bit / 8).map_err(read_err)?;
        Ok(if bits < 8 {
            u64::from(raw[0] >> (bit % 8)) & ((1 << bits) - 1)
        } else {
            raw[..n]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        })
    };
    let (l1_offset, l1_len) = info.l1_table;
    let tables = [
        ("header", 0, 1),
        ("refcount table", rt_offset, rt_len),
        ("L1 table", l1_offset, l1_len),
    ];
    for (name, offset, len) in tables {
        for cluster in (offset / cs)..offset.saturating_add(len).div_ceil(cs) {
            if refcount(cluster)? == 0 {
                return Err(invalid(format!(
                    "the {name} cluster at {:#x} is marked free (run `qemu-img check -r all`)",
                    cluster * cs
                )));
            }
        }
    }
    Ok(())
}

/// Big-endian u32 at `at` (the caller checked the length).
fn be32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_be_bytes(b)
}

/// Big-endian u64 at `at` (the caller checked the length).
fn be64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_be_bytes(b)
}

/// The checks of [`check_qcow2`] on the first (up to 104) bytes of a file of `file_len` bytes.
pub(crate) fn check_header(
    path: &Path,
    header: &[u8],
    file_len: u64,
) -> Result<Qcow2Info, StorageError> {
    let invalid = |msg: String| StorageError::InvalidQcow2 {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, msg),
    };
    let unsupported = |feature: String| StorageError::Unsupported {
        path: path.to_path_buf(),
        feature,
    };
    if header.len() < 4 || header[..4] != QCOW2_MAGIC {
        return Err(StorageError::NotQcow2 {
            path: path.to_path_buf(),
        });
    }
    if header.len() < 8 {
        return Err(invalid(format!(
            "header truncated to {} bytes",
            header.len()
        )));
    }
    let version = be32(header, 4);
    let need = match version {
        2 => V2_HEADER_LEN,
        3 => V3_HEADER_LEN,
        v => return Err(unsupported(format!("format version {v}"))),
    };
    if header.len() < need {
        return Err(invalid(format!(
            "header truncated to {} bytes (v{version} needs {need})",
            header.len()
        )));
    }
    let cluster_bits = be32(header, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(invalid(format!(
            "cluster_bits {cluster_bits} is not in 9..=21"
        )));
    }
    if be64(header, 24) > i64::MAX as u64 {
        return Err(invalid(format!(
            "virtual size {} is too large",
            be64(header, 24)
        )));
    }
    // imago reads tables past the end of the file as zeroes; a refcount table there makes
    // every cluster look free, and the next write overwrites the header. So the tables must
    // lie inside the file (they always do in an intact image).
    let cluster_size = 1u64 << cluster_bits;
    let tables = [
        (
            "L1 table",
            be64(header, 40),
            u64::from(be32(header, 36)) * 8,
        ),
        (
            "refcount table",
            be64(header, 48),
            u64::from(be32(header, 56)) * cluster_size,
        ),
    ];
    for (name, offset, len) in tables {
        if len == 0 && name == "L1 table" {
            continue;
        }
        if len == 0 || offset == 0 || offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(invalid(format!(
                "{name} ({len} bytes at {offset:#x}) lies outside the {file_len}-byte file"
            )));
        }
    }
    match be32(header, 32) {
        0 => {}
        1 => return Err(unsupported("AES encryption".into())),
        2 => return Err(unsupported("LUKS encryption".into())),
        m => return Err(unsupported(format!("encryption method {m}"))),
    }
    if version == 3 {
        let incompatible = be64(header, 72);
        if incompatible & 2 != 0 {
            return Err(invalid(
                "the image is marked corrupt (run `qemu-img check -r all`)".into(),
            ));
        }
        let mut features = Vec::new();
        for bit in (0..64).filter(|b| *b != 1 && incompatible & (1u64 << b) != 0) {
            features.push(match bit {
                0 => "the dirty bit (lazy refcounts, not closed cleanly: run `qemu-img check -r all`)"
                    .to_string(),
                2 => "an external data file".to_string(),
                3 => "a compression type other than zlib".to_string(),
                4 => "extended L2 entries (subclusters)".to_string(),
                b => format!("incompatible feature bit {b}"),
            });
        }
        if !features.is_empty() {
            return Err(unsupported(features.join(", ")));
        }
    }
    let refcount_bits = if version == 3 {
        match be32(header, 96) {
            order @ 0..=6 => 1 << order,
            order => return Err(invalid(format!("refcount_order {order} is not in 0..=6"))),
        }
    } else {
        16
    };
    Ok(Qcow2Info {
        version,
        cluster_size,
        l1_table: (tables[0].1, tables[0].2),
        refcount_table: (tables[1].1, tables[1].2),
        refcount_bits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A valid-looking v3 header prefix.
    fn header() -> Vec<u8> {
        let mut h = vec![0u8; V3_HEADER_LEN];
        h[..4].copy_from_slice(&QCOW2_MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&112u32.to_be_bytes());
        // L1 (1 entry) at 0x30000, refcount table (1 cluster) at 0x10000.
        h[36..40].copy_from_slice(&1u32.to_be_bytes());
        h[40..48].copy_from_slice(&0x30000u64.to_be_bytes());
        h[48..56].copy_from_slice(&0x10000u64.to_be_bytes());
        h[56..60].copy_from_slice(&1u32.to_be_bytes());
        h
    }

    const FILE_LEN: u64 = 0x40000;

    fn check(h: &[u8]) -> Result<Qcow2Info, StorageError> {
        check_header(&PathBuf::from("/x.qcow2"), h, FILE_LEN)
    }

    #[test]
    fn a_plain_v3_header_passes() {
        let info = check(&header()).unwrap();
        assert_eq!(info.version, 3);
        assert_eq!(info.cluster_size, 65536);
    }

    #[test]
    fn a_v2_header_needs_only_72_bytes() {
        let mut h = header();
        h[4..8].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(check(&h[..72]).unwrap().version, 2);
    }

    #[test]
    fn wrong_magic_is_not_qcow2() {
        let mut h = header();
        h[3] = 0xfa;
        assert!(matches!(check(&h), Err(StorageError::NotQcow2 { .. })));
    }

    #[test]
    fn truncated_headers_are_invalid() {
        for len in [4, 7, 50, 80, 103] {
            let err = check(&header()[..len]).unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidQcow2 { .. }),
                "{len}: {err}"
            );
        }
    }

    #[test]
    fn encryption_is_refused_by_name() {
        for (method, name) in [(1u32, "AES"), (2, "LUKS")] {
            let mut h = header();
            h[32..36].copy_from_slice(&method.to_be_bytes());
            match check(&h) {
                Err(StorageError::Unsupported { feature, .. }) => assert!(feature.contains(name)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn incompatible_features_are_named() {
        let cases = [
            (1u64 << 0, "dirty"),
            (1 << 2, "external data file"),
            (1 << 3, "compression type"),
            (1 << 4, "extended L2"),
            (1 << 40, "bit 40"),
        ];
        for (bits, name) in cases {
            let mut h = header();
            h[72..80].copy_from_slice(&bits.to_be_bytes());
            match check(&h) {
                Err(StorageError::Unsupported { feature, .. }) => {
                    assert!(feature.contains(name), "{feature}")
                }
                other => panic!("{other:?}"),
            }
        }
        let mut h = header();
        h[72..80].copy_from_slice(&2u64.to_be_bytes());
        assert!(matches!(check(&h), Err(StorageError::InvalidQcow2 { .. })));
    }

    #[test]
    fn tables_must_lie_inside_the_file() {
        let cases: [(usize, Vec<u8>); 6] = [
            (48, 0xdead_0000_0000u64.to_be_bytes().to_vec()),
            (48, 0u64.to_be_bytes().to_vec()),
            (56, 0u32.to_be_bytes().to_vec()),
            (56, 4u32.to_be_bytes().to_vec()),
            (40, (FILE_LEN - 4).to_be_bytes().to_vec()),
            (40, (u64::MAX - 3).to_be_bytes().to_vec()),
        ];
        for (at, bytes) in cases {
            let mut h = header();
            h[at..at + bytes.len()].copy_from_slice(&bytes);
            let err = check(&h).unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidQcow2 { .. }),
                "{at}: {err}"
            );
        }
        // An empty L1 table (a zero-sized image) may sit anywhere.
        let mut h = header();
        h[36..40].copy_from_slice(&0u32.to_be_bytes());
        h[40..48].copy_from_slice(&0u64.to_be_bytes());
        assert!(check(&h).is_ok());
        let mut h = header();
        h[24..32].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(check(&h), Err(StorageError::InvalidQcow2 { .. })));
    }

    #[test]
    fn odd_versions_and_cluster_sizes_are_refused() {
        let mut h = header();
        h[4..8].copy_from_slice(&4u32.to_be_bytes());
        assert!(matches!(check(&h), Err(StorageError::Unsupported { .. })));
        let mut h = header();
        h[20..24].copy_from_slice(&40u32.to_be_bytes());
        assert!(matches!(check(&h), Err(StorageError::InvalidQcow2 { .. })));
    }
}
