//! The libc calls the supervisor needs and std does not offer: a new
//! session for keel-vmm (`setsid` between fork and exec), the peer of a
//! Unix socket (`SO_PEERCRED`), and process file descriptors (`pidfd_open`,
//! `poll`, `pidfd_send_signal`), which name one process for good — also one
//! that is not our child — so that waiting for its death and killing it
//! cannot hit a recycled pid.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// Makes the command's process the leader of a new session (and process
/// group), so that it outlives its parent's terminal and process group.
pub fn new_session(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls setsid(2), which is async-signal-safe, allocates nothing and
    // touches no lock.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The pid of the process at the other end of a Unix stream (for a
/// connection to a listening socket: the process that called listen).
pub fn peer_pid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable ucred and `len` holds its size, as
    // SO_PEERCRED expects; the fd stays open for the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if cred.pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the socket's peer has no pid",
        ));
    }
    Ok(cred.pid as u32)
}

/// A process file descriptor: names one process until it is closed, even
/// after the process is gone and its pid reused.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// `pidfd_open(pid)`: fails with `ESRCH` when no such process exists.
    pub fn open(pid: u32) -> io::Result<PidFd> {
        let pid = libc::pid_t::try_from(pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new fd that nothing else owns.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Waits until the process has exited (true), or `timeout` passed
    /// (false); `None` waits as long as it takes. A child becomes readable
    /// as a zombie, before it is reaped.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let ms = match deadline {
                None => -1,
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    left.as_millis().min(i32::MAX as u128) as i32
                }
            };
            let mut pfd = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; the fd stays open for the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc > 0 {
                return Ok(true);
            }
            if deadline.is_some_and(|at| Instant::now() >= at) {
                return Ok(false);
            }
        }
    }

    /// True when the process has exited.
    pub fn exited(&self) -> bool {
        self.wait(Some(Duration::ZERO)).unwrap_or(false)
    }

    /// Sends `signal` to the process (nothing when it has exited: `ESRCH`).
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal takes the fd, a signal number, a null
        // siginfo (the kernel fills one in) and flags 0.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::process::Stdio;

    #[test]
    fn a_pidfd_sees_a_kill_and_the_exit() {
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let fd = PidFd::open(child.id()).unwrap();
        assert!(!fd.wait(Some(Duration::from_millis(20))).unwrap());
        assert!(!fd.exited());
        fd.signal(libc::SIGKILL).unwrap();
        assert!(fd.wait(Some(Duration::from_secs(5))).unwrap());
        // Readable as a zombie: still ours to reap.
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        // Signalling a reaped process fails instead of hitting another.
        assert!(fd.signal(libc::SIGKILL).is_err());
    }

    #[test]
    fn a_new_session_is_its_own_leader() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat /proc/$$/stat"]).stdout(Stdio::piped());
        new_session(&mut cmd);
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // pid (comm) state ppid pgrp session ...
        let (pid, rest) = text.split_once(" (").unwrap();
        let fields: Vec<&str> = rest.rsplit_once(") ").unwrap().1.split(' ').collect();
        assert_eq!((fields[2], fields[3]), (pid, pid), "{text}");
    }

    #[test]
    fn the_peer_of_a_connection_is_the_listening_process() {
        let path = std::env::temp_dir().join(format!("keel-sup-peer-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let stream = UnixStream::connect(&path).unwrap();
        assert_eq!(peer_pid(&stream).unwrap(), std::process::id());
        drop(listener);
        let _ = std::fs::remove_file(&path);
        assert!(PidFd::open(u32::MAX).is_err());
    }
}
