// Hash routes: #/host, #/vms, #/vms/NAME/TAB, #/storage/DS, #/network,
// #/monitor, #/users. Names are URI-encoded.

export type Route =
  | { page: 'host' }
  | { page: 'vms' }
  | { page: 'vm'; name: string; tab: string }
  | { page: 'storage'; datastore?: string }
  | { page: 'network' }
  | { page: 'monitor' }
  | { page: 'users' };

export const VM_TABS = ['summary', 'console', 'config', 'log', 'events'] as const;

function decode(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').filter((p) => p !== '');
  switch (parts[0]) {
    case 'vms': {
      const name = parts[1] !== undefined ? decode(parts[1]) : null;
      if (!name) return { page: 'vms' };
      const tab = (VM_TABS as readonly string[]).includes(parts[2] ?? '') ? parts[2] : 'summary';
      return { page: 'vm', name, tab };
    }
    case 'storage': {
      const ds = parts[1] !== undefined ? decode(parts[1]) : null;
      return ds ? { page: 'storage', datastore: ds } : { page: 'storage' };
    }
    case 'network':
      return { page: 'network' };
    case 'monitor':
      return { page: 'monitor' };
    case 'users':
      return { page: 'users' };
    default:
      return { page: 'host' };
  }
}

export function href(r: Route): string {
  switch (r.page) {
    case 'vm':
      return `#/vms/${encodeURIComponent(r.name)}${r.tab && r.tab !== 'summary' ? '/' + r.tab : ''}`;
    case 'storage':
      return r.datastore ? `#/storage/${encodeURIComponent(r.datastore)}` : '#/storage';
    default:
      return `#/${r.page}`;
  }
}
