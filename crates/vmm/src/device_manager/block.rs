//! Disks: the `--disk path=FILE[,format=raw|qcow2|auto][,readonly=on][,serial=ID]
//! [,cache=none|writeback]` flag, opening the images once per VMM process,
//! and one virtio-blk device per disk.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use storage::{CacheMode, DiskImage, Format, StorageError};
use virtio::block::{check_serial, Block, BlockError, BlockOptions, BlockStats, MAX_QUEUES};

use crate::config::{parse_switch, split_options, OptionsError};

/// The form of `--disk`, for error messages.
pub const DISK_FORM: &str =
    "path=FILE[,format=raw|qcow2|auto][,readonly=on|off][,serial=ID][,cache=none|writeback]";

/// One `--disk`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    /// `Auto` probes the image's magic once, when keel-vmm starts: a qcow2
    /// image is never served as raw unless `format=raw` says so.
    pub format: Format,
    pub read_only: bool,
    /// What the guest reads in `/sys/block/vdX/serial` (at most 20
    /// printable ASCII bytes, no spaces).
    pub serial: Option<String>,
    /// `writeback` (the default): through the host's page cache; `none`:
    /// `O_DIRECT`, like QEMU's `cache=none`.
    pub cache: CacheMode,
}

/// A `--disk` value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Invalid disk '{given}': {problem}; expected {DISK_FORM}")]
pub struct DiskConfigError {
    pub given: String,
    pub problem: String,
}

impl FromStr for DiskConfig {
    type Err = DiskConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem: String| DiskConfigError {
            given: s.to_string(),
            problem,
        };
        let opt = |e: OptionsError| err(e.to_string());
        let pairs =
            split_options(s, &["path", "format", "readonly", "serial", "cache"]).map_err(opt)?;
        let mut disk = DiskConfig {
            path: PathBuf::new(),
            format: Format::Auto,
            read_only: false,
            serial: None,
            cache: CacheMode::Writeback,
        };
        for (key, value) in pairs {
            match key {
                "path" if value.is_empty() || value.contains('\0') => {
                    return Err(err("invalid path ''".into()))
                }
                "path" => disk.path = PathBuf::from(value),
                "format" => {
                    disk.format = value.parse().map_err(|_| {
                        opt(OptionsError::Value {
                            key: key.into(),
                            value: value.into(),
                        })
                    })?
                }
                "readonly" => disk.read_only = parse_switch(key, value).map_err(opt)?,
                "cache" => {
                    disk.cache = value.parse().map_err(|_| {
                        opt(OptionsError::Value {
                            key: key.into(),
                            value: value.into(),
                        })
                    })?
                }
                _ => {
                    check_serial(value).map_err(|e| err(e.to_string().to_lowercase()))?;
                    disk.serial = Some(value.to_string());
                }
            }
        }
        if disk.path.as_os_str().is_empty() {
            return Err(opt(OptionsError::Missing("path")));
        }
        Ok(disk)
    }
}

/// A disk image that cannot be opened (a bad input: exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("Cannot use disk {index}")]
pub struct DiskError {
    pub index: usize,
    pub path: PathBuf,
    #[source]
    pub source: StorageError,
}

/// Opens every disk, in order. Called once per VMM process: the images
/// stay open (and locked) across guest reboots, and an auto-probed format
/// is decided once, before the guest could write a qcow2 header into a
/// raw disk.
pub fn open_disks(disks: &[DiskConfig]) -> Result<Vec<Arc<dyn DiskImage>>, DiskError> {
    disks
        .iter()
        .enumerate()
        .map(|(index, d)| {
            storage::open_with_cache(&d.path, d.format, d.read_only, d.cache)
                .map(Arc::from)
                .map_err(|source| DiskError {
                    index,
                    path: d.path.clone(),
                    source,
                })
        })
        .collect()
}

/// The name of disk `index` (`disk0`): its device's, its worker threads'
/// and its counters'.
pub fn disk_name(index: usize) -> String {
    format!("disk{index}")
}

