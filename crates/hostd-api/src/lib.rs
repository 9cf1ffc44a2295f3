//! The REST types of keeld's API, version 1 (`/api/v1/...`).
//!
//! These are wire types only: keeld serializes them, the `client` crate and
//! the CLI deserialize them, and the OpenAPI document (`openapi.json`,
//! served at `/api/v1/openapi.json` and checked in under `docs/`) is
//! generated from them. JSON field names are `snake_case`; enum values are
//! `camelCase` where ESXi users know the words (`poweredOn`), `kebab-case`
//! otherwise. Request bodies refuse unknown fields.
//!
//! Times are Unix milliseconds (`*_ms` fields); sizes are bytes unless the
//! field name says otherwise (`memory_mib`).

#![forbid(unsafe_code)]

mod host;
mod network;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use host::*;
pub use network::*;

/// The API version in every path (`/api/v1`).
pub const API_PREFIX: &str = "/api/v1";
/// The longest VM, datastore, user or port group name.
pub const MAX_NAME_LEN: usize = 80;

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorInfo {
    /// Stable, machine-readable: `bad-request`, `unauthorized`,
    /// `forbidden`, `not-found`, `conflict`, `too-large`, `rate-limited`,
    /// `unsupported-media-type`, `insufficient-space`, `internal`.
    pub code: String,
    /// One line for a person.
    pub message: String,
}

// ---- VMs -------------------------------------------------------------------

/// A VM's power state, always true: keeld derives it from the VMM process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum PowerState {
    PoweredOn,
    PoweredOff,
    Paused,
    /// The VMM process ended without the guest powering off (a triple
    /// fault, a VMM failure, a kill). Powering on again is allowed.
    Crashed,
}

/// The guest OS type (informational, as ESXi's "guest OS" setting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GuestOs {
    #[default]
    Linux,
    Other,
}

/// `POST /api/v1/vms`: creates a VM folder on a datastore and registers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmCreate {
    pub name: String,
    /// Default `datastore1`.
    #[serde(default)]
    pub datastore: Option<String>,
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    #[serde(default)]
    pub disks: Vec<DiskCreate>,
    #[serde(default)]
    pub nics: Vec<NicConfig>,
    pub boot: BootCreate,
    #[serde(default)]
    pub guest_os: GuestOs,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub autostart: bool,
}

fn default_vcpus() -> u32 {
    1
}

fn default_memory_mib() -> u64 {
    512
}

/// A disk for a new VM: a new qcow2 of `size_bytes`, or an existing image
/// (`import`, a path on the host or `[datastore] path`) copied into the
/// VM's folder. Exactly one of the two.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskCreate {
    #[serde(default)]
    pub size_bytes: Option<u64>,
    #[serde(default)]
    pub import: Option<String>,
    #[serde(default)]
    pub readonly: bool,
    /// The serial the guest sees (/dev/disk/by-id); default `diskN`.
    #[serde(default)]
    pub serial: Option<String>,
}

/// How a new VM boots (direct kernel boot for now): the kernel and initrd
/// are copied from these paths (host paths, or `[datastore] path`) into the
/// VM's folder, so the folder is self-contained.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootCreate {
    pub kernel: String,
    #[serde(default)]
    pub initrd: Option<String>,
    #[serde(default)]
    pub cmdline: String,
}

/// A VM's own configuration: `NAME.toml` in its folder, beside its disks,
/// kernel and logs. File names are relative to the folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    #[serde(default)]
    pub nics: Vec<NicConfig>,
    pub boot: BootConfig,
    #[serde(default)]
    pub guest_os: GuestOs,
    #[serde(default)]
    pub notes: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// In the VM's folder.
    pub file: String,
    /// `raw` or `qcow2`.
    pub format: String,
    #[serde(default)]
    pub readonly: bool,
    pub serial: String,
}

