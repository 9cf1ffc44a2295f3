// A paged list of events, newest first (before/next cursors), refreshed
// while the newest page is shown.

import { useState } from 'preact/hooks';

import { useApp } from '../context';
import { formatTime, targetName } from '../format';
import { useLoad } from '../hooks';
import { firstPage, hasNewer, hasOlder, loaded, newer, older, pageNumber, type Pager } from '../paging';
import type { Event, Page } from '../types';
import { InlineError, Pagination } from './widgets';

export const EVENTS_PER_PAGE = 20;

export function EventsList({
  load,
  label = 'Events',
  showTarget = true,
}: {
  load: (before: number | undefined, limit: number) => Promise<Page<Event>>;
  label?: string;
  showTarget?: boolean;
}) {
  const { version } = useApp();
  const [pager, setPager] = useState<Pager>(firstPage);
  const page = useLoad(
    async () => {
      const p = await load(pager.before, EVENTS_PER_PAGE);
      setPager((cur) => (cur.before === pager.before ? loaded(cur, p.next) : cur));
      return p;
    },
    [pager.before, version],
    pager.before === undefined ? 5000 : undefined,
  );
  const items = page.data?.items ?? [];
  return (
    <div class="events">
      <InlineError error={page.error} />
      {items.length === 0 && !page.loading ? (
        <p class="muted">No events.</p>
      ) : (
        <div class="table-wrap">
          <table class="table" aria-label={label}>
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Severity</th>
                {showTarget && <th scope="col">Target</th>}
                <th scope="col">Description</th>
                <th scope="col" class="hide-narrow">
                  User
                </th>
              </tr>
            </thead>
            <tbody>
              {items.map((e) => (
                <tr key={e.id} data-event-kind={e.kind}>
                  <td class="nowrap">{formatTime(e.time_ms)}</td>
                  <td>
                    <span class={`sev sev-${e.severity}`}>{e.severity}</span>
                  </td>
                  {showTarget && <td>{targetName(e.target)}</td>}
                  <td>
                    {e.message}
                    <span class="kind"> ({e.kind})</span>
                  </td>
                  <td class="hide-narrow">{e.user ?? '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Pagination
        label={label}
        page={pageNumber(pager)}
        hasNewer={hasNewer(pager)}
        hasOlder={hasOlder(pager)}
        onNewer={() => setPager(newer)}
        onOlder={() => setPager(older)}
      />
    </div>
  );
}
