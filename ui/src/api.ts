// A small client of keeld's REST API (/api/v1): session token handling,
// one error type carrying the API's message, uploads with progress.

import type {
  Datastore,
  Event,
  FileEntry,
  HostInfo,
  NicCreate,
  NicEdit,
  NicInfo,
  Page,
  Permission,
  PortGroup,
  PortGroupCreate,
  PortGroupEdit,
  PowerOp,
  RoleInfo,
  Session,
  Switch,
  SwitchCreate,
  SwitchEdit,
  Task,
  User,
  VmCreate,
  VmEdit,
  VmInfo,
  WhoAmI,
} from './types';

export const API_PREFIX = '/api/v1';

/** An API call that failed: the HTTP status (0 when the host could not be
 * reached), the API's stable code, and its one-line message. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** The message to show a person for any thrown value. */
export function errorMessage(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error && e.message) return e.message;
  return String(e);
}

/** Where the session token lives (sessionStorage in the browser). */
export interface TokenStore {
  get(): string | null;
  set(token: string | null): void;
}

export const TOKEN_KEY = 'keel.token';

export function storageTokenStore(storage: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>): TokenStore {
  return {
    get: () => {
      try {
        return storage.getItem(TOKEN_KEY);
      } catch {
        return null;
      }
    },
    set: (token) => {
      try {
        if (token) storage.setItem(TOKEN_KEY, token);
        else storage.removeItem(TOKEN_KEY);
      } catch {
        // Storage refused (private mode): the session lasts this page only.
      }
    },
  };
}

export function memoryTokenStore(initial: string | null = null): TokenStore {
  let token = initial;
  return { get: () => token, set: (t) => (token = t) };
}

/** Turns a failed response into an ApiError: the API's own
 * `{"error": {"code", "message"}}` when it sent one, else the status. */
export async function errorFromResponse(res: Response): Promise<ApiError> {
  let text = '';
  try {
    text = await res.text();
  } catch {
    // The body broke off: the status still says what happened.
  }
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    const err = body?.error;
    if (err && typeof err.message === 'string' && err.message) {
      return new ApiError(res.status, typeof err.code === 'string' ? err.code : 'error', err.message);
    }
  } catch {
    // Not JSON (a proxy's page, say).
  }
  const line = text.trim().split('\n')[0]?.slice(0, 200) ?? '';
  const status = `HTTP ${res.status}${res.statusText ? ' ' + res.statusText : ''}`;
  return new ApiError(res.status, codeForStatus(res.status), line && !line.startsWith('<') ? `${status}: ${line}` : status);
}

export function codeForStatus(status: number): string {
  switch (status) {
    case 400:
      return 'bad-request';
    case 401:
      return 'unauthorized';
    case 403:
      return 'forbidden';
    case 404:
      return 'not-found';
    case 409:
      return 'conflict';
    case 413:
      return 'too-large';
    case 429:
      return 'rate-limited';
    case 507:
      return 'insufficient-space';
    default:
      return status >= 500 ? 'internal' : 'error';
  }
}

/** A path segment (VM, datastore, user name) for a URL. */
export const seg = encodeURIComponent;

/** A path inside a datastore, each component encoded. */
export function dsPath(path: string): string {
  return path
    .split('/')
    .filter((c) => c !== '')
    .map(encodeURIComponent)
    .join('/');
}

export function query(params: Record<string, string | number | undefined | null>): string {
  const parts = Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  return parts.length ? `?${parts.join('&')}` : '';
}

export interface ApiOptions {
  /** Origin of keeld; empty for the page's own. */
  base?: string;
  fetch?: typeof fetch;
  store: TokenStore;
  /** Called when an authenticated call answers 401 (session expired). */
  onUnauthorized?: () => void;
}

export interface UploadHandle {
  promise: Promise<void>;
  abort(): void;
}

export class Api {
  private readonly base: string;
  private readonly fetchFn: typeof fetch;
  readonly store: TokenStore;
  onUnauthorized?: () => void;

  constructor(opts: ApiOptions) {
    this.base = opts.base ?? '';
    this.fetchFn = opts.fetch ?? ((...args) => globalThis.fetch(...args));
    this.store = opts.store;
    this.onUnauthorized = opts.onUnauthorized;
  }

  get token(): string | null {
    return this.store.get();
  }

  private headers(json: boolean): Record<string, string> {
    const h: Record<string, string> = { Accept: 'application/json' };
    const token = this.store.get();
    if (token) h.Authorization = `Bearer ${token}`;
    if (json) h['Content-Type'] = 'application/json';
    return h;
  }

