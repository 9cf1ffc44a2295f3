// The tasks strip at the bottom (running tasks with progress bars, the
// latest finished ones) and the notices of failed actions.

import { useState } from 'preact/hooks';

import type { Notice } from '../context';
import { formatTime, TASK_STATE_LABELS, targetName, taskDone, taskName } from '../format';
import type { Task } from '../types';
import { ProgressBar } from './widgets';

/** Running first, then the newest finished ones, at most `max`. */
export function stripTasks(tasks: Task[], max = 6): Task[] {
  const running = tasks.filter((t) => !taskDone(t));
  const done = tasks.filter((t) => taskDone(t));
  return [...running, ...done].slice(0, Math.max(max, running.length));
}

export function TasksStrip({ tasks, error }: { tasks: Task[]; error?: string }) {
  const [open, setOpen] = useState(() => matchMedia('(min-width: 700px)').matches);
  const shown = stripTasks(tasks);
  const running = tasks.filter((t) => !taskDone(t)).length;
  return (
    <section class={`tasks-strip${open ? ' open' : ''}`} aria-label="Recent tasks">
      <button
        type="button"
        class="strip-toggle"
        aria-expanded={open}
        aria-controls="tasks-strip-body"
        onClick={() => setOpen(!open)}
      >
        <span aria-hidden="true">{open ? '▾' : '▸'}</span> Recent tasks
        <span class="strip-count">{running ? `${running} running` : 'none running'}</span>
      </button>
      {open && (
        <div id="tasks-strip-body" class="strip-body">
          {error && <div class="inline-error">{error}</div>}
          {shown.length === 0 ? (
            <p class="muted">No tasks yet.</p>
          ) : (
            <table class="table compact" aria-label="Recent tasks">
              <thead>
                <tr>
                  <th scope="col">Task</th>
                  <th scope="col">Target</th>
                  <th scope="col" class="hide-narrow">
                    Initiator
                  </th>
                  <th scope="col" class="hide-narrow">
                    Started
                  </th>
                  <th scope="col">Result</th>
                </tr>
              </thead>
              <tbody>
                {shown.map((t) => (
                  <tr key={t.id} data-task-id={t.id} data-task-state={t.state} data-task-kind={t.kind}>
                    <td>{taskName(t.kind)}</td>
                    <td>{targetName(t.target)}</td>
                    <td class="hide-narrow">{t.user}</td>
                    <td class="hide-narrow">{formatTime(t.started_ms)}</td>
                    <td class="task-result">
                      {taskDone(t) ? (
                        <span class={`task-state task-${t.state}`} title={t.error?.message}>
                          {TASK_STATE_LABELS[t.state]}
                          {t.error ? `: ${t.error.message}` : ''}
                        </span>
                      ) : (
                        <ProgressBar value={t.progress} label={`${taskName(t.kind)} ${targetName(t.target)}`} />
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      )}
    </section>
  );
}

export function Notices({ notices, dismiss }: { notices: Notice[]; dismiss: (id: number) => void }) {
  return (
    <div class="notices">
      <div role="alert" aria-live="assertive" class="notice-list">
        {notices
          .filter((n) => n.kind === 'error')
          .map((n) => (
            <NoticeItem key={n.id} n={n} dismiss={dismiss} />
          ))}
      </div>
      <div role="status" aria-live="polite" class="notice-list">
        {notices
          .filter((n) => n.kind === 'info')
          .map((n) => (
            <NoticeItem key={n.id} n={n} dismiss={dismiss} />
          ))}
      </div>
    </div>
  );
}

function NoticeItem({ n, dismiss }: { n: Notice; dismiss: (id: number) => void }) {
  return (
    <div class={`notice notice-${n.kind}`} data-notice={n.kind}>
      <span class="notice-icon" aria-hidden="true">
        {n.kind === 'error' ? '⚠' : 'ℹ'}
      </span>
      <span class="notice-text">{n.text}</span>
      <button type="button" class="icon-btn" aria-label="Dismiss" onClick={() => dismiss(n.id)}>
        ×
      </button>
    </div>
  );
}
