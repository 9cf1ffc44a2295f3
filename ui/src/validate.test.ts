import { describe, expect, it } from 'vitest';

import {
  bootPathProblem,
  emptyWizard,
  intProblem,
  macProblem,
  nameProblem,
  parseSize,
  stepErrors,
  tapProblem,
  validateWizard,
  wizardToSpec,
  type WizardContext,
  type WizardForm,
} from './validate';

const ctx: WizardContext = {
  existingNames: ['web1'],
  datastores: [
    { name: 'datastore1', free_bytes: 10 * 1024 ** 3 },
    { name: 'small', free_bytes: 100 * 1024 ** 2 },
  ],
  hostThreads: 4,
  hostMemoryBytes: 8 * 1024 ** 3,
};

function form(over: Partial<WizardForm> = {}): WizardForm {
  return { ...emptyWizard(), name: 'db1', kernel: '/boot/vmlinuz', ...over };
}

describe('names', () => {
  it('accepts what keeld accepts', () => {
    for (const n of ['web1', 'my vm', 'ünïcode', 'a'.repeat(80), 'x.y']) expect(nameProblem(n)).toBeNull();
  });

  it('refuses what keeld refuses, saying why', () => {
    expect(nameProblem('')).toMatch(/required/);
    expect(nameProblem('a/b')).toMatch(/'\/'/);
    expect(nameProblem('.')).toMatch(/start with '\.'/);
    expect(nameProblem('..')).toMatch(/start with '\.'/);
    expect(nameProblem('.hidden')).toMatch(/start with '\.'/);
    expect(nameProblem('a\u0000b')).toMatch(/control/);
    expect(nameProblem('tab\there')).toMatch(/control/);
    expect(nameProblem(' web')).toMatch(/spaces/);
    expect(nameProblem('a'.repeat(81))).toMatch(/80/);
    // 80 characters but more than 200 bytes.
    expect(nameProblem('😀'.repeat(60))).toMatch(/80/);
  });
});

describe('sizes and numbers', () => {
  it('parses binary sizes', () => {
    expect(parseSize('8G')).toBe(8 * 1024 ** 3);
    expect(parseSize('512 MiB')).toBe(512 * 1024 ** 2);
    expect(parseSize('1.5g')).toBe(1.5 * 1024 ** 3);
    expect(parseSize('4096')).toBe(4096);
    expect(parseSize('2T')).toBe(2 * 1024 ** 4);
    for (const bad of ['', 'G', '8X', '-1G', '1e3', '8 G B']) expect(parseSize(bad)).toBeNull();
  });

  it('checks whole numbers in a range', () => {
    expect(intProblem('2', 'vCPUs', 1, 4)).toBeNull();
    expect(intProblem('', 'vCPUs', 1, 4)).toMatch(/required/);
    expect(intProblem('1.5', 'vCPUs', 1, 4)).toMatch(/whole/);
    expect(intProblem('0', 'vCPUs', 1, 4)).toMatch(/at least 1/);
    expect(intProblem('5', 'vCPUs', 1, 4)).toMatch(/at most 4/);
  });
});

describe('boot paths, TAP names, MACs', () => {
  it('takes absolute host paths and [datastore] paths', () => {
    expect(bootPathProblem('/boot/vmlinuz', 'The kernel', true)).toBeNull();
    expect(bootPathProblem('[datastore1] iso/vmlinuz', 'The kernel', true)).toBeNull();
    expect(bootPathProblem('', 'The kernel', true)).toMatch(/required/);
    expect(bootPathProblem('', 'The initrd', false)).toBeNull();
    expect(bootPathProblem('vmlinuz', 'The kernel', true)).toMatch(/absolute/);
    expect(bootPathProblem('[ds] ../../etc/shadow', 'The kernel', true)).toMatch(/'\.\.'/);
    expect(bootPathProblem('[.x] k', 'The kernel', true)).toMatch(/not a datastore/);
  });

  it('checks TAP names and MAC addresses', () => {
    expect(tapProblem('')).toBeNull();
    expect(tapProblem('tap-web1')).toBeNull();
    expect(tapProblem('a-very-long-tap-name')).toMatch(/15/);
    expect(tapProblem('tap 1')).toMatch(/spaces/);
    expect(macProblem('')).toBeNull();
    expect(macProblem('52:54:00:12:34:56')).toBeNull();
    expect(macProblem('52:54:00:12:34')).toMatch(/looks like/);
    expect(macProblem('01:00:5e:00:00:01')).toMatch(/unicast/);
  });
});

describe('the create-VM wizard', () => {
  it('accepts a complete form and builds the API request', () => {
    const f = form({ vcpus: '2', memoryMib: '1024', diskSize: '4G', nic: true, tap: 'tap0', initrd: '[datastore1] initrd.img', autostart: true });
    expect(validateWizard(f, ctx)).toEqual({});
    expect(wizardToSpec(f)).toEqual({
      name: 'db1',
      datastore: 'datastore1',
      vcpus: 2,
      memory_mib: 1024,
      disks: [{ size_bytes: 4 * 1024 ** 3 }],
      nics: [{ tap: 'tap0', mac: null }],
      boot: { kernel: '/boot/vmlinuz', initrd: '[datastore1] initrd.img', cmdline: 'console=ttyS0' },
      guest_os: 'linux',
      notes: '',
      autostart: true,
    });
  });

  it('leaves out a disk and a NIC when not asked for', () => {
    const spec = wizardToSpec(form({ diskSize: '  ', nic: false, tap: 'ignored' }));
    expect(spec.disks).toEqual([]);
    expect(spec.nics).toEqual([]);
    expect(spec.boot.initrd).toBeNull();
  });

  it('refuses a taken name, an unknown datastore, and limits from the host', () => {
    const e = validateWizard(form({ name: 'web1', datastore: 'nope', vcpus: '8', memoryMib: '9000' }), ctx);
    expect(e.name).toMatch(/exists already/);
    expect(e.datastore).toMatch(/No datastore 'nope'/);
    expect(e.vcpus).toMatch(/at most 4 \(the host's logical CPUs\)/);
    expect(e.memoryMib).toMatch(/at most 8192 \(the host's memory\)/);
  });

  it('refuses a disk larger than the free space, or not a size', () => {
    expect(validateWizard(form({ datastore: 'small', diskSize: '1G' }), ctx).diskSize).toMatch(/free space of small/);
    expect(validateWizard(form({ diskSize: 'big' }), ctx).diskSize).toMatch(/looks like/);
    expect(validateWizard(form({ diskSize: '100K' }), ctx).diskSize).toMatch(/at least 1 MiB/);
  });

  it('checks the NIC only when there is one', () => {
    expect(validateWizard(form({ nic: false, mac: 'junk' }), ctx).mac).toBeUndefined();
    expect(validateWizard(form({ nic: true, mac: 'junk' }), ctx).mac).toMatch(/looks like/);
  });

  it('needs a kernel; without host facts it still bounds the numbers', () => {
    const e = validateWizard(form({ kernel: '', vcpus: '300' }), { existingNames: [], datastores: ctx.datastores });
    expect(e.kernel).toMatch(/required/);
    expect(e.vcpus).toMatch(/at most 255$/);
  });

  it('shows each step only its own errors', () => {
    const all = validateWizard(form({ name: '', kernel: '' }), ctx);
    expect(Object.keys(stepErrors(all, 0))).toEqual(['name']);
    expect(stepErrors(all, 1)).toEqual({});
    expect(Object.keys(stepErrors(all, 3))).toEqual(['kernel']);
    expect(stepErrors(all, 99)).toEqual({});
  });
});