  /** One call; resolves to the raw Response when it succeeded. */
  async raw(method: string, path: string, body?: unknown, authed = true): Promise<Response> {
    let res: Response;
    try {
      res = await this.fetchFn(this.base + path, {
        method,
        headers: this.headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, 'network', `Cannot reach the host: ${errorMessage(e)}`);
    }
    if (!res.ok) {
      const err = await errorFromResponse(res);
      if (res.status === 401 && authed && this.store.get()) {
        this.store.set(null);
        this.onUnauthorized?.();
      }
      throw err;
    }
    return res;
  }

  /** A JSON call under /api/v1; `undefined` for an empty answer (204). */
  async call<T>(method: string, path: string, body?: unknown, authed = true): Promise<T> {
    const res = await this.raw(method, API_PREFIX + path, body, authed);
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    if (!text) return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiError(res.status, 'bad-answer', 'The host sent an answer that is not JSON');
    }
  }

  async text(path: string): Promise<string> {
    const res = await this.raw('GET', path);
    return res.text();
  }

  // ---- session ----------------------------------------------------------

  async login(user: string, password: string): Promise<Session> {
    const s = await this.call<Session>('POST', '/session', { user, password }, false);
    this.store.set(s.token);
    return s;
  }

  async logout(): Promise<void> {
    try {
      if (this.store.get()) await this.call<void>('DELETE', '/session');
    } finally {
      this.store.set(null);
    }
  }

  whoami = () => this.call<WhoAmI>('GET', '/session');

  // ---- host ---------------------------------------------------------------

  host = () => this.call<HostInfo>('GET', '/host');
  metrics = () => this.text('/metrics');

  // ---- VMs ----------------------------------------------------------------

  vms = () => this.call<VmInfo[]>('GET', '/vms');
  vm = (name: string) => this.call<VmInfo>('GET', `/vms/${seg(name)}`);
  vmCreate = (spec: VmCreate) => this.call<Task>('POST', '/vms', spec);
  vmEdit = (name: string, edit: VmEdit) => this.call<VmInfo>('PATCH', `/vms/${seg(name)}`, edit);
  vmDelete = (name: string) => this.call<void>('DELETE', `/vms/${seg(name)}`);
  vmPower = (name: string, op: PowerOp) => this.call<Task>('POST', `/vms/${seg(name)}/power/${op}`);
  vmClone = (name: string, clone: string, datastore?: string) =>
    this.call<Task>('POST', `/vms/${seg(name)}/clone`, { name: clone, datastore: datastore || null });
  vmRegister = (datastore: string, folder: string) => this.call<VmInfo>('POST', '/vms/register', { datastore, folder });
  vmUnregister = (name: string) => this.call<void>('POST', `/vms/${seg(name)}/unregister`);
  vmLog = (name: string, maxBytes = 65536) =>
    this.text(`${API_PREFIX}/vms/${seg(name)}/log${query({ max_bytes: maxBytes })}`);
  vmEvents = (name: string, before?: number, limit = 25) =>
    this.call<Page<Event>>('GET', `/vms/${seg(name)}/events${query({ before, limit })}`);

  /** The console WebSocket's URL: the token goes in the query, since a
   * browser cannot set headers on a WebSocket. */
  consoleUrl(name: string, loc: { protocol: string; host: string } = location): string {
    const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
    const base = this.base ? this.base.replace(/^http/, 'ws') : `${scheme}//${loc.host}`;
    return `${base}${API_PREFIX}/vms/${seg(name)}/console${query({ access_token: this.store.get() })}`;
  }

  // ---- tasks and events ---------------------------------------------------

  tasks = (before?: number, limit = 25) => this.call<Page<Task>>('GET', `/tasks${query({ before, limit })}`);
  task = (id: number) => this.call<Task>('GET', `/tasks/${id}`);
  events = (before?: number, limit = 25, target?: string) =>
    this.call<Page<Event>>('GET', `/events${query({ before, limit, target })}`);

  // ---- datastores ---------------------------------------------------------

  datastores = () => this.call<Datastore[]>('GET', '/datastores');
  browse = (ds: string, path: string) =>
    this.call<FileEntry[]>('GET', `/datastores/${seg(ds)}/browse${query({ path })}`);
  mkdir = (ds: string, path: string) => this.call<void>('POST', `/datastores/${seg(ds)}/mkdir${query({ path })}`);
  removeFile = (ds: string, path: string) => this.call<void>('DELETE', `/datastores/${seg(ds)}/files/${dsPath(path)}`);

