//! A fake VMM backend and helpers for the facade's tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hostd_api::{BootCreate, DiskCreate, TaskState, VmConfig, VmCreate};

use super::{lock, Caller, Host, HostOptions, Opened};
use crate::backend::{ConsoleHandle, ExitReason, OnExit, ProcStats, RunInfo, VmExit, VmmBackend};
use crate::fsutil::TestDir;
use crate::network::runtime::FakeNet;

pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// "Runs" VMs without processes.
pub struct Fake {
    on_exit: OnExit,
    /// id → (run, paused, boots)
    running: Mutex<HashMap<i64, (RunInfo, bool, u32)>>,
    /// Every start, in order: (id, VM name).
    pub starts: Mutex<Vec<(i64, String)>>,
    /// Milliseconds each start takes.
    pub start_delay_ms: AtomicU64,
    /// What `counters` answers per VM id: absent → [`fake_counters`],
    /// `None` → an error (a VMM that does not answer).
    pub counters: Mutex<HashMap<i64, Option<vmm_api::VmCounters>>>,
    /// Milliseconds `counters` takes to answer.
    pub counters_delay_ms: AtomicU64,
    /// The `--net` specs of each VM's last start.
    pub nets: Mutex<HashMap<i64, Vec<String>>>,
    /// NIC link requests: (VM id, nic, up).
    pub links: Mutex<Vec<(i64, String, bool)>>,
    next_pid: AtomicU64,
}

/// The counters of a VMM with one disk that read 1 MiB and no NIC.
pub fn fake_counters() -> vmm_api::VmCounters {
    vmm_api::VmCounters {
        disks: vec![vmm_api::DiskCounters {
            id: "disk0".into(),
            read_ops: 256,
            read_bytes: 1 << 20,
            ..Default::default()
        }],
        nics: Vec::new(),
    }
}

impl Fake {
    fn new(on_exit: OnExit) -> Fake {
        Fake {
            on_exit,
            running: Mutex::new(HashMap::new()),
            starts: Mutex::new(Vec::new()),
            start_delay_ms: AtomicU64::new(0),
            counters: Mutex::new(HashMap::new()),
            counters_delay_ms: AtomicU64::new(0),
            nets: Mutex::new(HashMap::new()),
            links: Mutex::new(Vec::new()),
            next_pid: AtomicU64::new(1000),
        }
    }

    fn exit(&self, id: i64, reason: ExitReason, log_tail: Vec<String>) {
        if lock(&self.running).remove(&id).is_some() {
            (self.on_exit)(VmExit {
                id,
                reason,
                log_tail,
            });
        }
    }

    /// The VMM dies.
    pub fn crash(&self, id: i64) {
        self.exit(
            id,
            ExitReason::Crashed {
                status: Some(3),
                signal: None,
                message: "guest crashed on vCPU 0: triple fault".into(),
            },
            vec!["line one".into(), "keel-vmm: triple fault".into()],
        );
    }

    pub fn start_names(&self) -> Vec<String> {
        lock(&self.starts).iter().map(|(_, n)| n.clone()).collect()
    }
}

