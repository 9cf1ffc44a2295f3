//! The VMM supervisor: one `keel-vmm` process per powered-on VM, started
//! detached (its own session, so it outlives keeld), watched, and
//! re-attached after keeld restarts.
//!
//! ```text
//!  start ──▶ Starting ── control socket answers `status` ──▶ Running ── process gone ──▶ on_exit ──▶ (forgotten)
//!              │ exits, or no answer in START_TIMEOUT          ▲   (pidfd readable: seen at once,
//!              ▼                                               │    also for kill -9 and non-children)
//!            error with vmm.log's last lines, no process left  │
//!  attach (keeld restarted): api.sock answers ── pid from SO_PEERCRED ──┘
//! ```
//!
//! Per VM, `STATE/run/<id>/` holds keel-vmm's control socket (`api.sock`),
//! console socket (`console.sock`) and exit report (`exit.json`); the VM's
//! folder holds `vmm.log` (keel-vmm's stdout and stderr) and `console.log`
//! (the serial console, which keel-vmm writes itself, rotated at 2 MiB).
//!
//! Each VMM has a watcher thread (`vmm-watch-<id>`) blocked on a pidfd of
//! the process: it wakes when the process exits, reaps it if it is our
//! child, classifies the exit from `exit.json`, calls `on_exit` once, and
//! then forgets the VMM. `running(id)` stays `Some` until `on_exit` has
//! returned, so a new `start` cannot overlap the old run's report.

mod argv;
mod console;
mod procfs;
mod sys;
mod watch;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostd_api::VmConfig;
use vmm_api::{ApiError, Client, ClientError, Reply, Request};

use argv::{RunPaths, CONSOLE_LOG, VMM_LOG};
use console::ConsoleHub;
use sys::PidFd;

pub use console::{ConsoleHandle, BACKLOG as CONSOLE_BACKLOG};

/// How long `start` waits for keel-vmm's control socket to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `stop` waits after the `stop` request before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long a SIGKILLed VMM may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long `stop` waits for `on_exit` once the process is gone.
const REPORT_WAIT: Duration = Duration::from_secs(2);
/// How long a control request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// vmm.log is moved to vmm.log.1 at a start when it is larger than this.
const VMM_LOG_LIMIT: u64 = 1 << 20;
/// Lines of vmm.log in errors and exit reports.
pub const LOG_TAIL_LINES: usize = 20;

/// A running VMM process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunInfo {
    pub pid: u32,
    /// When the process started (Unix ms, from /proc: the same after a
    /// keeld restart).
    pub started_ms: u64,
}

/// CPU time (user + system) and resident memory of a VMM process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcStats {
    pub cpu_ms: u64,
    pub rss_bytes: u64,
}

/// How a VMM ended, given to `on_exit` once per VMM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmExit {
    pub id: i64,
    pub reason: ExitReason,
    /// The last lines of vmm.log (keel-vmm's messages) of this run.
    pub log_tail: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off (or reset without rebooting): exit status 0.
    PoweredOff,
    /// The host stopped it: keeld's `stop` (or a `stop` request), or
    /// keel-vmm stopped a guest that ignored the power button in time.
    Stopped,
    /// Anything else: a triple fault, a KVM or VMM failure, a kill, a
    /// panic. `status` is the exit status and `signal` the killing signal
    /// when known (only for keel-vmms this process started).
    Crashed {
        status: Option<i32>,
        signal: Option<i32>,
        message: String,
    },
}

