// One VM: power operations, clone, delete, unregister; tabs for the
// summary with its network adapters and live charts, the console, the
// configuration editor, the console log and the VM's events.

import { useEffect, useMemo, useRef, useState } from 'preact/hooks';

import { useApp } from '../context';
import { formatBytes, formatDuration, formatMiB, formatPercent } from '../format';
import { useLoad, usePoll } from '../hooks';
import { Series, vmCpuFraction } from '../metrics';
import { applicable, missing, POWER_OPS, vmPrivileges } from '../privileges';
import { href } from '../route';
import type { GuestOs, VmEdit, VmInfo } from '../types';
import { intProblem, MIN_MEMORY_MIB, nameProblem } from '../validate';
import { TimeChart } from '../ui/chart';
import { Console } from '../ui/console';
import { EventsList } from '../ui/events';
import { Button, Confirm, Facts, Field, InlineError, Modal, Section, StateBadge, Tabs } from '../ui/widgets';
import { SAMPLE_MS } from './host';
import { NicsSection } from './vm-nics';
import { powerMany } from './vms';

const TABS = [
  { id: 'summary', label: 'Summary' },
  { id: 'console', label: 'Console' },
  { id: 'config', label: 'Configuration' },
  { id: 'log', label: 'Log' },
  { id: 'events', label: 'Events' },
];

