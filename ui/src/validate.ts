// Validation before submit: the same rules keeld applies, so that a person
// sees what is wrong next to the field instead of after a round trip. The
// API still checks everything.

import {
  DEFAULT_POLICY,
  DEFAULT_PORT_GROUP,
  type Accept,
  type GuestOs,
  type NetPolicy,
  type PortGroup,
  type PortGroupCreate,
  type PortGroupEdit,
  type Switch,
  type SwitchCreate,
  type SwitchEdit,
  type VmCreate,
} from './types';

export const MAX_NAME_LEN = 80;
/** Bytes a name may take (keeld's limit, for file names). */
export const MAX_NAME_BYTES = 200;

/** A VM, user or datastore name: 1–80 characters, no '/', no control
 * characters, not '.' or '..', no leading '.'. Returns the problem or null. */
export function nameProblem(name: string, what = 'Name'): string | null {
  if (name.length === 0) return `${what} is required`;
  if ([...name].length > MAX_NAME_LEN || new TextEncoder().encode(name).length > MAX_NAME_BYTES)
    return `${what} is longer than ${MAX_NAME_LEN} characters`;
  if (name.includes('/')) return `${what} may not contain '/'`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return `${what} may not contain control characters`;
  if (name.startsWith('.')) return `${what} may not start with '.'`;
  if (name.trim() !== name) return `${what} may not start or end with spaces`;
  return null;
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

/** "8G", "512 MiB", "1.5g", "4096" (bytes) → bytes, binary units; null
 * when it is not a size. */
export function parseSize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m) return null;
  const unit = SIZE_UNITS[m[2].toLowerCase()];
  if (unit === undefined) return null;
  const bytes = Math.round(parseFloat(m[1]) * unit);
  return Number.isSafeInteger(bytes) ? bytes : null;
}

/** A whole number in [min, max], or the problem. */
export function intProblem(text: string, what: string, min: number, max: number): string | null {
  const t = text.trim();
  if (t === '') return `${what} is required`;
  if (!/^\d+$/.test(t)) return `${what} must be a whole number`;
  const n = Number(t);
  if (n < min) return `${what} must be at least ${min}`;
  if (n > max) return `${what} must be at most ${max}`;
  return null;
}

/** A file for the VM: an absolute host path or `[datastore] path`. */
export function bootPathProblem(path: string, what: string, required: boolean): string | null {
  const p = path.trim();
  if (p === '') return required ? `${what} is required` : null;
  if (p.startsWith('/')) return p.includes('\0') ? `${what} is not a valid path` : null;
  const ds = /^\[([^\]]+)\]\s*(.+)$/.exec(p);
  if (ds) {
    if (nameProblem(ds[1], 'Datastore')) return `${what}: '${ds[1]}' is not a datastore name`;
    if (ds[2].split('/').includes('..')) return `${what} may not contain '..'`;
    return null;
  }
  return `${what} must be an absolute path on the host or '[datastore] path'`;
}

/** A Linux interface name: 1–15 characters, no '/', ':' or spaces. */
export function tapProblem(name: string): string | null {
  const t = name.trim();
  if (t === '') return null;
  if (t.length > 15) return 'A TAP name is at most 15 characters';
  if (/[/:\s]/.test(t) || t === '.' || t === '..') return "A TAP name may not contain '/', ':' or spaces";
  return null;
}

/** A unicast MAC address (`52:54:00:12:34:56`); empty generates one. */
export function macProblem(mac: string): string | null {
  const t = mac.trim();
  if (t === '') return null;
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(t)) return 'A MAC address looks like 52:54:00:12:34:56';
  if (parseInt(t.slice(0, 2), 16) & 1) return 'The MAC address must be unicast (first byte even)';
  return null;
}

/** What the wizard's form holds (text as typed). */
export interface WizardForm {
  name: string;
  guestOs: GuestOs;
  datastore: string;
  vcpus: string;
  memoryMib: string;
  diskSize: string;
  nic: boolean;
  /** The NIC's port group; '' for a host TAP outside keeld's switches. */
  portGroup: string;
  tap: string;
  mac: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  autostart: boolean;
  notes: string;
}

export function emptyWizard(datastore = 'datastore1'): WizardForm {
  return {
    name: '',
    guestOs: 'linux',
    datastore,
    vcpus: '1',
    memoryMib: '512',
    diskSize: '8G',
    nic: false,
    portGroup: DEFAULT_PORT_GROUP,
    tap: '',
    mac: '',
    kernel: '',
    initrd: '',
    cmdline: 'console=ttyS0',
    autostart: false,
    notes: '',
  };
}

