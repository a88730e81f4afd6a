// Owns the version tokens cache keys are built from: one per (database, table) plus a
// database-wide epoch, bumped on writes, and their sharing between instances through one Redis
// hash and a pub/sub bus.
//
// How the instances stay in agreement, and why a write is never followed by a stale answer:
// - Every bump goes through one Lua script that numbers it (a `seq` field in the hash), stores the
//   new tokens and publishes them with the hash's generation in the same step, so every subscriber
//   sees all bumps in one order with consecutive numbers. A skipped number means a message was
//   lost, another generation that the hash was lost and made again: both resync. A number already
//   seen is a message delayed past the load that included it (the bus and the load travel on
//   different connections): ignored.
// - A local bump takes effect at once with a private "overlay" token, and the token stored in
//   Redis becomes the local one only when its own message comes back. Entries cached under the
//   overlay are this instance's alone; entries under a shared token were all made after every bump
//   Redis ordered before it, so adopting a shared token never brings back a result older than a
//   write another instance (or this one) has already seen.
// - A resync subscribes first, then reads the whole hash; messages arriving meanwhile are held and
//   replayed when numbered after the snapshot. It then bumps, through Redis, the epoch of every
//   database this instance used since the last resync: that orphans whatever it cached while out
//   of touch and tells the others about writes it made meanwhile (whose own bumps stayed local).
// - Absent tokens: a table never bumped is '0', and a database whose epoch was never bumped has
//   the hash's `generation` (random, created once per hash), so losing the hash cannot bring back
//   keys from before the loss.
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { logger } from '../observe/logger.js';
import { loadRedisClass, redisRetryDelay } from './redis-tier.js';

export interface TableVersionsOptions {
  /** Names this instance in bus messages and logs; tokens always carry a random part as well. */
  instanceId?: string;
  redisUrl?: string;
  /** Fired when `shared` changes. */
  onSharedStateChange?: (up: boolean) => void;
  /** Prefix of the hash and channel names; default 'sluice:'. */
  keyPrefix?: string;
}

export interface TableVersionsStats {
  /** bump() calls. */
  bumps: number;
  /** Bus messages from other instances applied. */
  remoteBumps: number;
  /** Full loads of the versions from Redis, the first one included. */
  resyncs: number;
}

/** The field holding a database's epoch: table keys are "schema.name", so never plain '*'. */
const EPOCH = '*';
/** The token of a table never bumped. Real tokens are `<random>.<counter>`, never '0'. */
const ABSENT = '0';
/** Hash fields besides `<database>\0<field>` ones (which always hold a NUL). */
const GENERATION_FIELD = 'generation';
const SEQ_FIELD = 'seq';
/** How long start() waits for the first load before going on without Redis. */
const START_WAIT_MS = 5000;
/** Delay before trying a failed resync again while both connections look healthy. */
const RESYNC_RETRY_MS = 500;
/** Bounds every command, so a Redis that stops answering is noticed (then resync). */
const COMMAND_TIMEOUT_MS = 2000;

/**
 * KEYS[1] the hash; ARGV[1] the channel, ARGV[2] the message body, then field/token pairs.
 * Numbering, storing and publishing in one script is what gives every instance the same order.
 */
const BUMP_SCRIPT = `
local seq = redis.call('HINCRBY', KEYS[1], '${SEQ_FIELD}', 1)
local generation = redis.call('HGET', KEYS[1], '${GENERATION_FIELD}') or ''
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PUBLISH', ARGV[1], seq .. ' ' .. generation .. ' ' .. ARGV[2])
return seq
`;

type BumpClient = Redis & {
  sluiceBump(hash: string, channel: string, body: string, ...fieldTokens: string[]): Promise<number>;
};

/** One bump as it travels on the bus: [database, field, token]. */
type Bump = [database: string, field: string, token: string];

interface BusMessage {
  seq: number;
  /** The hash's generation when the bump ran; '' when the hash had none (evicted meanwhile). */
  generation: string;
  from: string;
  bumps: Bump[];
}

class DatabaseVersions {
  /** Field ("schema.name", or EPOCH) to the token in effect here. */
  readonly tokens = new Map<string, string>();
  /** Field to the token of this instance's last bump that has not come back on the bus yet. */
  readonly pending = new Map<string, string>();
  /** Read or bumped since the last resync: its epoch is bumped at the next one. */
  used = false;
}

const log = logger.child({ component: 'table-versions' });

