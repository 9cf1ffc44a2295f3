// The create-VM wizard: name and guest OS, storage, hardware, boot, then a
// summary. Each step is validated before the next; the API checks again.

import { useState } from 'preact/hooks';

import { useApp } from '../context';
import { formatBytes, formatMiB } from '../format';
import { useLoad } from '../hooks';
import type { GuestOs } from '../types';
import {
  emptyWizard,
  parseSize,
  stepErrors,
  validateWizard,
  WIZARD_STEPS,
  wizardToSpec,
  type WizardErrors,
  type WizardForm,
} from '../validate';
import { Button, Field, InlineError, Modal } from '../ui/widgets';

export function CreateVmWizard({ existing, onClose }: { existing: string[]; onClose: () => void }) {
  const ctx = useApp();
  const dss = useLoad(() => ctx.api.datastores(), []);
  const pgs = useLoad(() => ctx.api.portGroups(), []);
  const [form, setForm] = useState<WizardForm>(emptyWizard);
  const [step, setStep] = useState(0);
  const [errors, setErrors] = useState<WizardErrors>({});
  const [busy, setBusy] = useState(false);
  const [submitError, setSubmitError] = useState<string>();

  const context = {
    existingNames: existing,
    datastores: dss.data ?? [],
    hostThreads: ctx.host?.cpu.threads,
    hostMemoryBytes: ctx.host?.memory_total_bytes,
    portGroups: pgs.data?.map((p) => p.name),
  };
  // The chosen port group stays listed even when the host does not have it
  // (the list failed, or it is gone): validation then says so.
  const portGroupNames = (pgs.data ?? []).map((p) => p.name);
  if (form.portGroup && !portGroupNames.includes(form.portGroup)) portGroupNames.unshift(form.portGroup);
  const set = <K extends keyof WizardForm>(k: K, v: WizardForm[K]) => {
    setForm((f) => ({ ...f, [k]: v }));
    setErrors((e) => ({ ...e, [k]: undefined }));
  };
  const text = (k: keyof WizardForm) => (e: Event) => set(k, (e.target as HTMLInputElement).value as never);

  const next = () => {
    const errs = stepErrors(validateWizard(form, context), step);
    setErrors(errs);
    if (Object.keys(errs).length === 0) setStep(step + 1);
    else focusFirstError();
  };
  const finish = async () => {
    const all = validateWizard(form, context);
    if (Object.keys(all).length) {
      // Go back to the first step with a problem.
      const bad = WIZARD_STEPS.findIndex((s) => s.fields.some((f) => all[f]));
      setStep(bad < 0 ? 0 : bad);
      setErrors(stepErrors(all, bad < 0 ? 0 : bad));
      focusFirstError();
      return;
    }
    setBusy(true);
    setSubmitError(undefined);
    try {
      const task = await ctx.api.vmCreate(wizardToSpec(form));
      ctx.track(task);
      ctx.notify('info', `Creating ${form.name}…`);
      onClose();
    } catch (e) {
      // Shown here (the wizard stays open to fix it) and as a notice.
      setSubmitError(e instanceof Error ? e.message : String(e));
      ctx.fail(`Create VM ${form.name}`, e);
    } finally {
      setBusy(false);
    }
  };

  const last = step === WIZARD_STEPS.length - 1;
  const ds = (dss.data ?? []).find((d) => d.name === form.datastore);
  return (
    <Modal title="New virtual machine" onClose={onClose} wide>
      <form
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          if (last) void finish();
          else next();
        }}
      >
        <div class="wizard">
          <ol class="wizard-steps" aria-label="Steps">
            {WIZARD_STEPS.map((s, i) => (
              <li key={s.title} class={i === step ? 'current' : i < step ? 'done' : ''} aria-current={i === step ? 'step' : undefined}>
                <span class="step-no">{i + 1}</span> {s.title}
              </li>
            ))}
          </ol>
          <div class="wizard-body" data-step={step}>
            <h3>{WIZARD_STEPS[step].title}</h3>
            {step === 0 && (
              <>
                <Field label="Name" error={errors.name} hint="1–80 characters, no '/', not starting with '.'">
                  {(p) => <input {...p} name="name" value={form.name} onInput={text('name')} autoFocus />}
                </Field>
                <Field label="Guest OS">
                  {(p) => (
                    <select {...p} name="guestOs" value={form.guestOs} onChange={(e) => set('guestOs', (e.target as HTMLSelectElement).value as GuestOs)}>
                      <option value="linux">Linux</option>
                      <option value="other">Other</option>
                    </select>
                  )}
                </Field>
                <Field label="Notes">
                  {(p) => <textarea {...p} name="notes" rows={2} value={form.notes} onInput={text('notes')} />}
                </Field>
              </>
            )}
            {step === 1 && (
              <>
                <InlineError error={dss.error} />
                <fieldset class="ds-choice">
                  <legend>Datastore for the VM's folder</legend>
                  {(dss.data ?? []).map((d) => (
                    <label key={d.name} class="radio-row">
                      <input type="radio" name="datastore" value={d.name} checked={form.datastore === d.name} onChange={() => set('datastore', d.name)} />
                      <span class="ds-name">{d.name}</span>
                      <span class="muted">
                        {formatBytes(d.free_bytes)} free of {formatBytes(d.capacity_bytes)}
                      </span>
                    </label>
                  ))}
                </fieldset>
                {errors.datastore && (
                  <div class="field-error" role="alert">
                    {errors.datastore}
                  </div>
                )}
              </>
            )}
            {step === 2 && (
              <>
                <div class="grid-2 tight">
                  <Field label="vCPUs" error={errors.vcpus} hint={ctx.host ? `The host has ${ctx.host.cpu.threads} logical CPUs` : undefined}>
                    {(p) => <input {...p} name="vcpus" inputMode="numeric" value={form.vcpus} onInput={text('vcpus')} />}
                  </Field>
                  <Field label="Memory (MiB)" error={errors.memoryMib} hint={ctx.host ? `The host has ${formatBytes(ctx.host.memory_total_bytes)}` : undefined}>
                    {(p) => <input {...p} name="memoryMib" inputMode="numeric" value={form.memoryMib} onInput={text('memoryMib')} />}
                  </Field>
                </div>
                <Field
                  label="New disk size"
                  error={errors.diskSize}
                  hint={`Like 8G or 512M; empty for no disk.${ds ? ` ${formatBytes(ds.free_bytes)} free on ${ds.name}.` : ''}`}
                >
                  {(p) => <input {...p} name="diskSize" value={form.diskSize} onInput={text('diskSize')} />}
                </Field>
                <label class="check-row">
                  <input type="checkbox" name="nic" checked={form.nic} onChange={(e) => set('nic', (e.target as HTMLInputElement).checked)} /> Network adapter
                </label>
                {form.nic && (
                  <div class="grid-2 tight">
                    <Field label="Port group" error={errors.portGroup} hint={pgs.error ? `Cannot list the port groups: ${pgs.error}` : undefined}>
                      {(p) => (
                        <select {...p} name="portGroup" value={form.portGroup} onChange={(e) => set('portGroup', (e.target as HTMLSelectElement).value)}>
                          {portGroupNames.map((n) => (
                            <option key={n} value={n}>
                              {n}
                            </option>
                          ))}
                          <option value="">Host TAP interface (outside keeld's switches)</option>
                        </select>
                      )}
                    </Field>
                    {form.portGroup === '' && (
                      <Field label="TAP name" error={errors.tap} hint="A TAP on the host that keel-vmm opens or creates">
                        {(p) => <input {...p} name="tap" value={form.tap} onInput={text('tap')} />}
                      </Field>
                    )}
                    <Field label="MAC address" error={errors.mac} hint="Empty: generated, unique on the host">
                      {(p) => <input {...p} name="mac" value={form.mac} onInput={text('mac')} placeholder="02:6b:00:12:34:56" />}
                    </Field>
                  </div>
                )}
              </>
            )}
            {step === 3 && (
              <>
                <Field label="Kernel" error={errors.kernel} hint="A path on the host or [datastore] path; copied into the VM's folder">
                  {(p) => <input {...p} name="kernel" value={form.kernel} onInput={text('kernel')} placeholder="/boot/vmlinuz" />}
                </Field>
                <Field label="Initrd" error={errors.initrd} hint="Optional">
                  {(p) => <input {...p} name="initrd" value={form.initrd} onInput={text('initrd')} />}
                </Field>
                <Field label="Kernel command line" error={errors.cmdline}>
                  {(p) => <input {...p} name="cmdline" value={form.cmdline} onInput={text('cmdline')} />}
                </Field>
                <label class="check-row">
                  <input type="checkbox" name="autostart" checked={form.autostart} onChange={(e) => set('autostart', (e.target as HTMLInputElement).checked)} />{' '}
                  Power on when the host starts (autostart)
                </label>
              </>
            )}
            {step === 4 && (
              <dl class="facts summary-list" aria-label="The new VM">
                {(
                  [
                    ['Name', form.name],
                    ['Guest OS', form.guestOs],
                    ['Datastore', form.datastore],
                    ['vCPUs', form.vcpus],
                    ['Memory', formatMiB(Number(form.memoryMib))],
                    ['Disk', form.diskSize.trim() ? formatBytes(parseSize(form.diskSize) ?? 0) : 'none'],
                    [
                      'Network',
                      form.nic
                        ? `${form.portGroup ? `Port group ${form.portGroup}` : `Host TAP ${form.tap}`}${form.mac ? `, MAC ${form.mac}` : ', generated MAC'}`
                        : 'none',
                    ],
                    ['Kernel', form.kernel],
                    ['Initrd', form.initrd || 'none'],
                    ['Command line', form.cmdline || '(empty)'],
                    ['Autostart', form.autostart ? 'yes' : 'no'],
                  ] as [string, string][]
                ).map(([k, v]) => (
                  <div class="fact" key={k}>
                    <dt>{k}</dt>
                    <dd>{v}</dd>
                  </div>
                ))}
              </dl>
            )}
            <InlineError error={submitError} />
          </div>
        </div>
        <div class="modal-foot">
          <Button onClick={onClose}>Cancel</Button>
          <Button disabled={step === 0} onClick={() => (setErrors({}), setStep(step - 1))}>
            Back
          </Button>
          {last ? (
            <Button kind="primary" type="submit" disabled={busy}>
              Finish
            </Button>
          ) : (
            <Button kind="primary" type="submit">
              Next
            </Button>
          )}
        </div>
      </form>
    </Modal>
  );
}

function focusFirstError() {
  setTimeout(() => document.querySelector<HTMLElement>('.wizard [aria-invalid="true"]')?.focus(), 0);
}
