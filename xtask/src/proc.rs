//! Child processes that never outlive us: each is killed (with its whole
//! process group) when its guard drops — on success, error or panic — and,
//! through `PR_SET_PDEATHSIG`, when our process dies (Ctrl-C, SIGKILL).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::util::describe;

/// A running child process, killed on drop.
pub struct ChildGuard {
    child: Child,
    own_group: bool,
    done: bool,
}

impl ChildGuard {
    /// Spawns `cmd`. With `own_group`, the child leads a new process group
    /// (so a terminal's Ctrl-C does not reach it and the group can be killed
    /// as a whole); an interactive child stays in the terminal's group.
    pub fn spawn(cmd: &mut Command, own_group: bool) -> Result<ChildGuard> {
        if own_group {
            cmd.process_group(0);
        }
        // SAFETY: the closure runs between fork and exec and only calls
        // prctl and getppid, which are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl: then init adopted us.
                if libc::getppid() == 1 {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let desc = describe(cmd);
        let child = cmd.spawn().with_context(|| format!("Starting {desc}"))?;
        Ok(ChildGuard {
            child,
            own_group,
            done: false,
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = i32::try_from(self.child.id()).context("Child pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // child's and it has not been reaped (we hold the Child).
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error()).context("Signalling the child");
        }
        Ok(())
    }

    /// Waits up to `timeout`; `None` when the child is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("Waiting for the child")? {
                self.done = true;
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the child to exit.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        let status = self.child.wait().context("Waiting for the child")?;
        self.done = true;
        Ok(status)
    }

    /// Kills the child (and its group) and reaps it.
    pub fn kill(&mut self) {
        if self.done {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let target = if self.own_group { -pid } else { pid };
            // SAFETY: as in `signal`; a negative pid names the child's own
            // process group, which it leads.
            unsafe { libc::kill(target, libc::SIGKILL) };
        }
        let _ = self.child.wait();
        self.done = true;
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_then_drop_kills_the_whole_group() {
        let marker = format!("/tmp/xtask-proc-{}", std::process::id());
        let script = format!("sleep 30 & echo $! > {marker}; wait");
        let mut guard = ChildGuard::spawn(Command::new("sh").args(["-c", &script]), true).unwrap();
        assert!(guard
            .wait_timeout(Duration::from_millis(300))
            .unwrap()
            .is_none());
        let grandchild: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        drop(guard);
        std::thread::sleep(Duration::from_millis(100));
        // Dead, or a zombie waiting for its new parent to reap it.
        let alive = std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
            .map(|stat| !stat.contains(") Z "))
            .unwrap_or(false);
        std::fs::remove_file(&marker).unwrap();
        assert!(!alive, "the grandchild outlived the guard");
    }

    #[test]
    fn exit_status_is_returned() {
        let mut guard = ChildGuard::spawn(Command::new("sh").args(["-c", "exit 7"]), true).unwrap();
        let status = guard
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(7));
    }
}
