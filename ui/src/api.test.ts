import { describe, expect, it, vi } from 'vitest';

import { Api, ApiError, dsPath, errorFromResponse, errorMessage, memoryTokenStore, query, storageTokenStore } from './api';

function json(status: number, body: unknown, statusText = ''): Response {
  return new Response(JSON.stringify(body), { status, statusText, headers: { 'Content-Type': 'application/json' } });
}

function client(responses: (Response | Error)[], token: string | null = 'tok') {
  const calls: { url: string; init: RequestInit }[] = [];
  const fetchFn = vi.fn(async (url: string, init: RequestInit) => {
    calls.push({ url, init });
    const next = responses.shift();
    if (!next) throw new Error('no more responses');
    if (next instanceof Error) throw next;
    return next;
  });
  const onUnauthorized = vi.fn();
  const api = new Api({ fetch: fetchFn as unknown as typeof fetch, store: memoryTokenStore(token), onUnauthorized });
  return { api, calls, onUnauthorized };
}

describe('Api', () => {
  it('sends the bearer token and parses JSON', async () => {
    const { api, calls } = client([json(200, [{ name: 'web1' }])]);
    const vms = await api.vms();
    expect(vms).toEqual([{ name: 'web1' }]);
    expect(calls[0].url).toBe('/api/v1/vms');
    expect((calls[0].init.headers as Record<string, string>).Authorization).toBe('Bearer tok');
    expect(calls[0].init.body).toBeUndefined();
  });

  it('sends JSON bodies with their content type and encodes names', async () => {
    const { api, calls } = client([json(202, { id: 7 })]);
    await api.vmPower('a b/c', 'shutdown');
    expect(calls[0].url).toBe('/api/v1/vms/a%20b%2Fc/power/shutdown');
    const { api: api2, calls: calls2 } = client([json(200, {})]);
    await api2.vmEdit('web1', { vcpus: 2 });
    expect(calls2[0].init.method).toBe('PATCH');
    expect(calls2[0].init.body).toBe('{"vcpus":2}');
    expect((calls2[0].init.headers as Record<string, string>)['Content-Type']).toBe('application/json');
  });

  it("turns the API's error body into an ApiError with its message", async () => {
    const { api } = client([json(409, { error: { code: 'conflict', message: 'VM web1 is already powered on' } })]);
    const err = await api.vmPower('web1', 'on').catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(409);
    expect(err.code).toBe('conflict');
    expect(err.message).toBe('VM web1 is already powered on');
    expect(errorMessage(err)).toBe('VM web1 is already powered on');
  });

  it('names the status when the answer is not the API error shape', async () => {
    const html = new Response('<html><body>Bad gateway</body></html>', { status: 502, statusText: 'Bad Gateway' });
    const err = await errorFromResponse(html);
    expect(err.message).toBe('HTTP 502 Bad Gateway');
    expect(err.code).toBe('internal');
    const text = await errorFromResponse(new Response('disk on fire\nmore', { status: 500 }));
    expect(text.message).toBe('HTTP 500: disk on fire');
    const empty = await errorFromResponse(new Response('', { status: 404 }));
    expect(empty.message).toBe('HTTP 404');
    expect(empty.code).toBe('not-found');
    const odd = await errorFromResponse(json(403, { error: { message: 42 } }));
    expect(odd.code).toBe('forbidden');
  });

  it('reports an unreachable host as status 0', async () => {
    const { api } = client([new TypeError('Failed to fetch')]);
    const err = await api.host().catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(0);
    expect(err.code).toBe('network');
    expect(err.message).toBe('Cannot reach the host: Failed to fetch');
  });

  it('ends the session on a 401 of an authenticated call', async () => {
    const { api, onUnauthorized } = client([json(401, { error: { code: 'unauthorized', message: 'Session expired' } })]);
    await expect(api.vms()).rejects.toThrow('Session expired');
    expect(api.token).toBeNull();
    expect(onUnauthorized).toHaveBeenCalledOnce();
  });

  it('a failed login is only an error (no session to end)', async () => {
    const { api, onUnauthorized, calls } = client(
      [json(401, { error: { code: 'unauthorized', message: 'Wrong user name or password' } })],
      null,
    );
    await expect(api.login('admin', 'nope')).rejects.toThrow('Wrong user name or password');
    expect(onUnauthorized).not.toHaveBeenCalled();
    expect((calls[0].init.headers as Record<string, string>).Authorization).toBeUndefined();
    expect(JSON.parse(calls[0].init.body as string)).toEqual({ user: 'admin', password: 'nope' });
  });

  it('keeps the token of a login and forgets it at logout, even when the host fails', async () => {
    const { api } = client(
      [
        json(201, { token: 'new', user: 'admin', expires_ms: 1, host_privileges: [] }),
        new Response('', { status: 500 }),
      ],
      null,
    );
    const s = await api.login('admin', 'pw');
    expect(s.user).toBe('admin');
    expect(api.token).toBe('new');
    await expect(api.logout()).rejects.toThrow('HTTP 500');
    expect(api.token).toBeNull();
  });

  it('answers undefined for 204 and rejects a body that is not JSON', async () => {
    const { api } = client([new Response(null, { status: 204 }), new Response('oops', { status: 200 })]);
    expect(await api.vmDelete('web1')).toBeUndefined();
    await expect(api.vms()).rejects.toThrow('not JSON');
  });

  it('builds the console and download URLs with the token in the query', () => {
    const { api } = client([], 'a+b/c');
    expect(api.consoleUrl('web 1', { protocol: 'https:', host: 'h:8443' })).toBe(
      'wss://h:8443/api/v1/vms/web%201/console?access_token=a%2Bb%2Fc',
    );
    expect(api.consoleUrl('w', { protocol: 'http:', host: 'h' })).toBe('ws://h/api/v1/vms/w/console?access_token=a%2Bb%2Fc');
    expect(api.downloadUrl('datastore1', '/iso/my file#1.iso')).toBe(
      '/api/v1/datastores/datastore1/files/iso/my%20file%231.iso?access_token=a%2Bb%2Fc',
    );
  });

  it('pages and filters with query parameters', async () => {
    const { api, calls } = client([json(200, { items: [] }), json(200, { items: [] })]);
    await api.events(120, 20, 'vm:web1');
    await api.tasks();
    expect(calls[0].url).toBe('/api/v1/events?before=120&limit=20&target=vm%3Aweb1');
    expect(calls[1].url).toBe('/api/v1/tasks?limit=25');
  });
});