export class TableVersions {
  readonly stats: TableVersionsStats = { bumps: 0, remoteBumps: 0, resyncs: 0 };
  readonly instanceId: string;
  private readonly tokenPrefix = randomBytes(9).toString('base64url');
  private counter = 0;
  /** Token of every never-bumped epoch: Redis's when loaded, else one of our own. */
  private generation = 'g' + this.tokenPrefix;
  private readonly dbs = new Map<string, DatabaseVersions>();

  private readonly redisUrl: string | undefined;
  private readonly onSharedStateChange: ((up: boolean) => void) | undefined;
  private readonly hash: string;
  private readonly channel: string;
  private cmd: BumpClient | undefined;
  private sub: Redis | undefined;
  private cmdReady = false;
  private subscribed = false;
  /** Loaded since the last loss: bumps go through Redis and bus numbers are checked. */
  private synced = false;
  private sharedUp = false;
  /** Number of the last bus message applied while synced. */
  private lastSeq = 0;
  /** Messages held while a load is in flight. */
  private held: BusMessage[] | undefined;
  private resyncing = false;
  /** Bumped on every loss, so a resync or bump that straddles one can tell its result is stale. */
  private lossCount = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly syncWaiters: Array<() => void> = [];
  private closed = false;

  constructor(opts: TableVersionsOptions = {}) {
    this.instanceId = opts.instanceId ?? this.tokenPrefix;
    this.redisUrl = opts.redisUrl;
    this.onSharedStateChange = opts.onSharedStateChange;
    const prefix = opts.keyPrefix ?? 'sluice:';
    this.hash = `${prefix}versions`;
    this.channel = `${prefix}versions:bus`;
  }

  /** True while the versions are known to match Redis; always false without Redis. */
  get shared(): boolean {
    return this.sharedUp;
  }

