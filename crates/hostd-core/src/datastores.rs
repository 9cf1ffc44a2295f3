//! Datastores: directories that hold VM folders, ISOs and images. Their
//! capacity comes from statvfs; files inside are browsed, downloaded,
//! uploaded, created and removed through paths that are relative,
//! normalized, free of `..` and checked to stay inside the datastore after
//! symlinks are resolved.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use hostd_api::{Datastore, FileEntry, FileKind};
use rusqlite::{params, Connection, OptionalExtension};
use thiserror::Error;

use crate::error::{CoreError, ErrorKind, Result};
use crate::fsutil::{fsync_dir, random_hex};
use crate::names;
use crate::store::Store;
use crate::sys;

/// The datastore every host has.
pub const DEFAULT: &str = "datastore1";
const MAX_PATH: usize = 4096;
/// Prefix of upload temporary files (hidden from browsing).
const UPLOAD_PREFIX: &str = ".keel-upload-";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PathError {
    #[error("Path {0:?} is absolute; give it relative to the datastore")]
    Absolute(String),
    #[error("Path {0:?} contains '..'")]
    DotDot(String),
    #[error("Path contains a NUL or control character")]
    Control,
    #[error("Path is longer than {MAX_PATH} bytes")]
    TooLong,
    #[error("Path {0:?} leads outside the datastore")]
    Escapes(String),
    #[error("A path inside the datastore is needed here")]
    Root,
}

impl From<PathError> for CoreError {
    fn from(err: PathError) -> CoreError {
        CoreError::bad_request(err.to_string())
    }
}

/// A datastore of the inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatastoreRow {
    pub name: String,
    pub path: PathBuf,
}

impl DatastoreRow {
    /// The datastore's directory with symlinks resolved.
    pub fn root(&self) -> Result<PathBuf> {
        fs::canonicalize(&self.path).map_err(|e| {
            CoreError::io(
                format!("Datastore {} ({})", self.name, self.path.display()),
                &e,
            )
        })
    }

    pub fn info(&self) -> Datastore {
        let space = sys::fs_space(&self.path).ok();
        Datastore {
            name: self.name.clone(),
            path: self.path.display().to_string(),
            capacity_bytes: space.map_or(0, |s| s.capacity_bytes),
            free_bytes: space.map_or(0, |s| s.free_bytes),
        }
    }

    pub fn free_bytes(&self) -> Result<u64> {
        sys::fs_space(&self.path)
            .map(|s| s.free_bytes)
            .map_err(|e| CoreError::io(format!("Datastore {}", self.name), &e))
    }
}

pub fn list(store: &Store) -> Result<Vec<DatastoreRow>> {
    store.with(|c| {
        let mut stmt = c.prepare("SELECT name, path FROM datastores ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(DatastoreRow {
                name: r.get(0)?,
                path: PathBuf::from(r.get::<_, String>(1)?),
            })
        })?;
        rows.collect()
    })
}

pub fn get(store: &Store, name: &str) -> Result<DatastoreRow> {
    store
        .with(|c| {
            c.query_row(
                "SELECT name, path FROM datastores WHERE name = ?1",
                [name],
                |r| {
                    Ok(DatastoreRow {
                        name: r.get(0)?,
                        path: PathBuf::from(r.get::<_, String>(1)?),
                    })
                },
            )
            .optional()
        })?
        .ok_or_else(|| CoreError::not_found(format!("No datastore {name}")))
}

