// Storage: datastores with capacity and free space, and a file browser
// with upload (a progress bar), download, new folder and delete.

import { useRef, useState } from 'preact/hooks';

import type { UploadHandle } from '../api';
import { useApp } from '../context';
import { formatBytes, formatTime } from '../format';
import { useLoad } from '../hooks';
import { missing } from '../privileges';
import { href } from '../route';
import type { FileEntry } from '../types';
import { nameProblem } from '../validate';
import { Icon } from '../ui/icons';
import { Button, Confirm, Field, InlineError, Modal, ProgressBar, Section, UsageBar } from '../ui/widgets';

export function joinPath(dir: string, name: string): string {
  return dir ? `${dir.replace(/\/+$/, '')}/${name}` : name;
}

export function parentPath(dir: string): string {
  const i = dir.replace(/\/+$/, '').lastIndexOf('/');
  return i < 0 ? '' : dir.slice(0, i);
}

export function StoragePage({ datastore }: { datastore?: string }) {
  const { api, version } = useApp();
  const list = useLoad(() => api.datastores(), [version], 10000);
  const current = datastore ?? list.data?.[0]?.name;
  return (
    <div class="page">
      <h1 class="page-title">Storage</h1>
      <InlineError error={list.error} />
      <Section title="Datastores">
        <div class="table-wrap">
          <table class="table" aria-label="Datastores">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Capacity and free space</th>
                <th scope="col" class="hide-narrow">
                  Path on the host
                </th>
              </tr>
            </thead>
            <tbody>
              {(list.data ?? []).map((d) => (
                <tr key={d.name} class={d.name === current ? 'selected' : undefined}>
                  <td>
                    <a href={href({ page: 'storage', datastore: d.name })} aria-current={d.name === current ? 'true' : undefined}>
                      {d.name}
                    </a>
                  </td>
                  <td class="usage-cell">
                    <UsageBar label={`${d.name} usage`} used={d.capacity_bytes - d.free_bytes} total={d.capacity_bytes} />
                  </td>
                  <td class="hide-narrow">
                    <code>{d.path}</code>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </Section>
      {current && <Browser key={current} ds={current} />}
    </div>
  );
}

interface Uploading {
  name: string;
  fraction: number;
  handle: UploadHandle;
}

function Browser({ ds }: { ds: string }) {
  const ctx = useApp();
  const { api, privs } = ctx;
  const [dir, setDir] = useState('');
  const files = useLoad(() => api.browse(ds, dir), [ds, dir, ctx.version]);
  const [uploads, setUploads] = useState<Uploading[]>([]);
  const [mkdir, setMkdir] = useState(false);
  const [remove, setRemove] = useState<FileEntry | null>(null);
  const picker = useRef<HTMLInputElement>(null);
  const browseReason = missing(privs, 'Datastore.Browse');
  const filesReason = missing(privs, 'Datastore.FileManagement');

  const upload = (list: FileList | null) => {
    if (!list) return;
    for (const file of Array.from(list)) {
      const path = joinPath(dir, file.name);
      const handle = api.upload(ds, path, file, (fraction) =>
        setUploads((us) => us.map((u) => (u.handle === handle ? { ...u, fraction } : u))),
      );
      const entry: Uploading = { name: path, fraction: 0, handle };
      setUploads((us) => [...us, entry]);
      handle.promise
        .then(() => ctx.notify('info', `Uploaded ${path} to ${ds}`))
        .catch((e) => ctx.fail(`Upload ${path}`, e))
        .finally(() => {
          setUploads((us) => us.filter((u) => u.handle !== handle));
          files.reload();
          ctx.changed();
        });
    }
    if (picker.current) picker.current.value = '';
  };

  const crumbs = dir ? dir.split('/') : [];
  const entries = [...(files.data ?? [])].sort((a, b) => (a.kind === b.kind ? a.name.localeCompare(b.name) : a.kind === 'dir' ? -1 : 1));
  return (
    <Section
      title={`Files of ${ds}`}
      actions={
        <>
          <input
            ref={picker}
            type="file"
            multiple
            class="visually-hidden"
            id="upload-input"
            aria-label="Files to upload"
            tabIndex={-1}
            disabled={!!filesReason}
            onChange={(e) => upload((e.target as HTMLInputElement).files)}
          />
          <Button kind="primary" reason={filesReason} onClick={() => picker.current?.click()}>
            Upload
          </Button>
          <Button reason={filesReason} onClick={() => setMkdir(true)}>
            New folder
          </Button>
          <Button onClick={files.reload}>Refresh</Button>
        </>
      }
    >
      <nav class="breadcrumb" aria-label="Folder">
        <ol>
          <li>
            <a href="#" onClick={(e) => (e.preventDefault(), setDir(''))} aria-current={dir === '' ? 'page' : undefined}>
              [{ds}]
            </a>
          </li>
          {crumbs.map((c, i) => {
            const to = crumbs.slice(0, i + 1).join('/');
            return (
              <li key={to}>
                <a href="#" onClick={(e) => (e.preventDefault(), setDir(to))} aria-current={to === dir ? 'page' : undefined}>
                  {c}
                </a>
              </li>
            );
          })}
        </ol>
      </nav>
      {uploads.map((u) => (
        <div class="upload-row" key={u.name}>
          <span class="upload-name">Uploading {u.name}</span>
          <ProgressBar value={u.fraction * 100} label={`Upload of ${u.name}`} />
          <Button onClick={() => u.handle.abort()}>Cancel</Button>
        </div>
      ))}
      <InlineError error={browseReason ?? files.error} />
      <div class="table-wrap">
        <table class="table" aria-label={`Files in [${ds}] ${dir || '/'}`}>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Size</th>
              <th scope="col" class="hide-narrow">
                Modified
              </th>
              <th scope="col">
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {dir && (
              <tr>
                <td colSpan={4}>
                  <a href="#" onClick={(e) => (e.preventDefault(), setDir(parentPath(dir)))}>
                    ↑ Parent folder
                  </a>
                </td>
              </tr>
            )}
            {entries.map((f) => {
              const path = joinPath(dir, f.name);
              return (
                <tr key={f.name} data-file={f.name}>
                  <td>
                    {f.kind === 'dir' ? (
                      <a href="#" onClick={(e) => (e.preventDefault(), setDir(path))}>
                        <Icon name="folder" size={16} /> 
                        {f.name}
                        <span class="visually-hidden"> (folder)</span>
                      </a>
                    ) : (
                      <span>
                        <Icon name="file" size={16} /> 
                        {f.name}
                      </span>
                    )}
                  </td>
                  <td>{f.kind === 'dir' ? '—' : formatBytes(f.size_bytes)}</td>
                  <td class="hide-narrow">{formatTime(f.modified_ms)}</td>
                  <td class="row-actions">
                    {f.kind === 'file' && (
                      <a class="btn btn-plain" href={api.downloadUrl(ds, path)} download={f.name} aria-label={`Download ${f.name}`}>
                        Download
                      </a>
                    )}
                    <Button reason={filesReason} aria-label={`Delete ${f.name}`} onClick={() => setRemove(f)}>
                      Delete
                    </Button>
                  </td>
                </tr>
              );
            })}
            {entries.length === 0 && !files.loading && (
              <tr>
                <td colSpan={4} class="muted">
                  This folder is empty.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      {mkdir && <MkdirDialog ds={ds} dir={dir} onClose={() => setMkdir(false)} onDone={files.reload} />}
      {remove && (
        <Confirm
          title={`Delete ${remove.name}?`}
          message={
            <p>
              This deletes <code>[{ds}] {joinPath(dir, remove.name)}</code>
              {remove.kind === 'dir' ? ' and everything in it' : ''}. It cannot be undone.
            </p>
          }
          action="Delete"
          danger
          onClose={() => setRemove(null)}
          onConfirm={async () => {
            const path = joinPath(dir, remove.name);
            try {
              await api.removeFile(ds, path);
              ctx.notify('info', `Deleted ${path}`);
              files.reload();
              ctx.changed();
            } catch (e) {
              ctx.fail(`Delete ${path}`, e);
            }
            setRemove(null);
          }}
        />
      )}
    </Section>
  );
}

function MkdirDialog({ ds, dir, onClose, onDone }: { ds: string; dir: string; onClose: () => void; onDone: () => void }) {
  const ctx = useApp();
  const [name, setName] = useState('');
  const [error, setError] = useState<string>();
  const submit = async (e: Event) => {
    e.preventDefault();
    const problem = nameProblem(name, 'The folder name');
    if (problem) {
      setError(problem);
      return;
    }
    try {
      await ctx.api.mkdir(ds, joinPath(dir, name));
      onDone();
      onClose();
    } catch (err) {
      ctx.fail(`New folder ${name}`, err);
    }
  };
  return (
    <Modal title="New folder" onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <div class="modal-body">
          <Field label={`Name (in [${ds}] ${dir || '/'})`} error={error}>
            {(p) => <input {...p} value={name} onInput={(e) => (setName((e.target as HTMLInputElement).value), setError(undefined))} />}
          </Field>
        </div>
        <div class="modal-foot">
          <Button onClick={onClose}>Cancel</Button>
          <Button kind="primary" type="submit">
            Create
          </Button>
        </div>
      </form>
    </Modal>
  );
}
