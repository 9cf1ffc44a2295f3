//! The [`Host`] facade: what keeld calls. Every method that acts for a user
//! takes a [`Caller`] and checks its privilege itself. All methods are
//! synchronous and thread-safe; long operations return a [`Task`] and run
//! on their own thread.

mod records;
mod users;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use base64::Engine;
use hostd_api::{Privilege, Role, Task};

use crate::auth::{self, Limiter};
use crate::backend::{MakeBackend, OnExit, VmmBackend};
use crate::datastores;
use crate::error::{CoreError, Result};
use crate::events::{self, NewEvent};
use crate::fsutil::{self, now_ms};
use crate::network::runtime::NetRuntime;
use crate::store::Store;
use crate::sys;
use crate::tasks::{self, Tasks};

/// How keeld opens a host.
#[derive(Clone)]
pub struct HostOptions {
    /// Default `/var/lib/keel`.
    pub state_dir: PathBuf,
    /// The `keel-vmm` binary.
    pub keel_vmm: PathBuf,
    /// The `admin` user's password on first start (`KEEL_ADMIN_PASSWORD`);
    /// generated when absent. Ignored after the first start.
    pub admin_password: Option<String>,
    /// The default network's subnet on first start (like `10.77.0.0/24`);
    /// when absent, the first of a few candidates that does not overlap
    /// the host's own networks.
    pub vm_network_subnet: Option<String>,
    /// Apply switches, NAT, DHCP and TAPs to the host (false: keeld's
    /// `--no-host-network`, the inventory only).
    pub host_network: bool,
}

impl std::fmt::Debug for HostOptions {
    /// Without the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostOptions")
            .field("state_dir", &self.state_dir)
            .field("keel_vmm", &self.keel_vmm)
            .field(
                "admin_password",
                &self.admin_password.as_ref().map(|_| "<hidden>"),
            )
            .field("vm_network_subnet", &self.vm_network_subnet)
            .field("host_network", &self.host_network)
            .finish()
    }
}

/// What [`Host::open`] returns.
pub struct Opened {
    pub host: Host,
    /// The state directory was new (the admin user was just created).
    pub first_start: bool,
    /// Where the generated admin password was written (mode 0600), when it
    /// was generated.
    pub admin_password_file: Option<PathBuf>,
}

/// An authenticated user, from [`Host::authenticate`] or
/// [`Host::authenticate_password`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
}

/// The host: cheap to clone, shared by all of keeld's threads.
#[derive(Clone)]
pub struct Host {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub state_dir: PathBuf,
    pub store: Store,
    pub tasks: Tasks,
    pub backend: Arc<dyn VmmBackend>,
    /// The kernel side of virtual networking.
    pub net: Arc<dyn NetRuntime>,
    /// Held by every change of switches, port groups and NICs.
    pub net_lock: Mutex<()>,
    /// The last address the DHCP servers bound per MAC (for events).
    pub net_ips: Mutex<HashMap<net::Mac, std::net::Ipv4Addr>>,
    /// Link state set while a VM runs: (VM id, NIC index) → up.
    pub nic_links: Mutex<HashMap<(i64, usize), bool>>,
    pub limiter: Mutex<Limiter>,
    /// VMs with an operation in progress (power, edit, clone, delete).
    pub busy: Mutex<HashMap<i64, &'static str>>,
    /// Who asked for the power-off or shutdown in progress, per VM (the
    /// exit event names them).
    pub exit_by: Mutex<HashMap<i64, String>>,
    /// VM names that a create or clone in progress will take.
    pub reserved: Mutex<HashSet<String>>,
    /// Recently verified HTTP basic credentials: SHA-256(user NUL password)
    /// → (user, valid until), so that scripts do not pay argon2 per call.
    pub basic_cache: Mutex<HashMap<[u8; 32], (String, u64)>>,
    /// Added to the clock (tests move time forward).
    pub clock_offset_ms: AtomicU64,
    /// The exclusive lock on the state directory, held while open.
    _lock: File,
}

