// The max_concurrency bookkeeping (src/rules/concurrency.ts): slots per key, FIFO hand-over.
import { describe, expect, it } from 'vitest';
import { ConcurrencyLimiter } from '../../src/rules/concurrency.js';

describe('ConcurrencyLimiter', () => {
  it('hands out at most limit slots per key, independently per key', () => {
    const l = new ConcurrencyLimiter();
    expect(l.tryAcquire('a', 2)).toBe(true);
    expect(l.tryAcquire('a', 2)).toBe(true);
    expect(l.tryAcquire('a', 2)).toBe(false);
    expect(l.tryAcquire('b', 2)).toBe(true);
    l.release('a');
    expect(l.current('a')).toBe(1);
    expect(l.tryAcquire('a', 2)).toBe(true);
  });

  it('passes a released slot to the oldest waiter, without the count dropping', async () => {
    const l = new ConcurrencyLimiter();
    expect(l.tryAcquire('k', 1)).toBe(true);
    const order: number[] = [];
    const first = l.wait('k').then(() => order.push(1));
    const second = l.wait('k').then(() => order.push(2));
    l.release('k');
    await first;
    expect(order).toEqual([1]);
    expect(l.current('k')).toBe(1);
    expect(l.tryAcquire('k', 1)).toBe(false);
    l.release('k');
    await second;
    expect(order).toEqual([1, 2]);
    l.release('k');
    expect(l.current('k')).toBe(0);
    expect(l.stats.queued).toBe(2);
  });
});
