//! File helpers: atomic writes, directory fsync, copies with progress,
//! random tokens and the clock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `n` random bytes from the OS, hex-encoded.
pub fn random_hex(n: usize) -> io::Result<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(hex::encode(buf))
}

/// Fsyncs a directory (so a rename or create in it is durable).
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `data` to `path` atomically: a temporary file beside it, fsync,
/// rename over `path`, fsync of the directory. `mode` is the new file's
/// permission bits.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        random_hex(4)?
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Copies `src` to `dst` (which must not exist), calling `progress` with
/// the bytes copied so far after every chunk; fsyncs `dst`. Returns the
/// bytes copied. Chunks of zeros are skipped (left as holes), so sparse
/// raw images stay sparse.
pub fn copy_with_progress(
    src: &Path,
    dst: &Path,
    progress: &mut dyn FnMut(u64),
) -> io::Result<u64> {
    let mut input = File::open(src)?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(dst)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf[..n].iter().all(|&b| b == 0) {
            output.seek(SeekFrom::Current(n as i64))?;
        } else {
            output.write_all(&buf[..n])?;
        }
        done += n as u64;
        progress(done);
    }
    output.set_len(done)?;
    output.sync_all()?;
    Ok(done)
}

/// The bytes a copy of the file will take at most: its length, or less
/// when it is sparse.
pub fn allocated(meta: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.len().min(meta.blocks().saturating_mul(512))
}

/// A unique, empty directory under the system's temp dir for a test,
/// removed on drop.
#[cfg(test)]
pub struct TestDir(pub std::path::PathBuf);

#[cfg(test)]
impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "keel-hc-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TestDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = TestDir::new("fsutil");
        let path = dir.path().join("a.toml");
        atomic_write(&path, b"one", 0o600).unwrap();
        atomic_write(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn copy_reports_progress_and_refuses_existing_targets() {
        let dir = TestDir::new("fsutil");
        let src = dir.path().join("src");
        let mut data = vec![7u8; 3 << 20 | 5];
        data[1 << 20..2 << 20].fill(0);
        data.extend(vec![0u8; 1 << 20]);
        fs::write(&src, &data).unwrap();
        let dst = dir.path().join("dst");
        let mut seen = Vec::new();
        let n = copy_with_progress(&src, &dst, &mut |d| seen.push(d)).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(*seen.last().unwrap(), n);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(fs::read(&dst).unwrap(), fs::read(&src).unwrap());
        assert!(copy_with_progress(&src, &dst, &mut |_| {}).is_err());
    }

    #[test]
    fn random_hex_has_the_length() {
        let a = random_hex(32).unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_hex(32).unwrap());
    }
}
