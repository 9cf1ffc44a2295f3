import { describe, expect, it } from 'vitest';

import { firstPage, hasNewer, hasOlder, loaded, newer, older, pageNumber } from './paging';

describe('paging with before/next', () => {
  it('walks older pages and back to exactly the same cursors', () => {
    let p = firstPage();
    expect(p.before).toBeUndefined();
    expect(hasOlder(p)).toBe(false);
    expect(hasNewer(p)).toBe(false);
    p = loaded(p, 81); // newest page: ids 100..81, next = 81
    expect(hasOlder(p)).toBe(true);
    p = older(p);
    expect(p.before).toBe(81);
    expect(pageNumber(p)).toBe(2);
    expect(hasOlder(p)).toBe(false); // not loaded yet
    p = loaded(p, 61);
    p = older(p);
    expect(p.before).toBe(61);
    p = loaded(p, null); // the last page
    expect(hasOlder(p)).toBe(false);
    expect(older(p)).toBe(p);
    p = newer(p);
    expect(p.before).toBe(81);
    expect(pageNumber(p)).toBe(2);
    p = newer(p);
    expect(p.before).toBeUndefined();
    expect(pageNumber(p)).toBe(1);
    expect(hasNewer(p)).toBe(false);
    expect(newer(p)).toBe(p);
  });

  it('does not change the pager it is given', () => {
    const p = loaded(firstPage(), 5);
    const q = older(p);
    expect(p.before).toBeUndefined();
    expect(p.history).toEqual([]);
    expect(q.history).toEqual([undefined]);
  });
});
