// Live figures for the charts: Prometheus text from /metrics (the host's
// CPU seconds by mode, its memory) and VM CPU time deltas.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition (comments skipped, label values
 * unescaped). Lines that do not parse are skipped. */
export function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$/.exec(line);
    if (!m) continue;
    const value = parseValue(m[4]);
    if (value === null) continue;
    const labels = m[3] !== undefined ? parseLabels(m[3]) : {};
    if (labels === null) continue;
    out.push({ name: m[1], labels, value });
  }
  return out;
}

function parseValue(s: string): number | null {
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (s === 'NaN') return NaN;
  const v = Number(s);
  return Number.isNaN(v) ? null : v;
}

function parseLabels(s: string): Record<string, string> | null {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < s.length) {
    while (s[i] === ',' || s[i] === ' ') i++;
    if (i >= s.length) break;
    const eq = s.indexOf('=', i);
    if (eq < 0 || s[eq + 1] !== '"') return null;
    const key = s.slice(i, eq).trim();
    let j = eq + 2;
    let val = '';
    for (;;) {
      if (j >= s.length) return null;
      const c = s[j];
      if (c === '\\') {
        const n = s[j + 1];
        val += n === 'n' ? '\n' : n;
        j += 2;
      } else if (c === '"') {
        j++;
        break;
      } else {
        val += c;
        j++;
      }
    }
    labels[key] = val;
    i = j;
  }
  return labels;
}

export function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

/** The host's CPU seconds: busy and all, over every CPU. */
export interface CpuTimes {
  busy: number;
  total: number;
}

export function hostCpuTimes(samples: Sample[]): CpuTimes | undefined {
  let total = 0;
  let idle = 0;
  let seen = false;
  for (const s of samples) {
    if (s.name !== 'keel_host_cpu_seconds_total') continue;
    seen = true;
    total += s.value;
    if (s.labels.mode === 'idle' || s.labels.mode === 'iowait') idle += s.value;
  }
  return seen ? { busy: total - idle, total } : undefined;
}

/** Busy fraction (0–1) between two readings; undefined when time did not
 * advance (or the counters went back, as after a reboot). */
export function cpuFraction(prev: CpuTimes | undefined, cur: CpuTimes | undefined): number | undefined {
  if (!prev || !cur) return undefined;
  const dt = cur.total - prev.total;
  const db = cur.busy - prev.busy;
  if (dt <= 0 || db < 0) return undefined;
  return Math.min(1, db / dt);
}

export interface HostFigures {
  cpu?: CpuTimes;
  memTotal?: number;
  memUsed?: number;
}

export function hostFigures(text: string): HostFigures {
  const s = parsePrometheus(text);
  const total = value(s, 'keel_host_memory_total_bytes');
  const avail = value(s, 'keel_host_memory_available_bytes');
  return {
    cpu: hostCpuTimes(s),
    memTotal: total,
    memUsed: total !== undefined && avail !== undefined ? Math.max(0, total - avail) : undefined,
  };
}

/** A VM's CPU use between two readings of its VMM's CPU time, as a fraction
 * of its vCPUs (1 = every vCPU busy). */
export function vmCpuFraction(
  prev: { cpu_ms: number; at: number } | undefined,
  cur: { cpu_ms: number; at: number },
  vcpus: number,
): number | undefined {
  if (!prev) return undefined;
  const dt = cur.at - prev.at;
  const dc = cur.cpu_ms - prev.cpu_ms;
  if (dt <= 0 || dc < 0) return undefined;
  return Math.min(1, dc / dt / Math.max(1, vcpus));
}

/** A bounded series for a chart: times (seconds) and values. */
export class Series {
  readonly times: number[] = [];
  readonly values: (number | null)[][];

  constructor(
    readonly lines: number,
    readonly max = 150,
  ) {
    this.values = Array.from({ length: lines }, () => []);
  }

  push(timeMs: number, vals: (number | null | undefined)[]): void {
    this.times.push(timeMs / 1000);
    this.values.forEach((arr, i) => arr.push(vals[i] ?? null));
    while (this.times.length > this.max) {
      this.times.shift();
      this.values.forEach((arr) => arr.shift());
    }
  }

  last(line = 0): number | null {
    const arr = this.values[line];
    for (let i = arr.length - 1; i >= 0; i--) if (arr[i] !== null) return arr[i];
    return null;
  }

  data(): [number[], ...(number | null)[][]] {
    return [this.times.slice(), ...this.values.map((v) => v.slice())];
  }
}
