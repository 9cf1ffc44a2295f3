import { describe, expect, it } from 'vitest';

import { cpuFraction, hostCpuTimes, hostFigures, parsePrometheus, Series, value, vmCpuFraction } from './metrics';

const TEXT = `# HELP keel_host_memory_total_bytes Memory of the host.
# TYPE keel_host_memory_total_bytes gauge
keel_host_memory_total_bytes 8589934592
keel_host_memory_available_bytes 6442450944
keel_host_cpu_seconds_total{mode="user"} 100
keel_host_cpu_seconds_total{mode="system"} 50
keel_host_cpu_seconds_total{mode="idle"} 800
keel_host_cpu_seconds_total{mode="iowait"} 50
keel_vm_cpu_seconds_total{vm="we\\"ird\\\\name\\n"} 1.5
keel_x{a="1",b="x,y"} +Inf
this is not a sample
keel_bad{a=1} 3
`;

describe('Prometheus text', () => {
  it('parses samples, labels and escapes; skips what does not parse', () => {
    const s = parsePrometheus(TEXT);
    expect(value(s, 'keel_host_memory_total_bytes')).toBe(8589934592);
    expect(value(s, 'keel_host_cpu_seconds_total', { mode: 'idle' })).toBe(800);
    expect(s.find((x) => x.name === 'keel_vm_cpu_seconds_total')?.labels.vm).toBe('we"ird\\name\n');
    expect(value(s, 'keel_x', { b: 'x,y' })).toBe(Infinity);
    expect(value(s, 'keel_bad')).toBeUndefined();
    expect(s.some((x) => x.name === 'this')).toBe(false);
  });

  it("gives the host's busy share between two readings", () => {
    const a = hostCpuTimes(parsePrometheus(TEXT));
    expect(a).toEqual({ busy: 150, total: 1000 });
    const b = { busy: 180, total: 1100 };
    expect(cpuFraction(a, b)).toBeCloseTo(0.3);
    expect(cpuFraction(undefined, b)).toBeUndefined();
    expect(cpuFraction(b, b)).toBeUndefined();
    expect(cpuFraction(b, a)).toBeUndefined(); // counters went back
    expect(hostCpuTimes([])).toBeUndefined();
  });

  it('gives the used memory', () => {
    const f = hostFigures(TEXT);
    expect(f.memTotal).toBe(8 * 1024 ** 3);
    expect(f.memUsed).toBe(2 * 1024 ** 3);
    expect(hostFigures('').memUsed).toBeUndefined();
  });
});

describe('VM CPU', () => {
  it('is CPU time over wall time over vCPUs', () => {
    expect(vmCpuFraction({ cpu_ms: 1000, at: 0 }, { cpu_ms: 2000, at: 2000 }, 1)).toBeCloseTo(0.5);
    expect(vmCpuFraction({ cpu_ms: 1000, at: 0 }, { cpu_ms: 2000, at: 2000 }, 2)).toBeCloseTo(0.25);
    expect(vmCpuFraction({ cpu_ms: 0, at: 0 }, { cpu_ms: 9000, at: 2000 }, 1)).toBe(1);
    expect(vmCpuFraction(undefined, { cpu_ms: 1, at: 1 }, 1)).toBeUndefined();
    expect(vmCpuFraction({ cpu_ms: 5, at: 0 }, { cpu_ms: 1, at: 10 }, 1)).toBeUndefined();
  });
});

describe('Series', () => {
  it('keeps the last points and the latest known value', () => {
    const s = new Series(2, 3);
    s.push(1000, [1, 10]);
    s.push(2000, [null, 20]);
    expect(s.last(0)).toBe(1);
    s.push(3000, [3, undefined]);
    s.push(4000, [4, 40]);
    expect(s.data()).toEqual([
      [2, 3, 4],
      [null, 3, 4],
      [20, null, 40],
    ]);
    expect(new Series(1).last()).toBeNull();
  });
});