describe('networking', () => {
  const sw = { name: 'vSwitch1', bridge: 'keelbr1', mtu: 9000, uplinks: ['eth1'], nat: null, port_groups: [], status: 'up' };
  const pg = {
    name: 'VM Network',
    switch: 'vSwitch0',
    vlan: 0,
    policy: { promiscuous: 'reject', mac_changes: 'accept', forged_transmits: 'accept', shaping: null },
    vms: ['web1'],
  };

  it('lists, creates, edits and deletes switches', async () => {
    const { api, calls } = client([json(200, [sw]), json(201, sw), json(200, sw), json(200, sw), new Response(null, { status: 204 })]);
    expect(await api.switches()).toEqual([sw]);
    const created = await api.switchCreate({ name: 'vSwitch1', mtu: 9000, uplinks: ['eth1'], nat: { subnet: '10.78.0.0/24', dhcp: true } });
    expect(created.bridge).toBe('keelbr1');
    await api.switchGet('vSwitch1');
    await api.switchEdit('vSwitch1', { uplinks: [] });
    expect(await api.switchDelete('vSwitch1')).toBeUndefined();
    expect(calls.map((c) => `${c.init.method} ${c.url}`)).toEqual([
      'GET /api/v1/network/switches',
      'POST /api/v1/network/switches',
      'GET /api/v1/network/switches/vSwitch1',
      'PATCH /api/v1/network/switches/vSwitch1',
      'DELETE /api/v1/network/switches/vSwitch1',
    ]);
    expect(JSON.parse(calls[1].init.body as string)).toEqual({
      name: 'vSwitch1',
      mtu: 9000,
      uplinks: ['eth1'],
      nat: { subnet: '10.78.0.0/24', dhcp: true },
    });
    expect(calls[3].init.body).toBe('{"uplinks":[]}');
  });

  it('encodes port group names with spaces and slashes in the path', async () => {
    const { api, calls } = client([json(200, [pg]), json(201, pg), json(200, pg), json(200, pg), new Response(null, { status: 204 })]);
    expect((await api.portGroups())[0].vms).toEqual(['web1']);
    await api.portGroupCreate({ name: 'VM Network', switch: 'vSwitch0', vlan: 0 });
    await api.portGroup('VM Network');
    await api.portGroupEdit('a/b c', { vlan: 42 });
    await api.portGroupDelete('VM Network');
    expect(calls.map((c) => `${c.init.method} ${c.url}`)).toEqual([
      'GET /api/v1/network/portgroups',
      'POST /api/v1/network/portgroups',
      'GET /api/v1/network/portgroups/VM%20Network',
      'PATCH /api/v1/network/portgroups/a%2Fb%20c',
      'DELETE /api/v1/network/portgroups/VM%20Network',
    ]);
    expect(calls[3].init.body).toBe('{"vlan":42}');
  });

  it("a duplicate port group is an ApiError with the API's message", async () => {
    const { api } = client([json(409, { error: { code: 'conflict', message: "Port group 'VM Network' exists already" } })]);
    const err = await api.portGroupCreate({ name: 'VM Network', switch: 'vSwitch0' }).catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(409);
    expect(err.message).toBe("Port group 'VM Network' exists already");
  });

  it("manages a VM's NICs by index", async () => {
    const nic = { index: 1, port_group: 'VM Network', mac: '02:6b:00:00:00:01', connected: true, tap: null, ip: null };
    const { api, calls } = client([
      json(200, [nic]),
      json(201, nic),
      json(200, { ...nic, connected: false }),
      new Response(null, { status: 204 }),
    ]);
    expect(await api.vmNics('web 1')).toEqual([nic]);
    await api.vmNicAdd('web 1', { port_group: 'VM Network', mac: null });
    expect((await api.vmNicEdit('web 1', 1, { connected: false })).connected).toBe(false);
    await api.vmNicRemove('web 1', 1);
    expect(calls.map((c) => `${c.init.method} ${c.url}`)).toEqual([
      'GET /api/v1/vms/web%201/nics',
      'POST /api/v1/vms/web%201/nics',
      'PATCH /api/v1/vms/web%201/nics/1',
      'DELETE /api/v1/vms/web%201/nics/1',
    ]);
    expect(JSON.parse(calls[1].init.body as string)).toEqual({ port_group: 'VM Network', mac: null });
    expect(calls[2].init.body).toBe('{"connected":false}');
  });

  it('a NIC added to a running VM is refused with the conflict message', async () => {
    const { api } = client([json(409, { error: { code: 'conflict', message: 'VM web1 is powered on: power it off to add a NIC' } })]);
    await expect(api.vmNicAdd('web1', {})).rejects.toThrow('power it off to add a NIC');
  });
});

