//! The few libc calls hostd-core needs that std does not offer: file system
//! capacity (statvfs), KVM's API version (an ioctl on /dev/kvm), an
//! exclusive lock on the state directory (flock) and the clock tick rate.
//! The only module of the crate (besides the supervisor's) with unsafe code.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Capacity and free space of the file system holding a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsSpace {
    pub capacity_bytes: u64,
    /// Free for an unprivileged user (`f_bavail`).
    pub free_bytes: u64,
}

/// `statvfs(path)`.
pub fn fs_space(path: &Path) -> io::Result<FsSpace> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` points to
    // writable memory of the size of `struct statvfs`, which the call fills.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialized the whole struct (and it
    // was zeroed before anyway).
    let st = unsafe { st.assume_init() };
    // The field types differ between libc targets.
    #[allow(clippy::unnecessary_cast)]
    let (blocks, avail, frsize) = (
        st.f_blocks as u64,
        st.f_bavail as u64,
        if st.f_frsize > 0 {
            st.f_frsize
        } else {
            st.f_bsize
        } as u64,
    );
    Ok(FsSpace {
        capacity_bytes: blocks.saturating_mul(frsize),
        free_bytes: avail.saturating_mul(frsize),
    })
}

/// `KVM_GET_API_VERSION` = `_IO(KVMIO, 0x00)`.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;

/// Opens `/dev/kvm` (read-write, as a VMM does) and asks its API version
/// (12 on every kernel since 2.6.22).
pub fn kvm_api_version(dev: &Path) -> io::Result<u32> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int;
    // the fd is open for the whole call. On a file that is not /dev/kvm the
    // ioctl fails with ENOTTY and changes nothing.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as u32)
}

/// Takes an exclusive, non-blocking `flock` on `file`; `WouldBlock` when
/// another process holds it. Released when the file is closed.
pub fn try_lock_exclusive(file: &File) -> io::Result<()> {
    // SAFETY: flock only acts on the given fd, which `file` keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clock ticks per second (the unit of /proc/stat and /proc/PID/stat).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the C library and has no
    // preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_of_the_temp_dir_is_sane() {
        let space = fs_space(&std::env::temp_dir()).unwrap();
        assert!(space.capacity_bytes > 0);
        assert!(space.free_bytes <= space.capacity_bytes);
        assert!(fs_space(Path::new("/nonexistent/keel")).is_err());
    }

    #[test]
    fn kvm_ioctl_on_a_non_kvm_file_fails_cleanly() {
        // /dev/null opens read-write but is not /dev/kvm: ENOTTY.
        assert!(kvm_api_version(Path::new("/dev/null")).is_err());
        assert!(kvm_api_version(Path::new("/nonexistent/kvm")).is_err());
        if let Ok(v) = kvm_api_version(Path::new("/dev/kvm")) {
            assert_eq!(v, 12);
        }
    }

    #[test]
    fn flock_is_exclusive_between_open_files() {
        let path = std::env::temp_dir().join(format!("keel-sys-lock-{}", std::process::id()));
        let a = File::create(&path).unwrap();
        let b = File::open(&path).unwrap();
        try_lock_exclusive(&a).unwrap();
        let err = try_lock_exclusive(&b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        try_lock_exclusive(&b).unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn clock_ticks_are_positive() {
        assert!(clock_ticks_per_second() >= 1);
    }
}