export function VmPage({ name, tab }: { name: string; tab: string }) {
  const ctx = useApp();
  const { api, privs, version } = ctx;
  const vm = useLoad(() => api.vm(name), [name, version], SAMPLE_MS);
  const [dialog, setDialog] = useState<'clone' | 'delete' | 'unregister' | null>(null);
  const v = vm.data;
  const vmPrivs = vmPrivileges(privs, v);
  const powerReason = missing(vmPrivs, 'VirtualMachine.Interact.Power');
  const configReason = missing(vmPrivs, 'VirtualMachine.Config');
  const off = v?.power_state === 'poweredOff' || v?.power_state === 'crashed';

  if (!v) {
    return (
      <div class="page">
        <h1 class="page-title">{name}</h1>
        {vm.error ? <InlineError error={vm.error} /> : <p class="muted">Loading…</p>}
        <a href="#/vms">Back to the virtual machines</a>
      </div>
    );
  }
  const go = (t: string) => (location.hash = href({ page: 'vm', name, tab: t }));
  return (
    <div class="page">
      <div class="page-head">
        <h1 class="page-title">{v.name}</h1>
        <StateBadge state={v.power_state} />
      </div>
      <InlineError error={vm.error} />
      <div class="toolbar" role="toolbar" aria-label={`Actions of ${v.name}`}>
        {POWER_OPS.map((p) => (
          <Button
            key={p.op}
            data-op={p.op}
            reason={powerReason}
            disabled={applicable(p.op, [v]).length === 0}
            onClick={() => void powerMany(ctx, p.op, [v])}
          >
            {p.label}
          </Button>
        ))}
        <span class="toolbar-sep" aria-hidden="true" />
        <Button reason={configReason} disabled={!off} title={off ? undefined : 'Power the VM off first'} onClick={() => setDialog('clone')}>
          Clone
        </Button>
        <Button reason={configReason} disabled={!off} title={off ? undefined : 'Power the VM off first'} onClick={() => setDialog('unregister')}>
          Unregister
        </Button>
        <Button kind="danger" reason={configReason} disabled={!off} title={off ? undefined : 'Power the VM off first'} onClick={() => setDialog('delete')}>
          Delete
        </Button>
      </div>
      <Tabs label={`${v.name} views`} tabs={TABS.map((t) => ({ ...t, href: href({ page: 'vm', name, tab: t.id }) }))} current={tab} onSelect={go} />
      <div role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`} class="tab-panel">
        {tab === 'summary' && <Summary vm={v} onChanged={vm.reload} />}
        {tab === 'console' && <ConsoleTab vm={v} />}
        {tab === 'config' && <ConfigEditor vm={v} onSaved={vm.reload} />}
        {tab === 'log' && <LogTab name={v.name} />}
        {tab === 'events' && (
          <Section title="Events">
            <EventsList label={`Events of ${v.name}`} showTarget={false} load={(before, limit) => api.vmEvents(v.name, before, limit)} />
          </Section>
        )}
      </div>
      {dialog === 'clone' && <CloneDialog vm={v} onClose={() => setDialog(null)} />}
      {dialog === 'delete' && (
        <Confirm
          title={`Delete ${v.name}?`}
          message={
            <p>
              This removes <strong>{v.name}</strong> from the inventory and deletes its folder <code>{v.path}</code> with
              its disks. It cannot be undone.
            </p>
          }
          action="Delete"
          danger
          onClose={() => setDialog(null)}
          onConfirm={async () => {
            try {
              await api.vmDelete(v.name);
              ctx.notify('info', `Deleted ${v.name}`);
              ctx.changed();
              location.hash = '#/vms';
            } catch (e) {
              ctx.fail(`Delete ${v.name}`, e);
              setDialog(null);
            }
          }}
        />
      )}
      {dialog === 'unregister' && (
        <Confirm
          title={`Unregister ${v.name}?`}
          message={
            <p>
              This removes <strong>{v.name}</strong> from the inventory; its folder <code>{v.path}</code> stays on the
              datastore and can be registered again.
            </p>
          }
          action="Unregister"
          onClose={() => setDialog(null)}
          onConfirm={async () => {
            try {
              await api.vmUnregister(v.name);
              ctx.notify('info', `Unregistered ${v.name}`);
              ctx.changed();
              location.hash = '#/vms';
            } catch (e) {
              ctx.fail(`Unregister ${v.name}`, e);
              setDialog(null);
            }
          }}
        />
      )}
    </div>
  );
}

function Summary({ vm, onChanged }: { vm: VmInfo; onChanged: () => void }) {
  const c = vm.config;
  const rt = vm.runtime;
  return (
    <>
      <div class="grid-2">
        <Section title="General">
          <Facts
            rows={[
              ['State', <StateBadge state={vm.power_state} />],
              ['Guest OS', c.guest_os],
              ['vCPUs', String(c.vcpus)],
              ['Memory', formatMiB(c.memory_mib)],
              ['IP address', vm.ip ?? '—'],
              ['Autostart', vm.autostart ? 'yes' : 'no'],
              ['Datastore', vm.datastore],
              ['Folder', <code>{vm.path}</code>],
              ['Uptime', rt ? formatDuration(rt.uptime_ms / 1000) : '—'],
              ['Boots', rt ? String(rt.boots) : '—'],
              ['VMM process', rt ? `pid ${rt.pid}, ${formatBytes(rt.rss_bytes)} resident` : '—'],
            ]}
          />
        </Section>
        <Section title="Hardware">
          <Facts
            rows={[
              ['Kernel', <code>{c.boot.kernel}</code>],
              ['Initrd', c.boot.initrd ? <code>{c.boot.initrd}</code> : 'none'],
              ['Command line', c.boot.cmdline ? <code>{c.boot.cmdline}</code> : '(empty)'],
              ...c.disks.map(
                (d, i) =>
                  [`Disk ${i}`, `${d.file} (${d.format}${d.readonly ? ', read-only' : ''}, serial ${d.serial})`] as [string, string],
              ),
              ['Network adapters', String(c.nics.length)],
            ]}
          />
          {c.notes && (
            <>
              <h3 class="sub">Notes</h3>
              <p class="notes">{c.notes}</p>
            </>
          )}
        </Section>
      </div>
      <NicsSection vm={vm} onChanged={onChanged} />
      <VmCharts vm={vm} />
    </>
  );
}

/** CPU from the VMM's CPU time between polls, memory from its RSS. */
function VmCharts({ vm }: { vm: VmInfo }) {
  const { api } = useApp();
  const cpu = useMemo(() => new Series(1), []);
  const mem = useMemo(() => new Series(1), []);
  const prev = useRef<{ cpu_ms: number; at: number; pid: number } | undefined>(undefined);
  const [tick, setTick] = useState(0);
  usePoll(
    async () => {
      try {
        const v = await api.vm(vm.name);
        const now = Date.now();
        const rt = v.runtime;
        if (!rt) {
          prev.current = undefined;
          cpu.push(now, [null]);
          mem.push(now, [null]);
        } else {
          const cur = { cpu_ms: rt.cpu_ms, at: now, pid: rt.pid };
          const before = prev.current?.pid === rt.pid ? prev.current : undefined;
          cpu.push(now, [vmCpuFraction(before, cur, v.config.vcpus)]);
          mem.push(now, [rt.rss_bytes]);
          prev.current = cur;
        }
        setTick((t) => t + 1);
      } catch {
        // The summary above shows why the VM cannot be read.
      }
    },
    SAMPLE_MS,
    [vm.name],
  );
  return (
    <Section title="Performance">
      <div class="grid-2">
        <TimeChart title="CPU (of its vCPUs)" series={cpu} lines={[{ label: 'CPU', color: '#1f6feb' }]} version={tick} format={formatPercent} max={1} />
        <TimeChart title="Memory (VMM resident)" series={mem} lines={[{ label: 'Resident', color: '#8250df' }]} version={tick} format={formatBytes} />
      </div>
    </Section>
  );
}

function ConsoleTab({ vm }: { vm: VmInfo }) {
  const { api, privs } = useApp();
  const running = vm.power_state === 'poweredOn' || vm.power_state === 'paused';
  const reason = missing(vmPrivileges(privs, vm), 'VirtualMachine.Interact.Console');
  // A new connection each time the VM (re)starts.
  const url = useMemo(() => api.consoleUrl(vm.name), [api, vm.name, vm.runtime?.pid]);
  if (reason)
    return (
      <Section title="Console">
        <p class="muted">{reason}: the console is not available to you.</p>
      </Section>
    );
  if (!running)
    return (
      <Section title="Console">
        <p class="muted">The VM is {vm.power_state === 'crashed' ? 'crashed' : 'powered off'}: power it on to use its console.</p>
      </Section>
    );
  return (
    <Section title="Console">
      <Console url={url} canType active />
    </Section>
  );
}

function ConfigEditor({ vm, onSaved }: { vm: VmInfo; onSaved: () => void }) {
  const ctx = useApp();
  const reason = missing(vmPrivileges(ctx.privs, vm), 'VirtualMachine.Config');
  const off = vm.power_state === 'poweredOff' || vm.power_state === 'crashed';
  const initial = () => ({
    vcpus: String(vm.config.vcpus),
    memory: String(vm.config.memory_mib),
    cmdline: vm.config.boot.cmdline,
    guestOs: vm.config.guest_os,
    notes: vm.config.notes,
    autostart: vm.autostart,
  });
  const snapshot = JSON.stringify(initial());
  const [f, setF] = useState(initial);
  const [base, setBase] = useState(snapshot);
  const [errors, setErrors] = useState<{ vcpus?: string; memory?: string }>({});
  const [busy, setBusy] = useState(false);
  const dirty = JSON.stringify(f) !== snapshot;
  // Follow the VM's configuration while nothing was edited (or once the
  // host has what was saved).
  useEffect(() => {
    if (snapshot === base) return;
    if (JSON.stringify(f) === base || JSON.stringify(f) === snapshot) {
      setF(initial());
      setBase(snapshot);
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [snapshot]);

  const save = async (e: Event) => {
    e.preventDefault();
    const maxCpus = ctx.host?.cpu.threads ?? 255;
    const errs = {
      vcpus: intProblem(f.vcpus, 'vCPUs', 1, Math.max(1, maxCpus)) ?? undefined,
      memory: intProblem(f.memory, 'Memory (MiB)', MIN_MEMORY_MIB, 4 * 1024 * 1024) ?? undefined,
    };
    setErrors(errs);
    if (errs.vcpus || errs.memory) return;
    const edit: VmEdit = {};
    const c = vm.config;
    if (Number(f.vcpus) !== c.vcpus) edit.vcpus = Number(f.vcpus);
    if (Number(f.memory) !== c.memory_mib) edit.memory_mib = Number(f.memory);
    if (f.cmdline !== c.boot.cmdline) edit.cmdline = f.cmdline;
    if (f.guestOs !== c.guest_os) edit.guest_os = f.guestOs;
    if (f.notes !== c.notes) edit.notes = f.notes;
    if (f.autostart !== vm.autostart) edit.autostart = f.autostart;
    if (Object.keys(edit).length === 0) {
      ctx.notify('info', 'Nothing changed');
      return;
    }
    setBusy(true);
    try {
      await ctx.api.vmEdit(vm.name, edit);
      ctx.notify('info', `Saved the configuration of ${vm.name}`);
      onSaved();
      ctx.changed();
    } catch (err) {
      ctx.fail(`Edit ${vm.name}`, err);
    } finally {
      setBusy(false);
    }
  };
  const dis = !!reason;
  return (
    <Section title="Configuration">
      <form onSubmit={save} noValidate class="config-form">
        {reason && <p class="muted">{reason}: the configuration is read only.</p>}
        {!off && <p class="muted">vCPUs and memory change only while the VM is powered off.</p>}
        <div class="grid-2 tight">
          <Field label="vCPUs" error={errors.vcpus}>
            {(p) => <input {...p} name="vcpus" inputMode="numeric" disabled={dis || !off} value={f.vcpus} onInput={(e) => setF({ ...f, vcpus: (e.target as HTMLInputElement).value })} />}
          </Field>
          <Field label="Memory (MiB)" error={errors.memory}>
            {(p) => <input {...p} name="memory" inputMode="numeric" disabled={dis || !off} value={f.memory} onInput={(e) => setF({ ...f, memory: (e.target as HTMLInputElement).value })} />}
          </Field>
        </div>
        <Field label="Kernel command line" hint="Used from the next power on">
          {(p) => <input {...p} name="cmdline" disabled={dis} value={f.cmdline} onInput={(e) => setF({ ...f, cmdline: (e.target as HTMLInputElement).value })} />}
        </Field>
        <Field label="Guest OS">
          {(p) => (
            <select {...p} disabled={dis} value={f.guestOs} onChange={(e) => setF({ ...f, guestOs: (e.target as HTMLSelectElement).value as GuestOs })}>
              <option value="linux">Linux</option>
              <option value="other">Other</option>
            </select>
          )}
        </Field>
        <Field label="Notes">
          {(p) => <textarea {...p} rows={3} disabled={dis} value={f.notes} onInput={(e) => setF({ ...f, notes: (e.target as HTMLTextAreaElement).value })} />}
        </Field>
        <label class="check-row">
          <input type="checkbox" disabled={dis} checked={f.autostart} onChange={(e) => setF({ ...f, autostart: (e.target as HTMLInputElement).checked })} /> Power on when the
          host starts (autostart)
        </label>
        <div class="form-actions">
          <Button onClick={() => (setF(initial()), setErrors({}))} disabled={!dirty}>
            Revert
          </Button>
          <Button kind="primary" type="submit" reason={reason} disabled={busy || !dirty}>
            Save
          </Button>
        </div>
      </form>
    </Section>
  );
}

function LogTab({ name }: { name: string }) {
  const { api } = useApp();
  const [follow, setFollow] = useState(true);
  const log = useLoad(() => api.vmLog(name), [name], follow ? 3000 : undefined);
  const pre = useRef<HTMLPreElement>(null);
  useEffect(() => {
    if (follow && pre.current) pre.current.scrollTop = pre.current.scrollHeight;
  }, [log.data, follow]);
  return (
    <Section
      title="Console log"
      actions={
        <>
          <label class="check-row inline">
            <input type="checkbox" checked={follow} onChange={(e) => setFollow((e.target as HTMLInputElement).checked)} /> Follow
          </label>
          <Button onClick={log.reload}>Refresh</Button>
        </>
      }
    >
      <InlineError error={log.error} />
      <pre class="log" ref={pre} tabIndex={0} aria-label={`Console log of ${name}`}>
        {log.data || (log.loading ? 'Loading…' : '(empty)')}
      </pre>
    </Section>
  );
}

function CloneDialog({ vm, onClose }: { vm: VmInfo; onClose: () => void }) {
  const ctx = useApp();
  const ds = useLoad(() => ctx.api.datastores(), []);
  const [name, setName] = useState(`${vm.name}-clone`);
  const [datastore, setDatastore] = useState(vm.datastore);
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const problem = nameProblem(name, 'The name');
    if (problem) {
      setError(problem);
      return;
    }
    setBusy(true);
    try {
      ctx.track(await ctx.api.vmClone(vm.name, name, datastore));
      ctx.notify('info', `Cloning ${vm.name} to ${name}…`);
      onClose();
    } catch (err) {
      ctx.fail(`Clone ${vm.name}`, err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Modal title={`Clone ${vm.name}`} onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <div class="modal-body">
          <p class="muted">A full copy of the powered-off VM: configuration, kernel and disks.</p>
          <Field label="Name of the copy" error={error}>
            {(p) => <input {...p} value={name} onInput={(e) => (setName((e.target as HTMLInputElement).value), setError(undefined))} />}
          </Field>
          <Field label="Datastore">
            {(p) => (
              <select {...p} value={datastore} onChange={(e) => setDatastore((e.target as HTMLSelectElement).value)}>
                {(ds.data ?? [{ name: vm.datastore }]).map((d) => (
                  <option key={d.name} value={d.name}>
                    {d.name}
                  </option>
                ))}
              </select>
            )}
          </Field>
        </div>
        <div class="modal-foot">
          <Button onClick={onClose}>Cancel</Button>
          <Button kind="primary" type="submit" disabled={busy}>
            Clone
          </Button>
        </div>
      </form>
    </Modal>
  );
}
