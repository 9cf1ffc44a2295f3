// Formatting for people: sizes, durations, times, states.

import type { NetPolicy, PowerState, Shaping, Task, TaskState } from './types';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 → "1.5 KiB"; three significant digits at most. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '—';
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${v} B`;
  const digits = v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${trimZeros(v.toFixed(digits))} ${UNITS[i]}`;
}

export function formatMiB(mib: number): string {
  return formatBytes(mib * 1024 * 1024);
}

function trimZeros(s: string): string {
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

/** 93784 s → "1 d 2 h", 3725 → "1 h 2 min", 65 → "1 min 5 s". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '—';
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d > 0) return h ? `${d} d ${h} h` : `${d} d`;
  if (h > 0) return m ? `${h} h ${m} min` : `${h} h`;
  if (m > 0) return sec ? `${m} min ${sec} s` : `${m} min`;
  return `${sec} s`;
}

/** A Unix-millisecond time as local date and time (ISO-like, sortable). */
export function formatTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function formatPercent(fraction: number): string {
  if (!Number.isFinite(fraction)) return '—';
  const pct = Math.max(0, Math.min(100, fraction * 100));
  return `${pct < 10 ? trimZeros(pct.toFixed(1)) : Math.round(pct)} %`;
}

export const POWER_LABELS: Record<PowerState, string> = {
  poweredOn: 'Powered on',
  poweredOff: 'Powered off',
  paused: 'Paused',
  crashed: 'Crashed',
};

export function powerLabel(s: PowerState): string {
  return POWER_LABELS[s] ?? s;
}

const TASK_NAMES: Record<string, string> = {
  'vm.create': 'Create VM',
  'vm.clone': 'Clone VM',
  'vm.power-on': 'Power on VM',
  'vm.power-off': 'Power off VM',
  'vm.shutdown': 'Shut down guest',
  'vm.power-shutdown': 'Shut down guest',
  'vm.reset': 'Reset VM',
  'vm.power-reset': 'Reset VM',
  'vm.pause': 'Pause VM',
  'vm.power-pause': 'Pause VM',
  'vm.resume': 'Resume VM',
  'vm.power-resume': 'Resume VM',
};

/** `vm.power-on` → "Power on VM"; unknown kinds are shown as they are. */
export function taskName(kind: string): string {
  const known = TASK_NAMES[kind];
  if (known) return known;
  const words = kind.replace(/^[a-z]+\./, '').replace(/[-_.]/g, ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** `vm:web1` → "web1", `host` → "Host". */
export function targetName(target: string | null | undefined): string {
  if (!target) return '—';
  if (target === 'host') return 'Host';
  const i = target.indexOf(':');
  return i >= 0 ? target.slice(i + 1) : target;
}

export const TASK_STATE_LABELS: Record<TaskState, string> = {
  queued: 'Queued',
  running: 'Running',
  success: 'Completed',
  error: 'Failed',
};

export function taskDone(t: Pick<Task, 'state'>): boolean {
  return t.state === 'success' || t.state === 'error';
}

/** How long a task ran (or runs, at `now`). */
export function taskDuration(t: Pick<Task, 'started_ms' | 'finished_ms'>, now: number): string {
  const end = t.finished_ms ?? now;
  return formatDuration(Math.max(0, end - t.started_ms) / 1000);
}

/** A port group's VLAN: "none" for 0 (untagged). */
export function vlanLabel(vlan: number): string {
  return vlan === 0 ? 'none' : String(vlan);
}

/** 1500 → "1.5 Mbit/s", 800 → "800 kbit/s" (kbit/s = 1000 bit/s). */
export function formatKbps(kbps: number): string {
  if (!Number.isFinite(kbps) || kbps < 0) return '—';
  if (kbps >= 1_000_000) return `${trimZeros((kbps / 1_000_000).toFixed(2))} Gbit/s`;
  if (kbps >= 1000) return `${trimZeros((kbps / 1000).toFixed(2))} Mbit/s`;
  return `${kbps} kbit/s`;
}

/** "1 Mbit/s average, 2 Mbit/s peak, 64 KiB burst" (peak and burst as
 * keeld defaults them when not set). */
export function shapingSummary(s: Shaping): string {
  const peak = s.peak_kbps ?? s.average_kbps;
  const burst = s.burst_kib ?? 64;
  return `${formatKbps(s.average_kbps)} average, ${formatKbps(peak)} peak, ${burst} KiB burst`;
}

/** One line for a table: the security policy, then shaping. */
export function policySummary(p: NetPolicy): string {
  const security = `Promiscuous ${p.promiscuous}, MAC changes ${p.mac_changes}, forged transmits ${p.forged_transmits}`;
  return `${security}; ${p.shaping ? `shaping ${shapingSummary(p.shaping)}` : 'no shaping'}`;
}
