// Users and permissions (administrators), roles, and one's own password.

import { useState } from 'preact/hooks';

import { useApp } from '../context';
import { formatTime } from '../format';
import { useLoad } from '../hooks';
import { ROLES, type Role } from '../types';
import { nameProblem } from '../validate';
import { Button, Confirm, Field, InlineError, Modal, Section } from '../ui/widgets';

export const MIN_PASSWORD = 8;

/** `host` or `vm:NAME`, or the problem. */
export function entityProblem(entity: string): string | null {
  if (entity === 'host') return null;
  if (entity.startsWith('vm:')) {
    const p = nameProblem(entity.slice(3), 'The VM name');
    return p;
  }
  return "The entity is 'host' or 'vm:NAME'";
}

export function UsersPage() {
  const { privs, user } = useApp();
  const admin = privs.has('Authorization.ModifyPermissions');
  return (
    <div class="page">
      <h1 class="page-title">Users and permissions</h1>
      {!admin && (
        <p class="notice-box" role="note">
          Only administrators manage users and permissions (you lack Authorization.ModifyPermissions). You can change your
          own password.
        </p>
      )}
      {admin && <Admin />}
      <Section title="Your password">
        <PasswordForm name={user} own />
      </Section>
    </div>
  );
}

function Admin() {
  const ctx = useApp();
  const { api, version } = ctx;
  const users = useLoad(() => api.users(), [version]);
  const perms = useLoad(() => api.permissions(), [version]);
  const roles = useLoad(() => api.roles(), []);
  const [creating, setCreating] = useState(false);
  const [password, setPassword] = useState<string | null>(null);
  const [deleting, setDeleting] = useState<string | null>(null);
  const [perm, setPerm] = useState({ user: '', role: 'ReadOnly' as Role, entity: 'host' });
  const [permError, setPermError] = useState<string>();

  const addPermission = async (e: Event) => {
    e.preventDefault();
    const problem = nameProblem(perm.user, 'The user') ?? entityProblem(perm.entity.trim());
    if (problem) {
      setPermError(problem);
      return;
    }
    setPermError(undefined);
    try {
      await api.permissionSet({ ...perm, entity: perm.entity.trim() });
      ctx.notify('info', `${perm.user} is ${perm.role} on ${perm.entity}`);
      ctx.changed();
    } catch (err) {
      ctx.fail('Set permission', err);
    }
  };

  return (
    <>
      <Section
        title="Users"
        actions={
          <Button kind="primary" onClick={() => setCreating(true)}>
            Add user
          </Button>
        }
      >
        <InlineError error={users.error} />
        <div class="table-wrap">
          <table class="table" aria-label="Users">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Created</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {(users.data ?? []).map((u) => (
                <tr key={u.name}>
                  <td>{u.name}</td>
                  <td>{formatTime(u.created_ms)}</td>
                  <td class="row-actions">
                    <Button onClick={() => setPassword(u.name)} aria-label={`Set the password of ${u.name}`}>
                      Set password
                    </Button>
                    <Button kind="danger" onClick={() => setDeleting(u.name)} aria-label={`Delete user ${u.name}`}>
                      Delete
                    </Button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </Section>
      <Section title="Permissions">
        <InlineError error={perms.error} />
        <div class="table-wrap">
          <table class="table" aria-label="Permissions">
            <thead>
              <tr>
                <th scope="col">User</th>
                <th scope="col">Role</th>
                <th scope="col">Entity</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {(perms.data ?? []).map((p) => (
                <tr key={`${p.user} ${p.entity}`}>
                  <td>{p.user}</td>
                  <td>{p.role}</td>
                  <td>{p.entity}</td>
                  <td class="row-actions">
                    <Button
                      aria-label={`Remove the permission of ${p.user} on ${p.entity}`}
                      onClick={async () => {
                        try {
                          await api.permissionRemove(p.user, p.entity);
                          ctx.changed();
                        } catch (e) {
                          ctx.fail('Remove permission', e);
                        }
                      }}
                    >
                      Remove
                    </Button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        <form class="inline-form" onSubmit={addPermission} noValidate aria-label="Give a role">
          <Field label="User" error={permError}>
            {(p) => (
              <select {...p} value={perm.user} onChange={(e) => setPerm({ ...perm, user: (e.target as HTMLSelectElement).value })}>
                <option value="">Choose…</option>
                {(users.data ?? []).map((u) => (
                  <option key={u.name} value={u.name}>
                    {u.name}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <Field label="Role">
            {(p) => (
              <select {...p} value={perm.role} onChange={(e) => setPerm({ ...perm, role: (e.target as HTMLSelectElement).value as Role })}>
                {ROLES.map((r) => (
                  <option key={r} value={r}>
                    {r}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <Field label="On" hint="host or vm:NAME">
            {(p) => <input {...p} value={perm.entity} onInput={(e) => setPerm({ ...perm, entity: (e.target as HTMLInputElement).value })} />}
          </Field>
          <Button kind="primary" type="submit">
            Give role
          </Button>
        </form>
      </Section>
      <Section title="Roles">
        <InlineError error={roles.error} />
        <dl class="facts">
          {(roles.data ?? []).map((r) => (
            <div class="fact" key={r.role}>
              <dt>{r.role}</dt>
              <dd>{r.privileges.length ? r.privileges.join(', ') : 'no privileges'}</dd>
            </div>
          ))}
        </dl>
      </Section>
      {creating && <CreateUser onClose={() => setCreating(false)} />}
      {password && (
        <Modal title={`Password of ${password}`} onClose={() => setPassword(null)}>
          <div class="modal-body">
            <PasswordForm name={password} onDone={() => setPassword(null)} />
          </div>
        </Modal>
      )}
      {deleting && (
        <Confirm
          title={`Delete user ${deleting}?`}
          message={<p>{deleting} can no longer log in; their permissions go too.</p>}
          action="Delete"
          danger
          onClose={() => setDeleting(null)}
          onConfirm={async () => {
            try {
              await api.userDelete(deleting);
              ctx.notify('info', `Deleted user ${deleting}`);
              ctx.changed();
            } catch (e) {
              ctx.fail(`Delete user ${deleting}`, e);
            }
            setDeleting(null);
          }}
        />
      )}
    </>
  );
}

function CreateUser({ onClose }: { onClose: () => void }) {
  const ctx = useApp();
  const [name, setName] = useState('');
  const [pw, setPw] = useState('');
  const [role, setRole] = useState<Role | ''>('ReadOnly');
  const [errors, setErrors] = useState<{ name?: string; pw?: string }>({});
  const submit = async (e: Event) => {
    e.preventDefault();
    const errs = {
      name: nameProblem(name, 'The name') ?? undefined,
      pw: pw.length < MIN_PASSWORD ? `A password has at least ${MIN_PASSWORD} characters` : undefined,
    };
    setErrors(errs);
    if (errs.name || errs.pw) return;
    try {
      await ctx.api.userCreate(name, pw);
      if (role) await ctx.api.permissionSet({ user: name, role, entity: 'host' });
      ctx.notify('info', `Added user ${name}`);
      ctx.changed();
      onClose();
    } catch (err) {
      ctx.fail(`Add user ${name}`, err);
    }
  };
  return (
    <Modal title="Add a user" onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <div class="modal-body">
          <Field label="Name" error={errors.name}>
            {(p) => <input {...p} autoComplete="off" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />}
          </Field>
          <Field label="Password" error={errors.pw}>
            {(p) => <input {...p} type="password" autoComplete="new-password" value={pw} onInput={(e) => setPw((e.target as HTMLInputElement).value)} />}
          </Field>
          <Field label="Role on the host">
            {(p) => (
              <select {...p} value={role} onChange={(e) => setRole((e.target as HTMLSelectElement).value as Role | '')}>
                <option value="">none (give one later)</option>
                {ROLES.map((r) => (
                  <option key={r} value={r}>
                    {r}
                  </option>
                ))}
              </select>
            )}
          </Field>
        </div>
        <div class="modal-foot">
          <Button onClick={onClose}>Cancel</Button>
          <Button kind="primary" type="submit">
            Add
          </Button>
        </div>
      </form>
    </Modal>
  );
}

function PasswordForm({ name, own, onDone }: { name: string; own?: boolean; onDone?: () => void }) {
  const ctx = useApp();
  const [pw, setPw] = useState('');
  const [again, setAgain] = useState('');
  const [error, setError] = useState<string>();
  const submit = async (e: Event) => {
    e.preventDefault();
    if (pw.length < MIN_PASSWORD) return setError(`A password has at least ${MIN_PASSWORD} characters`);
    if (pw !== again) return setError('The two passwords differ');
    setError(undefined);
    try {
      await ctx.api.setPassword(name, pw);
      ctx.notify('info', own ? 'Your password was changed' : `The password of ${name} was changed`);
      setPw('');
      setAgain('');
      onDone?.();
    } catch (err) {
      ctx.fail('Change password', err);
    }
  };
  return (
    <form onSubmit={submit} noValidate class="inline-form">
      <Field label="New password" error={error}>
        {(p) => <input {...p} type="password" autoComplete="new-password" value={pw} onInput={(e) => setPw((e.target as HTMLInputElement).value)} />}
      </Field>
      <Field label="Again">
        {(p) => <input {...p} type="password" autoComplete="new-password" value={again} onInput={(e) => setAgain((e.target as HTMLInputElement).value)} />}
      </Field>
      <Button kind="primary" type="submit">
        Change password
      </Button>
    </form>
  );
}
