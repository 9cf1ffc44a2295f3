import { describe, expect, it } from 'vitest';

import { applicable, opApplies, privilegeSet, missing, missingOnAll, vmPrivileges } from './privileges';
import { href, parseRoute } from './route';
import { stripTasks } from './ui/tasks';
import { joinPath, parentPath } from './pages/storage';
import { entityProblem } from './pages/users';
import type { Privilege, Task } from './types';

describe('routes', () => {
  it('parses hashes and builds them back', () => {
    expect(parseRoute('')).toEqual({ page: 'host' });
    expect(parseRoute('#/vms')).toEqual({ page: 'vms' });
    expect(parseRoute('#/vms/web%201/console')).toEqual({ page: 'vm', name: 'web 1', tab: 'console' });
    expect(parseRoute('#/vms/web1/bogus')).toEqual({ page: 'vm', name: 'web1', tab: 'summary' });
    expect(parseRoute('#/vms/%E0%A4%A')).toEqual({ page: 'vms' });
    expect(parseRoute('#/storage/ds%2F1')).toEqual({ page: 'storage', datastore: 'ds/1' });
    expect(parseRoute('#/nowhere')).toEqual({ page: 'host' });
    for (const r of [
      { page: 'vm', name: 'a/b c', tab: 'log' },
      { page: 'storage', datastore: 'datastore1' },
      { page: 'users' },
    ] as const)
      expect(parseRoute(href(r))).toEqual(r);
    expect(href({ page: 'vm', name: 'x', tab: 'summary' })).toBe('#/vms/x');
  });
});

describe('privileges and power operations', () => {
  it('knows which operations fit which state', () => {
    expect(opApplies('on', 'poweredOff')).toBe(true);
    expect(opApplies('on', 'crashed')).toBe(true);
    expect(opApplies('on', 'poweredOn')).toBe(false);
    expect(opApplies('shutdown', 'paused')).toBe(false);
    expect(opApplies('off', 'paused')).toBe(true);
    expect(opApplies('resume', 'paused')).toBe(true);
    const vms = [
      { name: 'a', power_state: 'poweredOn' as const },
      { name: 'b', power_state: 'poweredOff' as const },
    ];
    expect(applicable('on', vms).map((v) => v.name)).toEqual(['b']);
    expect(applicable('reset', vms).map((v) => v.name)).toEqual(['a']);
  });

  it('says which privilege is missing', () => {
    const p = privilegeSet(['System.View']);
    expect(missing(p, 'System.View')).toBeUndefined();
    expect(missing(p, 'VirtualMachine.Interact.Power')).toMatch(/VirtualMachine\.Interact\.Power/);
    expect(privilegeSet(undefined).size).toBe(0);
  });

  it('lets a VM permission override the host privileges', () => {
    const host = privilegeSet(['System.View']);
    const mine = { name: 'mine', privileges: ['System.View', 'VirtualMachine.Interact.Power'] as Privilege[] };
    const other = { name: 'other', privileges: ['System.View'] as Privilege[] };
    expect(vmPrivileges(host, mine).has('VirtualMachine.Interact.Power')).toBe(true);
    expect(vmPrivileges(host, undefined)).toBe(host);
    expect(missingOnAll(host, [mine], 'VirtualMachine.Interact.Power')).toBeUndefined();
    expect(missingOnAll(host, [mine, other], 'VirtualMachine.Interact.Power')).toMatch(/on other/);
    expect(missingOnAll(host, [], 'VirtualMachine.Interact.Power')).toMatch(/VirtualMachine/);
  });
});

describe('small helpers', () => {
  const task = (id: number, state: Task['state']): Task => ({ id, kind: 'vm.create', user: 'u', state, progress: 0, started_ms: id });

  it('shows running tasks first in the strip, then the newest finished', () => {
    const ts = [task(9, 'success'), task(8, 'running'), task(7, 'error'), task(6, 'queued'), task(5, 'success')];
    expect(stripTasks(ts, 3).map((t) => t.id)).toEqual([8, 6, 9]);
    // Every running task shows, even past the limit.
    expect(stripTasks([task(1, 'running'), task(2, 'running')], 1).map((t) => t.id)).toEqual([1, 2]);
  });

  it('joins and splits datastore paths', () => {
    expect(joinPath('', 'a')).toBe('a');
    expect(joinPath('iso/', 'a')).toBe('iso/a');
    expect(parentPath('iso/linux')).toBe('iso');
    expect(parentPath('iso')).toBe('');
  });

  it('checks permission entities', () => {
    expect(entityProblem('host')).toBeNull();
    expect(entityProblem('vm:web1')).toBeNull();
    expect(entityProblem('vm:')).toMatch(/required/);
    expect(entityProblem('datastore:x')).toMatch(/host' or 'vm:NAME/);
  });
});
