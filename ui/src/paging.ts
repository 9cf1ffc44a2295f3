// Paging through keeld's lists (tasks, events): newest first; a page's
// `next` is the `before` of the following (older) page. The pager keeps
// the cursors of the pages seen, so that "Newer" goes back exactly.

export interface Pager {
  /** `before` of the page shown; undefined for the newest page. */
  before?: number;
  /** Cursors of the newer pages, oldest last. */
  history: (number | undefined)[];
  /** The shown page's `next`, when there is an older page. */
  next?: number;
}

export function firstPage(): Pager {
  return { before: undefined, history: [], next: undefined };
}

/** Records what the shown page said about the next one. */
export function loaded(p: Pager, next: number | null | undefined): Pager {
  return { ...p, next: next ?? undefined };
}

export function hasOlder(p: Pager): boolean {
  return p.next !== undefined;
}

export function hasNewer(p: Pager): boolean {
  return p.history.length > 0;
}

/** The older page; the same pager when there is none. */
export function older(p: Pager): Pager {
  if (p.next === undefined) return p;
  return { before: p.next, history: [...p.history, p.before], next: undefined };
}

/** The newer page; the same pager on the newest one. */
export function newer(p: Pager): Pager {
  if (p.history.length === 0) return p;
  const history = p.history.slice(0, -1);
  return { before: p.history[p.history.length - 1], history, next: undefined };
}

/** The page's number, 1 for the newest. */
export function pageNumber(p: Pager): number {
  return p.history.length + 1;
}