/** What the wizard checks the form against. */
export interface WizardContext {
  existingNames: string[];
  /** Datastores and their free bytes. */
  datastores: { name: string; free_bytes: number }[];
  /** Logical CPUs of the host (the vCPU limit), when known. */
  hostThreads?: number;
  hostMemoryBytes?: number;
  /** The host's port groups, when known. */
  portGroups?: string[];
}

export type WizardErrors = Partial<Record<keyof WizardForm, string>>;

export const MIN_MEMORY_MIB = 16;
export const MAX_VCPUS = 255;
export const MAX_CMDLINE = 4096;

/** The wizard's steps and the fields each one checks. */
export const WIZARD_STEPS: { title: string; fields: (keyof WizardForm)[] }[] = [
  { title: 'Name and guest OS', fields: ['name', 'guestOs'] },
  { title: 'Storage', fields: ['datastore'] },
  { title: 'Hardware', fields: ['vcpus', 'memoryMib', 'diskSize', 'portGroup', 'tap', 'mac'] },
  { title: 'Boot', fields: ['kernel', 'initrd', 'cmdline'] },
  { title: 'Ready to complete', fields: [] },
];

export function validateWizard(f: WizardForm, ctx: WizardContext): WizardErrors {
  const e: WizardErrors = {};
  const name = nameProblem(f.name, 'The name');
  if (name) e.name = name;
  else if (ctx.existingNames.includes(f.name)) e.name = `A VM named '${f.name}' exists already`;

  const ds = ctx.datastores.find((d) => d.name === f.datastore);
  if (!f.datastore) e.datastore = 'Choose a datastore';
  else if (!ds) e.datastore = `No datastore '${f.datastore}'`;

  const maxCpus = Math.min(MAX_VCPUS, ctx.hostThreads && ctx.hostThreads > 0 ? ctx.hostThreads : MAX_VCPUS);
  const cpus = intProblem(f.vcpus, 'vCPUs', 1, maxCpus);
  if (cpus) e.vcpus = ctx.hostThreads && cpus.includes('at most') ? `${cpus} (the host's logical CPUs)` : cpus;

  const maxMib = ctx.hostMemoryBytes ? Math.floor(ctx.hostMemoryBytes / (1024 * 1024)) : 4 * 1024 * 1024;
  const mem = intProblem(f.memoryMib, 'Memory (MiB)', MIN_MEMORY_MIB, Math.max(MIN_MEMORY_MIB, maxMib));
  if (mem) e.memoryMib = ctx.hostMemoryBytes && mem.includes('at most') ? `${mem} (the host's memory)` : mem;

  if (f.diskSize.trim() !== '') {
    const bytes = parseSize(f.diskSize);
    if (bytes === null) e.diskSize = 'A size looks like 8G, 512M or 20GiB';
    else if (bytes < 1024 * 1024) e.diskSize = 'A disk is at least 1 MiB';
    else if (ds && bytes > ds.free_bytes)
      e.diskSize = `Larger than the free space of ${ds.name}`;
  }

  if (f.nic) {
    if (f.portGroup) {
      if (ctx.portGroups && ctx.portGroups.length > 0 && !ctx.portGroups.includes(f.portGroup))
        e.portGroup = `No port group '${f.portGroup}'`;
    } else {
      const tap = f.tap.trim() === '' ? 'Name the host TAP (or choose a port group)' : tapProblem(f.tap);
      if (tap) e.tap = tap;
    }
    const mac = macProblem(f.mac);
    if (mac) e.mac = mac;
  }

  const kernel = bootPathProblem(f.kernel, 'The kernel', true);
  if (kernel) e.kernel = kernel;
  const initrd = bootPathProblem(f.initrd, 'The initrd', false);
  if (initrd) e.initrd = initrd;
  if (f.cmdline.length > MAX_CMDLINE) e.cmdline = `The command line is longer than ${MAX_CMDLINE} characters`;
  return e;
}

/** The errors of one step's fields only. */
export function stepErrors(all: WizardErrors, step: number): WizardErrors {
  const fields = WIZARD_STEPS[step]?.fields ?? [];
  const out: WizardErrors = {};
  for (const f of fields) if (all[f]) out[f] = all[f];
  return out;
}

/** The API request for a valid form. */
export function wizardToSpec(f: WizardForm): VmCreate {
  const disk = f.diskSize.trim() ? parseSize(f.diskSize) : null;
  return {
    name: f.name,
    datastore: f.datastore || null,
    vcpus: Number(f.vcpus.trim()),
    memory_mib: Number(f.memoryMib.trim()),
    disks: disk ? [{ size_bytes: disk }] : [],
    nics: f.nic
      ? [
          f.portGroup
            ? { port_group: f.portGroup, mac: f.mac.trim() || null }
            : { tap: f.tap.trim() || null, mac: f.mac.trim() || null },
        ]
      : [],
    boot: {
      kernel: f.kernel.trim(),
      initrd: f.initrd.trim() || null,
      cmdline: f.cmdline,
    },
    guest_os: f.guestOs,
    notes: f.notes,
    autostart: f.autostart,
  };
}

