// The wire types of keeld's API v1, mirroring crates/hostd-api (see
// docs/openapi.json). Times are Unix milliseconds, sizes bytes unless the
// name says otherwise.

export type PowerState = 'poweredOn' | 'poweredOff' | 'paused' | 'crashed';
export type PowerOp = 'on' | 'off' | 'shutdown' | 'reset' | 'pause' | 'resume';
export type GuestOs = 'linux' | 'other';
export type TaskState = 'queued' | 'running' | 'success' | 'error';
export type Severity = 'info' | 'warning' | 'error';
export type Role = 'Administrator' | 'Operator' | 'ReadOnly' | 'NoAccess';
export type Privilege =
  | 'System.View'
  | 'VirtualMachine.Interact.Power'
  | 'VirtualMachine.Interact.Console'
  | 'VirtualMachine.Config'
  | 'Datastore.FileManagement'
  | 'Datastore.Browse'
  | 'Authorization.ModifyPermissions'
  | 'Host.Config';

export const ROLES: Role[] = ['Administrator', 'Operator', 'ReadOnly', 'NoAccess'];

export interface ErrorInfo {
  code: string;
  message: string;
}

export interface DiskCreate {
  size_bytes?: number | null;
  import?: string | null;
  readonly?: boolean;
  serial?: string | null;
}

export interface NicConfig {
  tap?: string | null;
  mac?: string | null;
}

export interface BootCreate {
  kernel: string;
  initrd?: string | null;
  cmdline: string;
}

export interface VmCreate {
  name: string;
  datastore?: string | null;
  vcpus: number;
  memory_mib: number;
  disks: DiskCreate[];
  nics: NicConfig[];
  boot: BootCreate;
  guest_os: GuestOs;
  notes: string;
  autostart: boolean;
}

export interface DiskConfig {
  file: string;
  format: string;
  readonly: boolean;
  serial: string;
}

export interface BootConfig {
  kernel: string;
  initrd?: string | null;
  cmdline: string;
}

export interface VmConfig {
  name: string;
  vcpus: number;
  memory_mib: number;
  disks: DiskConfig[];
  nics: NicConfig[];
  boot: BootConfig;
  guest_os: GuestOs;
  notes: string;
}

export interface VmEdit {
  vcpus?: number;
  memory_mib?: number;
  cmdline?: string;
  guest_os?: GuestOs;
  notes?: string;
  autostart?: boolean;
}

export interface VmRuntime {
  pid: number;
  uptime_ms: number;
  boots: number;
  cpu_ms: number;
  rss_bytes: number;
}

export interface VmInfo {
  name: string;
  datastore: string;
  path: string;
  power_state: PowerState;
  config: VmConfig;
  autostart: boolean;
  ip?: string | null;
  runtime?: VmRuntime | null;
  /** What the signed-in user may do on this VM (its VM permission, else the host one). */
  privileges?: Privilege[];
}

export interface Task {
  id: number;
  kind: string;
  target?: string | null;
  user: string;
  state: TaskState;
  progress: number;
  error?: ErrorInfo | null;
  started_ms: number;
  finished_ms?: number | null;
}

export interface Event {
  id: number;
  time_ms: number;
  kind: string;
  severity: Severity;
  user?: string | null;
  target?: string | null;
  message: string;
}

export interface Page<T> {
  items: T[];
  next?: number | null;
}

export interface Datastore {
  name: string;
  path: string;
  capacity_bytes: number;
  free_bytes: number;
}

export interface FileEntry {
  name: string;
  kind: 'file' | 'dir';
  size_bytes: number;
  modified_ms: number;
}

export interface Session {
  token: string;
  user: string;
  expires_ms: number;
  host_privileges: Privilege[];
}

export interface WhoAmI {
  user: string;
  host_privileges: Privilege[];
}

export interface User {
  name: string;
  created_ms: number;
}

export interface Permission {
  user: string;
  role: Role;
  entity: string;
}

export interface RoleInfo {
  role: Role;
  privileges: Privilege[];
}

export interface CpuInfo {
  model: string;
  vendor: string;
  cores: number;
  threads: number;
  flags: string[];
}

export interface KvmInfo {
  usable: boolean;
  api_version?: number | null;
  module?: string | null;
  nested: boolean;
  in_vm: boolean;
  error?: string | null;
}

export interface CompatCheck {
  name: string;
  status: 'ok' | 'warning' | 'fail';
  detail: string;
}

export interface PciDevice {
  address: string;
  vendor_id: string;
  device_id: string;
  class: string;
  driver?: string | null;
  iommu_group?: number | null;
}

export interface HostNic {
  name: string;
  mac: string;
  mtu: number;
  state: string;
  speed_mbps?: number | null;
  physical: boolean;
}

export interface HostInfo {
  hostname: string;
  keel_version: string;
  kernel: string;
  uptime_s: number;
  cpu: CpuInfo;
  memory_total_bytes: number;
  memory_free_bytes: number;
  kvm: KvmInfo;
  compatibility: CompatCheck[];
  pci_devices: PciDevice[];
  nics: HostNic[];
}
