// Validation before submit: the same rules keeld applies, so that a person
// sees what is wrong next to the field instead of after a round trip. The
// API still checks everything.

import type { GuestOs, VmCreate } from './types';

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
}

export type WizardErrors = Partial<Record<keyof WizardForm, string>>;

export const MIN_MEMORY_MIB = 16;
export const MAX_VCPUS = 255;
export const MAX_CMDLINE = 4096;

/** The wizard's steps and the fields each one checks. */
export const WIZARD_STEPS: { title: string; fields: (keyof WizardForm)[] }[] = [
  { title: 'Name and guest OS', fields: ['name', 'guestOs'] },
  { title: 'Storage', fields: ['datastore'] },
  { title: 'Hardware', fields: ['vcpus', 'memoryMib', 'diskSize', 'tap', 'mac'] },
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
    const tap = tapProblem(f.tap);
    if (tap) e.tap = tap;
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
    nics: f.nic ? [{ tap: f.tap.trim() || null, mac: f.mac.trim() || null }] : [],
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
