// The application: the login page, then the shell (header, navigator, main
// pane, tasks strip, notices) with the page of the current route.

import { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';

import { Api, ApiError, errorMessage, storageTokenStore } from './api';
import { Ctx, type AppCtx, type Notice, type NoticeKind } from './context';
import { taskDone, taskName, targetName } from './format';
import { useHash, useLoad, usePoll, useTheme, type Theme } from './hooks';
import { HostPage } from './pages/host';
import { LoginPage } from './pages/login';
import { MonitorPage } from './pages/monitor';
import { NetworkPage } from './pages/network';
import { StoragePage } from './pages/storage';
import { UsersPage } from './pages/users';
import { VmPage } from './pages/vm';
import { VmsPage } from './pages/vms';
import { privilegeSet, type Privileges } from './privileges';
import { href, parseRoute, type Route } from './route';
import type { Privilege, Task, TaskState } from './types';
import { Icon, type IconName } from './ui/icons';
import { Notices, TasksStrip } from './ui/tasks';
import { StateBadge } from './ui/widgets';

interface SignedIn {
  user: string;
  privileges: Privilege[];
}

export function App() {
  const api = useMemo(() => new Api({ store: storageTokenStore(sessionStorage) }), []);
  const [session, setSession] = useState<SignedIn | null>(null);
  const [checking, setChecking] = useState(() => api.token !== null);
  const [expired, setExpired] = useState('');

  useEffect(() => {
    api.onUnauthorized = () => {
      setSession(null);
      setExpired('Your session ended: log in again.');
    };
    if (!api.token) return;
    api
      .whoami()
      .then((w) => setSession({ user: w.user, privileges: w.host_privileges }))
      .catch((e) => {
        if (!(e instanceof ApiError && e.status === 401)) setExpired(errorMessage(e));
      })
      .finally(() => setChecking(false));
  }, [api]);

  if (checking) return <div class="splash" role="status">Connecting to the host…</div>;
  if (!session)
    return (
      <LoginPage
        api={api}
        notice={expired}
        onLogin={(s) => {
          setExpired('');
          setSession({ user: s.user, privileges: s.host_privileges });
        }}
      />
    );
  return (
    <Shell
      api={api}
      user={session.user}
      privs={privilegeSet(session.privileges)}
      onLogout={() => {
        void api.logout().finally(() => setSession(null));
      }}
    />
  );
}

let noticeId = 0;

function Shell({ api, user, privs, onLogout }: { api: Api; user: string; privs: Privileges; onLogout: () => void }) {
  const route = parseRoute(useHash());
  const [theme, setTheme] = useTheme();
  const [navOpen, setNavOpen] = useState(false);
  const [notices, setNotices] = useState<Notice[]>([]);
  const [version, setVersion] = useState(0);
  const [tasks, setTasks] = useState<Task[]>([]);
  const [taskError, setTaskError] = useState<string>();
  const tracked = useRef(new Set<number>());
  const states = useRef(new Map<number, TaskState>());
  const host = useLoad(() => api.host(), []);

  const dismiss = useCallback((id: number) => setNotices((ns) => ns.filter((n) => n.id !== id)), []);
  const notify = useCallback(
    (kind: NoticeKind, text: string) => {
      const id = ++noticeId;
      setNotices((ns) => [...ns.slice(-4), { id, kind, text }]);
      if (kind === 'info') setTimeout(() => dismiss(id), 4000);
    },
    [dismiss],
  );
  const changed = useCallback(() => setVersion((v) => v + 1), []);

  const pollTasks = async () => {
    try {
      const page = await api.tasks(undefined, 15);
      let ended = false;
      for (const t of page.items) {
        const before = states.current.get(t.id);
        if (before !== undefined && !isDone(before) && taskDone(t)) ended = true;
        states.current.set(t.id, t.state);
        if (tracked.current.has(t.id) && taskDone(t)) {
          tracked.current.delete(t.id);
          ended = true;
          if (t.state === 'error')
            notify('error', `${taskName(t.kind)} ${targetName(t.target)} failed: ${t.error?.message ?? 'no reason given'}`);
        }
      }
      setTasks(page.items);
      setTaskError(undefined);
      if (ended) changed();
    } catch (e) {
      setTaskError(`Cannot load the tasks: ${errorMessage(e)}`);
    }
  };
  usePoll(pollTasks, 1500, []);

  const ctx: AppCtx = {
    api,
    user,
    privs,
    host: host.data,
    notify,
    fail: (what, e) => notify('error', `${what}: ${errorMessage(e)}`),
    track: (t) => {
      tracked.current.add(t.id);
      setTasks((ts) => (ts.some((x) => x.id === t.id) ? ts : [t, ...ts]));
      void pollTasks();
    },
    version,
    changed,
    logout: onLogout,
  };

  const vms = useLoad(() => api.vms(), [version], 4000);
  const go = () => setNavOpen(false);

  return (
    <Ctx.Provider value={ctx}>
      <a class="skip-link" href="#main" onClick={(e) => (e.preventDefault(), document.getElementById('main')?.focus())}>
        Skip to main content
      </a>
      <div class="shell">
        <header class="topbar">
          <button
            type="button"
            class="icon-btn menu-btn"
            aria-label="Navigator"
            aria-expanded={navOpen}
            aria-controls="navigator"
            onClick={() => setNavOpen(!navOpen)}
          >
            <Icon name="menu" size={20} />
          </button>
          <span class="brand">
            <Icon name="anchor" /> Keel<span class="hide-narrow"> Host Client</span>
          </span>
          <span class="host-name" title="Host">
            {host.data?.hostname ?? ''}
          </span>
          <span class="spacer" />
          <ThemeToggle theme={theme} setTheme={setTheme} />
          <span class="user hide-narrow" aria-label={`Signed in as ${user}`}>
            {user}
          </span>
          <button type="button" class="btn btn-plain" onClick={onLogout} aria-label={`Log out ${user}`}>
            Log out
          </button>
        </header>
        <div class="body">
          <nav id="navigator" class={`navigator${navOpen ? ' open' : ''}`} aria-label="Navigator">
            <ul class="nav-tree">
              <NavItem route={{ page: 'host' }} current={route} label="Host" icon="host" onGo={go} />
              <li>
                <NavLink route={{ page: 'vms' }} current={route} label="Virtual Machines" icon="vms" onGo={go} count={vms.data?.length} />
                {vms.data && vms.data.length > 0 && (
                  <ul class="nav-sub" aria-label="Virtual machines">
                    {vms.data.map((v) => (
                      <li key={v.name}>
                        <a
                          href={href({ page: 'vm', name: v.name, tab: 'summary' })}
                          aria-current={route.page === 'vm' && route.name === v.name ? 'page' : undefined}
                          onClick={go}
                        >
                          <StateDot state={v.power_state} /> {v.name}
                        </a>
                      </li>
                    ))}
                  </ul>
                )}
              </li>
              <NavItem route={{ page: 'storage' }} current={route} label="Storage" icon="storage" onGo={go} />
              <NavItem route={{ page: 'network' }} current={route} label="Networking" icon="network" onGo={go} />
              <NavItem route={{ page: 'monitor' }} current={route} label="Monitor" icon="monitor" onGo={go} />
              <NavItem
                route={{ page: 'users' }}
                current={route}
                label="Users and permissions"
                icon="users"
                onGo={go}
                disabled={!privs.has('Authorization.ModifyPermissions')}
              />
            </ul>
          </nav>
          <main id="main" class="main" tabIndex={-1}>
            <Page route={route} />
          </main>
        </div>
        <TasksStrip tasks={tasks} error={taskError} />
      </div>
      <Notices notices={notices} dismiss={dismiss} />
    </Ctx.Provider>
  );
}

function isDone(s: TaskState): boolean {
  return s === 'success' || s === 'error';
}

function Page({ route }: { route: Route }) {
  switch (route.page) {
    case 'host':
      return <HostPage />;
    case 'vms':
      return <VmsPage />;
    case 'vm':
      return <VmPage key={route.name} name={route.name} tab={route.tab} />;
    case 'storage':
      return <StoragePage datastore={route.datastore} />;
    case 'network':
      return <NetworkPage />;
    case 'monitor':
      return <MonitorPage />;
    case 'users':
      return <UsersPage />;
  }
}

function NavLink({
  route,
  current,
  label,
  icon,
  onGo,
  count,
  disabled,
}: {
  route: Route;
  current: Route;
  label: string;
  icon: IconName;
  onGo: () => void;
  count?: number;
  disabled?: boolean;
}) {
  const active = route.page === current.page;
  return (
    <a
      href={href(route)}
      class={`nav-link${disabled ? ' disabled' : ''}`}
      aria-current={active ? 'page' : undefined}
      aria-disabled={disabled ? 'true' : undefined}
      title={disabled ? 'Administrators only' : undefined}
      onClick={onGo}
    >
      <span class="nav-icon">
        <Icon name={icon} />
      </span>
      {label}
      {count !== undefined && <span class="nav-count">{count}</span>}
    </a>
  );
}

function NavItem(props: Parameters<typeof NavLink>[0]) {
  return (
    <li>
      <NavLink {...props} />
    </li>
  );
}

function StateDot({ state }: { state: Parameters<typeof StateBadge>[0]['state'] }) {
  return <span class={`dot state-${state}`} role="img" aria-label={state} />;
}

function ThemeToggle({ theme, setTheme }: { theme: Theme; setTheme: (t: Theme) => void }) {
  const next: Record<Theme, Theme> = { auto: 'light', light: 'dark', dark: 'auto' };
  const words: Record<Theme, string> = { auto: 'Theme: system', light: 'Theme: light', dark: 'Theme: dark' };
  return (
    <button
      type="button"
      class="btn btn-plain theme-toggle"
      aria-label={`${words[theme]} (switch to ${next[theme] === 'auto' ? 'system' : next[theme]})`}
      onClick={() => setTheme(next[theme])}
    >
      <Icon name={theme === 'dark' ? 'moon' : theme === 'light' ? 'sun' : 'auto'} />
      <span class="hide-narrow"> {words[theme]}</span>
    </button>
  );
}
