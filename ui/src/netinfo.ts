// Pure helpers of the networking pages: which host NICs can be uplinks,
// a VM's NICs, which switch uses a host NIC.

import type { HostNic, NicInfo, Switch, VmInfo } from './types';

/** Host NICs that can be uplinks: not loopback, not keeld's own bridges
 * and TAPs (`keel…`); physical ones first, then by name. */
export function uplinkCandidates(nics: HostNic[], switches: Switch[]): HostNic[] {
  const bridges = new Set(switches.map((s) => s.bridge));
  return nics
    .filter((n) => n.name !== 'lo' && !bridges.has(n.name) && !n.name.startsWith('keel'))
    .sort((a, b) => Number(b.physical) - Number(a.physical) || a.name.localeCompare(b.name));
}

/** Host NIC name → "uplink of vSwitch1" / "bridge of vSwitch0". */
export function hostNicRoles(switches: Switch[]): Map<string, string> {
  const role = new Map<string, string>();
  for (const s of switches) {
    role.set(s.bridge, `bridge of ${s.name}`);
    for (const u of s.uplinks) role.set(u, `uplink of ${s.name}`);
  }
  return role;
}

/** Host NIC name → the other switch that has it as an uplink (an uplink
 * serves one switch). */
export function uplinksInUse(switches: Switch[], except?: string): Map<string, string> {
  const used = new Map<string, string>();
  for (const s of switches) if (s.name !== except) for (const u of s.uplinks) used.set(u, s.name);
  return used;
}

/** The VM's NICs as keeld reports them, else (a keeld without `nics` in
 * VmInfo) from its configuration. */
export function vmNics(vm: Pick<VmInfo, 'nics' | 'config' | 'ip'>): NicInfo[] {
  if (vm.nics) return vm.nics;
  return vm.config.nics.map((n, index) => ({
    index,
    port_group: n.port_group ?? null,
    mac: n.mac ?? '',
    connected: n.connected ?? true,
    tap: n.tap ?? null,
    ip: index === 0 ? (vm.ip ?? null) : null,
  }));
}
