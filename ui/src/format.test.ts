import { describe, expect, it } from 'vitest';

import {
  formatBytes,
  formatDuration,
  formatKbps,
  formatMiB,
  formatPercent,
  formatTime,
  policySummary,
  powerLabel,
  shapingSummary,
  targetName,
  taskDuration,
  taskName,
  vlanLabel,
} from './format';

describe('format', () => {
  it('sizes in binary units with at most three digits', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(10 * 1024 ** 2)).toBe('10 MiB');
    expect(formatBytes(123.4 * 1024 ** 3)).toBe('123 GiB');
    expect(formatBytes(1.25 * 1024 ** 4)).toBe('1.25 TiB');
    expect(formatBytes(-1)).toBe('—');
    expect(formatBytes(NaN)).toBe('—');
    expect(formatMiB(512)).toBe('512 MiB');
    expect(formatMiB(2048)).toBe('2 GiB');
  });

  it('durations in the two largest units', () => {
    expect(formatDuration(5)).toBe('5 s');
    expect(formatDuration(65)).toBe('1 min 5 s');
    expect(formatDuration(120)).toBe('2 min');
    expect(formatDuration(3725)).toBe('1 h 2 min');
    expect(formatDuration(93784)).toBe('1 d 2 h');
    expect(formatDuration(86400 * 3)).toBe('3 d');
    expect(formatDuration(-3)).toBe('—');
  });

  it('times as local, sortable text', () => {
    const ms = new Date(2024, 0, 2, 3, 4, 5).getTime();
    expect(formatTime(ms)).toBe('2024-01-02 03:04:05');
    expect(formatTime(undefined)).toBe('—');
    expect(formatTime(null)).toBe('—');
  });

  it('percentages, clamped', () => {
    expect(formatPercent(0.05)).toBe('5 %');
    expect(formatPercent(0.053)).toBe('5.3 %');
    expect(formatPercent(0.5)).toBe('50 %');
    expect(formatPercent(1.7)).toBe('100 %');
    expect(formatPercent(NaN)).toBe('—');
  });

  it('names states, tasks and targets for people', () => {
    expect(powerLabel('poweredOn')).toBe('Powered on');
    expect(powerLabel('crashed')).toBe('Crashed');
    expect(taskName('vm.power-on')).toBe('Power on VM');
    expect(taskName('vm.shutdown')).toBe('Shut down guest');
    expect(taskName('datastore.upload-file')).toBe('Upload file');
    expect(targetName('vm:web1')).toBe('web1');
    expect(targetName('vm:a:b')).toBe('a:b');
    expect(targetName('host')).toBe('Host');
    expect(targetName(null)).toBe('—');
    expect(taskDuration({ started_ms: 1000, finished_ms: 66000 }, 0)).toBe('1 min 5 s');
    expect(taskDuration({ started_ms: 1000, finished_ms: null }, 4000)).toBe('3 s');
  });
});

describe('networking labels', () => {
  it('VLAN 0 is none', () => {
    expect(vlanLabel(0)).toBe('none');
    expect(vlanLabel(4094)).toBe('4094');
  });

  it('bandwidth in decimal units', () => {
    expect(formatKbps(800)).toBe('800 kbit/s');
    expect(formatKbps(1000)).toBe('1 Mbit/s');
    expect(formatKbps(1500)).toBe('1.5 Mbit/s');
    expect(formatKbps(10_000_000)).toBe('10 Gbit/s');
    expect(formatKbps(-1)).toBe('—');
  });

  it('policies in one line, with shaping defaults filled in', () => {
    expect(policySummary({ promiscuous: 'reject', mac_changes: 'accept', forged_transmits: 'accept', shaping: null })).toBe(
      'Promiscuous reject, MAC changes accept, forged transmits accept; no shaping',
    );
    expect(shapingSummary({ average_kbps: 1000 })).toBe('1 Mbit/s average, 1 Mbit/s peak, 64 KiB burst');
    expect(
      policySummary({ promiscuous: 'accept', mac_changes: 'reject', forged_transmits: 'reject', shaping: { average_kbps: 500, peak_kbps: 2000, burst_kib: 128 } }),
    ).toBe('Promiscuous accept, MAC changes reject, forged transmits reject; shaping 500 kbit/s average, 2 Mbit/s peak, 128 KiB burst');
  });
});
