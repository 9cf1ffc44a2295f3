// Networking: standard virtual switches (Linux bridges keeld owns, with
// uplinks and an optional NAT network), their port groups (VLAN and
// policy), and the host's network adapters. Changes need Host.Config.

import { Fragment } from 'preact';
import { useState } from 'preact/hooks';

import { useApp } from '../context';
import { policySummary, vlanLabel } from '../format';
import { useLoad } from '../hooks';
import { hostNicRoles } from '../netinfo';
import { missing } from '../privileges';
import { href } from '../route';
import type { HostNic, PortGroup, Switch } from '../types';
import { Button, Confirm, InlineError, Section } from '../ui/widgets';
import { PortGroupDialog, SwitchDialog } from './network-dialogs';

type Dialog =
  | { kind: 'switch'; sw?: Switch }
  | { kind: 'delete-switch'; sw: Switch }
  | { kind: 'portgroup'; pg?: PortGroup }
  | { kind: 'delete-portgroup'; pg: PortGroup };

export function NetworkPage() {
  const ctx = useApp();
  const { api, privs, version } = ctx;
  const host = useLoad(() => api.host(), [version], 10000);
  const switches = useLoad(() => api.switches(), [version], 5000);
  const portGroups = useLoad(() => api.portGroups(), [version], 5000);
  const [dialog, setDialog] = useState<Dialog | null>(null);
  const reason = missing(privs, 'Host.Config');
  const sws = switches.data ?? [];
  const pgs = portGroups.data ?? [];
  const nics = host.data?.nics ?? [];
  const reload = () => {
    switches.reload();
    portGroups.reload();
    host.reload();
  };
  const close = () => setDialog(null);

  return (
    <div class="page">
      <h1 class="page-title">Networking</h1>
      <Section
        title="Virtual switches"
        actions={
          <Button kind="primary" reason={reason} onClick={() => setDialog({ kind: 'switch' })}>
            Add standard virtual switch
          </Button>
        }
      >
        <InlineError error={switches.error} />
        <SwitchesTable switches={sws} loading={switches.loading} reason={reason} onEdit={(sw) => setDialog({ kind: 'switch', sw })} onDelete={(sw) => setDialog({ kind: 'delete-switch', sw })} />
      </Section>
      <Section
        title="Port groups"
        actions={
          <Button
            kind="primary"
            reason={reason}
            disabled={sws.length === 0}
            title={sws.length === 0 ? 'Add a virtual switch first' : undefined}
            onClick={() => setDialog({ kind: 'portgroup' })}
          >
            Add port group
          </Button>
        }
      >
        <InlineError error={portGroups.error} />
        <PortGroupsTable portGroups={pgs} loading={portGroups.loading} reason={reason} onEdit={(pg) => setDialog({ kind: 'portgroup', pg })} onDelete={(pg) => setDialog({ kind: 'delete-portgroup', pg })} />
      </Section>
      <Section title="Physical and host network adapters">
        <InlineError error={host.error} />
        <HostNicsTable nics={nics} loading={host.loading} switches={sws} />
      </Section>

      {dialog?.kind === 'switch' && <SwitchDialog sw={dialog.sw} switches={sws} hostNics={nics} onClose={close} onDone={() => (reload(), ctx.changed())} />}
      {dialog?.kind === 'portgroup' && <PortGroupDialog pg={dialog.pg} switches={sws} onClose={close} onDone={() => (reload(), ctx.changed())} />}
      {dialog?.kind === 'delete-switch' && (
        <Confirm
          title={`Delete ${dialog.sw.name}?`}
          message={
            <p>
              This removes the virtual switch <strong>{dialog.sw.name}</strong> and its bridge <code>{dialog.sw.bridge}</code> from the
              host{dialog.sw.uplinks.length ? `, releasing its uplinks ${dialog.sw.uplinks.join(', ')}` : ''}
              {dialog.sw.nat ? `, with its NAT network ${dialog.sw.nat.subnet}` : ''}.
              {dialog.sw.port_groups.length > 0 &&
                ` It has the port groups ${dialog.sw.port_groups.join(', ')}: keeld deletes a switch only once they are gone.`}
            </p>
          }
          action="Delete"
          danger
          onClose={close}
          onConfirm={async () => {
            try {
              await api.switchDelete(dialog.sw.name);
              ctx.notify('info', `Deleted virtual switch ${dialog.sw.name}`);
              reload();
              ctx.changed();
            } catch (e) {
              ctx.fail(`Delete ${dialog.sw.name}`, e);
            }
            close();
          }}
        />
      )}
      {dialog?.kind === 'delete-portgroup' && (
        <Confirm
          title={`Delete port group ${dialog.pg.name}?`}
          message={
            <p>
              This removes the port group <strong>{dialog.pg.name}</strong> from {dialog.pg.switch}.
              {dialog.pg.vms.length > 0 && ` VMs with a NIC on it: ${dialog.pg.vms.join(', ')} (a port group in use cannot be deleted).`}
            </p>
          }
          action="Delete"
          danger
          onClose={close}
          onConfirm={async () => {
            try {
              await api.portGroupDelete(dialog.pg.name);
              ctx.notify('info', `Deleted port group ${dialog.pg.name}`);
              reload();
              ctx.changed();
            } catch (e) {
              ctx.fail(`Delete port group ${dialog.pg.name}`, e);
            }
            close();
          }}
        />
      )}
    </div>
  );
}