  /** A link that downloads a file (the token in the query: a plain link
   * cannot carry a header). */
  downloadUrl(ds: string, path: string): string {
    return `${this.base}${API_PREFIX}/datastores/${seg(ds)}/files/${dsPath(path)}${query({ access_token: this.store.get() })}`;
  }

  /** PUT of a file's bytes with progress (XMLHttpRequest: fetch has no
   * upload progress). `progress` gets 0–1. */
  upload(
    ds: string,
    path: string,
    file: Blob,
    progress: (fraction: number) => void,
    makeXhr: () => XMLHttpRequest = () => new XMLHttpRequest(),
  ): UploadHandle {
    const xhr = makeXhr();
    const promise = new Promise<void>((resolve, reject) => {
      xhr.open('PUT', `${this.base}${API_PREFIX}/datastores/${seg(ds)}/files/${dsPath(path)}`);
      const token = this.store.get();
      if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
      xhr.upload.onprogress = (e: ProgressEvent) => {
        if (e.lengthComputable && e.total > 0) progress(e.loaded / e.total);
      };
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          progress(1);
          resolve();
          return;
        }
        const res = new Response(xhr.responseText || '', { status: xhr.status, statusText: xhr.statusText });
        void errorFromResponse(res).then(reject);
      };
      xhr.onerror = () => reject(new ApiError(0, 'network', 'The upload failed: the connection to the host broke'));
      xhr.onabort = () => reject(new ApiError(0, 'aborted', 'The upload was cancelled'));
      xhr.send(file);
    });
    return { promise, abort: () => xhr.abort() };
  }

  // ---- virtual networking -------------------------------------------------

  switches = () => this.call<Switch[]>('GET', '/network/switches');
  switchGet = (name: string) => this.call<Switch>('GET', `/network/switches/${seg(name)}`);
  switchCreate = (spec: SwitchCreate) => this.call<Switch>('POST', '/network/switches', spec);
  switchEdit = (name: string, edit: SwitchEdit) => this.call<Switch>('PATCH', `/network/switches/${seg(name)}`, edit);
  switchDelete = (name: string) => this.call<void>('DELETE', `/network/switches/${seg(name)}`);

  portGroups = () => this.call<PortGroup[]>('GET', '/network/portgroups');
  portGroup = (name: string) => this.call<PortGroup>('GET', `/network/portgroups/${seg(name)}`);
  portGroupCreate = (spec: PortGroupCreate) => this.call<PortGroup>('POST', '/network/portgroups', spec);
  portGroupEdit = (name: string, edit: PortGroupEdit) =>
    this.call<PortGroup>('PATCH', `/network/portgroups/${seg(name)}`, edit);
  portGroupDelete = (name: string) => this.call<void>('DELETE', `/network/portgroups/${seg(name)}`);

  vmNics = (vm: string) => this.call<NicInfo[]>('GET', `/vms/${seg(vm)}/nics`);
  /** A new NIC (the VM must be off: 409 otherwise). */
  vmNicAdd = (vm: string, nic: NicCreate) => this.call<NicInfo>('POST', `/vms/${seg(vm)}/nics`, nic);
  /** `connected` and `port_group` also while the VM runs. */
  vmNicEdit = (vm: string, index: number, edit: NicEdit) =>
    this.call<NicInfo>('PATCH', `/vms/${seg(vm)}/nics/${index}`, edit);
  vmNicRemove = (vm: string, index: number) => this.call<void>('DELETE', `/vms/${seg(vm)}/nics/${index}`);

  // ---- users and permissions ---------------------------------------------

  roles = () => this.call<RoleInfo[]>('GET', '/roles');
  users = () => this.call<User[]>('GET', '/users');
  userCreate = (name: string, password: string) => this.call<User>('POST', '/users', { name, password });
  userDelete = (name: string) => this.call<void>('DELETE', `/users/${seg(name)}`);
  setPassword = (name: string, password: string) =>
    this.call<void>('PUT', `/users/${seg(name)}/password`, { password });
  permissions = () => this.call<Permission[]>('GET', '/permissions');
  permissionSet = (p: Permission) => this.call<void>('PUT', '/permissions', p);
  permissionRemove = (user: string, entity: string) =>
    this.call<void>('DELETE', `/permissions${query({ user, entity })}`);
}
