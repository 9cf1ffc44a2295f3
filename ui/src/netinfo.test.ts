import { describe, expect, it } from 'vitest';

import { hostNicRoles, uplinkCandidates, uplinksInUse, vmNics } from './netinfo';
import type { HostNic, Switch, VmConfig } from './types';

const nic = (name: string, physical = false): HostNic => ({ name, mac: '', mtu: 1500, state: 'up', physical });
const sw = (name: string, bridge: string, uplinks: string[] = []): Switch => ({
  name,
  bridge,
  mtu: 1500,
  uplinks,
  nat: null,
  port_groups: [],
  status: 'up',
});

describe('uplinks', () => {
  it("offers host NICs, physical first, never loopback or keeld's bridges and TAPs", () => {
    const nics = [nic('lo'), nic('veth9'), nic('keelbr0'), nic('keeltap3'), nic('eth1', true), nic('br-lan'), nic('eth0', true)];
    const switches = [sw('vSwitch0', 'keelbr0'), sw('lan', 'br-lan', ['eth1'])];
    expect(uplinkCandidates(nics, switches).map((n) => n.name)).toEqual(['eth0', 'eth1', 'veth9']);
  });

  it('says which switch uses a host NIC', () => {
    const switches = [sw('vSwitch0', 'keelbr0'), sw('vSwitch1', 'keelbr1', ['eth1', 'eth2'])];
    expect(hostNicRoles(switches).get('keelbr1')).toBe('bridge of vSwitch1');
    expect(hostNicRoles(switches).get('eth2')).toBe('uplink of vSwitch1');
    expect(uplinksInUse(switches).get('eth1')).toBe('vSwitch1');
    // Editing vSwitch1: its own uplinks are free to keep or drop.
    expect(uplinksInUse(switches, 'vSwitch1').size).toBe(0);
  });
});

describe("a VM's NICs", () => {
  const config: VmConfig = {
    name: 'web1',
    vcpus: 1,
    memory_mib: 64,
    disks: [],
    nics: [{ port_group: 'VM Network', mac: '02:6b:00:00:00:01' }, { tap: 'tap7', connected: false }],
    boot: { kernel: 'vmlinuz', cmdline: '' },
    guest_os: 'linux',
    notes: '',
  };

  it("uses keeld's NIC list when there is one", () => {
    const nics = [{ index: 0, port_group: 'DMZ', mac: 'm', connected: true, tap: 'keeltap1', ip: '10.77.0.5' }];
    expect(vmNics({ config, nics, ip: null })).toBe(nics);
  });

  it('falls back to the configuration', () => {
    expect(vmNics({ config, ip: '10.77.0.9' })).toEqual([
      { index: 0, port_group: 'VM Network', mac: '02:6b:00:00:00:01', connected: true, tap: null, ip: '10.77.0.9' },
      { index: 1, port_group: null, mac: '', connected: false, tap: 'tap7', ip: null },
    ]);
  });
});