function Status({ status }: { status: string }) {
  const up = status === 'up';
  return (
    <span class={`link link-${up ? 'up' : 'down'}`} title={up ? undefined : status}>
      {status}
    </span>
  );
}

function SwitchesTable({
  switches,
  loading,
  reason,
  onEdit,
  onDelete,
}: {
  switches: Switch[];
  loading: boolean;
  reason?: string;
  onEdit: (sw: Switch) => void;
  onDelete: (sw: Switch) => void;
}) {
  return (
    <div class="table-wrap">
      <table class="table" aria-label="Virtual switches">
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col" class="hide-narrow">
              Bridge
            </th>
            <th scope="col">MTU</th>
            <th scope="col">Uplinks</th>
            <th scope="col">NAT network</th>
            <th scope="col">Port groups</th>
            <th scope="col">Status</th>
            <th scope="col">
              <span class="visually-hidden">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {switches.map((s) => (
            <tr key={s.name} data-switch={s.name}>
              <td>{s.name}</td>
              <td class="hide-narrow">
                <code>{s.bridge}</code>
              </td>
              <td>{s.mtu}</td>
              <td>{s.uplinks.length ? s.uplinks.join(', ') : <span class="muted">none</span>}</td>
              <td>
                {s.nat ? (
                  <>
                    <code>{s.nat.subnet}</code>
                    <div class="kind">
                      gateway {s.nat.gateway}, DHCP {s.nat.dhcp ? 'on' : 'off'}
                    </div>
                  </>
                ) : (
                  <span class="muted">none</span>
                )}
              </td>
              <td>{s.port_groups.length ? s.port_groups.join(', ') : <span class="muted">none</span>}</td>
              <td>
                <Status status={s.status} />
              </td>
              <td class="row-actions">
                <Button reason={reason} aria-label={`Edit ${s.name}`} onClick={() => onEdit(s)}>
                  Edit
                </Button>
                <Button kind="danger" reason={reason} aria-label={`Delete ${s.name}`} onClick={() => onDelete(s)}>
                  Delete
                </Button>
              </td>
            </tr>
          ))}
          {switches.length === 0 && !loading && (
            <tr>
              <td colSpan={8} class="muted">
                No virtual switches.
              </td>
            </tr>
          )}
        </tbody>
      </table>
    </div>
  );
}

function PortGroupsTable({
  portGroups,
  loading,
  reason,
  onEdit,
  onDelete,
}: {
  portGroups: PortGroup[];
  loading: boolean;
  reason?: string;
  onEdit: (pg: PortGroup) => void;
  onDelete: (pg: PortGroup) => void;
}) {
  return (
    <div class="table-wrap">
      <table class="table" aria-label="Port groups">
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Virtual switch</th>
            <th scope="col">VLAN ID</th>
            <th scope="col" class="hide-narrow">
              Policy
            </th>
            <th scope="col">VMs</th>
            <th scope="col">
              <span class="visually-hidden">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {portGroups.map((p) => (
            <tr key={p.name} data-portgroup={p.name}>
              <td>{p.name}</td>
              <td>{p.switch}</td>
              <td>{vlanLabel(p.vlan)}</td>
              <td class="hide-narrow">{policySummary(p.policy)}</td>
              <td>
                {p.vms.length === 0 ? (
                  <span class="muted">none</span>
                ) : (
                  p.vms.map((vm, i) => (
                    <Fragment key={vm}>
                      {i > 0 && ', '}
                      <a href={href({ page: 'vm', name: vm, tab: 'summary' })}>{vm}</a>
                    </Fragment>
                  ))
                )}
              </td>
              <td class="row-actions">
                <Button reason={reason} aria-label={`Edit ${p.name}`} onClick={() => onEdit(p)}>
                  Edit
                </Button>
                <Button kind="danger" reason={reason} aria-label={`Delete ${p.name}`} onClick={() => onDelete(p)}>
                  Delete
                </Button>
              </td>
            </tr>
          ))}
          {portGroups.length === 0 && !loading && (
            <tr>
              <td colSpan={6} class="muted">
                No port groups.
              </td>
            </tr>
          )}
        </tbody>
      </table>
    </div>
  );
}

function HostNicsTable({ nics, loading, switches }: { nics: HostNic[]; loading: boolean; switches: Switch[] }) {
  const role = hostNicRoles(switches);
  return (
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
            <th scope="col" class="hide-narrow">
              Used by
            </th>
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
              <td class="hide-narrow">{role.get(n.name) ?? ''}</td>
            </tr>
          ))}
          {nics.length === 0 && !loading && (
            <tr>
              <td colSpan={7} class="muted">
                No network adapters reported.
              </td>
            </tr>
          )}
        </tbody>
      </table>
    </div>
  );
}
