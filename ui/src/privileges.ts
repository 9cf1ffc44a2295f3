// What the signed-in user may do, from the host privileges of the session
// (GET /api/v1/session). The UI disables what is not allowed; the API's
// 403 still holds when a request is forced.

import type { PowerOp, PowerState, Privilege } from './types';

export type Privileges = ReadonlySet<Privilege>;

export function privilegeSet(list: Privilege[] | undefined | null): Privileges {
  return new Set(list ?? []);
}

export function can(privs: Privileges, p: Privilege): boolean {
  return privs.has(p);
}

/** Why a button is disabled: the missing privilege, for its tooltip. */
export function missing(privs: Privileges, p: Privilege): string | undefined {
  return privs.has(p) ? undefined : `You lack the privilege ${p}`;
}

export const POWER_OPS: { op: PowerOp; label: string; from: PowerState[] }[] = [
  { op: 'on', label: 'Power on', from: ['poweredOff', 'crashed'] },
  { op: 'shutdown', label: 'Shut down', from: ['poweredOn'] },
  { op: 'off', label: 'Power off', from: ['poweredOn', 'paused'] },
  { op: 'reset', label: 'Reset', from: ['poweredOn'] },
  { op: 'pause', label: 'Pause', from: ['poweredOn'] },
  { op: 'resume', label: 'Resume', from: ['paused'] },
];

/** Whether `op` makes sense in state `s`. */
export function opApplies(op: PowerOp, s: PowerState): boolean {
  return POWER_OPS.find((p) => p.op === op)?.from.includes(s) ?? false;
}

/** The VMs of a selection that `op` applies to. */
export function applicable<T extends { name: string; power_state: PowerState }>(op: PowerOp, vms: T[]): T[] {
  return vms.filter((v) => opApplies(op, v.power_state));
}

/**
 * The privileges on one VM: what keeld says the user may do on it (a VM
 * permission overrides the host one), else the host privileges.
 */
export function vmPrivileges(host: Privileges, vm: { privileges?: Privilege[] } | undefined | null): Privileges {
  return vm?.privileges ? privilegeSet(vm.privileges) : host;
}

/** Why an action is disabled for a selection: the first VM lacking `p`. */
export function missingOnAll(
  host: Privileges,
  vms: { name: string; privileges?: Privilege[] }[],
  p: Privilege,
): string | undefined {
  if (vms.length === 0) return missing(host, p);
  const lacking = vms.find((v) => !vmPrivileges(host, v).has(p));
  return lacking ? `You lack the privilege ${p} on ${lacking.name}` : undefined;
}
