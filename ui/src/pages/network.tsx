// Networking: the host's NICs. Virtual switches and port groups come with
// the networking issue; until then a VM's NIC is a TAP on the host.

import { useApp } from '../context';
import { useLoad } from '../hooks';
import { InlineError, Section } from '../ui/widgets';

export function NetworkPage() {
  const { api, version } = useApp();
  const host = useLoad(() => api.host(), [version], 10000);
  const nics = host.data?.nics ?? [];
  return (
    <div class="page">
      <h1 class="page-title">Networking</h1>
      <Section title="Virtual switches">
        <p>
          Virtual switches and port groups come with Keel's networking work. Until then each VM network adapter is a
          TAP interface on the host, named in the VM's configuration or created by keel-vmm for the VM's run.
        </p>
      </Section>
      <Section title="Physical and host network adapters">
        <InlineError error={host.error} />
        <div class="table-wrap">
          <table class="table" aria-label="Host network adapters">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">State</th>
                <th scope="col">MAC address</th>
                <th scope="col">MTU</th>
                <th scope="col">Speed</th>
                <th scope="col">Kind</th>
              </tr>
            </thead>
            <tbody>
              {nics.map((n) => (
                <tr key={n.name}>
                  <td>{n.name}</td>
                  <td>
                    <span class={`link link-${n.state}`}>{n.state}</span>
                  </td>
                  <td>
                    <code>{n.mac || '—'}</code>
                  </td>
                  <td>{n.mtu}</td>
                  <td>{n.speed_mbps ? `${n.speed_mbps} Mbit/s` : '—'}</td>
                  <td>{n.physical ? 'physical' : 'virtual'}</td>
                </tr>
              ))}
              {nics.length === 0 && !host.loading && (
                <tr>
                  <td colSpan={6} class="muted">
                    No network adapters reported.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
        </div>
      </Section>
    </div>
  );
}
