import { describe, expect, it } from 'vitest';

import {
  bootPathProblem,
  emptyWizard,
  emptyPortGroupForm,
  emptySwitchForm,
  intProblem,
  macProblem,
  mtuProblem,
  portGroupFormToCreate,
  portGroupFormToEdit,
  portGroupToForm,
  subnetProblem,
  switchFormToCreate,
  switchFormToEdit,
  switchToForm,
  validatePortGroupForm,
  validateSwitchForm,
  vlanProblem,
  nameProblem,
  parseSize,
  stepErrors,
  tapProblem,
  validateWizard,
  wizardToSpec,
  type WizardContext,
  type WizardForm,
} from './validate';
import type { PortGroup, Switch } from './types';

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
    const f = form({ vcpus: '2', memoryMib: '1024', diskSize: '4G', nic: true, portGroup: '', tap: 'tap0', initrd: '[datastore1] initrd.img', autostart: true });
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

  it("puts the NIC on 'VM Network' by default, or the chosen port group", () => {
    expect(emptyWizard().portGroup).toBe('VM Network');
    expect(wizardToSpec(form({ nic: true })).nics).toEqual([{ port_group: 'VM Network', mac: null }]);
    const f = form({ nic: true, portGroup: 'DMZ', mac: ' 02:6b:00:00:00:07 ' });
    expect(wizardToSpec(f).nics).toEqual([{ port_group: 'DMZ', mac: '02:6b:00:00:00:07' }]);
    const withGroups = { ...ctx, portGroups: ['VM Network', 'DMZ'] };
    expect(validateWizard(f, withGroups)).toEqual({});
    expect(validateWizard(form({ nic: true, portGroup: 'Gone' }), withGroups).portGroup).toBe("No port group 'Gone'");
    // Unknown list (not loaded, or no networking): the API decides.
    expect(validateWizard(form({ nic: true, portGroup: 'Gone' }), ctx).portGroup).toBeUndefined();
  });

  it('a host TAP instead of a port group needs its name', () => {
    expect(validateWizard(form({ nic: true, portGroup: '', tap: '' }), ctx).tap).toMatch(/Name the host TAP/);
    expect(validateWizard(form({ nic: true, portGroup: '', tap: 'tap 1' }), ctx).tap).toMatch(/spaces/);
    // The TAP field is not looked at for a port group.
    expect(validateWizard(form({ nic: true, tap: 'tap 1' }), ctx).tap).toBeUndefined();
    expect(Object.keys(stepErrors(validateWizard(form({ nic: true, portGroup: '' }), ctx), 2))).toEqual(['tap']);
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

describe('networking values', () => {
  it('VLAN IDs 0–4094', () => {
    for (const v of ['0', '1', '100', '4094', ' 7 ']) expect(vlanProblem(v)).toBeNull();
    expect(vlanProblem('4095')).toMatch(/at most 4094/);
    expect(vlanProblem('-1')).toMatch(/whole number/);
    expect(vlanProblem('1.5')).toMatch(/whole number/);
    expect(vlanProblem('')).toMatch(/required/);
  });

  it('MTUs 68–9000', () => {
    for (const v of ['68', '1500', '9000']) expect(mtuProblem(v)).toBeNull();
    expect(mtuProblem('67')).toMatch(/at least 68/);
    expect(mtuProblem('9001')).toMatch(/at most 9000/);
    expect(mtuProblem('jumbo')).toMatch(/whole number/);
  });

  it('NAT subnets in CIDR form, /8–/29, the network address', () => {
    for (const v of ['10.78.0.0/24', '192.168.100.0/29', '10.0.0.0/8', ' 172.16.4.0/22 ']) expect(subnetProblem(v)).toBeNull();
    expect(subnetProblem('')).toMatch(/required/);
    expect(subnetProblem('10.78.0.0')).toMatch(/looks like 10\.78\.0\.0\/24/);
    expect(subnetProblem('10.78.0/24')).toMatch(/looks like/);
    expect(subnetProblem('fd00::/64')).toMatch(/looks like/);
    expect(subnetProblem('10.256.0.0/16')).toMatch(/0–255/);
    expect(subnetProblem('10.0.0.0/7')).toMatch(/\/8 to \/29/);
    expect(subnetProblem('10.0.0.0/30')).toMatch(/\/8 to \/29/);
    expect(subnetProblem('10.78.0.1/24')).toBe('10.78.0.1/24 is not a network address: did you mean 10.78.0.0/24?');
    expect(subnetProblem('192.168.255.255/8')).toMatch(/did you mean 192\.0\.0\.0\/8/);
  });
});

describe('the switch dialog', () => {
  const sw: Switch = { name: 'vSwitch1', bridge: 'keelbr1', mtu: 1500, uplinks: ['eth1', 'eth2'], nat: null, port_groups: [], status: 'up' };

  it('builds a create request, with NAT only when asked', () => {
    const f = { ...emptySwitchForm(), name: 'vSwitch1', mtu: ' 9000 ', uplinks: ['eth1'] };
    expect(validateSwitchForm(f)).toEqual({});
    expect(switchFormToCreate(f)).toEqual({ name: 'vSwitch1', mtu: 9000, uplinks: ['eth1'], nat: null });
    const nat = { ...f, nat: true, subnet: '10.78.0.0/24', dhcp: false };
    expect(switchFormToCreate(nat).nat).toEqual({ subnet: '10.78.0.0/24', dhcp: false });
  });

  it('refuses a bad MTU, and a bad subnet only with NAT; a taken name is left to keeld', () => {
    const e = validateSwitchForm({ ...emptySwitchForm(), name: 'vSwitch0', mtu: '10000', subnet: 'junk' });
    expect(e).toEqual({ mtu: 'The MTU must be at most 9000' });
    const n = validateSwitchForm({ ...emptySwitchForm(), name: 'x', nat: true, subnet: '10.1.2.3/16' });
    expect(n.subnet).toMatch(/did you mean 10\.1\.0\.0\/16/);
    expect(validateSwitchForm(emptySwitchForm()).name).toMatch(/required/);
    expect(validateSwitchForm({ ...emptySwitchForm(), name: ' x' }).name).toMatch(/spaces/);
  });

  it('edits send only what changed (uplinks in any order are the same)', () => {
    const f = switchToForm(sw);
    expect(validateSwitchForm(f, true)).toEqual({});
    expect(switchFormToEdit(f, sw)).toEqual({});
    expect(switchFormToEdit({ ...f, uplinks: ['eth2', 'eth1'] }, sw)).toEqual({});
    expect(switchFormToEdit({ ...f, uplinks: ['eth2'], mtu: '9000' }, sw)).toEqual({ mtu: 9000, uplinks: ['eth2'] });
    expect(switchFormToEdit({ ...f, uplinks: [] }, sw)).toEqual({ uplinks: [] });
    expect(validateSwitchForm({ ...f, mtu: '40' }, true)).toEqual({ mtu: 'The MTU must be at least 68' });
  });

  it('shows NAT of an existing switch', () => {
    const f = switchToForm({ ...sw, nat: { subnet: '10.77.0.0/24', gateway: '10.77.0.1', dhcp: false } });
    expect(f).toMatchObject({ nat: true, subnet: '10.77.0.0/24', dhcp: false });
  });
});

describe('the port group dialog', () => {
  const pg: PortGroup = {
    name: 'VM Network',
    switch: 'vSwitch0',
    vlan: 0,
    policy: { promiscuous: 'reject', mac_changes: 'accept', forged_transmits: 'accept', shaping: null },
    vms: [],
  };

  it("defaults to keeld's policy and builds a create request", () => {
    const f = { ...emptyPortGroupForm('vSwitch0'), name: 'DMZ', vlan: '42' };
    expect(validatePortGroupForm(f, ['vSwitch0'])).toEqual({});
    expect(portGroupFormToCreate(f)).toEqual({
      name: 'DMZ',
      switch: 'vSwitch0',
      vlan: 42,
      policy: { promiscuous: 'reject', mac_changes: 'accept', forged_transmits: 'accept', shaping: null },
    });
  });

  it('includes shaping with optional peak and burst', () => {
    const f = { ...emptyPortGroupForm('vSwitch0'), name: 'slow', shaping: true, averageKbps: '1000', peakKbps: '', burstKib: '128' };
    expect(validatePortGroupForm(f, ['vSwitch0'])).toEqual({});
    expect(portGroupFormToCreate(f).policy?.shaping).toEqual({ average_kbps: 1000, peak_kbps: null, burst_kib: 128 });
  });

  it('refuses a missing switch, a VLAN out of range and bad shaping; a taken name is left to keeld', () => {
    const e = validatePortGroupForm(
      { ...emptyPortGroupForm(''), name: 'VM Network', vlan: '4095', shaping: true, averageKbps: '', burstKib: '0' },
      ['vSwitch0'],
    );
    expect(e).toEqual({
      switch: 'Choose a virtual switch',
      vlan: 'The VLAN ID must be at most 4094',
      averageKbps: 'The average bandwidth is required',
      burstKib: 'The burst size must be at least 1',
    });
    const peak = validatePortGroupForm(
      { ...emptyPortGroupForm('vSwitch0'), name: 'p', shaping: true, averageKbps: '2000', peakKbps: '1000' },
      ['vSwitch0'],
    );
    expect(peak).toEqual({ peakKbps: 'The peak bandwidth must be at least the average' });
    expect(validatePortGroupForm({ ...emptyPortGroupForm('vSwitch9'), name: 'p' }, ['vSwitch0']).switch).toBe(
      "No virtual switch 'vSwitch9'",
    );
    // Shaping fields are ignored while shaping is off.
    expect(validatePortGroupForm({ ...emptyPortGroupForm('vSwitch0'), name: 'p', averageKbps: 'x' }, ['vSwitch0'])).toEqual({});
  });

  it('edits send only what changed', () => {
    const f = portGroupToForm(pg);
    expect(validatePortGroupForm(f, ['vSwitch0'], true)).toEqual({});
    expect(portGroupFormToEdit(f, pg)).toEqual({});
    expect(portGroupFormToEdit({ ...f, vlan: '10' }, pg)).toEqual({ vlan: 10 });
    const edit = portGroupFormToEdit({ ...f, forgedTransmits: 'reject', shaping: true, averageKbps: '500' }, pg);
    expect(edit).toEqual({
      policy: {
        promiscuous: 'reject',
        mac_changes: 'accept',
        forged_transmits: 'reject',
        shaping: { average_kbps: 500, peak_kbps: null, burst_kib: null },
      },
    });
    // A shaped port group round-trips through the form unchanged.
    const shaped: PortGroup = { ...pg, policy: { ...pg.policy, shaping: { average_kbps: 500, peak_kbps: 800 } } };
    const sf = portGroupToForm(shaped);
    expect(sf).toMatchObject({ shaping: true, averageKbps: '500', peakKbps: '800', burstKib: '' });
    expect(portGroupFormToEdit(sf, shaped)).toEqual({});
    expect(portGroupFormToEdit({ ...sf, shaping: false }, shaped)).toEqual({ policy: { ...pg.policy, shaping: null } });
  });
});
