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

/** A VM's NIC in its configuration: on a port group (keeld makes its TAP
 * at power-on), or `tap` alone for a host TAP outside keeld's switches. */
export interface NicConfig {
  port_group?: string | null;
  tap?: string | null;
  mac?: string | null;
  /** Link up at power-on (default true). */
  connected?: boolean;
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
  /** Its first NIC's address, when keeld's DHCP server knows it. */
  ip?: string | null;
  /** The NICs with their TAPs and addresses. */
  nics?: NicInfo[];
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

// ---- virtual networking (crates/hostd-api/src/network.rs) ------------------

/** The switch and port group keeld creates on first start. */
export const DEFAULT_SWITCH = 'vSwitch0';
export const DEFAULT_PORT_GROUP = 'VM Network';

/** ESXi's words for a security policy. */
export type Accept = 'accept' | 'reject';

export interface NatInfo {
  /** Like `10.77.0.0/24`. */
  subnet: string;
  /** The host's address on the switch (the guests' router). */
  gateway: string;
  dhcp: boolean;
}

/** A standard switch: a Linux bridge keeld owns. */
export interface Switch {
  name: string;
  bridge: string;
  mtu: number;
  uplinks: string[];
  nat?: NatInfo | null;
  port_groups: string[];
  /** `up`, else what is wrong. */
  status: string;
}

export interface NatCreate {
  subnet: string;
  dhcp?: boolean;
}

export interface SwitchCreate {
  name: string;
  mtu?: number | null;
  uplinks?: string[];
  nat?: NatCreate | null;
}

export interface SwitchEdit {
  mtu?: number;
  /** Replaces the list. */
  uplinks?: string[];
}

/** Average and peak in kbit/s (1000 bit/s), burst in KiB. */
export interface Shaping {
  average_kbps: number;
  peak_kbps?: number | null;
  burst_kib?: number | null;
}

export interface NetPolicy {
  promiscuous: Accept;
  mac_changes: Accept;
  forged_transmits: Accept;
  shaping?: Shaping | null;
}

/** keeld's defaults (and ESXi's): promiscuous reject, the others accept. */
export const DEFAULT_POLICY: NetPolicy = {
  promiscuous: 'reject',
  mac_changes: 'accept',
  forged_transmits: 'accept',
  shaping: null,
};

export interface PortGroup {
  name: string;
  switch: string;
  /** 0 untagged, 1–4094 tagged. */
  vlan: number;
  policy: NetPolicy;
  /** VMs with a NIC on it. */
  vms: string[];
}

export interface PortGroupCreate {
  name: string;
  switch: string;
  vlan?: number;
  policy?: NetPolicy;
}

export interface PortGroupEdit {
  vlan?: number;
  policy?: NetPolicy;
}

/** A VM's NIC as it is now. */
export interface NicInfo {
  index: number;
  port_group?: string | null;
  mac: string;
  connected: boolean;
  /** The TAP on the host while the VM runs. */
  tap?: string | null;
  ip?: string | null;
}

export interface NicCreate {
  port_group?: string | null;
  mac?: string | null;
  connected?: boolean;
}

export interface NicEdit {
  port_group?: string;
  mac?: string;
  connected?: boolean;
}
