//! What the host needs from the VMM supervisor, as a trait: the real
//! [`Supervisor`] implements it, and the unit tests use a fake that "runs"
//! VMs without processes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hostd_api::VmConfig;

use crate::supervisor::Supervisor;
pub use crate::supervisor::{ConsoleHandle, ExitReason, OnExit, ProcStats, RunInfo, VmExit};

/// The supervisor's operations; errors are one-line messages.
pub trait VmmBackend: Send + Sync {
    /// `nets`: keel-vmm's `--net` specs, one per NIC of `cfg`.
    fn start(
        &self,
        id: i64,
        folder: &Path,
        cfg: &VmConfig,
        nets: &[String],
    ) -> Result<RunInfo, String>;
    /// How the VM's last VMM ended while keeld was away (see
    /// [`Supervisor::last_exit`]); call before `attach`.
    fn last_exit(&self, id: i64, folder: &Path) -> Option<VmExit>;
    fn attach(&self, id: i64, folder: &Path) -> Result<Option<RunInfo>, String>;
    fn running(&self, id: i64) -> Option<RunInfo>;
    fn request(&self, id: i64, req: vmm_api::Request) -> Result<vmm_api::Reply, String>;
    fn stop(&self, id: i64) -> Result<(), String>;
    fn wait_exit(&self, id: i64, timeout: Duration) -> bool;
    fn console(&self, id: i64) -> Result<ConsoleHandle, String>;
    fn process_stats(&self, id: i64) -> Option<ProcStats>;
}

/// Builds the backend, given the exit callback.
pub type MakeBackend = Box<dyn FnOnce(OnExit) -> Arc<dyn VmmBackend>>;

/// A supervisor error as one line, with vmm.log's last lines when it has
/// them.
fn message(e: crate::supervisor::SupervisorError) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    let tail = e.log_tail();
    if !tail.is_empty() {
        msg.push_str(" (vmm.log: ");
        msg.push_str(&tail[tail.len().saturating_sub(3)..].join(" / "));
        msg.push(')');
    }
    msg
}

impl VmmBackend for Supervisor {
    fn start(
        &self,
        id: i64,
        folder: &Path,
        cfg: &VmConfig,
        nets: &[String],
    ) -> Result<RunInfo, String> {
        Supervisor::start_with_nets(self, id, folder, cfg, Some(nets)).map_err(message)
    }
    fn last_exit(&self, id: i64, folder: &Path) -> Option<VmExit> {
        Supervisor::last_exit(self, id, folder)
    }
    fn attach(&self, id: i64, folder: &Path) -> Result<Option<RunInfo>, String> {
        Supervisor::attach(self, id, folder).map_err(message)
    }
    fn running(&self, id: i64) -> Option<RunInfo> {
        Supervisor::running(self, id)
    }
    fn request(&self, id: i64, req: vmm_api::Request) -> Result<vmm_api::Reply, String> {
        Supervisor::request(self, id, req).map_err(message)
    }
    fn stop(&self, id: i64) -> Result<(), String> {
        Supervisor::stop(self, id).map_err(message)
    }
    fn wait_exit(&self, id: i64, timeout: Duration) -> bool {
        Supervisor::wait_exit(self, id, timeout)
    }
    fn console(&self, id: i64) -> Result<ConsoleHandle, String> {
        Supervisor::console(self, id).map_err(message)
    }
    fn process_stats(&self, id: i64) -> Option<ProcStats> {
        Supervisor::process_stats(self, id)
    }
}
