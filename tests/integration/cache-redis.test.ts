// Tests the result cache's Redis side against a real redis-server: the shared tier's reads, writes
// and TTLs, and table versions shared between instances, through a Redis crash and restart.
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RedisTier } from '../../src/cache/redis-tier.js';
import { TableVersions } from '../../src/cache/table-versions.js';
import { describeWithRedis } from './harness/redis.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 10 ms until true; fails after `timeoutMs`. */
async function waitFor(label: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${label}`);
    await sleep(10);
  }
}

/** A key prefix of its own per test, so tests on one server do not see each other's versions. */
const prefix = () => `t${randomBytes(4).toString('hex')}:`;

describeWithRedis('cache storage on Redis', (server) => {
  const closers: Array<() => Promise<void>> = [];
  const track = <T extends { close(): Promise<void> }>(thing: T): T => {
    closers.push(() => thing.close());
    return thing;
  };
  let raw: Redis | undefined;

  beforeAll(async () => {
    // Looks at what the code under test stored; reconnects by itself after the crash test.
    raw = new Redis(server().url, { lazyConnect: true });
    raw.on('error', () => {});
    await raw.connect();
  });
  afterEach(async () => {
    await Promise.all(closers.splice(0).map((close) => close()));
  });
  afterAll(() => {
    raw?.disconnect();
  });

  describe('RedisTier', () => {
    it('round-trips binary Buffers under its key prefix and counts hits and misses', async () => {
      const keyPrefix = prefix();
      // A generous read timeout: this test is about bytes, not latency, on a shared machine.
      const tier = track(new RedisTier({ url: server().url, keyPrefix, getTimeoutMs: 2_000 }));
      await waitFor('the tier to be up', () => tier.up);
      const everyByte = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const large = Buffer.concat([everyByte, randomBytes(256 * 1024), everyByte]);
      tier.set('every-byte', everyByte, 60_000);
      tier.set('large', large, 60_000);
      // Same connection, in order: the sets are done before these gets run.
      expect(await tier.get('every-byte')).toEqual(everyByte);
      // Buffer.equals: toEqual compares a Buffer element by element, slowly.
      expect((await tier.get('large'))?.equals(large)).toBe(true);
      expect(await tier.get('absent')).toBeUndefined();
      expect(tier.stats).toEqual({ hits: 2, misses: 1, errors: 0, sets: 2 });
      expect(await raw!.exists(`${keyPrefix}every-byte`)).toBe(1);
      expect(await raw!.pttl(`${keyPrefix}large`)).toBeGreaterThan(50_000);
    });

    it('lets entries expire after their TTL', async () => {
      const tier = track(new RedisTier({ url: server().url, keyPrefix: prefix() }));
      await waitFor('the tier to be up', () => tier.up);
      tier.set('brief', Buffer.from('x'), 100);
      expect(await tier.get('brief')).toEqual(Buffer.from('x'));
      await sleep(300);
      expect(await tier.get('brief')).toBeUndefined();
    });

    it('reports up and down through onStateChange and answers undefined while down', async () => {
      const states: boolean[] = [];
      const tier = track(
        new RedisTier({ url: 'redis://127.0.0.1:1', onStateChange: (up) => states.push(up) }),
      );
      await sleep(300);
      expect(tier.up).toBe(false);
      const started = Date.now();
      expect(await tier.get('k')).toBeUndefined();
      expect(Date.now() - started).toBeLessThan(1_000);
      tier.set('k', Buffer.from('v'), 1_000);
      expect(tier.stats.sets).toBe(0);
      expect(states).toEqual([]);
    });
  });

  describe('TableVersions', () => {
    const start = async (keyPrefix: string, extra: { instanceId?: string; states?: boolean[] } = {}) => {
      const versions = track(
        new TableVersions({
          redisUrl: server().url,
          keyPrefix,
          instanceId: extra.instanceId,
          onSharedStateChange: (up) => extra.states?.push(up),
        }),
      );
      await versions.start();
      return versions;
    };

    it('shows a bump made in one instance in the other within a short wait', async () => {
      const keyPrefix = prefix();
      const a = await start(keyPrefix);
      const b = await start(keyPrefix);
      expect(a.shared && b.shared).toBe(true);
      const tables = ['public.orders', 'public.users'];
      const before = b.tokens('shop', tables);
      expect(a.tokens('shop', tables)).toBe(before);

      const aBefore = a.tokens('shop', tables);
      const acked = a.bump('shop', ['public.orders']);
      // In effect here at once, before Redis has answered.
      expect(a.tokens('shop', tables)).not.toBe(aBefore);
      await acked;
      await waitFor('B to see the bump', () => b.tokens('shop', tables) !== before, 2_000);
      // Only the bumped table's token moved.
      const [epoch, orders, users] = b.tokens('shop', tables).split(',');
      expect([epoch, users]).toEqual([before.split(',')[0], before.split(',')[2]]);
      expect(orders).not.toBe(before.split(',')[1]);
      // Once A's own bump is back, both agree (they can share entries again).
      await waitFor('A and B to agree', () => a.tokens('shop', tables) === b.tokens('shop', tables), 2_000);
      expect(b.stats.remoteBumps).toBe(1);
      expect(a.stats.bumps).toBe(1);

      // A table B never heard of is simply set; 'all' moves the database-wide epoch.
      await a.bump('shop', ['audit.new_table']);
      await a.bump('shop', 'all');
      await waitFor(
        'B to see both bumps',
        () => b.tokens('shop', ['audit.new_table']) === a.tokens('shop', ['audit.new_table']),
        2_000,
      );
      expect(b.tokens('shop', ['audit.new_table']).split(',')[1]).not.toBe('0');
      expect(b.tokens('shop', tables).split(',')[0]).not.toBe(epoch);
      // Other databases are untouched.
      expect(b.tokens('other', tables)).toBe(a.tokens('other', tables));
    });

    it('gives an instance started later the current tokens from start()', async () => {
      const keyPrefix = prefix();
      const a = await start(keyPrefix);
      const b = await start(keyPrefix);
      await a.bump('db1', ['public.t1', 'public.t2']);
      await b.bump('db1', 'all');
      await b.bump('db2', ['s.x']);
      await waitFor(
        'A and B to agree',
        () =>
          a.tokens('db1', ['public.t1', 'public.t2']) === b.tokens('db1', ['public.t1', 'public.t2']) &&
          a.tokens('db2', ['s.x']) === b.tokens('db2', ['s.x']),
        2_000,
      );
      const c = await start(keyPrefix);
      expect(c.shared).toBe(true);
      expect(c.tokens('db1', ['public.t1', 'public.t2'])).toBe(a.tokens('db1', ['public.t1', 'public.t2']));
      expect(c.tokens('db2', ['s.x'])).toBe(a.tokens('db2', ['s.x']));
      // Its joining moved nothing for the others.
      await sleep(100);
      expect(a.tokens('db1', ['public.t1'])).toBe(c.tokens('db1', ['public.t1']));
      expect(c.stats.resyncs).toBe(1);
    });

    it('converges on one token per table when instances bump the same table concurrently', async () => {
      const keyPrefix = prefix();
      const a = await start(keyPrefix);
      const b = await start(keyPrefix);
      const acks: Promise<void>[] = [];
      for (let i = 0; i < 50; i++) {
        acks.push(a.bump('db', ['public.hot']), b.bump('db', ['public.hot', 'public.cold']));
      }
      await Promise.all(acks);
      await waitFor(
        'A and B to agree',
        () => a.tokens('db', ['public.hot', 'public.cold']) === b.tokens('db', ['public.hot', 'public.cold']),
        2_000,
      );
      const stored = await raw!.hget(`${keyPrefix}versions`, 'db\0public.hot');
      expect(a.tokens('db', ['public.hot']).split(',')[1]).toBe(stored);
    });

    it('never hands out the same token twice, within or across instances', async () => {
      const keyPrefix = prefix();
      // Same configured instance id on purpose: tokens still carry a random part.
      const a = await start(keyPrefix, { instanceId: 'proxy-1' });
      const b = await start(keyPrefix, { instanceId: 'proxy-1' });
      const local = new TableVersions({ instanceId: 'proxy-1' });
      const seen = new Set<string>();
      let count = 0;
      for (let i = 0; i < 500; i++) {
        for (const versions of [a, b, local]) {
          void versions.bump('db', ['public.t']);
          seen.add(versions.tokens('db', ['public.t']).split(',')[1]!);
          count++;
        }
      }
      expect(seen.size).toBe(count);
      // Without Redis it is all local, and says so.
      expect(local.shared).toBe(false);
      await local.close();
    });

    it('goes local when Redis dies, and on its return resyncs and orphans what was cached meanwhile', async () => {
      const keyPrefix = prefix();
      const aStates: boolean[] = [];
      const bStates: boolean[] = [];
      const a = await start(keyPrefix, { states: aStates });
      const b = await start(keyPrefix, { states: bStates });
      const tier = track(new RedisTier({ url: server().url, keyPrefix }));
      await waitFor('the tier to be up', () => tier.up);
      await a.bump('db', ['public.t']);
      await waitFor('agreement', () => a.tokens('db', ['public.t']) === b.tokens('db', ['public.t']));
      const beforeOutage = a.tokens('db', ['public.t', 'public.u']);
      const bBeforeOutage = b.tokens('db', ['public.u']);

      await server().kill();
      await waitFor('A to notice', () => !a.shared, 2_000);
      await waitFor('B to notice', () => !b.shared, 2_000);
      // true from the first load at start(), then false at once.
      expect(aStates).toEqual([true, false]);
      expect(bStates).toEqual([true, false]);

      // Bumps still change tokens here, at once.
      const duringOutage = a.tokens('db', ['public.t', 'public.u']);
      expect(duringOutage).toBe(beforeOutage);
      const bumped = a.bump('db', ['public.u']);
      expect(a.tokens('db', ['public.t', 'public.u'])).not.toBe(duringOutage);
      await bumped;

      // The shared tier answers undefined, quickly.
      await waitFor('the tier to go down', () => !tier.up, 2_000);
      const started = Date.now();
      expect(await tier.get('anything')).toBeUndefined();
      expect(Date.now() - started).toBeLessThan(1_000);

      await server().restart();
      await waitFor('A to resync', () => a.shared, 10_000);
      await waitFor('B to resync', () => b.shared, 10_000);
      expect(aStates).toEqual([true, false, true]);
      expect(bStates).toEqual([true, false, true]);
      expect(a.stats.resyncs).toBe(2);

      // Everything cached before or during the outage is orphaned...
      const after = a.tokens('db', ['public.t', 'public.u']);
      expect(after.split(',')[0]).not.toBe(beforeOutage.split(',')[0]);
      expect(after).not.toBe(duringOutage);
      // ...B learnt of the write A made while Redis was gone...
      await waitFor('B to leave its old tokens', () => b.tokens('db', ['public.u']) !== bBeforeOutage, 2_000);
      // ...and the two agree again, so they share entries.
      await waitFor(
        'A and B to agree',
        () => a.tokens('db', ['public.t', 'public.u']) === b.tokens('db', ['public.t', 'public.u']),
        2_000,
      );
      await waitFor('the tier to be back', () => tier.up, 10_000);
      tier.set('k', Buffer.from('v'), 10_000);
      expect(await tier.get('k')).toEqual(Buffer.from('v'));
    });

    it('resyncs every instance under a new generation when the versions hash is lost', async () => {
      const keyPrefix = prefix();
      const aStates: boolean[] = [];
      const a = await start(keyPrefix, { states: aStates });
      const b = await start(keyPrefix);
      await a.bump('db', ['public.t']);
      await waitFor('agreement', () => a.tokens('db', ['public.t']) === b.tokens('db', ['public.t']));
      const before = a.tokens('db', ['public.t']);
      // As maxmemory eviction or a FLUSHALL would: no connection drops, nobody is told.
      await raw!.del(`${keyPrefix}versions`);
      await b.bump('db', ['public.other']);
      await waitFor('A to resync', () => a.stats.resyncs === 2 && a.shared, 5_000);
      await waitFor('B to resync', () => b.stats.resyncs === 2 && b.shared, 5_000);
      expect(aStates).toEqual([true, false, true]);
      await waitFor(
        'A and B to agree',
        () => a.tokens('db', ['public.t', 'public.other']) === b.tokens('db', ['public.t', 'public.other']),
        2_000,
      );
      expect(a.tokens('db', ['public.t']).split(',')[0]).not.toBe(before.split(',')[0]);
      // A database neither instance used since: its absent epoch is the new generation.
      const c = await start(keyPrefix);
      expect(c.tokens('fresh', [])).toBe(a.tokens('fresh', []));
    });

    it('catches up when Redis comes up only after start()', async () => {
      const keyPrefix = prefix();
      await server().kill();
      const states: boolean[] = [];
      const late = await start(keyPrefix, { states });
      expect(late.shared).toBe(false);
      await late.bump('db', ['public.t']);
      await server().restart();
      await waitFor('the first load', () => late.shared, 10_000);
      expect(states).toEqual([true]);
      const other = await start(keyPrefix);
      // The bump made before Redis was reachable reached it as an epoch bump.
      expect(other.tokens('db', ['public.t'])).toBe(late.tokens('db', ['public.t']));
      expect(other.tokens('db', [])).not.toBe(other.tokens('never-used', []));
    });
  });
});

describe('TableVersions without Redis', () => {
  it('bumps locally and reports nothing shared', async () => {
    const versions = new TableVersions();
    await versions.start();
    expect(versions.shared).toBe(false);
    const before = versions.tokens('db', ['public.a', 'public.b']);
    expect(before.split(',')).toHaveLength(3);
    await versions.bump('db', ['public.b']);
    const after = versions.tokens('db', ['public.a', 'public.b']).split(',');
    expect(after[0]).toBe(before.split(',')[0]);
    expect(after[1]).toBe('0');
    expect(after[2]).not.toBe('0');
    await versions.bump('db', 'all');
    expect(versions.tokens('db', [])).not.toBe(after[0]);
    await versions.close();
  });

  it('starts promptly when Redis is unreachable, and keeps working locally', async () => {
    const states: boolean[] = [];
    const versions = new TableVersions({
      redisUrl: 'redis://127.0.0.1:1',
      onSharedStateChange: (up) => states.push(up),
    });
    const started = Date.now();
    await versions.start();
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(versions.shared).toBe(false);
    const before = versions.tokens('db', ['public.t']);
    await versions.bump('db', ['public.t']);
    expect(versions.tokens('db', ['public.t'])).not.toBe(before);
    expect(states).toEqual([]);
    await versions.close();
  });
});
