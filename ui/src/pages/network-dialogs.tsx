// The Networking page's dialogs: add or edit a standard switch, add or edit
// a port group. Each checks its fields first (validate.ts); what keeld
// refuses stays in the dialog and shows as a notice with the API's message.

import { useState } from 'preact/hooks';

import { errorMessage } from '../api';
import { useApp } from '../context';
import { uplinkCandidates, uplinksInUse } from '../netinfo';
import type { Accept, HostNic, PortGroup, Switch } from '../types';
import {
  emptyPortGroupForm,
  emptySwitchForm,
  MAX_MTU,
  MAX_VLAN,
  MIN_MTU,
  portGroupFormToCreate,
  portGroupFormToEdit,
  portGroupToForm,
  switchFormToCreate,
  switchFormToEdit,
  switchToForm,
  validatePortGroupForm,
  validateSwitchForm,
  type PortGroupErrors,
  type PortGroupForm,
  type SwitchErrors,
  type SwitchForm,
} from '../validate';
import { Button, Field, InlineError, Modal } from '../ui/widgets';

function focusFirstError() {
  setTimeout(() => document.querySelector<HTMLElement>('.modal [aria-invalid="true"]')?.focus(), 0);
}

export function SwitchDialog({
  sw,
  switches,
  hostNics,
  onClose,
  onDone,
}: {
  /** The switch to edit; a new one when absent. */
  sw?: Switch;
  switches: Switch[];
  hostNics: HostNic[];
  onClose: () => void;
  onDone: () => void;
}) {
  const ctx = useApp();
  const editing = !!sw;
  const [f, setF] = useState<SwitchForm>(() => (sw ? switchToForm(sw) : emptySwitchForm()));
  const [errors, setErrors] = useState<SwitchErrors>({});
  const [submitError, setSubmitError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const set = <K extends keyof SwitchForm>(k: K, v: SwitchForm[K]) => {
    setF((x) => ({ ...x, [k]: v }));
    setErrors((e) => ({ ...e, [k]: undefined }));
  };
  // Which switch already has a NIC as its uplink (an uplink serves one switch).
  const usedBy = uplinksInUse(switches, sw?.name);
  const candidates = uplinkCandidates(hostNics, switches);
  // An uplink the host no longer reports still shows, so it can be removed.
  for (const u of f.uplinks)
    if (!candidates.some((n) => n.name === u)) candidates.push({ name: u, mac: '', mtu: 0, state: 'missing', physical: false });

  const submit = async (e: Event) => {
    e.preventDefault();
    const errs = validateSwitchForm(f, editing);
    setErrors(errs);
    if (Object.keys(errs).length) {
      focusFirstError();
      return;
    }
    const what = editing ? `Edit ${sw.name}` : `Add virtual switch ${f.name}`;
    setBusy(true);
    setSubmitError(undefined);
    try {
      if (sw) {
        const edit = switchFormToEdit(f, sw);
        if (Object.keys(edit).length === 0) {
          ctx.notify('info', 'Nothing changed');
          onClose();
          return;
        }
        await ctx.api.switchEdit(sw.name, edit);
        ctx.notify('info', `Saved ${sw.name}`);
      } else {
        await ctx.api.switchCreate(switchFormToCreate(f));
        ctx.notify('info', `Added virtual switch ${f.name}`);
      }
      onDone();
      onClose();
    } catch (err) {
      setSubmitError(errorMessage(err));
      ctx.fail(what, err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Modal title={sw ? `Edit ${sw.name}` : 'Add standard virtual switch'} onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <div class="modal-body">
          <Field label="Name" error={errors.name} hint={editing ? `Bridge ${sw.bridge} on the host` : undefined}>
            {(p) => (
              <input {...p} name="name" value={f.name} disabled={editing} onInput={(e) => set('name', (e.target as HTMLInputElement).value)} />
            )}
          </Field>
          <Field label="MTU" error={errors.mtu} hint={`${MIN_MTU}–${MAX_MTU} bytes; 1500 is Ethernet's, 9000 jumbo frames`}>
            {(p) => <input {...p} name="mtu" inputMode="numeric" value={f.mtu} onInput={(e) => set('mtu', (e.target as HTMLInputElement).value)} />}
          </Field>
          <fieldset class="ds-choice">
            <legend>Uplinks (host network adapters)</legend>
            {candidates.length === 0 && <p class="muted">The host reports no adapter that can be an uplink.</p>}
            {candidates.map((n) => {
              const other = usedBy.get(n.name);
              const checked = f.uplinks.includes(n.name);
              return (
                <label key={n.name} class="check-row">
                  <input
                    type="checkbox"
                    name="uplink"
                    value={n.name}
                    checked={checked}
                    disabled={!!other && !checked}
                    onChange={(e) =>
                      set(
                        'uplinks',
                        (e.target as HTMLInputElement).checked ? [...f.uplinks, n.name] : f.uplinks.filter((u) => u !== n.name),
                      )
                    }
                  />{' '}
                  {n.name}{' '}
                  <span class="muted">
                    {n.state === 'missing' ? 'not on the host' : `${n.physical ? 'physical' : 'virtual'}, ${n.state}`}
                    {other ? `, uplink of ${other}` : ''}
                  </span>
                </label>
              );
            })}
            <div class="hint">An uplink carries every VLAN of the switch, tagged.</div>
          </fieldset>
          {editing ? (
            <p class="muted">
              {sw.nat
                ? `NAT network ${sw.nat.subnet}, gateway ${sw.nat.gateway}, DHCP ${sw.nat.dhcp ? 'on' : 'off'} (set when the switch was made).`
                : 'No NAT network (set when the switch was made).'}
            </p>
          ) : (
            <>
              <label class="check-row">
                <input type="checkbox" name="nat" checked={f.nat} onChange={(e) => set('nat', (e.target as HTMLInputElement).checked)} /> Host-only
                network with NAT to the host's default route
              </label>
              {f.nat && (
                <>
                  <Field label="Subnet" error={errors.subnet} hint="Like 10.78.0.0/24 (/8 to /29); the host takes its first address as the gateway">
                    {(p) => (
                      <input {...p} name="subnet" value={f.subnet} placeholder="10.78.0.0/24" onInput={(e) => set('subnet', (e.target as HTMLInputElement).value)} />
                    )}
                  </Field>
                  <label class="check-row">
                    <input type="checkbox" name="dhcp" checked={f.dhcp} onChange={(e) => set('dhcp', (e.target as HTMLInputElement).checked)} /> DHCP
                    server for the guests
                  </label>
                </>
              )}
            </>
          )}
          <InlineError error={submitError} />
        </div>
        <div class="modal-foot">
          <Button onClick={onClose}>Cancel</Button>
          <Button kind="primary" type="submit" disabled={busy}>
            {editing ? 'Save' : 'Add'}
          </Button>
        </div>
      </form>
    </Modal>
  );
}

function AcceptSelect({ label, value, onChange, hint }: { label: string; value: Accept; onChange: (v: Accept) => void; hint: string }) {
  return (
    <Field label={label} hint={hint}>
      {(p) => (
        <select {...p} value={value} onChange={(e) => onChange((e.target as HTMLSelectElement).value as Accept)}>
          <option value="accept">Accept</option>
          <option value="reject">Reject</option>
        </select>
      )}
    </Field>
  );
}

export function PortGroupDialog({
  pg,
  switches,
  onClose,
  onDone,
}: {
  /** The port group to edit; a new one when absent. */
  pg?: PortGroup;
  switches: Switch[];
  onClose: () => void;
  onDone: () => void;
}) {
  const ctx = useApp();
  const editing = !!pg;
  const [f, setF] = useState<PortGroupForm>(() => (pg ? portGroupToForm(pg) : emptyPortGroupForm(switches[0]?.name ?? '')));
  const [errors, setErrors] = useState<PortGroupErrors>({});
  const [submitError, setSubmitError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const set = <K extends keyof PortGroupForm>(k: K, v: PortGroupForm[K]) => {
    setF((x) => ({ ...x, [k]: v }));
    setErrors((e) => ({ ...e, [k]: undefined }));
  };
  const text = (k: keyof PortGroupForm) => (e: Event) => set(k, (e.target as HTMLInputElement).value as never);

  const submit = async (e: Event) => {
    e.preventDefault();
    const errs = validatePortGroupForm(f, switches.map((s) => s.name), editing);
    setErrors(errs);
    if (Object.keys(errs).length) {
      focusFirstError();
      return;
    }
    const what = editing ? `Edit port group ${pg.name}` : `Add port group ${f.name}`;
    setBusy(true);
    setSubmitError(undefined);
    try {
      if (pg) {
        const edit = portGroupFormToEdit(f, pg);
        if (Object.keys(edit).length === 0) {
          ctx.notify('info', 'Nothing changed');
          onClose();
          return;
        }
        await ctx.api.portGroupEdit(pg.name, edit);
        ctx.notify('info', `Saved port group ${pg.name}`);
      } else {
        await ctx.api.portGroupCreate(portGroupFormToCreate(f));
        ctx.notify('info', `Added port group ${f.name}`);
      }
      onDone();
      onClose();
    } catch (err) {
      setSubmitError(errorMessage(err));
      ctx.fail(what, err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Modal title={pg ? `Edit port group ${pg.name}` : 'Add port group'} onClose={onClose} wide>
      <form onSubmit={submit} noValidate>
        <div class="modal-body">
          <div class="grid-2 tight">
            <Field label="Name" error={errors.name}>
              {(p) => <input {...p} name="name" value={f.name} disabled={editing} onInput={text('name')} />}
            </Field>
            <Field label="Virtual switch" error={errors.switch}>
              {(p) => (
                <select {...p} name="switch" value={f.switch} disabled={editing} onChange={(e) => set('switch', (e.target as HTMLSelectElement).value)}>
                  {switches.length === 0 && <option value="">(no virtual switch)</option>}
                  {switches.map((s) => (
                    <option key={s.name} value={s.name}>
                      {s.name}
                    </option>
                  ))}
                </select>
              )}
            </Field>
          </div>
          <Field label="VLAN ID" error={errors.vlan} hint={`0: none (untagged); 1–${MAX_VLAN}: tagged${editing ? '; applies at once to running VMs' : ''}`}>
            {(p) => <input {...p} name="vlan" inputMode="numeric" value={f.vlan} onInput={text('vlan')} />}
          </Field>
          <h3 class="sub">Security{editing ? ' (running VMs get a new policy at their next power-on)' : ''}</h3>
          <div class="grid-2 tight">
            <AcceptSelect
              label="Promiscuous mode"
              value={f.promiscuous}
              onChange={(v) => set('promiscuous', v)}
              hint="Accept: a NIC sees all frames on the switch"
            />
            <AcceptSelect
              label="MAC address changes"
              value={f.macChanges}
              onChange={(v) => set('macChanges', v)}
              hint="Reject: the guest cannot change its NIC's MAC"
            />
            <AcceptSelect
              label="Forged transmits"
              value={f.forgedTransmits}
              onChange={(v) => set('forgedTransmits', v)}
              hint="Reject: frames from another source MAC are dropped"
            />
          </div>
          <label class="check-row">
            <input type="checkbox" name="shaping" checked={f.shaping} onChange={(e) => set('shaping', (e.target as HTMLInputElement).checked)} /> Traffic
            shaping (each direction)
          </label>
          {f.shaping && (
            <div class="grid-2 tight">
              <Field label="Average bandwidth (kbit/s)" error={errors.averageKbps}>
                {(p) => <input {...p} name="averageKbps" inputMode="numeric" value={f.averageKbps} onInput={text('averageKbps')} />}
              </Field>
              <Field label="Peak bandwidth (kbit/s)" error={errors.peakKbps} hint="Empty: the average">
                {(p) => <input {...p} name="peakKbps" inputMode="numeric" value={f.peakKbps} onInput={text('peakKbps')} />}
              </Field>
              <Field label="Burst size (KiB)" error={errors.burstKib} hint="Empty: 64 KiB">
                {(p) => <input {...p} name="burstKib" inputMode="numeric" value={f.burstKib} onInput={text('burstKib')} />}
              </Field>
            </div>
          )}
          <InlineError error={submitError} />
        </div>
        <div class="modal-foot">
          <Button onClick={onClose}>Cancel</Button>
          <Button kind="primary" type="submit" disabled={busy}>
            {editing ? 'Save' : 'Add'}
          </Button>
        </div>
      </form>
    </Modal>
  );
}