/// A network interface (a virtio-net device in the guest). On a port
/// group, keeld creates the NIC's TAP on the port group's switch at
/// power-on and removes it when the VM stops. `tap` alone (no port group)
/// names a host TAP that keel-vmm opens or creates, outside keeld's
/// switches. A new NIC with neither goes on `VM Network`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NicConfig {
    #[serde(default)]
    pub port_group: Option<String>,
    #[serde(default)]
    pub tap: Option<String>,
    /// Unicast, unique on the host; generated (locally administered
    /// `02:6b:…`) when the NIC is created without one.
    #[serde(default)]
    pub mac: Option<String>,
    /// Link up at power-on. Default true.
    #[serde(default = "default_true")]
    pub connected: bool,
}

pub(crate) fn default_true() -> bool {
    true
}

impl Default for NicConfig {
    fn default() -> Self {
        NicConfig {
            port_group: None,
            tap: None,
            mac: None,
            connected: true,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// In the VM's folder.
    pub kernel: String,
    #[serde(default)]
    pub initrd: Option<String>,
    #[serde(default)]
    pub cmdline: String,
}

/// `PATCH /api/v1/vms/{name}`: every field optional. vCPUs and memory only
/// while the VM is powered off (409 otherwise).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmEdit {
    #[serde(default)]
    pub vcpus: Option<u32>,
    #[serde(default)]
    pub memory_mib: Option<u64>,
    #[serde(default)]
    pub cmdline: Option<String>,
    #[serde(default)]
    pub guest_os: Option<GuestOs>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub autostart: Option<bool>,
}

/// A VM as the inventory shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmInfo {
    pub name: String,
    pub datastore: String,
    /// The folder on the host.
    pub path: String,
    pub power_state: PowerState,
    pub config: VmConfig,
    pub autostart: bool,
    /// The guest's IP address when known (its first NIC's).
    #[serde(default)]
    pub ip: Option<String>,
    /// The NICs, with their TAPs and addresses.
    #[serde(default)]
    pub nics: Vec<NicInfo>,
    /// While the VMM runs.
    #[serde(default)]
    pub runtime: Option<VmRuntime>,
    /// What the caller may do on this VM (its VM permission, else its host
    /// one): for a client to enable the right buttons.
    #[serde(default)]
    pub privileges: Vec<Privilege>,
}

/// A running VM's process and counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmRuntime {
    pub pid: u32,
    pub uptime_ms: u64,
    /// 1 + guest reboots.
    pub boots: u32,
    /// User + system CPU time of the VMM process.
    pub cpu_ms: u64,
    /// Resident memory of the VMM process.
    pub rss_bytes: u64,
}

/// `POST /api/v1/vms/{name}/clone`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmClone {
    pub name: String,
    #[serde(default)]
    pub datastore: Option<String>,
}

/// `POST /api/v1/vms/register`: adds an existing VM folder to the inventory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmRegister {
    pub datastore: String,
    /// The folder's name in the datastore (it holds `FOLDER.toml`).
    pub folder: String,
}

/// `POST /api/v1/vms/{name}/power/{op}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PowerOp {
    /// Starts the VMM.
    On,
    /// Stops the VM at once (pulls the plug).
    Off,
    /// Presses the ACPI power button; the guest powers off.
    Shutdown,
    /// Restarts the guest at once.
    Reset,
    Pause,
    Resume,
}

impl PowerOp {
    pub const ALL: [PowerOp; 6] = [
        PowerOp::On,
        PowerOp::Off,
        PowerOp::Shutdown,
        PowerOp::Reset,
        PowerOp::Pause,
        PowerOp::Resume,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PowerOp::On => "on",
            PowerOp::Off => "off",
            PowerOp::Shutdown => "shutdown",
            PowerOp::Reset => "reset",
            PowerOp::Pause => "pause",
            PowerOp::Resume => "resume",
        }
    }

    pub fn parse(s: &str) -> Option<PowerOp> {
        PowerOp::ALL.into_iter().find(|op| op.as_str() == s)
    }
}

// ---- tasks and events ------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    Queued,
    Running,
    Success,
    Error,
}