impl VmmBackend for Fake {
    fn start(
        &self,
        id: i64,
        _folder: &Path,
        cfg: &VmConfig,
        nets: &[String],
    ) -> Result<RunInfo, String> {
        lock(&self.nets).insert(id, nets.to_vec());
        std::thread::sleep(Duration::from_millis(
            self.start_delay_ms.load(Ordering::Relaxed),
        ));
        let run = RunInfo {
            pid: self.next_pid.fetch_add(1, Ordering::Relaxed) as u32,
            started_ms: crate::fsutil::now_ms(),
        };
        lock(&self.running).insert(id, (run, false, 1));
        lock(&self.starts).push((id, cfg.name.clone()));
        Ok(run)
    }
    fn last_exit(&self, _id: i64, _folder: &Path) -> Option<VmExit> {
        None
    }
    fn attach(&self, id: i64, _folder: &Path) -> Result<Option<RunInfo>, String> {
        Ok(self.running(id))
    }
    fn running(&self, id: i64) -> Option<RunInfo> {
        lock(&self.running).get(&id).map(|(r, _, _)| *r)
    }
    fn request(&self, id: i64, req: vmm_api::Request) -> Result<vmm_api::Reply, String> {
        use vmm_api::{Reply, Request, VmState, VmStatus};
        if req == Request::Counters {
            std::thread::sleep(Duration::from_millis(
                self.counters_delay_ms.load(Ordering::Relaxed),
            ));
            if self.running(id).is_none() {
                return Err("not running".into());
            }
            return match lock(&self.counters).get(&id) {
                None => Ok(Reply::Counters(fake_counters())),
                Some(Some(c)) => Ok(Reply::Counters(c.clone())),
                Some(None) => Err("fake: the VMM does not answer".into()),
            };
        }
        let mut running = lock(&self.running);
        let Some((_, paused, boots)) = running.get_mut(&id) else {
            return Err("not running".into());
        };
        match req {
            Request::Status => Ok(Reply::Status(VmStatus {
                state: if *paused {
                    VmState::Paused
                } else {
                    VmState::Running
                },
                vcpus: 1,
                memory_bytes: 1 << 28,
                uptime_ms: 5,
                boots: *boots,
                balloon: None,
            })),
            Request::Pause => {
                *paused = true;
                Ok(Reply::Done)
            }
            Request::Resume => {
                *paused = false;
                Ok(Reply::Done)
            }
            Request::Reset => {
                *boots += 1;
                Ok(Reply::Done)
            }
            Request::NicLink { nic, up } => {
                lock(&self.links).push((id, nic, up));
                Ok(Reply::Done)
            }
            Request::PowerButton => {
                drop(running);
                // The guest honours it at once.
                self.exit(id, ExitReason::PoweredOff, Vec::new());
                Ok(Reply::Done)
            }
            other => Err(format!("fake: {} not supported", other.name())),
        }
    }
    fn stop(&self, id: i64) -> Result<(), String> {
        self.exit(id, ExitReason::Stopped, Vec::new());
        Ok(())
    }
    fn wait_exit(&self, id: i64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.running(id).is_none() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
    fn console(&self, _id: i64) -> Result<ConsoleHandle, String> {
        Err("fake: no console".into())
    }
    fn process_stats(&self, id: i64) -> Option<ProcStats> {
        self.running(id).map(|_| ProcStats {
            cpu_ms: 1500,
            rss_bytes: 64 << 20,
        })
    }
}

/// A host on a fresh state directory with the fake backend.
pub struct TestHost {
    pub host: Host,
    pub fake: Arc<Fake>,
    pub net: Arc<FakeNet>,
    pub admin: Caller,
    pub opened_first: bool,
    pub password_file: Option<PathBuf>,
    pub dir: TestDir,
}

pub fn options(dir: &Path) -> HostOptions {
    HostOptions {
        state_dir: dir.join("state"),
        keel_vmm: PathBuf::from("/nonexistent/keel-vmm"),
        admin_password: Some(ADMIN_PASSWORD.into()),
        vm_network_subnet: None,
        host_network: false,
    }
}

/// Opens a host with the fake backend.
pub fn open_fake(opts: HostOptions) -> crate::Result<(Opened, Arc<Fake>)> {
    open_fake_net(opts, Arc::new(FakeNet::default()))
}

/// Opens a host with the fake backend and the given fake network.
pub fn open_fake_net(opts: HostOptions, net: Arc<FakeNet>) -> crate::Result<(Opened, Arc<Fake>)> {
    let slot: Arc<OnceLock<Arc<Fake>>> = Arc::new(OnceLock::new());
    let s2 = slot.clone();
    let opened = Host::open_with(
        opts,
        Box::new(move |on_exit| {
            let fake = Arc::new(Fake::new(on_exit));
            let _ = s2.set(fake.clone());
            fake
        }),
        net,
    )?;
    let fake = slot.get().cloned().expect("backend built");
    Ok((opened, fake))
}

pub fn test_host(tag: &str) -> TestHost {
    let dir = TestDir::new(tag);
    let net = Arc::new(FakeNet::default());
    let (opened, fake) = open_fake_net(options(dir.path()), net.clone()).unwrap();
    TestHost {
        host: opened.host,
        fake,
        net,
        admin: Caller {
            user: "admin".into(),
        },
        opened_first: opened.first_start,
        password_file: opened.admin_password_file,
        dir,
    }
}

impl TestHost {
    /// A file to use as a kernel image.
    pub fn kernel(&self) -> String {
        let path = self.dir.path().join("vmlinuz-test");
        if !path.exists() {
            std::fs::write(&path, vec![0x90u8; 4096]).unwrap();
        }
        path.display().to_string()
    }

    pub fn spec(&self, name: &str) -> VmCreate {
        VmCreate {
            name: name.into(),
            datastore: None,
            vcpus: 1,
            memory_mib: 64,
            disks: vec![DiskCreate {
                size_bytes: Some(1 << 20),
                ..Default::default()
            }],
            nics: Vec::new(),
            boot: BootCreate {
                kernel: self.kernel(),
                initrd: None,
                cmdline: "console=ttyS0".into(),
            },
            guest_os: Default::default(),
            notes: String::new(),
            autostart: false,
        }
    }

    /// Creates a VM and waits for its task to succeed.
    pub fn create(&self, name: &str) {
        let task = self.host.vm_create(&self.admin, self.spec(name)).unwrap();
        let done = self
            .host
            .task_wait(&self.admin, task.id, Duration::from_secs(30))
            .unwrap();
        assert_eq!(done.state, TaskState::Success, "{:?}", done.error);
    }

    /// Runs a power operation to its end; the task's error if it failed.
    pub fn power(&self, caller: &Caller, name: &str, op: hostd_api::PowerOp) -> crate::Result<()> {
        let task = self.host.vm_power(caller, name, op)?;
        let done = self
            .host
            .task_wait(caller, task.id, Duration::from_secs(30))?;
        match done.error {
            None if done.state == TaskState::Success => Ok(()),
            Some(e) => Err(crate::CoreError::new(
                crate::ErrorKind::from_code(&e.code),
                e.message,
            )),
            None => Err(crate::CoreError::internal("task did not finish")),
        }
    }

    /// A user with a role on `host` (None: no permission).
    pub fn user(&self, name: &str, role: Option<hostd_api::Role>) -> Caller {
        self.host
            .user_create(
                &self.admin,
                hostd_api::UserCreate {
                    name: name.into(),
                    password: format!("{name}-password"),
                },
            )
            .unwrap();
        if let Some(role) = role {
            self.grant(name, role, "host");
        }
        Caller { user: name.into() }
    }

    pub fn grant(&self, user: &str, role: hostd_api::Role, entity: &str) {
        self.host
            .permission_set(
                &self.admin,
                hostd_api::Permission {
                    user: user.into(),
                    role,
                    entity: entity.into(),
                },
            )
            .unwrap();
    }

    pub fn event_kinds(&self) -> Vec<String> {
        self.host
            .event_list(&self.admin, None, 1000, None)
            .unwrap()
            .items
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    pub fn ds_root(&self) -> PathBuf {
        self.host.state_dir().join("datastores/datastore1")
    }
}