/// Adds a datastore: an existing directory, by absolute path.
pub fn insert(conn: &Connection, name: &str, path: &Path) -> Result<()> {
    names::validate("Datastore", name)?;
    if !path.is_absolute() {
        return Err(CoreError::bad_request(format!(
            "Datastore path {} is not absolute",
            path.display()
        )));
    }
    let meta = fs::metadata(path).map_err(|e| CoreError::io(path.display(), &e))?;
    if !meta.is_dir() {
        return Err(CoreError::bad_request(format!(
            "{} is not a directory",
            path.display()
        )));
    }
    let path_str = path
        .to_str()
        .ok_or_else(|| CoreError::bad_request("Datastore path is not UTF-8"))?;
    let taken: Option<String> = conn
        .query_row(
            "SELECT name FROM datastores WHERE name = ?1 OR path = ?2",
            params![name, path_str],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(other) = taken {
        return Err(CoreError::conflict(format!(
            "Datastore {other} already has that name or path"
        )));
    }
    conn.execute(
        "INSERT INTO datastores (name, path) VALUES (?1, ?2)",
        params![name, path_str],
    )?;
    Ok(())
}

// ---- paths ---------------------------------------------------------------------

/// Splits a datastore path into its components: relative, `.` and empty
/// components dropped, `..` refused. The empty path is the root.
pub fn parse_path(path: &str) -> std::result::Result<Vec<&str>, PathError> {
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(PathError::Control);
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute(path.to_string()));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(PathError::DotDot(path.to_string())),
            p => parts.push(p),
        }
    }
    Ok(parts)
}

fn join(root: &Path, parts: &[&str]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts);
    p
}

/// An existing path inside `root` (canonical), symlinks resolved and
/// checked.
pub fn resolve_existing(root: &Path, path: &str) -> Result<PathBuf> {
    let parts = parse_path(path)?;
    let full = join(root, &parts);
    let canon = fs::canonicalize(&full).map_err(|e| CoreError::io(path_display(path), &e))?;
    if !canon.starts_with(root) {
        return Err(PathError::Escapes(path.to_string()).into());
    }
    Ok(canon)
}

/// A path to create inside `root`: its parent exists inside the datastore
/// (checked after resolving symlinks), and it does not exist itself.
/// Returns the canonical parent and the new entry's full path.
pub fn resolve_new(root: &Path, path: &str) -> Result<(PathBuf, PathBuf)> {
    let parts = parse_path(path)?;
    let Some((name, dirs)) = parts.split_last() else {
        return Err(PathError::Root.into());
    };
    let parent = join(root, dirs);
    let parent = fs::canonicalize(&parent).map_err(|e| CoreError::io(path_display(path), &e))?;
    if !parent.starts_with(root) {
        return Err(PathError::Escapes(path.to_string()).into());
    }
    if !parent.is_dir() {
        return Err(CoreError::bad_request(format!(
            "The parent of {path:?} is not a directory"
        )));
    }
    let target = parent.join(name);
    if fs::symlink_metadata(&target).is_ok() {
        return Err(CoreError::conflict(format!("{path:?} already exists")));
    }
    Ok((parent, target))
}

fn path_display(path: &str) -> String {
    if path.is_empty() {
        "The datastore's root".into()
    } else {
        format!("Path {path:?}")
    }
}

/// Whether a browse listing hides this entry (the host's temporary files).
fn hidden(name: &str) -> bool {
    name.starts_with(UPLOAD_PREFIX)
        || (name.starts_with('.') && (name.ends_with(".creating") || name.ends_with(".deleting")))
}