// ---- virtual networking ----------------------------------------------------

export const MIN_MTU = 68;
export const MAX_MTU = 9000;
export const MAX_VLAN = 4094;
/** The prefix lengths keeld takes for a NAT subnet. */
export const MIN_PREFIX = 8;
export const MAX_PREFIX = 29;
/** Upper bounds for shaping fields (100 Gbit/s, 1 GiB): typos, not policy. */
export const MAX_KBPS = 100_000_000;
export const MAX_BURST_KIB = 1024 * 1024;

/** A VLAN ID: 0 (untagged) or 1–4094. */
export function vlanProblem(text: string): string | null {
  return intProblem(text, 'The VLAN ID', 0, MAX_VLAN);
}

/** A switch's MTU: 68–9000. */
export function mtuProblem(text: string): string | null {
  return intProblem(text, 'The MTU', MIN_MTU, MAX_MTU);
}

/** An IPv4 subnet in CIDR form (`10.78.0.0/24`, /8–/29, the network's own
 * address). keeld also refuses one that overlaps the host's networks. */
export function subnetProblem(text: string): string | null {
  const t = text.trim();
  if (t === '') return 'The subnet is required';
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(t);
  if (!m) return 'A subnet looks like 10.78.0.0/24';
  const octets = m.slice(1, 5).map(Number);
  if (octets.some((o) => o > 255)) return 'Each part of an IPv4 address is 0–255';
  const prefix = Number(m[5]);
  if (prefix < MIN_PREFIX || prefix > MAX_PREFIX) return `The prefix length must be /${MIN_PREFIX} to /${MAX_PREFIX}`;
  const addr = ((octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]) >>> 0;
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const net = (addr & mask) >>> 0;
  if (net !== addr) {
    const n = [net >>> 24, (net >>> 16) & 255, (net >>> 8) & 255, net & 255].join('.');
    return `${t} is not a network address: did you mean ${n}/${prefix}?`;
  }
  return null;
}

/** What the switch dialog holds (text as typed). */
export interface SwitchForm {
  name: string;
  mtu: string;
  uplinks: string[];
  nat: boolean;
  subnet: string;
  dhcp: boolean;
}

export type SwitchErrors = Partial<Record<'name' | 'mtu' | 'subnet', string>>;

export function emptySwitchForm(): SwitchForm {
  return { name: '', mtu: '1500', uplinks: [], nat: false, subnet: '', dhcp: true };
}

export function switchToForm(sw: Switch): SwitchForm {
  return {
    name: sw.name,
    mtu: String(sw.mtu),
    uplinks: [...sw.uplinks],
    nat: !!sw.nat,
    subnet: sw.nat?.subnet ?? '',
    dhcp: sw.nat?.dhcp ?? true,
  };
}

/** In edit mode only what can change (MTU, uplinks) is checked. A name in
 * use, an uplink in use or a subnet that overlaps is keeld's to refuse
 * (it knows the host as it is now): its message is shown. */
export function validateSwitchForm(f: SwitchForm, editing = false): SwitchErrors {
  const e: SwitchErrors = {};
  if (!editing) {
    const name = nameProblem(f.name, 'The name');
    if (name) e.name = name;
    if (f.nat) {
      const subnet = subnetProblem(f.subnet);
      if (subnet) e.subnet = subnet;
    }
  }
  const mtu = mtuProblem(f.mtu);
  if (mtu) e.mtu = mtu;
  return e;
}

export function switchFormToCreate(f: SwitchForm): SwitchCreate {
  return {
    name: f.name,
    mtu: Number(f.mtu.trim()),
    uplinks: [...f.uplinks],
    nat: f.nat ? { subnet: f.subnet.trim(), dhcp: f.dhcp } : null,
  };
}

/** Only what changed; empty when nothing did. */
export function switchFormToEdit(f: SwitchForm, sw: Switch): SwitchEdit {
  const edit: SwitchEdit = {};
  const mtu = Number(f.mtu.trim());
  if (mtu !== sw.mtu) edit.mtu = mtu;
  const a = [...f.uplinks].sort();
  const b = [...sw.uplinks].sort();
  if (a.length !== b.length || a.some((u, i) => u !== b[i])) edit.uplinks = [...f.uplinks];
  return edit;
}

