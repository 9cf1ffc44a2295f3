// Monitor: every task (paged) and every event (paged, filtered by target).

import { useState } from 'preact/hooks';

import { useApp } from '../context';
import { formatTime, TASK_STATE_LABELS, targetName, taskDone, taskDuration, taskName } from '../format';
import { useLoad } from '../hooks';
import { firstPage, hasNewer, hasOlder, loaded, newer, older, pageNumber, type Pager } from '../paging';
import { EventsList } from '../ui/events';
import { InlineError, Pagination, ProgressBar, Section } from '../ui/widgets';

export function MonitorPage() {
  const { api } = useApp();
  const [target, setTarget] = useState('');
  const [applied, setApplied] = useState('');
  return (
    <div class="page">
      <h1 class="page-title">Monitor</h1>
      <Section title="Tasks">
        <TasksList />
      </Section>
      <Section title="Events">
        <form
          class="filter"
          role="search"
          onSubmit={(e) => {
            e.preventDefault();
            setApplied(target.trim());
          }}
        >
          <label for="event-target">Target</label>
          <input
            id="event-target"
            placeholder="host, vm:NAME, user:NAME"
            value={target}
            onInput={(e) => setTarget((e.target as HTMLInputElement).value)}
          />
          <button type="submit" class="btn btn-plain">
            Filter
          </button>
        </form>
        <EventsList key={applied} load={(before, limit) => api.events(before, limit, applied || undefined)} />
      </Section>
    </div>
  );
}

function TasksList() {
  const { api, version } = useApp();
  const [pager, setPager] = useState<Pager>(firstPage);
  const page = useLoad(
    async () => {
      const p = await api.tasks(pager.before, 20);
      setPager((cur) => (cur.before === pager.before ? loaded(cur, p.next) : cur));
      return p;
    },
    [pager.before, version],
    pager.before === undefined ? 2000 : undefined,
  );
  const now = Date.now();
  return (
    <>
      <InlineError error={page.error} />
      <div class="table-wrap">
        <table class="table" aria-label="Tasks">
          <thead>
            <tr>
              <th scope="col">Task</th>
              <th scope="col">Target</th>
              <th scope="col">Initiator</th>
              <th scope="col" class="hide-narrow">
                Started
              </th>
              <th scope="col" class="hide-narrow">
                Duration
              </th>
              <th scope="col">Result</th>
            </tr>
          </thead>
          <tbody>
            {(page.data?.items ?? []).map((t) => (
              <tr key={t.id}>
                <td>{taskName(t.kind)}</td>
                <td>{targetName(t.target)}</td>
                <td>{t.user}</td>
                <td class="hide-narrow nowrap">{formatTime(t.started_ms)}</td>
                <td class="hide-narrow">{taskDuration(t, now)}</td>
                <td>
                  {taskDone(t) ? (
                    <span class={`task-state task-${t.state}`}>
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
      </div>
      <Pagination
        label="Tasks"
        page={pageNumber(pager)}
        hasNewer={hasNewer(pager)}
        hasOlder={hasOlder(pager)}
        onNewer={() => setPager(newer)}
        onOlder={() => setPager(older)}
      />
    </>
  );
}
