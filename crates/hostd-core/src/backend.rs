//! What the host needs from the VMM supervisor, as a trait: the real
//! [`Supervisor`](crate::supervisor) implements it, and the unit tests use a
//! fake that "runs" VMs without processes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hostd_api::VmConfig;

pub use pending::{ConsoleHandle, ExitReason, ProcStats, RunInfo, VmExit};

/// Called with every VMM exit the supervisor sees.
pub type OnExit = Box<dyn Fn(VmExit) + Send + Sync>;

/// The supervisor's operations; errors are one-line messages.
pub trait VmmBackend: Send + Sync {
    fn start(&self, id: i64, folder: &Path, cfg: &VmConfig) -> Result<RunInfo, String>;
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

/// Stand-ins for the supervisor's types until it lands.
mod pending {
    use std::sync::Arc;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct RunInfo {
        pub pid: u32,
        pub started_ms: u64,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct ProcStats {
        pub cpu_ms: u64,
        pub rss_bytes: u64,
    }

    pub struct ConsoleHandle {
        pub backlog: Vec<u8>,
        pub output: tokio::sync::broadcast::Receiver<Arc<[u8]>>,
        pub input: std::sync::mpsc::Sender<Vec<u8>>,
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum ExitReason {
        PoweredOff,
        Stopped,
        Crashed {
            status: Option<i32>,
            signal: Option<i32>,
            message: String,
        },
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct VmExit {
        pub id: i64,
        pub reason: ExitReason,
        pub log_tail: Vec<String>,
    }
}
