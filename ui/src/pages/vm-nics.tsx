// A VM's network adapters: each NIC's port group, MAC, link, TAP and IP;
// connect and disconnect (also while it runs), another port group, add and
// remove (while it is off).

import { useState } from 'preact/hooks';

import { errorMessage } from '../api';
import { useApp } from '../context';
import { useLoad } from '../hooks';
import { vmNics } from '../netinfo';
import { missing, vmPrivileges } from '../privileges';
import { DEFAULT_PORT_GROUP, type NicInfo, type PortGroup, type VmInfo } from '../types';
import { macProblem } from '../validate';
import { Button, Confirm, Field, InlineError, Modal, Section } from '../ui/widgets';

export function NicsSection({ vm, onChanged }: { vm: VmInfo; onChanged: () => void }) {
  const ctx = useApp();
  const vp = vmPrivileges(ctx.privs, vm);
  const configReason = missing(vp, 'VirtualMachine.Config');
  const powerReason = missing(vp, 'VirtualMachine.Interact.Power');
  const off = vm.power_state === 'poweredOff' || vm.power_state === 'crashed';
  const offTitle = off ? undefined : 'Power the VM off first';
  const groups = useLoad(() => ctx.api.portGroups(), [ctx.version]);
  const [busy, setBusy] = useState<number | null>(null);
  const [dialog, setDialog] = useState<{ kind: 'add' } | { kind: 'remove'; nic: NicInfo } | null>(null);
  const nics = vmNics(vm);

  const edit = async (nic: NicInfo, what: string, change: Parameters<typeof ctx.api.vmNicEdit>[2], done: string) => {
    setBusy(nic.index);
    try {
      await ctx.api.vmNicEdit(vm.name, nic.index, change);
      ctx.notify('info', done);
      onChanged();
      ctx.changed();
    } catch (e) {
      ctx.fail(what, e);
    } finally {
      setBusy(null);
    }
  };

  return (
    <Section
      title="Network adapters"
      actions={
        <Button reason={configReason} disabled={!off} title={offTitle} onClick={() => setDialog({ kind: 'add' })}>
          Add network adapter
        </Button>
      }
    >
      <div class="table-wrap">
        <table class="table" aria-label={`Network adapters of ${vm.name}`}>
          <thead>
            <tr>
              <th scope="col">NIC</th>
              <th scope="col">Port group</th>
              <th scope="col">MAC address</th>
              <th scope="col">Link</th>
              <th scope="col" class="hide-narrow">
                TAP
              </th>
              <th scope="col">IP address</th>
              <th scope="col">
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {nics.map((n) => (
              <tr key={n.index} data-nic={n.index}>
                <td>{n.index}</td>
                <td>
                  <PortGroupSelect
                    nic={n}
                    groups={groups.data}
                    disabled={!!configReason || busy === n.index}
                    reason={configReason}
                    onChange={(pg) =>
                      void edit(n, `Change the port group of NIC ${n.index} of ${vm.name}`, { port_group: pg }, `NIC ${n.index} of ${vm.name} is on ${pg}`)
                    }
                  />
                </td>
                <td>
                  <code>{n.mac || '(generated at power-on)'}</code>
                </td>
                <td>
                  <span class={`link link-${n.connected ? 'up' : 'down'}`} data-connected={String(n.connected)}>
                    {n.connected ? 'connected' : 'disconnected'}
                  </span>
                </td>
                <td class="hide-narrow">{n.tap ? <code>{n.tap}</code> : '—'}</td>
                <td>{n.ip ?? '—'}</td>
                <td class="row-actions">
                  <Button
                    reason={powerReason}
                    disabled={busy === n.index}
                    aria-label={`${n.connected ? 'Disconnect' : 'Connect'} NIC ${n.index}`}
                    onClick={() =>
                      void edit(
                        n,
                        `${n.connected ? 'Disconnect' : 'Connect'} NIC ${n.index} of ${vm.name}`,
                        { connected: !n.connected },
                        `NIC ${n.index} of ${vm.name} ${n.connected ? 'disconnected' : 'connected'}`,
                      )
                    }
                  >
                    {n.connected ? 'Disconnect' : 'Connect'}
                  </Button>
                  <Button
                    kind="danger"
                    reason={configReason}
                    disabled={!off || busy === n.index}
                    title={offTitle}
                    aria-label={`Remove NIC ${n.index}`}
                    onClick={() => setDialog({ kind: 'remove', nic: n })}
                  >
                    Remove
                  </Button>
                </td>
              </tr>
            ))}
            {nics.length === 0 && (
              <tr>
                <td colSpan={7} class="muted">
                  No network adapters.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      {dialog?.kind === 'add' && <AddNicDialog vm={vm} groups={groups.data} groupsError={groups.error} onClose={() => setDialog(null)} onDone={onChanged} />}
      {dialog?.kind === 'remove' && (
        <Confirm
          title={`Remove NIC ${dialog.nic.index} of ${vm.name}?`}
          message={
            <p>
              This removes network adapter {dialog.nic.index} (MAC <code>{dialog.nic.mac || 'not yet generated'}</code>
              {dialog.nic.port_group ? `, on ${dialog.nic.port_group}` : ''}) from <strong>{vm.name}</strong>. The NICs after it
              move up one place in the guest.
            </p>
          }
          action="Remove"
          danger
          onClose={() => setDialog(null)}
          onConfirm={async () => {
            try {
              await ctx.api.vmNicRemove(vm.name, dialog.nic.index);
              ctx.notify('info', `Removed NIC ${dialog.nic.index} of ${vm.name}`);
              onChanged();
              ctx.changed();
            } catch (e) {
              ctx.fail(`Remove NIC ${dialog.nic.index} of ${vm.name}`, e);
            }
            setDialog(null);
          }}
        />
      )}
    </Section>
  );
}

function PortGroupSelect({
  nic,
  groups,
  disabled,
  reason,
  onChange,
}: {
  nic: NicInfo;
  groups?: PortGroup[];
  disabled: boolean;
  reason?: string;
  onChange: (pg: string) => void;
}) {
  const names = (groups ?? []).map((g) => g.name);
  const current = nic.port_group ?? '';
  if (current && !names.includes(current)) names.unshift(current);
  return (
    <select
      aria-label={`Port group of NIC ${nic.index}`}
      value={current}
      disabled={disabled}
      title={reason}
      onChange={(e) => {
        const v = (e.target as HTMLSelectElement).value;
        if (v && v !== current) onChange(v);
      }}
    >
      {!current && <option value="">{nic.tap ? `host TAP ${nic.tap}` : '(host TAP)'}</option>}
      {names.map((n) => (
        <option key={n} value={n}>
          {n}
        </option>
      ))}
    </select>
  );
}

function AddNicDialog({
  vm,
  groups,
  groupsError,
  onClose,
  onDone,
}: {
  vm: VmInfo;
  groups?: PortGroup[];
  groupsError?: string;
  onClose: () => void;
  onDone: () => void;
}) {
  const ctx = useApp();
  const names = (groups ?? []).map((g) => g.name);
  const [portGroup, setPortGroup] = useState(() => (names.length === 0 || names.includes(DEFAULT_PORT_GROUP) ? DEFAULT_PORT_GROUP : names[0]));
  const [mac, setMac] = useState('');
  const [connected, setConnected] = useState(true);
  const [macError, setMacError] = useState<string>();
  const [submitError, setSubmitError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const options = names.includes(portGroup) ? names : [portGroup, ...names];

  const submit = async (e: Event) => {
    e.preventDefault();
    const problem = macProblem(mac);
    setMacError(problem ?? undefined);
    if (problem) return;
    setBusy(true);
    setSubmitError(undefined);
    try {
      const nic = await ctx.api.vmNicAdd(vm.name, { port_group: portGroup, mac: mac.trim() || null, connected });
      ctx.notify('info', `Added NIC ${nic.index} to ${vm.name} on ${portGroup}`);
      onDone();
      ctx.changed();
      onClose();
    } catch (err) {
      setSubmitError(errorMessage(err));
      ctx.fail(`Add a NIC to ${vm.name}`, err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Modal title={`Add a network adapter to ${vm.name}`} onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <div class="modal-body">
          <InlineError error={groupsError} />
          <Field label="Port group">
            {(p) => (
              <select {...p} name="portGroup" value={portGroup} onChange={(e) => setPortGroup((e.target as HTMLSelectElement).value)}>
                {options.map((n) => (
                  <option key={n} value={n}>
                    {n}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <Field label="MAC address" error={macError} hint="Empty: generated, unique on the host">
            {(p) => <input {...p} name="mac" value={mac} placeholder="02:6b:00:12:34:56" onInput={(e) => (setMac((e.target as HTMLInputElement).value), setMacError(undefined))} />}
          </Field>
          <label class="check-row">
            <input type="checkbox" name="connected" checked={connected} onChange={(e) => setConnected((e.target as HTMLInputElement).checked)} /> Connect
            at power on
          </label>
          <InlineError error={submitError} />
        </div>
        <div class="modal-foot">
          <Button onClick={onClose}>Cancel</Button>
          <Button kind="primary" type="submit" disabled={busy}>
            Add
          </Button>
        </div>
      </form>
    </Modal>
  );
}