/** What the port group dialog holds (text as typed). */
export interface PortGroupForm {
  name: string;
  switch: string;
  vlan: string;
  promiscuous: Accept;
  macChanges: Accept;
  forgedTransmits: Accept;
  shaping: boolean;
  averageKbps: string;
  peakKbps: string;
  burstKib: string;
}

export type PortGroupErrors = Partial<Record<'name' | 'switch' | 'vlan' | 'averageKbps' | 'peakKbps' | 'burstKib', string>>;

export function emptyPortGroupForm(sw = ''): PortGroupForm {
  return {
    name: '',
    switch: sw,
    vlan: '0',
    promiscuous: DEFAULT_POLICY.promiscuous,
    macChanges: DEFAULT_POLICY.mac_changes,
    forgedTransmits: DEFAULT_POLICY.forged_transmits,
    shaping: false,
    averageKbps: '',
    peakKbps: '',
    burstKib: '',
  };
}

export function portGroupToForm(pg: PortGroup): PortGroupForm {
  const s = pg.policy.shaping;
  return {
    name: pg.name,
    switch: pg.switch,
    vlan: String(pg.vlan),
    promiscuous: pg.policy.promiscuous,
    macChanges: pg.policy.mac_changes,
    forgedTransmits: pg.policy.forged_transmits,
    shaping: !!s,
    averageKbps: s ? String(s.average_kbps) : '',
    peakKbps: s?.peak_kbps != null ? String(s.peak_kbps) : '',
    burstKib: s?.burst_kib != null ? String(s.burst_kib) : '',
  };
}

/** `switches`: the switches' names. In edit mode the name and switch are
 * fixed (PATCH cannot change them). A name in use is keeld's to refuse:
 * its message is shown. */
export function validatePortGroupForm(f: PortGroupForm, switches: string[], editing = false): PortGroupErrors {
  const e: PortGroupErrors = {};
  if (!editing) {
    const name = nameProblem(f.name, 'The name');
    if (name) e.name = name;
    if (!f.switch) e.switch = 'Choose a virtual switch';
    else if (switches.length > 0 && !switches.includes(f.switch)) e.switch = `No virtual switch '${f.switch}'`;
  }
  const vlan = vlanProblem(f.vlan);
  if (vlan) e.vlan = vlan;
  if (f.shaping) {
    const avg = intProblem(f.averageKbps, 'The average bandwidth', 1, MAX_KBPS);
    if (avg) e.averageKbps = avg;
    if (f.peakKbps.trim() !== '') {
      const peak = intProblem(f.peakKbps, 'The peak bandwidth', 1, MAX_KBPS);
      if (peak) e.peakKbps = peak;
      else if (!avg && Number(f.peakKbps.trim()) < Number(f.averageKbps.trim()))
        e.peakKbps = 'The peak bandwidth must be at least the average';
    }
    if (f.burstKib.trim() !== '') {
      const burst = intProblem(f.burstKib, 'The burst size', 1, MAX_BURST_KIB);
      if (burst) e.burstKib = burst;
    }
  }
  return e;
}

export function portGroupFormPolicy(f: PortGroupForm): NetPolicy {
  return {
    promiscuous: f.promiscuous,
    mac_changes: f.macChanges,
    forged_transmits: f.forgedTransmits,
    shaping: f.shaping
      ? {
          average_kbps: Number(f.averageKbps.trim()),
          peak_kbps: f.peakKbps.trim() ? Number(f.peakKbps.trim()) : null,
          burst_kib: f.burstKib.trim() ? Number(f.burstKib.trim()) : null,
        }
      : null,
  };
}

export function portGroupFormToCreate(f: PortGroupForm): PortGroupCreate {
  return { name: f.name, switch: f.switch, vlan: Number(f.vlan.trim()), policy: portGroupFormPolicy(f) };
}

function samePolicy(a: NetPolicy, b: NetPolicy): boolean {
  const s = (p: NetPolicy) =>
    JSON.stringify([
      p.promiscuous,
      p.mac_changes,
      p.forged_transmits,
      p.shaping ? [p.shaping.average_kbps, p.shaping.peak_kbps ?? null, p.shaping.burst_kib ?? null] : null,
    ]);
  return s(a) === s(b);
}

/** Only what changed; empty when nothing did. */
export function portGroupFormToEdit(f: PortGroupForm, pg: PortGroup): PortGroupEdit {
  const edit: PortGroupEdit = {};
  const vlan = Number(f.vlan.trim());
  if (vlan !== pg.vlan) edit.vlan = vlan;
  const policy = portGroupFormPolicy(f);
  if (!samePolicy(policy, pg.policy)) edit.policy = policy;
  return edit;
}
