// Virtual machines: the list (state, vCPUs, memory, IP), power operations
// on one or several selected VMs, the create wizard, register.

import { useState } from 'preact/hooks';

import { useApp } from '../context';
import { formatDuration, formatMiB } from '../format';
import { useLoad } from '../hooks';
import { applicable, missing, missingOnAll, POWER_OPS } from '../privileges';
import { href } from '../route';
import type { PowerOp, VmInfo } from '../types';
import { nameProblem } from '../validate';
import { Button, Field, InlineError, Modal, StateBadge } from '../ui/widgets';
import { CreateVmWizard } from './wizard';

/** Runs `op` on every VM it applies to; each failure is a notice. */
export async function powerMany(
  ctx: ReturnType<typeof useApp>,
  op: PowerOp,
  vms: { name: string; power_state: VmInfo['power_state'] }[],
): Promise<void> {
  const label = POWER_OPS.find((p) => p.op === op)?.label ?? op;
  await Promise.all(
    applicable(op, vms).map(async (v) => {
      try {
        ctx.track(await ctx.api.vmPower(v.name, op));
      } catch (e) {
        ctx.fail(`${label} ${v.name}`, e);
      }
    }),
  );
  ctx.changed();
}

export function VmsPage() {
  const ctx = useApp();
  const { api, privs, version } = ctx;
  const list = useLoad(() => api.vms(), [version], 2000);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [wizard, setWizard] = useState(false);
  const [register, setRegister] = useState(false);
  const vms = list.data ?? [];
  const chosen = vms.filter((v) => selected.has(v.name));
  const powerReason = missingOnAll(privs, chosen, 'VirtualMachine.Interact.Power');
  const configReason = missing(privs, 'VirtualMachine.Config');
  const all = vms.length > 0 && chosen.length === vms.length;

  const toggle = (name: string) =>
    setSelected((s) => {
      const n = new Set(s);
      if (n.has(name)) n.delete(name);
      else n.add(name);
      return n;
    });

  return (
    <div class="page">
      <h1 class="page-title">Virtual Machines</h1>
      <div class="toolbar" role="toolbar" aria-label="Virtual machine actions">
        <Button kind="primary" reason={configReason} onClick={() => setWizard(true)}>
          Create VM
        </Button>
        <Button reason={configReason} onClick={() => setRegister(true)}>
          Register VM
        </Button>
        <span class="toolbar-sep" aria-hidden="true" />
        {POWER_OPS.map((p) => (
          <Button
            key={p.op}
            data-op={p.op}
            reason={powerReason}
            disabled={applicable(p.op, chosen).length === 0}
            title={chosen.length === 0 ? 'Select VMs first' : undefined}
            onClick={() => void powerMany(ctx, p.op, chosen)}
          >
            {p.label}
          </Button>
        ))}
        <span class="spacer" />
        <Button onClick={() => list.reload()}>Refresh</Button>
      </div>
      <InlineError error={list.error} />
      {vms.length === 0 && !list.loading ? (
        <p class="muted">No virtual machines yet{configReason ? '.' : ': create one with “Create VM”.'}</p>
      ) : (
        <div class="table-wrap">
          <table class="table vm-table" aria-label="Virtual machines">
            <thead>
              <tr>
                <th scope="col" class="check-col">
                  <input
                    type="checkbox"
                    aria-label="Select all virtual machines"
                    checked={all}
                    onChange={() => setSelected(all ? new Set() : new Set(vms.map((v) => v.name)))}
                  />
                </th>
                <th scope="col">Name</th>
                <th scope="col">State</th>
                <th scope="col">vCPUs</th>
                <th scope="col">Memory</th>
                <th scope="col" class="hide-narrow">
                  IP address
                </th>
                <th scope="col" class="hide-narrow">
                  Guest OS
                </th>
                <th scope="col" class="hide-narrow">
                  Uptime
                </th>
                <th scope="col" class="hide-narrow">
                  Datastore
                </th>
              </tr>
            </thead>
            <tbody>
              {vms.map((v) => (
                <tr key={v.name} data-vm={v.name} class={selected.has(v.name) ? 'selected' : undefined}>
                  <td class="check-col">
                    <input
                      type="checkbox"
                      aria-label={`Select ${v.name}`}
                      checked={selected.has(v.name)}
                      onChange={() => toggle(v.name)}
                    />
                  </td>
                  <td>
                    <a href={href({ page: 'vm', name: v.name, tab: 'summary' })}>{v.name}</a>
                  </td>
                  <td>
                    <StateBadge state={v.power_state} />
                  </td>
                  <td>{v.config.vcpus}</td>
                  <td>{formatMiB(v.config.memory_mib)}</td>
                  <td class="hide-narrow">{v.ip ?? '—'}</td>
                  <td class="hide-narrow">{v.config.guest_os}</td>
                  <td class="hide-narrow">{v.runtime ? formatDuration(v.runtime.uptime_ms / 1000) : '—'}</td>
                  <td class="hide-narrow">{v.datastore}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <p class="muted selection-note" aria-live="polite">
        {chosen.length ? `${chosen.length} selected` : ''}
      </p>
      {wizard && <CreateVmWizard existing={vms.map((v) => v.name)} onClose={() => setWizard(false)} />}
      {register && <RegisterDialog onClose={() => setRegister(false)} />}
    </div>
  );
}

function RegisterDialog({ onClose }: { onClose: () => void }) {
  const ctx = useApp();
  const ds = useLoad(() => ctx.api.datastores(), []);
  const [datastore, setDatastore] = useState('datastore1');
  const [folder, setFolder] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const problem = nameProblem(folder, 'The folder');
  const submit = async (e: Event) => {
    e.preventDefault();
    if (problem) {
      setError(problem);
      return;
    }
    setBusy(true);
    try {
      const vm = await ctx.api.vmRegister(datastore, folder);
      ctx.notify('info', `Registered ${vm.name}`);
      ctx.changed();
      onClose();
    } catch (err) {
      ctx.fail('Register VM', err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Modal title="Register a VM" onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <div class="modal-body">
          <p class="muted">Adds an existing VM folder of a datastore (it holds FOLDER.toml) to the inventory.</p>
          <InlineError error={ds.error} />
          <Field label="Datastore">
            {(p) => (
              <select {...p} value={datastore} onChange={(e) => setDatastore((e.target as HTMLSelectElement).value)}>
                {(ds.data ?? [{ name: 'datastore1' }]).map((d) => (
                  <option key={d.name} value={d.name}>
                    {d.name}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <Field label="Folder" error={error}>
            {(p) => <input {...p} value={folder} onInput={(e) => setFolder((e.target as HTMLInputElement).value)} />}
          </Field>
        </div>
        <div class="modal-foot">
          <Button onClick={onClose}>Cancel</Button>
          <Button kind="primary" type="submit" disabled={busy}>
            Register
          </Button>
        </div>
      </form>
    </Modal>
  );
}