/// Called on the VMM's watcher thread. It must not wait for a lock that a
/// caller of `stop`/`wait_exit` holds for long, and must not `start` the
/// same VM (that VM is still `running` until it returns).
pub type OnExit = Box<dyn Fn(VmExit) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("VM {0} already has a running VMM")]
    AlreadyRunning(i64),
    #[error("VM {0} has no running VMM")]
    NotRunning(i64),
    #[error("Invalid VM configuration: {0}")]
    BadConfig(String),
    #[error("Cannot prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Cannot start {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    /// keel-vmm exited, or did not answer in time; no process is left.
    #[error("keel-vmm failed to start: {message}")]
    StartFailed {
        message: String,
        log_tail: Vec<String>,
    },
    #[error("The VMM refused: {}", .0.message)]
    Refused(ApiError),
    #[error("Cannot reach the VMM's control socket")]
    Control(#[source] ClientError),
    #[error("The VMM of VM {0} did not exit after SIGKILL")]
    StopFailed(i64),
    #[error("Cannot connect to the VM's console")]
    Console(#[source] io::Error),
    #[error("Cannot start a supervisor thread")]
    Thread(#[source] io::Error),
}

impl SupervisorError {
    /// vmm.log's last lines, for an error of `start`.
    pub fn log_tail(&self) -> &[String] {
        match self {
            SupervisorError::StartFailed { log_tail, .. } => log_tail,
            _ => &[],
        }
    }
}

/// Starts, watches and re-attaches keel-vmm processes. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

struct Shared {
    keel_vmm: PathBuf,
    run_dir: PathBuf,
    on_exit: OnExit,
    slots: Mutex<HashMap<i64, Slot>>,
}

enum Slot {
    /// `start` or `attach` in progress.
    Starting,
    Running(Arc<Vmm>),
}

/// One supervised VMM.
struct Vmm {
    id: i64,
    info: RunInfo,
    folder: PathBuf,
    paths: RunPaths,
    pidfd: PidFd,
    /// Where this run's lines start in vmm.log (unknown when re-attached).
    log_from: Option<u64>,
    life: Mutex<Life>,
    changed: Condvar,
    console: Mutex<Option<Arc<ConsoleHub>>>,
}

#[derive(Default)]
struct Life {
    stop_requested: bool,
    /// The process has exited (and was reaped, if ours).
    gone: bool,
    /// `on_exit` has returned.
    reported: bool,
}

impl Vmm {
    fn wait_for(&self, done: impl Fn(&Life) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut life = lock(&self.life);
        while !done(&life) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            life = self
                .changed
                .wait_timeout(life, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }

    fn update(&self, f: impl FnOnce(&mut Life)) {
        f(&mut lock(&self.life));
        self.changed.notify_all();
    }

    fn gone(&self) -> bool {
        lock(&self.life).gone
    }

    fn vmm_log(&self) -> PathBuf {
        self.folder.join(VMM_LOG)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Supervisor {
    /// `keel_vmm`: the binary; `run_dir`: `STATE/run` (per-VM directories
    /// are made in it); `on_exit`: told once about every VMM's end.
    pub fn new(keel_vmm: PathBuf, run_dir: PathBuf, on_exit: OnExit) -> Self {
        Supervisor {
            shared: Arc::new(Shared {
                keel_vmm,
                run_dir,
                on_exit,
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn get(&self, id: i64) -> Option<Arc<Vmm>> {
        match lock(&self.shared.slots).get(&id) {
            Some(Slot::Running(v)) => Some(v.clone()),
            _ => None,
        }
    }

    fn reserve(&self, id: i64) -> Result<(), SupervisorError> {
        let mut slots = lock(&self.shared.slots);
        if slots.contains_key(&id) {
            return Err(SupervisorError::AlreadyRunning(id));
        }
        slots.insert(id, Slot::Starting);
        Ok(())
    }

    fn release(&self, id: i64) {
        let mut slots = lock(&self.shared.slots);
        if matches!(slots.get(&id), Some(Slot::Starting)) {
            slots.remove(&id);
        }
    }

    /// Starts keel-vmm for the VM whose folder is `folder` (its files are
    /// named in `cfg` relative to it), detached in its own session; waits
    /// until its control socket answers `status` (at most
    /// [`START_TIMEOUT`]), then watches it. On failure no process is left
    /// and the error carries vmm.log's last lines.
    pub fn start(
        &self,
        id: i64,
        folder: &Path,
        cfg: &VmConfig,
    ) -> Result<RunInfo, SupervisorError> {
        self.start_with_nets(id, folder, cfg, None)
    }

    /// [`Supervisor::start`] with the NICs as keel-vmm `--net` specs (the
    /// TAPs the host's network created).
    pub fn start_with_nets(
        &self,
        id: i64,
        folder: &Path,
        cfg: &VmConfig,
        nets: Option<&[String]>,
    ) -> Result<RunInfo, SupervisorError> {
        let paths = RunPaths::new(&self.shared.run_dir, id);
        let args = argv::vmm_args(cfg, nets, &paths).map_err(SupervisorError::BadConfig)?;
        self.reserve(id)?;
        let launched = self.launch(id, folder, &paths, args);
        let (vmm, child) = match launched {
            Ok(v) => v,
            Err(e) => {
                self.release(id);
                return Err(e);
            }
        };
        let info = vmm.info;
        self.watch(vmm, Some(child))?;
        Ok(info)
    }

    fn launch(
        &self,
        id: i64,
        folder: &Path,
        paths: &RunPaths,
        args: Vec<std::ffi::OsString>,
    ) -> Result<(Arc<Vmm>, Child), SupervisorError> {
        prepare_run_dir(id, paths)?;
        let log_path = folder.join(VMM_LOG);
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SupervisorError::Io { path, source }
        };
        rotate_if_large(&log_path, VMM_LOG_LIMIT).map_err(io_err(&log_path))?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let log_from = log.metadata().map(|m| m.len()).map_err(io_err(&log_path))?;
        let shown: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
        writeln!(
            log,
            "keeld: starting VM {id} (ms {}): {} {}",
            now_ms(),
            self.shared.keel_vmm.display(),
            shown.join(" ")
        )
        .map_err(io_err(&log_path))?;
        let stderr = log.try_clone().map_err(io_err(&log_path))?;
        let mut cmd = Command::new(&self.shared.keel_vmm);
        cmd.args(&args)
            .current_dir(folder)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        sys::new_session(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| SupervisorError::Spawn {
            program: self.shared.keel_vmm.clone(),
            source,
        })?;
        let fail = |child: &mut Child, message: String| {
            let _ = child.kill();
            let _ = child.wait();
            SupervisorError::StartFailed {
                message,
                log_tail: watch::log_tail(&log_path, Some(log_from), LOG_TAIL_LINES),
            }
        };
        let pidfd = match PidFd::open(child.id()) {
            Ok(fd) => fd,
            Err(e) => return Err(fail(&mut child, format!("cannot watch its process: {e}"))),
        };
        if let Err(message) = wait_ready(&mut child, &paths.api, START_TIMEOUT) {
            let message = match watch::last_vmm_message(&log_path, log_from) {
                Some(line) => format!("{message}: {line}"),
                None => message,
            };
            return Err(fail(&mut child, message));
        }
        let pid = child.id();
        let vmm = Arc::new(Vmm {
            id,
            info: RunInfo {
                pid,
                started_ms: procfs::started_ms(pid).unwrap_or_else(|_| now_ms()),
            },
            folder: folder.to_path_buf(),
            paths: paths.clone(),
            pidfd,
            log_from: Some(log_from),
            life: Mutex::new(Life::default()),
            changed: Condvar::new(),
            console: Mutex::new(None),
        });
        Ok((vmm, child))
    }

    /// Registers a ready VMM, starts its watcher and connects its console.
    fn watch(&self, vmm: Arc<Vmm>, mut child: Option<Child>) -> Result<(), SupervisorError> {
        let id = vmm.id;
        lock(&self.shared.slots).insert(id, Slot::Running(vmm.clone()));
        let shared = self.shared.clone();
        let watched = vmm.clone();
        let mut child_for_thread = child.take();
        let spawned = thread::Builder::new()
            .name(format!("vmm-watch-{id}"))
            .spawn(move || watch::run(&shared, &watched, child_for_thread.take()));
        if let Err(e) = spawned {
            // Unwatched VMMs must not exist: stop this one.
            let _ = vmm.pidfd.signal(libc::SIGKILL);
            let _ = vmm.pidfd.wait(Some(KILL_WAIT));
            lock(&self.shared.slots).remove(&id);
            return Err(SupervisorError::Thread(e));
        }
        // Best effort: `console` connects again when this fails.
        if let Ok(hub) = ConsoleHub::connect(&vmm.paths.console) {
            *lock(&vmm.console) = Some(Arc::new(hub));
        }
        Ok(())
    }

    /// At keeld's start: when `STATE/run/<id>/api.sock` is served by a live
    /// keel-vmm, watch it again (its pid from SO_PEERCRED) and return its
    /// run. `None`, after removing the stale sockets, when no VMM runs for
    /// the VM. Call [`Supervisor::last_exit`] first to learn how a VMM
    /// that ended while keeld was away ended.
    pub fn attach(&self, id: i64, folder: &Path) -> Result<Option<RunInfo>, SupervisorError> {
        if let Some(v) = self.get(id) {
            return Ok(Some(v.info));
        }
        self.reserve(id)?;
        let paths = RunPaths::new(&self.shared.run_dir, id);
        let Some(vmm) = find_running(id, folder, &paths) else {
            self.release(id);
            for stale in [&paths.api, &paths.console] {
                remove_socket(stale);
            }
            return Ok(None);
        };
        let info = vmm.info;
        self.watch(vmm, None)?;
        Ok(Some(info))
    }

    /// How the VM's last VMM ended, when none runs now: from its exit
    /// report, or `Crashed` when it left its control socket behind without
    /// a report (killed while keeld was away). `None` when a VMM runs or
    /// nothing tells.
    pub fn last_exit(&self, id: i64, folder: &Path) -> Option<VmExit> {
        if lock(&self.shared.slots).contains_key(&id) {
            return None;
        }
        let paths = RunPaths::new(&self.shared.run_dir, id);
        if UnixStream::connect(&paths.api).is_ok() {
            return None;
        }
        let report = vmm_api::ExitReport::read(&paths.exit);
        let stale_socket = fs::symlink_metadata(&paths.api).is_ok();
        let reason = match report {
            Ok(None) if !stale_socket => return None,
            Ok(None) => ExitReason::Crashed {
                status: None,
                signal: None,
                message: "keel-vmm ended without an exit report while keeld was not running".into(),
            },
            other => watch::classify(other.transpose(), None, None, false),
        };
        Some(VmExit {
            id,
            reason,
            log_tail: watch::log_tail(&folder.join(VMM_LOG), None, LOG_TAIL_LINES),
        })
    }

    /// The VM's VMM, while it runs (until its `on_exit` has returned).
    pub fn running(&self, id: i64) -> Option<RunInfo> {
        self.get(id).map(|v| v.info)
    }

    /// Sends one control request to the VM's VMM. The VMM's refusals are
    /// [`SupervisorError::Refused`] (with its error code).
    pub fn request(&self, id: i64, req: Request) -> Result<Reply, SupervisorError> {
        let vmm = self.get(id).ok_or(SupervisorError::NotRunning(id))?;
        if req == Request::Stop {
            vmm.update(|l| l.stop_requested = true);
        }
        call(&vmm.paths.api, req, REQUEST_TIMEOUT)
    }

    /// Stops the VM hard: a `stop` request, SIGKILL when the process is
    /// still there after a grace period. Returns once the process is gone
    /// (and, unless it takes long, once `on_exit` has reported `Stopped`).
    pub fn stop(&self, id: i64) -> Result<(), SupervisorError> {
        let vmm = self.get(id).ok_or(SupervisorError::NotRunning(id))?;
        vmm.update(|l| l.stop_requested = true);
        if !vmm.gone() {
            let _ = call(&vmm.paths.api, Request::Stop, Duration::from_secs(2));
            if !vmm.wait_for(|l| l.gone, STOP_GRACE) {
                // The pidfd names this process even if it is gone by now.
                let _ = vmm.pidfd.signal(libc::SIGKILL);
                if !vmm.wait_for(|l| l.gone, KILL_WAIT) {
                    return Err(SupervisorError::StopFailed(id));
                }
            }
        }
        vmm.wait_for(|l| l.reported, REPORT_WAIT);
        Ok(())
    }

    /// Waits until the VM's VMM has exited and been reported (at most
    /// `timeout`). True when it has (or none was running).
    pub fn wait_exit(&self, id: i64, timeout: Duration) -> bool {
        match self.get(id) {
            None => true,
            Some(vmm) => vmm.wait_for(|l| l.reported, timeout) || vmm.gone(),
        }
    }

    /// A viewer of the VM's serial console (see [`ConsoleHandle`]).
    pub fn console(&self, id: i64) -> Result<ConsoleHandle, SupervisorError> {
        let vmm = self.get(id).ok_or(SupervisorError::NotRunning(id))?;
        let mut slot = lock(&vmm.console);
        if let Some(hub) = slot.as_ref().filter(|h| h.alive()) {
            return Ok(hub.subscribe());
        }
        if vmm.gone() {
            return Err(SupervisorError::NotRunning(id));
        }
        let hub = ConsoleHub::connect(&vmm.paths.console).map_err(SupervisorError::Console)?;
        let handle = hub.subscribe();
        *slot = Some(Arc::new(hub));
        Ok(handle)
    }

    /// The last `max` bytes of the VM's console log (console.log, reaching
    /// into console.log.1), whether or not it runs.
    pub fn console_log_tail(folder: &Path, max: usize) -> Vec<u8> {
        console::read_tail(&folder.join(CONSOLE_LOG), max)
    }

    /// CPU time and RSS of the VM's VMM process.
    pub fn process_stats(&self, id: i64) -> Option<ProcStats> {
        let vmm = self.get(id)?;
        let st = procfs::stat(vmm.info.pid).ok()?;
        Some(ProcStats {
            cpu_ms: procfs::ticks_to_ms(st.utime.saturating_add(st.stime)),
            rss_bytes: procfs::rss_bytes(vmm.info.pid).unwrap_or(0),
        })
    }
}

/// One request on a fresh connection.
fn call(api: &Path, req: Request, timeout: Duration) -> Result<Reply, SupervisorError> {
    let mut client = Client::connect(api).map_err(SupervisorError::Control)?;
    client
        .set_timeout(Some(timeout))
        .map_err(SupervisorError::Control)?;
    client.call(req).map_err(|e| match e {
        ClientError::Api(api) => SupervisorError::Refused(api),
        other => SupervisorError::Control(other),
    })
}

/// Makes `run/<id>/` (0700) and clears what an earlier VMM left, unless a
/// live VMM still serves its control socket.
fn prepare_run_dir(id: i64, paths: &RunPaths) -> Result<(), SupervisorError> {
    let io_err = |source| SupervisorError::Io {
        path: paths.dir.clone(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&paths.dir)
        .map_err(io_err)?;
    if UnixStream::connect(&paths.api).is_ok() {
        return Err(SupervisorError::AlreadyRunning(id));
    }
    remove_socket(&paths.api);
    remove_socket(&paths.console);
    match fs::remove_file(&paths.exit) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(e)),
        _ => Ok(()),
    }
}

/// Removes a socket file (nothing else).
fn remove_socket(path: &Path) {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = fs::remove_file(path);
    }
}

fn rotate_if_large(path: &Path, limit: u64) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(m) if m.len() > limit => {
            let mut old = path.as_os_str().to_owned();
            old.push(".1");
            fs::rename(path, PathBuf::from(old))
        }
        _ => Ok(()),
    }
}

/// Polls until the control socket answers `status`; the error says why not.
fn wait_ready(child: &mut Child, api: &Path, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Err(watch::describe_status(status)),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait for keel-vmm: {e}")),
        }
        if let Ok(mut c) = Client::connect(api) {
            let _ = c.set_timeout(Some(Duration::from_secs(1)));
            if c.call(Request::Status).is_ok() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "keel-vmm did not answer on its control socket within {} s",
                timeout.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The live keel-vmm serving the VM's control socket, if any.
fn find_running(id: i64, folder: &Path, paths: &RunPaths) -> Option<Arc<Vmm>> {
    let stream = UnixStream::connect(&paths.api).ok()?;
    let pid = sys::peer_pid(&stream).ok()?;
    let pidfd = PidFd::open(pid).ok()?;
    // The connection is still open, so the pid was keel-vmm's when the
    // pidfd was opened. `status` shows it is a VMM that answers; one that is
    // alive but busy is watched all the same.
    if let Ok(mut client) = Client::from_stream(stream) {
        let _ = client.set_timeout(Some(Duration::from_secs(2)));
        let _ = client.call(Request::Status);
    }
    if pidfd.exited() {
        return None;
    }
    Some(Arc::new(Vmm {
        id,
        info: RunInfo {
            pid,
            started_ms: procfs::started_ms(pid).unwrap_or_else(|_| now_ms()),
        },
        folder: folder.to_path_buf(),
        paths: paths.clone(),
        pidfd,
        log_from: None,
        life: Mutex::new(Life::default()),
        changed: Condvar::new(),
        console: Mutex::new(None),
    }))
}

#[cfg(test)]
mod tests;