  /**
   * Connects to Redis (when configured) and loads the versions. Resolves once loaded, or after
   * a failed first attempt or START_WAIT_MS: reconnecting goes on in the background.
   */
  async start(): Promise<void> {
    if (!this.redisUrl || this.cmd || this.closed) return;
    const common = {
      lazyConnect: true,
      // Fail at once while disconnected instead of queueing: a bump that cannot reach Redis now
      // is covered by the epoch bump of the next resync.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: redisRetryDelay,
      commandTimeout: COMMAND_TIMEOUT_MS,
    };
    const Redis = loadRedisClass();
    const cmd = new Redis(this.redisUrl, { ...common, connectionName: 'sluice-versions' }) as BumpClient;
    cmd.defineCommand('sluiceBump', { numberOfKeys: 1, lua: BUMP_SCRIPT });
    // Resubscribed by us on 'ready', where the load that must follow the subscription is started.
    const sub = new Redis(this.redisUrl, {
      ...common,
      autoResubscribe: false,
      connectionName: 'sluice-versions-bus',
    });
    this.cmd = cmd;
    this.sub = sub;

    // Unhandled, an 'error' event would crash the process; 'close' is what changes state.
    cmd.on('error', (err: Error) => log.debug({ err: err.message }, 'redis command connection error'));
    sub.on('error', (err: Error) => log.debug({ err: err.message }, 'redis bus connection error'));
    cmd.on('ready', () => {
      this.cmdReady = true;
      this.resync();
    });
    cmd.on('close', () => {
      this.cmdReady = false;
      this.lost('command connection closed');
    });
    sub.on('ready', () => this.subscribe(sub));
    sub.on('close', () => {
      this.subscribed = false;
      this.lost('bus connection closed');
    });
    sub.on('message', (channel: string, text: string) => {
      if (channel === this.channel) this.handleMessage(text);
    });

    const synced = new Promise<void>((resolve) => {
      this.syncWaiters.push(resolve);
      setTimeout(resolve, START_WAIT_MS).unref();
    });
    const connected = await Promise.allSettled([cmd.connect(), sub.connect()]);
    const failed = connected.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      const err = failed.reason as Error;
      log.warn({ err: err.message }, 'redis unreachable: table versions stay local until it is back');
      this.wakeSyncWaiters();
    }
    await synced;
  }

  /** Token string for `tables` of `database`: its epoch, then each table's token, comma-joined. */
  tokens(database: string, tables: readonly string[]): string {
    const db = this.db(database);
    db.used = true;
    let out = db.tokens.get(EPOCH) ?? this.generation;
    for (const table of tables) out += ',' + (db.tokens.get(table) ?? ABSENT);
    return out;
  }

  /**
   * New tokens for `tables` of `database` (its epoch for 'all'), in effect here at once. With
   * Redis up, resolves once Redis has stored and published them; never rejects.
   */
  bump(database: string, tables: readonly string[] | 'all'): Promise<void> {
    this.stats.bumps++;
    const fields = tables === 'all' ? [EPOCH] : tables;
    if (fields.length === 0) return Promise.resolve();
    const db = this.db(database);
    db.used = true;
    if (!this.synced) {
      // Out of touch: local only. The epoch bump of the next resync carries it to the others.
      for (const field of fields) db.tokens.set(field, this.newToken());
      return Promise.resolve();
    }
    const bumps: Bump[] = [];
    for (const field of fields) {
      const token = this.newToken();
      db.pending.set(field, token);
      db.tokens.set(field, this.newToken());
      bumps.push([database, field, token]);
    }
    return this.publish(bumps).then(() => undefined);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.wakeSyncWaiters();
    this.sharedUp = false;
    await Promise.all([this.cmd, this.sub].map((client) => (client ? quit(client) : undefined)));
  }

  private db(database: string): DatabaseVersions {
    let db = this.dbs.get(database);
    if (db === undefined) {
      db = new DatabaseVersions();
      this.dbs.set(database, db);
    }
    return db;
  }

  private newToken(): string {
    return `${this.tokenPrefix}.${(++this.counter).toString(36)}`;
  }

  private subscribe(sub: Redis): void {
    sub.subscribe(this.channel).then(
      () => {
        this.subscribed = true;
        this.resync();
      },
      (err: Error) => {
        // Connected but refused: start over on a new connection rather than run unsubscribed.
        log.warn({ err: err.message }, 'could not subscribe to the versions bus; reconnecting');
        sub.disconnect(true);
      },
    );
  }

  /** Sends bumps through the script; false (and a resync) when their fate is unknown. */
  private async publish(bumps: Bump[]): Promise<boolean> {
    const cmd = this.cmd!;
    const losses = this.lossCount;
    const args: string[] = [];
    for (const [database, field, token] of bumps) args.push(`${database}\0${field}`, token);
    const body = JSON.stringify({ from: this.instanceId, bumps });
    try {
      await cmd.sluiceBump(this.hash, this.channel, body, ...args);
      return true;
    } catch (err) {
      if (losses === this.lossCount) {
        log.warn({ err: (err as Error).message }, 'could not publish a version bump');
        this.lost('bump failed');
      }
      return false;
    }
  }

  private handleMessage(text: string): void {
    const message = parseMessage(text);
    if (message === undefined) {
      log.warn({ text: text.slice(0, 200) }, 'unreadable versions bus message');
      if (this.synced) this.lost('unreadable bus message');
      return;
    }
    if (this.held) {
      this.held.push(message);
      return;
    }
    if (this.synced) {
      if (message.generation !== this.generation) {
        this.apply(message);
        this.lost(`bus message of generation '${message.generation}', not '${this.generation}'`);
        return;
      }
      // Delayed past the load that already included it.
      if (message.seq <= this.lastSeq) return;
      if (message.seq !== this.lastSeq + 1) {
        this.apply(message);
        this.lost(`bus message ${message.seq} after ${this.lastSeq}`);
        return;
      }
      this.lastSeq = message.seq;
    }
    // Not synced: still worth applying (it is news), and the next resync reloads everything.
    this.apply(message);
  }

  private apply(message: BusMessage): void {
    if (message.from !== this.instanceId) this.stats.remoteBumps++;
    for (const [database, field, token] of message.bumps) {
      const db = this.db(database);
      const pending = db.pending.get(field);
      if (pending === undefined) {
        db.tokens.set(field, token);
      } else if (pending === token) {
        // Our own bump is back: every bump Redis ordered before it has been applied.
        db.pending.delete(field);
        db.tokens.set(field, token);
      } else {
        // Ordered before our pending bump, which will win in Redis. Until it is back, a fresh
        // overlay orphans what we cached before this one.
        db.tokens.set(field, this.newToken());
      }
    }
  }

  /** A connection closed, a bump failed or the bus skipped a number: stop trusting shared state. */
  private lost(reason: string): void {
    this.lossCount++;
    this.held = undefined;
    this.synced = false;
    for (const db of this.dbs.values()) db.pending.clear();
    log.debug({ reason }, 'table versions need a resync');
    if (this.sharedUp) {
      this.sharedUp = false;
      log.warn({ reason }, 'table versions out of touch with redis');
      if (!this.closed) this.onSharedStateChange?.(false);
    }
    // A lost connection resyncs on 'ready'; anything else while both still stand resyncs now.
    this.resync();
  }

  private resync(): void {
    if (this.closed || this.resyncing || this.synced || !this.cmdReady || !this.subscribed) return;
    this.resyncing = true;
    const losses = this.lossCount;
    this.load(losses).then(
      (ok) => {
        this.resyncing = false;
        if (ok || this.closed) return;
        // A lost connection brings a resync on 'ready' anyway; the timer is for failures while
        // both connections stand (a Redis refusing commands), so they are not retried in a loop.
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.resync(), RESYNC_RETRY_MS);
        this.retryTimer.unref();
      },
      (err: Error) => {
        // load() catches what Redis throws; anything here is a bug.
        this.resyncing = false;
        log.error({ err }, 'table versions resync failed');
      },
    );
  }

  /** One full load; true when synced and shared at the end, false to try again. */
  private async load(losses: number): Promise<boolean> {
    const cmd = this.cmd!;
    this.held = [];
    let snapshot: Record<string, string>;
    try {
      const results = await cmd
        .pipeline()
        .hsetnx(this.hash, GENERATION_FIELD, 'g' + randomBytes(9).toString('base64url'))
        .hgetall(this.hash)
        .exec();
      const failure = results?.find(([err]) => err);
      if (!results || failure) throw failure?.[0] ?? new Error('pipeline aborted');
      snapshot = results[1]![1] as Record<string, string>;
    } catch (err) {
      if (losses === this.lossCount) {
        this.held = undefined;
        log.warn({ err: (err as Error).message }, 'could not load table versions from redis');
      }
      this.wakeSyncWaiters();
      return false;
    }
    if (losses !== this.lossCount || this.closed) return false;
    const seq = Number(snapshot[SEQ_FIELD] ?? 0);
    const generation = snapshot[GENERATION_FIELD] ?? this.generation;
    const all = this.held ?? [];
    this.held = undefined;
    const held = all.filter((message) => message.seq > seq || message.generation !== generation);
    if (held.some((message, i) => message.seq !== seq + 1 + i || message.generation !== generation)) {
      log.warn({ after: seq, seqs: held.map((m) => m.seq) }, 'versions bus out of step during load');
      this.wakeSyncWaiters();
      return false;
    }

    // From here to publish() everything runs in one go: no tokens() call can see a table back
    // on Redis's token while its database's epoch has not moved on yet.
    const rebump: Bump[] = [];
    for (const [database, db] of this.dbs) {
      if (db.used) rebump.push([database, EPOCH, this.newToken()]);
      db.tokens.clear();
    }
    this.generation = generation;
    for (const [key, token] of Object.entries(snapshot)) {
      const nul = key.indexOf('\0');
      if (nul >= 0) this.db(key.slice(0, nul)).tokens.set(key.slice(nul + 1), token);
    }
    this.lastSeq = seq;
    for (const message of held) {
      this.lastSeq = message.seq;
      this.apply(message);
    }
    for (const [database, , token] of rebump) {
      const db = this.db(database);
      db.pending.set(EPOCH, token);
      db.tokens.set(EPOCH, this.newToken());
    }
    this.synced = true;
    this.stats.resyncs++;

    // `used` stays set until the others know: a failed publish leaves it for the next resync.
    if (rebump.length > 0 && !(await this.publish(rebump))) {
      this.wakeSyncWaiters();
      return false;
    }
    if (losses !== this.lossCount || this.closed) return false;
    for (const [database] of rebump) this.db(database).used = false;
    this.sharedUp = true;
    log.info({ databases: this.dbs.size, rebumped: rebump.length }, 'table versions in sync with redis');
    this.onSharedStateChange?.(true);
    this.wakeSyncWaiters();
    return true;
  }

  private wakeSyncWaiters(): void {
    for (const wake of this.syncWaiters.splice(0)) wake();
  }
}

function parseMessage(text: string): BusMessage | undefined {
  const space = text.indexOf(' ');
  const space2 = text.indexOf(' ', space + 1);
  const seq = Number(text.slice(0, space));
  if (space < 1 || space2 < 0 || !Number.isSafeInteger(seq)) return undefined;
  const generation = text.slice(space + 1, space2);
  try {
    const body = JSON.parse(text.slice(space2 + 1)) as { from?: unknown; bumps?: unknown };
    if (typeof body.from !== 'string' || !Array.isArray(body.bumps)) return undefined;
    for (const bump of body.bumps) {
      if (!Array.isArray(bump) || bump.length !== 3 || !bump.every((part) => typeof part === 'string')) {
        return undefined;
      }
    }
    return { seq, generation, from: body.from, bumps: body.bumps as Bump[] };
  } catch {
    return undefined;
  }
}

/** Closes a connection politely when it is up, and for good in any case. */
async function quit(client: Redis): Promise<void> {
  try {
    if (client.status === 'ready') await client.quit();
  } catch {
    // Already gone: disconnect() below is all that is left to do.
  }
  client.disconnect();
}
