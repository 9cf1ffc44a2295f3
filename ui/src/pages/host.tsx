// Host: summary, compatibility checks, live CPU and memory charts (from
// /metrics every 2 s), PCI devices and events.

import { useMemo, useRef, useState } from 'preact/hooks';

import { useApp } from '../context';
import { formatBytes, formatDuration, formatPercent } from '../format';
import { useLoad, usePoll } from '../hooks';
import { cpuFraction, hostFigures, Series, type CpuTimes } from '../metrics';
import { TimeChart } from '../ui/chart';
import { EventsList } from '../ui/events';
import { Facts, InlineError, Section, UsageBar } from '../ui/widgets';

export const SAMPLE_MS = 2000;

export function HostPage() {
  const { api, version } = useApp();
  const info = useLoad(() => api.host(), [version], 10000);
  const h = info.data;
  return (
    <div class="page">
      <h1 class="page-title">Host{h ? `: ${h.hostname}` : ''}</h1>
      <InlineError error={info.error} />
      {h && (
        <div class="grid-2">
          <Section title="Summary">
            <Facts
              rows={[
                ['Host name', h.hostname],
                ['Version', h.keel_version],
                ['Kernel', h.kernel],
                ['Uptime', formatDuration(h.uptime_s)],
                ['CPU', h.cpu.model || '—'],
                ['CPU vendor', h.cpu.vendor || '—'],
                ['Cores / logical CPUs', `${h.cpu.cores} / ${h.cpu.threads}`],
                ['Memory', <UsageBar label="Host memory" used={h.memory_total_bytes - h.memory_free_bytes} total={h.memory_total_bytes} />],
                [
                  'KVM',
                  h.kvm.usable
                    ? `usable${h.kvm.api_version ? `, API ${h.kvm.api_version}` : ''}${h.kvm.module ? `, ${h.kvm.module}` : ''}${h.kvm.nested ? ', nested' : ''}`
                    : `not usable${h.kvm.error ? `: ${h.kvm.error}` : ''}`,
                ],
                ['Runs in a VM', h.kvm.in_vm ? 'yes' : 'no'],
              ]}
            />
          </Section>
          <Section title="Compatibility">
            <ul class="checks" aria-label="Compatibility checks">
              {h.compatibility.map((c) => (
                <li key={c.name} class={`check check-${c.status}`}>
                  <span class="check-icon" role="img" aria-label={c.status}>
                    {c.status === 'ok' ? '✔' : c.status === 'warning' ? '!' : '✖'}
                  </span>
                  <span class="check-name">{c.name}</span>
                  <span class="check-detail">{c.detail}</span>
                </li>
              ))}
            </ul>
          </Section>
        </div>
      )}
      <HostCharts />
      {h && (
        <Section title={`PCI devices (${h.pci_devices.length})`}>
          <details>
            <summary>Show the host's PCI devices</summary>
            <div class="table-wrap">
              <table class="table compact" aria-label="PCI devices">
                <thead>
                  <tr>
                    <th scope="col">Address</th>
                    <th scope="col">Vendor:device</th>
                    <th scope="col">Class</th>
                    <th scope="col">Driver</th>
                    <th scope="col">IOMMU group</th>
                  </tr>
                </thead>
                <tbody>
                  {h.pci_devices.map((d) => (
                    <tr key={d.address}>
                      <td>{d.address}</td>
                      <td>
                        {d.vendor_id}:{d.device_id}
                      </td>
                      <td>{d.class}</td>
                      <td>{d.driver ?? '—'}</td>
                      <td>{d.iommu_group ?? '—'}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          </details>
        </Section>
      )}
      <Section title="Events">
        <EventsList load={(before, limit) => api.events(before, limit)} />
      </Section>
    </div>
  );
}

function HostCharts() {
  const { api } = useApp();
  const cpu = useMemo(() => new Series(1), []);
  const mem = useMemo(() => new Series(1), []);
  const prev = useRef<CpuTimes | undefined>(undefined);
  const [tick, setTick] = useState(0);
  const [error, setError] = useState<string>();
  const [memTotal, setMemTotal] = useState(0);
  usePoll(
    async () => {
      try {
        const f = hostFigures(await api.metrics());
        const now = Date.now();
        cpu.push(now, [cpuFraction(prev.current, f.cpu)]);
        prev.current = f.cpu;
        mem.push(now, [f.memUsed]);
        if (f.memTotal) setMemTotal(f.memTotal);
        setError(undefined);
        setTick((t) => t + 1);
      } catch (e) {
        setError(`Cannot read the host's metrics: ${e instanceof Error ? e.message : String(e)}`);
      }
    },
    SAMPLE_MS,
    [],
  );
  return (
    <Section title="Performance">
      <InlineError error={error} />
      <div class="grid-2">
        <TimeChart title="CPU" series={cpu} lines={[{ label: 'Host CPU', color: '#1f6feb' }]} version={tick} format={formatPercent} max={1} />
        <TimeChart
          title={`Memory${memTotal ? ` (of ${formatBytes(memTotal)})` : ''}`}
          series={mem}
          lines={[{ label: 'Used', color: '#8250df' }]}
          version={tick}
          format={formatBytes}
          max={memTotal || undefined}
        />
      </div>
    </Section>
  );
}