fn modified_ms(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// The entries of a directory, sorted by name. Symlinks are shown as what
/// they point to when that is inside the datastore, and left out
/// otherwise.
pub fn browse(root: &Path, path: &str) -> Result<Vec<FileEntry>> {
    let dir = resolve_existing(root, path)?;
    let read = fs::read_dir(&dir).map_err(|e| CoreError::io(path_display(path), &e))?;
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| CoreError::io(path_display(path), &e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if hidden(&name) {
            continue;
        }
        let Ok(lmeta) = entry.metadata() else {
            continue;
        };
        let meta = if lmeta.file_type().is_symlink() {
            match fs::canonicalize(entry.path()) {
                Ok(target) if target.starts_with(root) => match fs::metadata(&target) {
                    Ok(m) => m,
                    Err(_) => continue,
                },
                _ => continue,
            }
        } else {
            lmeta
        };
        let kind = if meta.is_dir() {
            FileKind::Dir
        } else if meta.is_file() {
            FileKind::File
        } else {
            continue;
        };
        out.push(FileEntry {
            name,
            kind,
            size_bytes: if kind == FileKind::File {
                meta.len()
            } else {
                0
            },
            modified_ms: modified_ms(&meta),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Opens a regular file for download: the file and its size.
pub fn open(root: &Path, path: &str) -> Result<(File, u64)> {
    let full = resolve_existing(root, path)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&full)
        .map_err(|e| CoreError::io(path_display(path), &e))?;
    let meta = file
        .metadata()
        .map_err(|e| CoreError::io(path_display(path), &e))?;
    if !meta.is_file() {
        return Err(CoreError::bad_request(format!("{path:?} is not a file")));
    }
    Ok((file, meta.len()))
}

pub fn mkdir(root: &Path, path: &str) -> Result<PathBuf> {
    let (parent, target) = resolve_new(root, path)?;
    fs::create_dir(&target).map_err(|e| CoreError::io(path_display(path), &e))?;
    let _ = fsync_dir(&parent);
    Ok(target)
}

/// Removes a file, a symlink (not what it points to) or a directory with
/// everything in it. `protected` are the canonical folders of registered
/// VMs: removing one of them, anything in one, or a directory holding one
/// is a Conflict.
pub fn remove(root: &Path, path: &str, protected: &[(String, PathBuf)]) -> Result<()> {
    let parts = parse_path(path)?;
    let Some((name, dirs)) = parts.split_last() else {
        return Err(PathError::Root.into());
    };
    let parent =
        fs::canonicalize(join(root, dirs)).map_err(|e| CoreError::io(path_display(path), &e))?;
    if !parent.starts_with(root) {
        return Err(PathError::Escapes(path.to_string()).into());
    }
    let target = parent.join(name);
    let meta = fs::symlink_metadata(&target).map_err(|e| CoreError::io(path_display(path), &e))?;
    for (vm, folder) in protected {
        if target.starts_with(folder) || (meta.is_dir() && folder.starts_with(&target)) {
            return Err(CoreError::conflict(format!(
                "{path:?} holds files of the registered VM {vm}; delete or unregister the VM"
            )));
        }
    }
    let result = if meta.is_dir() {
        fs::remove_dir_all(&target)
    } else {
        fs::remove_file(&target)
    };
    result.map_err(|e| CoreError::io(format!("Removing {path:?}"), &e))?;
    let _ = fsync_dir(&parent);
    Ok(())
}

// ---- uploads ---------------------------------------------------------------------

/// A file being uploaded into a datastore. Written to a hidden temporary
/// file beside the target; [`Upload::commit`] moves it into place, and
/// dropping it uncommitted removes the temporary file.
#[derive(Debug)]
pub struct Upload {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    expected: Option<u64>,
    written: u64,
}

/// Starts an upload to `path` (which must not exist). `size`, when known,
/// must fit in the free space and is enforced.
pub fn upload(root: &Path, path: &str, size: Option<u64>, free: u64) -> Result<Upload> {
    let (parent, dest) = resolve_new(root, path)?;
    if let Some(size) = size {
        if size > free {
            return Err(CoreError::new(
                ErrorKind::InsufficientSpace,
                format!("{size} bytes do not fit in the datastore's {free} free bytes"),
            ));
        }
    }
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let random = random_hex(6).map_err(|e| CoreError::internal(e.to_string()))?;
    let short: String = name.chars().take(64).collect();
    let tmp = parent.join(format!("{UPLOAD_PREFIX}{random}-{short}"));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(|e| CoreError::io(format!("Creating {path:?}"), &e))?;
    Ok(Upload {
        file: Some(file),
        tmp,
        dest,
        expected: size,
        written: 0,
    })
}

impl Upload {
    /// Appends bytes; TooLarge past the announced size, InsufficientSpace
    /// when the disk is full.
    pub fn write_chunk(&mut self, buf: &[u8]) -> Result<()> {
        let new_len = self.written + buf.len() as u64;
        if let Some(expected) = self.expected {
            if new_len > expected {
                return Err(CoreError::new(
                    ErrorKind::TooLarge,
                    format!("The upload is larger than the announced {expected} bytes"),
                ));
            }
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| CoreError::internal("Upload already finished"))?;
        file.write_all(buf)
            .map_err(|e| CoreError::io("Writing the upload", &e))?;
        self.written = new_len;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// The final path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Fsyncs and moves the file into place (never over an existing file).
    pub fn commit(mut self) -> Result<()> {
        if let Some(expected) = self.expected {
            if self.written != expected {
                return Err(CoreError::bad_request(format!(
                    "The upload ended after {} of {expected} bytes",
                    self.written
                )));
            }
        }
        let file = self
            .file
            .take()
            .ok_or_else(|| CoreError::internal("Upload already finished"))?;
        file.sync_all()
            .map_err(|e| CoreError::io("Writing the upload", &e))?;
        drop(file);
        // A hard link refuses an existing target, unlike rename.
        match fs::hard_link(&self.tmp, &self.dest) {
            Ok(()) => {
                let _ = fs::remove_file(&self.tmp);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(CoreError::conflict(format!(
                    "{} was created meanwhile",
                    self.dest.display()
                )));
            }
            Err(_) => {
                if fs::symlink_metadata(&self.dest).is_ok() {
                    return Err(CoreError::conflict(format!(
                        "{} was created meanwhile",
                        self.dest.display()
                    )));
                }
                fs::rename(&self.tmp, &self.dest)
                    .map_err(|e| CoreError::io("Moving the upload into place", &e))?;
            }
        }
        if let Some(parent) = self.dest.parent() {
            let _ = fsync_dir(parent);
        }
        Ok(())
    }
}

impl Write for Upload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_chunk(buf)
            .map(|()| buf.len())
            .map_err(|e| io::Error::other(e.message))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // Committed or not, the temporary name goes.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Removes upload temporaries a killed keeld left in the datastore (down
/// to a few levels). Returns how many.
pub fn remove_stale_uploads(root: &Path) -> usize {
    fn walk(dir: &Path, depth: u32, n: &mut usize) {
        let Ok(read) = fs::read_dir(dir) else { return };
        for entry in read.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_file() && name.starts_with(UPLOAD_PREFIX) {
                if fs::remove_file(entry.path()).is_ok() {
                    *n += 1;
                }
            } else if ft.is_dir() && depth > 0 {
                walk(&entry.path(), depth - 1, n);
            }
        }
    }
    let mut n = 0;
    walk(root, 3, &mut n);
    n
}

/// Where an image to import lives: `[datastore] path` (inside that
/// datastore) or an absolute host path; it must be a regular file.
pub fn resolve_source(store: &Store, spec: &str) -> Result<PathBuf> {
    let spec = spec.trim();
    let path = if let Some(rest) = spec.strip_prefix('[') {
        let (ds, path) = rest.split_once(']').ok_or_else(|| {
            CoreError::bad_request(format!("{spec:?} is not of the form '[datastore] path'"))
        })?;
        let ds = get(store, ds.trim())?;
        resolve_existing(&ds.root()?, path.trim())?
    } else {
        if !spec.starts_with('/') {
            return Err(CoreError::bad_request(format!(
                "{spec:?} is neither an absolute host path nor '[datastore] path'"
            )));
        }
        if spec.contains('\0') {
            return Err(PathError::Control.into());
        }
        fs::canonicalize(spec).map_err(|e| CoreError::io(format!("File {spec}"), &e))?
    };
    let meta = fs::metadata(&path).map_err(|e| CoreError::io(format!("File {spec}"), &e))?;
    if !meta.is_file() {
        return Err(CoreError::bad_request(format!(
            "{spec} is not a regular file"
        )));
    }
    Ok(path)
}

#[cfg(test)]
mod tests;
