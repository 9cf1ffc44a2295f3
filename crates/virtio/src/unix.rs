//! Unix-socket plumbing for the devices whose host side is a socket
//! (console ports, vsock): a listener that owns its path, and a connect that
//! never blocks the device worker.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The longest path a `sockaddr_un` holds (108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Errors of [`SocketListener::bind`].
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("{0} is in use by another process")]
    InUse(PathBuf),
    #[error("Socket path {0} is longer than {MAX_SOCKET_PATH} bytes")]
    TooLong(PathBuf),
    #[error("Cannot listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A non-blocking Unix listener bound to a path, which it removes when
/// dropped (if the path is still its socket).
#[derive(Debug)]
pub struct SocketListener {
    listener: UnixListener,
    path: PathBuf,
    /// (st_dev, st_ino) of the socket file we created.
    id: Option<(u64, u64)>,
}

impl SocketListener {
    /// Listens on `path`. A socket file left behind by a process that died
    /// is replaced; a socket someone still listens on, or any other file,
    /// is an error.
    pub fn bind(path: &Path) -> Result<Self, SocketError> {
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(SocketError::TooLong(path.to_path_buf()));
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(SocketError::NotASocket(path.to_path_buf()));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.to_path_buf()));
            }
            let _ = std::fs::remove_file(path);
        }
        let bind_err = |source| SocketError::Bind {
            path: path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let id = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            id,
        })
    }

    /// The path clients connect to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one waiting client (non-blocking, close-on-exec), or `None`
    /// when nobody is waiting.
    pub fn accept(&self) -> io::Result<Option<UnixStream>> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(true)?;
                    return Ok(Some(stream));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The client gave up before we accepted it: try the next.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for SocketListener {
    fn as_raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

impl Drop for SocketListener {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Connects to the Unix socket at `path` without ever blocking: a listener
/// whose backlog is full gives `WouldBlock` instead of waiting. The stream
/// is non-blocking and close-on-exec.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unusable socket path",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: socket() takes no pointers; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a socket we just created and own exclusively.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    loop {
        // SAFETY: addr is a valid sockaddr_un that outlives the call and
        // `len` does not exceed its size.
        let r = unsafe {
            libc::connect(
                owned.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len as libc::socklen_t,
            )
        };
        if r == 0 {
            return Ok(UnixStream::from(owned));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keel-unix-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn bind_accept_connect_and_cleanup() {
        let dir = temp_dir("basic");
        let path = dir.join("s.sock");
        let l = SocketListener::bind(&path).unwrap();
        assert!(l.accept().unwrap().is_none());
        let mut c = connect_nonblocking(&path).unwrap();
        let mut s = l.accept().unwrap().unwrap();
        c.set_nonblocking(false).unwrap();
        s.write_all(b"hi").unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi");
        // A second listener on a live socket is refused.
        assert!(matches!(
            SocketListener::bind(&path),
            Err(SocketError::InUse(_))
        ));
        drop(l);
        assert!(!path.exists(), "socket file removed on drop");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_socket_is_replaced_other_files_are_not() {
        let dir = temp_dir("stale");
        let path = dir.join("s.sock");
        let old = UnixListener::bind(&path).unwrap();
        drop(old); // the file stays: a "dead VMM"'s socket
        assert!(path.exists());
        let l = SocketListener::bind(&path).unwrap();
        drop(l);
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            SocketListener::bind(&file),
            Err(SocketError::NotASocket(_))
        ));
        assert!(file.exists());
        let long = dir.join("x".repeat(120));
        assert!(matches!(
            SocketListener::bind(&long),
            Err(SocketError::TooLong(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn connect_fails_fast() {
        let dir = temp_dir("connect");
        assert!(connect_nonblocking(&dir.join("missing")).is_err());
        assert!(connect_nonblocking(Path::new("")).is_err());
        assert!(connect_nonblocking(&dir.join("y".repeat(200))).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
