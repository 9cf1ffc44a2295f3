//! A writer for "newc" cpio archives, the format Linux unpacks as an
//! initramfs. Linux also accepts several archives one after the other (each
//! with its own trailer, optionally compressed), which the rig uses to add a
//! per-run archive to a cached base image.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Writes a newc archive. Paths are given without a leading `/`; missing
/// parent directories are added (mode 0755) before their first entry.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    ino: u32,
    dirs: HashSet<String>,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            written: 0,
            ino: 1,
            dirs: HashSet::new(),
        }
    }

    /// A directory (and its parents).
    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        self.parents(path)?;
        self.dirs.insert(path.to_string());
        self.entry(path, S_IFDIR | (mode & 0o7777), 2, (0, 0), &[])
    }

    /// A regular file with `data`.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let path = path.trim_start_matches('/');
        self.parents(path)?;
        self.entry(path, S_IFREG | (mode & 0o7777), 1, (0, 0), data)
    }

    /// A symbolic link `path` → `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let path = path.trim_start_matches('/');
        self.parents(path)?;
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// A character device node.
    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        let path = path.trim_start_matches('/');
        self.parents(path)?;
        self.entry(path, S_IFCHR | (mode & 0o7777), 1, (major, minor), &[])
    }

    /// Adds a host file or directory tree at `dest`, keeping permission bits.
    pub fn host_path(&mut self, host: &Path, dest: &str) -> Result<()> {
        let meta =
            fs::symlink_metadata(host).with_context(|| format!("Reading {}", host.display()))?;
        let mode = meta.permissions().mode();
        if meta.is_dir() {
            self.dir(dest, mode)?;
            let mut entries: Vec<_> = fs::read_dir(host)
                .with_context(|| format!("Listing {}", host.display()))?
                .flatten()
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let name = entry.file_name().to_string_lossy().into_owned();
                self.host_path(
                    &entry.path(),
                    &format!("{}/{name}", dest.trim_end_matches('/')),
                )?;
            }
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(host)?;
            self.symlink(dest, &target.to_string_lossy())?;
        } else {
            let data = fs::read(host).with_context(|| format!("Reading {}", host.display()))?;
            self.file(dest, mode, &data)?;
        }
        Ok(())
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn parents(&mut self, path: &str) -> io::Result<()> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB"))?;
        let ino = if name == "TRAILER!!!" { 0 } else { self.ino };
        self.ino += 1;
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0, 0, 0, 0, 0, rdev.0, rdev.1, name.len() + 1, 0
        );
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (self.written % 4) as usize;
        if rem != 0 {
            self.write(&[0u8; 4][..4 - rem])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses an archive back into (name, mode, data) triples.
    fn parse(mut buf: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            assert_eq!(&buf[..6], b"070701", "bad magic at {offset}");
            let hex = |i: usize| {
                u32::from_str_radix(
                    std::str::from_utf8(&buf[6 + i * 8..14 + i * 8]).unwrap(),
                    16,
                )
                .unwrap()
            };
            let mode = hex(1);
            let size = hex(6) as usize;
            let namesize = hex(11) as usize;
            let name = String::from_utf8(buf[110..110 + namesize - 1].to_vec()).unwrap();
            let data_start = (110 + namesize).div_ceil(4) * 4;
            let data = buf[data_start..data_start + size].to_vec();
            let next = (data_start + size).div_ceil(4) * 4;
            offset += next;
            buf = &buf[next..];
            if name == "TRAILER!!!" {
                assert!(buf.is_empty());
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn round_trips_entries_with_parents_and_padding() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("/a/b/init", 0o755, b"#!/bin/sh\n").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.char_dev("dev/console", 0o600, 5, 1).unwrap();
        w.file("a/odd", 0o644, b"xyz").unwrap();
        let buf = w.finish().unwrap();
        assert_eq!(buf.len() % 4, 0);
        let entries = parse(&buf);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "a",
                "a/b",
                "a/b/init",
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "a/odd"
            ]
        );
        assert_eq!(entries[2].1, S_IFREG | 0o755);
        assert_eq!(entries[2].2, b"#!/bin/sh\n");
        assert_eq!(entries[4].1, S_IFLNK | 0o777);
        assert_eq!(entries[4].2, b"busybox");
        assert_eq!(entries[6].1, S_IFCHR | 0o600);
        assert_eq!(entries[7].2, b"xyz");
    }

    #[test]
    fn host_tree_is_copied() {
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/f"), b"hello").unwrap();
        let mut w = CpioWriter::new(Vec::new());
        w.host_path(&dir, "opt/t").unwrap();
        let entries = parse(&w.finish().unwrap());
        fs::remove_dir_all(&dir).unwrap();
        let f = entries.iter().find(|e| e.0 == "opt/t/sub/f").unwrap();
        assert_eq!(f.2, b"hello");
    }
}