describe('helpers', () => {
  it('query skips empty values', () => {
    expect(query({ a: 1, b: undefined, c: '', d: null, e: 'x y' })).toBe('?a=1&e=x%20y');
    expect(query({})).toBe('');
  });

  it('dsPath encodes each component and drops empty ones', () => {
    expect(dsPath('a/b c//d%')).toBe('a/b%20c/d%25');
  });

  it('storageTokenStore survives a storage that throws', () => {
    const broken = {
      getItem: () => {
        throw new Error('denied');
      },
      setItem: () => {
        throw new Error('denied');
      },
      removeItem: () => {
        throw new Error('denied');
      },
    };
    const store = storageTokenStore(broken);
    expect(store.get()).toBeNull();
    expect(() => store.set('x')).not.toThrow();
    const map = new Map<string, string>();
    const ok = storageTokenStore({
      getItem: (k) => map.get(k) ?? null,
      setItem: (k, v) => void map.set(k, v),
      removeItem: (k) => void map.delete(k),
    });
    ok.set('t1');
    expect(ok.get()).toBe('t1');
    ok.set(null);
    expect(map.size).toBe(0);
  });
});

/** Just enough of XMLHttpRequest for Api.upload. */
class FakeXhr {
  status = 0;
  statusText = '';
  responseText = '';
  method = '';
  url = '';
  headers: Record<string, string> = {};
  sent: unknown;
  upload: { onprogress: ((e: ProgressEvent) => void) | null } = { onprogress: null };
  onload: (() => void) | null = null;
  onerror: (() => void) | null = null;
  onabort: (() => void) | null = null;
  open(method: string, url: string) {
    this.method = method;
    this.url = url;
  }
  setRequestHeader(k: string, v: string) {
    this.headers[k] = v;
  }
  send(body: unknown) {
    this.sent = body;
  }
  abort() {
    this.onabort?.();
  }
  progress(loaded: number, total: number) {
    this.upload.onprogress?.({ lengthComputable: true, loaded, total } as ProgressEvent);
  }
  finish(status: number, text = '') {
    this.status = status;
    this.responseText = text;
    this.onload?.();
  }
}

describe('upload', () => {
  it('PUTs the file with the token and reports progress', async () => {
    const { api } = client([]);
    const xhr = new FakeXhr();
    const seen: number[] = [];
    const blob = new Blob(['hello']);
    const h = api.upload('datastore1', 'iso/a b.iso', blob, (f) => seen.push(f), () => xhr as unknown as XMLHttpRequest);
    expect(xhr.method).toBe('PUT');
    expect(xhr.url).toBe('/api/v1/datastores/datastore1/files/iso/a%20b.iso');
    expect(xhr.headers.Authorization).toBe('Bearer tok');
    expect(xhr.sent).toBe(blob);
    xhr.progress(1, 4);
    xhr.progress(2, 4);
    xhr.finish(201);
    await h.promise;
    expect(seen).toEqual([0.25, 0.5, 1]);
  });

  it("rejects with the API's message", async () => {
    const { api } = client([]);
    const xhr = new FakeXhr();
    const h = api.upload('ds', 'f', new Blob([]), () => {}, () => xhr as unknown as XMLHttpRequest);
    xhr.finish(409, JSON.stringify({ error: { code: 'conflict', message: 'f exists already' } }));
    const err = await h.promise.catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(409);
    expect(err.message).toBe('f exists already');
  });

  it('says when it was cancelled or the connection broke', async () => {
    const { api } = client([]);
    const a = new FakeXhr();
    const h1 = api.upload('ds', 'f', new Blob([]), () => {}, () => a as unknown as XMLHttpRequest);
    h1.abort();
    await expect(h1.promise).rejects.toThrow('cancelled');
    const b = new FakeXhr();
    const h2 = api.upload('ds', 'f', new Blob([]), () => {}, () => b as unknown as XMLHttpRequest);
    b.onerror?.();
    await expect(h2.promise).rejects.toThrow('connection to the host broke');
  });
});
