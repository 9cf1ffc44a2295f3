// What every page gets: the API client, who is signed in and may do what,
// notices, task tracking, and a counter that changes when something did.

import { createContext } from 'preact';
import { useContext } from 'preact/hooks';

import type { Api } from './api';
import type { Privileges } from './privileges';
import type { HostInfo, Task } from './types';

export type NoticeKind = 'error' | 'info';

export interface Notice {
  id: number;
  kind: NoticeKind;
  text: string;
}

export interface AppCtx {
  api: Api;
  user: string;
  privs: Privileges;
  host?: HostInfo;
  /** Shows a notice. */
  notify(kind: NoticeKind, text: string): void;
  /** Shows a failed action: "<what>: <the API's message>". */
  fail(what: string, e: unknown): void;
  /** Follows a task started here: its failure becomes a notice. */
  track(t: Task): void;
  /** Changes whenever a task ended or an action changed something. */
  version: number;
  changed(): void;
  logout(): void;
}

export const Ctx = createContext<AppCtx | null>(null);

export function useApp(): AppCtx {
  const c = useContext(Ctx);
  if (!c) throw new Error('useApp outside the signed-in shell');
  return c;
}
