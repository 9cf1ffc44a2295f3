//! What a keel-vmm run gave, and the parsers of the rig's console reports.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::*;

/// What a keel-vmm run gave.
#[derive(Clone, Debug)]
pub struct VmOutput {
    /// keel-vmm's exit status (`None`: killed by a signal or by our timeout).
    pub status: Option<i32>,
    /// The serial console (keel-vmm's stdout), `\r\n` → `\n`.
    pub stdout: String,
    /// keel-vmm's own messages.
    pub stderr: String,
    /// The clock (Unix seconds) where keel-vmm ran — the host, or L1 in the
    /// rig — just before it started and just after it ended.
    pub started: u64,
    pub ended: u64,
    /// The test's timeout ended the run.
    pub timed_out: bool,
    /// What [`LinuxVm::l1_before`] and [`LinuxVm::l1_after`] printed, and
    /// their status (`None` when there was none).
    pub l1_before: Option<ShOutput>,
    pub l1_after: Option<ShOutput>,
}

impl VmOutput {
    /// How many lines of the console contain `marker`.
    pub fn count(&self, marker: &str) -> usize {
        self.stdout.lines().filter(|l| l.contains(marker)).count()
    }

    /// The value printed by the guest as `NAME=value` on a line of its own.
    pub fn value(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        self.stdout
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(&prefix).map(|v| v.trim().to_string()))
    }

    /// Everything, for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "status {:?}{}\n--- console ---\n{}\n--- keel-vmm stderr ---\n{}",
            self.status,
            if self.timed_out { " (timed out)" } else { "" },
            self.stdout,
            self.stderr
        )
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