/// A long operation. Poll `GET /api/v1/tasks/{id}` or wait with
/// `GET /api/v1/tasks/{id}?wait_ms=N`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub id: u64,
    /// Like `vm.create`, `vm.power-on`.
    pub kind: String,
    /// The entity it works on, like `vm:web1`.
    #[serde(default)]
    pub target: Option<String>,
    pub user: String,
    pub state: TaskState,
    /// 0–100.
    pub progress: u8,
    #[serde(default)]
    pub error: Option<ErrorInfo>,
    pub started_ms: u64,
    #[serde(default)]
    pub finished_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// Something that changed, who did it and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: u64,
    pub time_ms: u64,
    /// Like `vm.created`, `vm.crashed`, `user.login-failed`.
    pub kind: String,
    pub severity: Severity,
    /// Who did it; absent for what the host did by itself.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    pub message: String,
}

/// A page of a list, newest first. Pass `next` as `before` for the next
/// page; `next` is absent on the last page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default)]
    pub next: Option<u64>,
}

// ---- datastores ------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Datastore {
    pub name: String,
    pub path: String,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    File,
    Dir,
}

/// One entry of `GET /api/v1/datastores/{name}/browse?path=DIR`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    pub name: String,
    pub kind: FileKind,
    pub size_bytes: u64,
    pub modified_ms: u64,
}

// ---- users, roles, permissions, sessions -----------------------------------

/// The fixed roles, as ESXi has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Role {
    /// Everything.
    Administrator,
    /// Power operations and consoles; no configuration.
    Operator,
    /// Sees everything, changes nothing.
    ReadOnly,
    /// Sees nothing (overrides a wider permission).
    NoAccess,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Administrator,
        Role::Operator,
        Role::ReadOnly,
        Role::NoAccess,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "Administrator",
            Role::Operator => "Operator",
            Role::ReadOnly => "ReadOnly",
            Role::NoAccess => "NoAccess",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
    }
}

/// What an action needs. A 403 names the missing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Privilege {
    /// See the host, VMs, tasks, events, datastores.
    #[serde(rename = "System.View")]
    SystemView,
    /// Power operations on a VM.
    #[serde(rename = "VirtualMachine.Interact.Power")]
    VmPower,
    /// Use a VM's console.
    #[serde(rename = "VirtualMachine.Interact.Console")]
    VmConsole,
    /// Create, edit, clone, delete, register, unregister VMs.
    #[serde(rename = "VirtualMachine.Config")]
    VmConfig,
    /// Upload to, delete from, create in a datastore.
    #[serde(rename = "Datastore.FileManagement")]
    DatastoreFiles,
    /// Read files of a datastore (browse, download).
    #[serde(rename = "Datastore.Browse")]
    DatastoreBrowse,
    /// Users and permissions.
    #[serde(rename = "Authorization.ModifyPermissions")]
    ModifyPermissions,
    /// Host settings.
    #[serde(rename = "Host.Config")]
    HostConfig,
}

impl Privilege {
    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::SystemView => "System.View",
            Privilege::VmPower => "VirtualMachine.Interact.Power",
            Privilege::VmConsole => "VirtualMachine.Interact.Console",
            Privilege::VmConfig => "VirtualMachine.Config",
            Privilege::DatastoreFiles => "Datastore.FileManagement",
            Privilege::DatastoreBrowse => "Datastore.Browse",
            Privilege::ModifyPermissions => "Authorization.ModifyPermissions",
            Privilege::HostConfig => "Host.Config",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoleInfo {
    pub role: Role,
    pub privileges: Vec<Privilege>,
}

/// `POST /api/v1/session` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub user: String,
    pub password: String,
}

/// A session: send `Authorization: Bearer TOKEN`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub token: String,
    pub user: String,
    pub expires_ms: u64,
    /// What this user may do on the host (for a UI to grey out buttons).
    pub host_privileges: Vec<Privilege>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub name: String,
    pub created_ms: u64,
}

/// `POST /api/v1/users`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    pub name: String,
    pub password: String,
}

/// `PUT /api/v1/users/{name}/password`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub password: String,
}

/// What a permission applies to: `host` or `vm:NAME`.
pub type EntityRef = String;

/// A user has a role on the host (everything) or on one VM. A VM
/// permission overrides the host one for that VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    pub user: String,
    pub role: Role,
    /// `host` or `vm:NAME`.
    pub entity: EntityRef,
}
