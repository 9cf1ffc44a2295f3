// The login page: POST /api/v1/session; the token goes to sessionStorage.

import { useState } from 'preact/hooks';

import { errorMessage, type Api } from '../api';
import type { Session } from '../types';
import { Icon } from '../ui/icons';

export function LoginPage({ api, notice, onLogin }: { api: Api; notice?: string; onLogin: (s: Session) => void }) {
  const [user, setUser] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    if (!user || !password) {
      setError('Enter your user name and password.');
      return;
    }
    setBusy(true);
    setError('');
    try {
      const s = await api.login(user, password);
      onLogin(s);
    } catch (err) {
      setError(errorMessage(err));
      setPassword('');
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="login-page">
      <form class="login-card" onSubmit={submit} aria-labelledby="login-title" noValidate>
        <div class="login-brand">
          <Icon name="anchor" size={36} />
        </div>
        <h1 id="login-title">Keel Host Client</h1>
        <p class="muted">{location.host}</p>
        {notice && !error && (
          <p class="login-notice" role="status">
            {notice}
          </p>
        )}
        <label for="login-user">User name</label>
        <input
          id="login-user"
          name="username"
          autoComplete="username"
          autoFocus
          value={user}
          onInput={(e) => setUser((e.target as HTMLInputElement).value)}
        />
        <label for="login-password">Password</label>
        <input
          id="login-password"
          name="password"
          type="password"
          autoComplete="current-password"
          value={password}
          onInput={(e) => setPassword((e.target as HTMLInputElement).value)}
        />
        <div class="login-error" role="alert" data-testid="login-error">
          {error}
        </div>
        <button type="submit" class="btn btn-primary" disabled={busy}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
      </form>
    </main>
  );
}