/// The virtio-blk device for disk `index`: one request queue per vCPU (at
/// most [`MAX_QUEUES`]), each with its own worker thread. It counts its
/// requests in `stats` (the process's, kept across reboots) when given.
pub fn block_device(
    index: usize,
    config: &DiskConfig,
    disk: Arc<dyn DiskImage>,
    cpus: u8,
    stats: Option<Arc<BlockStats>>,
) -> Result<Block, BlockError> {
    let opts = BlockOptions {
        name: disk_name(index),
        serial: config.serial.clone(),
        num_queues: u16::from(cpus).clamp(1, MAX_QUEUES),
        io_uring: true,
    };
    Block::with_stats(disk, opts, stats.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DiskConfig, DiskConfigError> {
        s.parse()
    }

    #[test]
    fn full_and_minimal_forms() {
        assert_eq!(
            parse("path=/vm/a.qcow2,format=qcow2,readonly=on,serial=KEEL-1"),
            Ok(DiskConfig {
                path: "/vm/a.qcow2".into(),
                format: Format::Qcow2,
                read_only: true,
                serial: Some("KEEL-1".into()),
                cache: CacheMode::Writeback,
            })
        );
        assert_eq!(
            parse("path=disk.img"),
            Ok(DiskConfig {
                path: "disk.img".into(),
                format: Format::Auto,
                read_only: false,
                serial: None,
                cache: CacheMode::Writeback,
            })
        );
        assert_eq!(parse("path=x,format=raw").unwrap().format, Format::Raw);
        assert!(!parse("path=x,readonly=off").unwrap().read_only);
        assert_eq!(parse("path=x,cache=none").unwrap().cache, CacheMode::None);
        assert_eq!(
            parse("path=x,format=qcow2,cache=writeback").unwrap().cache,
            CacheMode::Writeback
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_form() {
        for (given, names) in [
            ("", "path"),
            ("format=raw", "path"),
            ("path=", "path"),
            ("path=x,format=vmdk", "format"),
            ("path=x,readonly=maybe", "readonly"),
            ("path=x,size=1G", "size"),
            ("path=x,path=y", "path"),
            ("path=x,serial=123456789012345678901", "20 bytes"),
            ("path=x,serial=a b", "printable"),
            ("path=x,cache=", "cache"),
            ("path=x,cache=directsync", "cache"),
            ("path=x,cache=None", "cache"),
            ("path=x,cache=none,cache=writeback", "cache"),
            ("/vm/disk.img", "key=value"),
        ] {
            let e = parse(given).unwrap_err().to_string();
            assert!(e.contains(names), "{given}: {e}");
            assert!(e.contains(DISK_FORM), "{given}: {e}");
            assert!(!e.contains('\n'), "{given}: {e}");
        }
    }

    #[test]
    fn cache_none_where_direct_io_is_refused_names_the_disk_and_the_way_out() {
        // procfs files are regular files on a file system without O_DIRECT.
        let good = std::env::temp_dir().join(format!("keel-vmm-nodio-{}.raw", std::process::id()));
        let _ = std::fs::remove_file(&good);
        storage::create_raw(&good, 1 << 20).unwrap();
        let disks = vec![
            parse(&format!("path={},cache=writeback", good.display())).unwrap(),
            parse("path=/proc/self/stat,format=raw,readonly=on,cache=none").unwrap(),
        ];
        let err = open_disks(&disks).err().unwrap();
        let _ = std::fs::remove_file(&good);
        assert_eq!(err.index, 1);
        assert!(
            matches!(err.source, StorageError::DirectIo { .. }),
            "{err:?}"
        );
        let line = format!("{err}: {}", err.source);
        assert_eq!(
            line,
            "Cannot use disk 1: /proc/self/stat is on a file system without direct I/O \
             (O_DIRECT); use cache=writeback"
        );
        let vmm_err = crate::VmmError::Backend(super::super::BackendError::Disk(err));
        assert_eq!(vmm_err.code(), 2);
    }

    #[test]
    fn opening_reports_which_disk_failed() {
        let dir = std::env::temp_dir().join(format!("keel-vmm-disks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.raw");
        let _ = std::fs::remove_file(&good);
        storage::create_raw(&good, 1 << 20).unwrap();
        let disks = vec![
            parse(&format!("path={}", good.display())).unwrap(),
            parse("path=/nonexistent/keel.img").unwrap(),
        ];
        let err = open_disks(&disks).err().unwrap();
        assert_eq!(err.index, 1);
        assert_eq!(err.to_string(), "Cannot use disk 1");
        assert!(
            err.source.to_string().contains("/nonexistent/keel.img"),
            "{err:?}"
        );
        let opened = open_disks(&disks[..1]).unwrap();
        assert_eq!(opened[0].size(), 1 << 20);
        let stats = Arc::new(BlockStats::default());
        let dev = block_device(0, &disks[0], opened[0].clone(), 4, Some(stats.clone())).unwrap();
        assert!(virtio::VirtioDevice::describe(&dev).contains("disk0"));
        assert!(
            Arc::ptr_eq(&dev.stats(), &stats),
            "counts in the process's counters"
        );
        assert_eq!(virtio::VirtioDevice::queue_max_sizes(&dev).len(), 4);
        drop(dev);
        drop(opened);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
