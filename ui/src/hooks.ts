import { useCallback, useEffect, useRef, useState } from 'preact/hooks';

import { errorMessage } from './api';

/** Runs `fn` now and every `ms` while mounted (no overlapping runs). */
export function usePoll(fn: () => Promise<void> | void, ms: number, deps: unknown[]): void {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    let stopped = false;
    let busy = false;
    const tick = async () => {
      if (busy || stopped) return;
      busy = true;
      try {
        await saved.current();
      } finally {
        busy = false;
      }
    };
    void tick();
    const id = setInterval(() => void tick(), ms);
    return () => {
      stopped = true;
      clearInterval(id);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [ms, ...deps]);
}

export interface Loaded<T> {
  data?: T;
  error?: string;
  loading: boolean;
  reload(): void;
}

/** Loads `loader()` when `deps` change (and on reload); every `pollMs`
 * again when given. A failed load keeps the last data and says why. */
export function useLoad<T>(loader: () => Promise<T>, deps: unknown[], pollMs?: number): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: string; loading: boolean }>({ loading: true });
  const [nonce, setNonce] = useState(0);
  const saved = useRef(loader);
  saved.current = loader;
  const gen = useRef(0);
  useEffect(() => {
    const mine = ++gen.current;
    let busy = false;
    const run = async () => {
      if (busy) return;
      busy = true;
      try {
        const data = await saved.current();
        if (gen.current === mine) setState({ data, loading: false });
      } catch (e) {
        if (gen.current === mine) setState((s) => ({ data: s.data, error: errorMessage(e), loading: false }));
      } finally {
        busy = false;
      }
    };
    setState((s) => ({ ...s, loading: true }));
    void run();
    const id = pollMs ? setInterval(() => void run(), pollMs) : undefined;
    return () => {
      gen.current++;
      if (id) clearInterval(id);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [nonce, pollMs, ...deps]);
  const reload = useCallback(() => setNonce((n) => n + 1), []);
  return { ...state, reload };
}

/** The document's hash, updated on navigation. */
export function useHash(): string {
  const [hash, setHash] = useState(() => location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
}

/** Light, dark, or the system's: kept in localStorage, applied as
 * `data-theme` on <html>. */
export type Theme = 'auto' | 'light' | 'dark';

export function useTheme(): [Theme, (t: Theme) => void] {
  const [theme, setTheme] = useState<Theme>(() => {
    try {
      const t = localStorage.getItem('keel.theme');
      return t === 'light' || t === 'dark' ? t : 'auto';
    } catch {
      return 'auto';
    }
  });
  useEffect(() => {
    const root = document.documentElement;
    if (theme === 'auto') root.removeAttribute('data-theme');
    else root.setAttribute('data-theme', theme);
    try {
      if (theme === 'auto') localStorage.removeItem('keel.theme');
      else localStorage.setItem('keel.theme', theme);
    } catch {
      // Not kept across visits then.
    }
  }, [theme]);
  return [theme, setTheme];
}

/** Whether the dark theme is in effect now (for chart colours). */
export function isDark(): boolean {
  const t = document.documentElement.getAttribute('data-theme');
  if (t) return t === 'dark';
  return matchMedia('(prefers-color-scheme: dark)').matches;
}

/** isDark(), following the theme toggle and the system's setting. */
export function useDark(): boolean {
  const [dark, setDark] = useState(isDark);
  useEffect(() => {
    const update = () => setDark(isDark());
    const mo = new MutationObserver(update);
    mo.observe(document.documentElement, { attributes: true, attributeFilter: ['data-theme'] });
    const mq = matchMedia('(prefers-color-scheme: dark)');
    mq.addEventListener('change', update);
    return () => {
      mo.disconnect();
      mq.removeEventListener('change', update);
    };
  }, []);
  return dark;
}