/// The user that host-initiated tasks (autostart) run as.
pub const SYSTEM_USER: &str = "system";
/// The admin user created on first start.
pub const ADMIN_USER: &str = "admin";

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Host {
    /// Opens the host's state directory: creates it, the database, the
    /// default datastore and the admin user on first start; cleans up what
    /// a killed keeld left half-done; re-attaches running VMMs; starts the
    /// autostart VMs in the background.
    pub fn open(opts: HostOptions) -> Result<Opened> {
        let keel_vmm = opts.keel_vmm.clone();
        let run_dir = opts.state_dir.join("run");
        let make: MakeBackend =
            Box::new(move |on_exit| crate::power::real_backend(keel_vmm, run_dir, on_exit));
        create_dir(&opts.state_dir, 0o700)?;
        let lease_dir = opts.state_dir.join("network");
        create_dir(&lease_dir, 0o700)?;
        let net: Arc<dyn NetRuntime> = if opts.host_network {
            Arc::new(crate::network::runtime::RealNet::new(lease_dir))
        } else {
            Arc::new(crate::network::runtime::NoNet)
        };
        Self::open_with(opts, make, net)
    }

    pub(crate) fn open_with(
        opts: HostOptions,
        make_backend: MakeBackend,
        net: Arc<dyn NetRuntime>,
    ) -> Result<Opened> {
        let state = &opts.state_dir;
        create_dir(state, 0o700)?;
        let ds_dir = state.join("datastores").join(datastores::DEFAULT);
        create_dir(&state.join("datastores"), 0o755)?;
        create_dir(&ds_dir, 0o755)?;
        create_dir(&state.join("run"), 0o700)?;
        let state_dir = fs::canonicalize(state)
            .map_err(|e| CoreError::io(format!("State directory {}", state.display()), &e))?;

        let lock_path = state_dir.join("keeld.lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| CoreError::io(lock_path.display(), &e))?;
        if let Err(e) = sys::try_lock_exclusive(&lock_file) {
            return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
                CoreError::conflict(format!(
                    "Another keeld uses the state directory {}",
                    state_dir.display()
                ))
            } else {
                CoreError::io(lock_path.display(), &e)
            });
        }

        let (store, _) = crate::store::Store::open(&state_dir.join("inventory.db"))?;
        let first_start = auth::list_users(&store)?.is_empty();
        let mut admin_password_file = None;
        if first_start {
            let password = match &opts.admin_password {
                Some(p) => {
                    auth::check_password_policy(p).map_err(|e| e.context("Admin password"))?;
                    p.clone()
                }
                None => {
                    let p = generate_password()?;
                    let file = state_dir.join("admin-password");
                    fsutil::atomic_write(&file, format!("{p}\n").as_bytes(), 0o600)
                        .map_err(|e| CoreError::io(file.display(), &e))?;
                    admin_password_file = Some(file);
                    p
                }
            };
            let hash = auth::hash_password(&password)?;
            let ds_canon =
                fs::canonicalize(&ds_dir).map_err(|e| CoreError::io(ds_dir.display(), &e))?;
            store.tx(|tx| {
                let has_default: bool = tx
                    .query_row(
                        "SELECT COUNT(*) FROM datastores WHERE name = ?1",
                        [datastores::DEFAULT],
                        |r| r.get::<_, i64>(0),
                    )
                    .map(|n| n > 0)?;
                if !has_default {
                    datastores::insert(tx, datastores::DEFAULT, &ds_canon)?;
                }
                auth::insert_user(tx, ADMIN_USER, &hash, now_ms())?;
                auth::set_permission(
                    tx,
                    &hostd_api::Permission {
                        user: ADMIN_USER.into(),
                        role: Role::Administrator,
                        entity: "host".into(),
                    },
                )?;
                events::insert(
                    tx,
                    &NewEvent::info(
                        "host.initialized",
                        "Host initialized: admin user and datastore1 created",
                    ),
                )?;
                Ok(())
            })?;
        }

        let interrupted = tasks::interrupt_leftovers(&store)?;

        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let weak = weak.clone();
            let on_exit: OnExit = Box::new(move |exit| {
                if let Some(inner) = weak.upgrade() {
                    Host { inner }.on_vm_exit(exit);
                }
            });
            Inner {
                state_dir,
                store,
                tasks: Tasks::default(),
                backend: make_backend(on_exit),
                net,
                net_lock: Mutex::new(()),
                net_ips: Mutex::new(HashMap::new()),
                nic_links: Mutex::new(HashMap::new()),
                limiter: Mutex::new(Limiter::default()),
                busy: Mutex::new(HashMap::new()),
                reserved: Mutex::new(HashSet::new()),
                exit_by: Mutex::new(HashMap::new()),
                basic_cache: Mutex::new(HashMap::new()),
                clock_offset_ms: AtomicU64::new(0),
                _lock: lock_file,
            }
        });
        let host = Host { inner };
        if interrupted > 0 {
            host.event(
                NewEvent::info(
                    "host.tasks-interrupted",
                    &format!("{interrupted} task(s) were interrupted when keeld stopped"),
                )
                .severity(hostd_api::Severity::Warning),
            );
        }
        host.recover_leftovers();
        // Fails only on a bad --vm-network-subnet or a database failure.
        host.network_start(opts.vm_network_subnet.as_deref())?;
        host.reattach_all();
        host.release_stale_nics();
        host.event(NewEvent::info("host.started", "keeld started"));
        host.start_autostart();
        Ok(Opened {
            host,
            first_start,
            admin_password_file,
        })
    }

    /// The state directory (canonical).
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn backend(&self) -> &dyn VmmBackend {
        &*self.inner.backend
    }

    /// Milliseconds since the epoch (plus the tests' offset).
    pub(crate) fn now(&self) -> u64 {
        now_ms() + self.inner.clock_offset_ms.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn advance_clock(&self, ms: u64) {
        self.inner.clock_offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Forbidden unless the caller holds `privilege` on the host (`vm`
    /// None) or on the VM.
    pub(crate) fn require(&self, caller: &Caller, vm: Option<&str>, p: Privilege) -> Result<()> {
        auth::require(self.store(), &caller.user, vm, p)
    }

    /// Records an event; a database failure is reported on stderr, not to
    /// the caller (the change itself happened).
    pub(crate) fn event(&self, ev: NewEvent<'_>) {
        if let Err(e) = events::record(self.store(), &ev) {
            eprintln!("keeld: recording event {}: {e}", ev.kind);
        }
    }

    /// Runs `work` as a task on its own thread; returns the task at once.
    pub(crate) fn spawn_task<F>(
        &self,
        kind: &str,
        target: Option<String>,
        user: &str,
        work: F,
    ) -> Result<Task>
    where
        F: FnOnce(&TaskCtx) -> Result<()> + Send + 'static,
    {
        let task = self
            .inner
            .tasks
            .create(self.store(), kind, target.as_deref(), user)?;
        let ctx = TaskCtx {
            host: self.clone(),
            id: task.id,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("task-{}", task.id))
            .spawn(move || {
                let result = work(&ctx);
                if let Err(e) = ctx
                    .host
                    .inner
                    .tasks
                    .finish(ctx.host.store(), ctx.id, &result)
                {
                    eprintln!("keeld: finishing task {}: {e}", ctx.id);
                }
            });
        if let Err(e) = spawned {
            let err = CoreError::internal(format!("Starting a thread for the task: {e}"));
            let _ = self
                .inner
                .tasks
                .finish(self.store(), task.id, &Err(err.clone()));
            return Err(err);
        }
        Ok(task)
    }

    /// Marks a VM busy with `what` (like "power-on") until the guard
    /// drops; Conflict when another operation holds it.
    pub(crate) fn claim(&self, id: i64, name: &str, what: &'static str) -> Result<BusyGuard> {
        if lock(&self.inner.reserved).contains(name) {
            return Err(CoreError::conflict(format!("VM {name} is being created")));
        }
        let mut busy = lock(&self.inner.busy);
        if let Some(other) = busy.get(&id) {
            return Err(CoreError::conflict(format!(
                "Another operation ({other}) is in progress on VM {name}"
            )));
        }
        busy.insert(id, what);
        Ok(BusyGuard {
            host: self.clone(),
            id,
        })
    }
}

/// Releases a VM claimed with [`Host::claim`].
pub(crate) struct BusyGuard {
    host: Host,
    id: i64,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        lock(&self.host.inner.busy).remove(&self.id);
    }
}

/// Handed to a task's work: its id and progress reporting.
pub(crate) struct TaskCtx {
    pub host: Host,
    pub id: u64,
}

impl TaskCtx {
    pub fn progress(&self, percent: u8) {
        let _ = self
            .host
            .inner
            .tasks
            .progress(self.host.store(), self.id, percent);
    }
}

fn create_dir(path: &Path, mode: u32) -> Result<()> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(CoreError::io(format!("Creating {}", path.display()), &e)),
    }
}

fn generate_password() -> Result<String> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes)
        .map_err(|e| CoreError::internal(format!("Random password: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
