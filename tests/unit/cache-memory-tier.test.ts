// Tests the in-process cache tier: its byte bound, TTLs, refusals, LRU order and counters.
import { describe, expect, it } from 'vitest';
import { MemoryTier } from '../../src/cache/memory-tier.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A value of `n` bytes in a backing store of its own (as the tier keeps it). */
function bytes(n: number, fill = 0x61): Buffer {
  return Buffer.alloc(n, fill);
}

describe('MemoryTier', () => {
  it('never holds more bytes than maxBytes, however many entries go in', () => {
    const tier = new MemoryTier({ maxBytes: 20_000, maxEntryBytes: 2_000 });
    let seed = 7;
    let most = 0;
    for (let i = 0; i < 5_000; i++) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      tier.set(`key-${i}`, bytes(1 + (seed % 2_000)), 60_000);
      most = Math.max(most, tier.stats.bytes);
    }
    expect(most).toBeLessThanOrEqual(20_000);
    expect(most).toBeGreaterThan(15_000);
    expect(tier.stats.sets).toBe(5_000);
    expect(tier.stats.evictions).toBeGreaterThan(4_000);
    expect(tier.stats.entries).toBe(5_000 - tier.stats.evictions);
    // The newest entry is always there.
    expect(tier.get('key-4999')).toBeDefined();
  });

  it('counts each entry as its value plus its key', () => {
    const tier = new MemoryTier({ maxBytes: 1_000, maxEntryBytes: 1_000 });
    tier.set('abcd', bytes(100), 60_000);
    tier.set('ef', bytes(10), 60_000);
    expect(tier.stats.bytes).toBe(104 + 12);
    expect(tier.stats.entries).toBe(2);
    tier.set('abcd', bytes(50), 60_000);
    expect(tier.stats.bytes).toBe(54 + 12);
  });

  it('answers undefined once an entry is past its TTL', async () => {
    const tier = new MemoryTier({ maxBytes: 10_000, maxEntryBytes: 1_000 });
    tier.set('short', bytes(10), 40);
    tier.set('long', bytes(10), 60_000);
    expect(tier.get('short')).toEqual(bytes(10));
    await sleep(120);
    expect(tier.get('short')).toBeUndefined();
    expect(tier.get('long')).toEqual(bytes(10));
    // A read of an expired entry drops it.
    expect(tier.stats.entries).toBe(1);
  });

  it('refuses values over maxEntryBytes and drops what the key held before', () => {
    const tier = new MemoryTier({ maxBytes: 10_000, maxEntryBytes: 100 });
    tier.set('k', bytes(100), 60_000);
    expect(tier.get('k')).toHaveLength(100);
    tier.set('k', bytes(101), 60_000);
    expect(tier.get('k')).toBeUndefined();
    tier.set('other', bytes(5_000), 60_000);
    expect(tier.get('other')).toBeUndefined();
    expect(tier.stats.refused).toBe(2);
    expect(tier.stats.sets).toBe(1);
    expect(tier.stats.bytes).toBe(0);
  });

  it('refuses a TTL under 1 ms rather than keeping the entry forever', () => {
    const tier = new MemoryTier({ maxBytes: 10_000, maxEntryBytes: 1_000 });
    tier.set('zero', bytes(10), 0);
    tier.set('negative', bytes(10), -5);
    tier.set('nan', bytes(10), Number.NaN);
    expect(tier.stats.entries).toBe(0);
    expect(tier.stats.refused).toBe(3);
  });

  it('evicts the least recently used entry first: a read counts as a use', () => {
    // Each entry is 1 (key) + 9 (value) = 10 bytes: exactly three fit.
    const tier = new MemoryTier({ maxBytes: 30, maxEntryBytes: 100 });
    tier.set('a', bytes(9, 0x41), 60_000);
    tier.set('b', bytes(9, 0x42), 60_000);
    tier.set('c', bytes(9, 0x43), 60_000);
    expect(tier.get('a')).toBeDefined();
    tier.set('d', bytes(9, 0x44), 60_000);
    expect(tier.get('b')).toBeUndefined();
    expect(tier.get('a')).toEqual(bytes(9, 0x41));
    expect(tier.get('c')).toEqual(bytes(9, 0x43));
    expect(tier.get('d')).toEqual(bytes(9, 0x44));
    expect(tier.stats.evictions).toBe(1);
    tier.set('e', bytes(9, 0x45), 60_000);
    // 'a' was read before 'c' and 'd': it is now the oldest.
    expect(tier.get('a')).toBeUndefined();
    expect(tier.stats.evictions).toBe(2);
  });

  it('keeps hit, miss, set and size counters current', () => {
    const tier = new MemoryTier({ maxBytes: 1_000, maxEntryBytes: 1_000 });
    expect(tier.stats).toMatchObject({ hits: 0, misses: 0, sets: 0, evictions: 0, bytes: 0, entries: 0 });
    tier.get('nope');
    tier.set('x', bytes(10), 60_000);
    tier.get('x');
    tier.get('x');
    expect(tier.stats).toMatchObject({ hits: 2, misses: 1, sets: 1, evictions: 0, bytes: 11, entries: 1 });
    tier.clear();
    expect(tier.stats).toMatchObject({ bytes: 0, entries: 0, evictions: 0 });
    expect(tier.get('x')).toBeUndefined();
  });

  it('stores a copy of a view into a larger buffer, so its bytes are what it holds', () => {
    const tier = new MemoryTier({ maxBytes: 100_000, maxEntryBytes: 100_000 });
    const big = Buffer.alloc(64 * 1024, 0x7a);
    const view = big.subarray(10, 20);
    tier.set('view', view, 60_000);
    const stored = tier.get('view')!;
    expect(stored).toEqual(view);
    expect(stored.buffer.byteLength).toBe(10);
    const whole = bytes(50);
    tier.set('whole', whole, 60_000);
    expect(tier.get('whole')).toBe(whole);
  });

  it('keeps an entry stored with a keep-stale time for getStale() only, and only that long', async () => {
    const tier = new MemoryTier({ maxBytes: 100_000, maxEntryBytes: 10_000 });
    // TTLs of a few hundred ms: a loaded shared machine can stall a test for tens of them.
    tier.set('stale', bytes(10), 300, 400);
    tier.set('plain', bytes(10), 300);
    expect(tier.get('stale')).toBeDefined();
    expect(tier.getStale('stale')?.expiredMs).toBe(0);
    expect(tier.getStale('plain')).toBeUndefined();
    await sleep(350);
    expect(tier.get('stale')).toBeUndefined();
    expect(tier.get('plain')).toBeUndefined();
    expect(tier.getStale('stale')?.expiredMs).toBeGreaterThan(0);
    await sleep(400);
    expect(tier.getStale('stale')).toBeUndefined();
  });

  it('forgets the keep-stale time when an entry is replaced by a plain one', async () => {
    const tier = new MemoryTier({ maxBytes: 100_000, maxEntryBytes: 10_000 });
    tier.set('k', bytes(10), 30, 10_000);
    tier.set('k', bytes(10, 0x62), 30);
    await sleep(80);
    expect(tier.getStale('k')).toBeUndefined();
  });
});
