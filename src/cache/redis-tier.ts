// Owns the shared tier of the result cache: response Buffers in Redis over one ioredis connection,
// with reads bounded in time and a small breaker so a sick Redis costs callers nothing.
import { createRequire } from 'node:module';
import type { Redis } from 'ioredis';

import { logger } from '../observe/logger.js';

/** ioredis, loaded when a Redis URL is configured: a cache without one never carries it. */
export function loadRedisClass(): typeof Redis {
  return (createRequire(import.meta.url)('ioredis') as typeof import('ioredis')).Redis;
}

export interface RedisTierOptions {
  url: string;
  /** Prepended to every key; default 'sluice:'. */
  keyPrefix?: string;
  /** Fired when `up` changes. */
  onStateChange?: (up: boolean) => void;
  /** How long get() waits for Redis before answering undefined; default 50 ms. */
  getTimeoutMs?: number;
}

export interface RedisTierStats {
  hits: number;
  misses: number;
  /** Failed or timed-out commands. */
  errors: number;
  sets: number;
}

const log = logger.child({ component: 'redis-tier' });

/** Consecutive failures (errors or get timeouts) that open the breaker. */
const BREAKER_FAILURES = 3;
/** How long an open breaker keeps the tier down before letting the next command try. */
const BREAKER_OPEN_MS = 1000;
/** Backstop for set(): a command Redis never answers must not stay queued forever. */
const COMMAND_TIMEOUT_MS = 1000;

/** Reconnect every 250 ms at first, then every 2 s, for as long as the tier lives. */
export function redisRetryDelay(times: number): number {
  return Math.min(times * 250, 2000);
}

export class RedisTier {
  readonly stats: RedisTierStats = { hits: 0, misses: 0, errors: 0, sets: 0 };
  private readonly client: Redis;
  private readonly getTimeoutMs: number;
  private readonly onStateChange: ((up: boolean) => void) | undefined;
  private ready = false;
  private breakerOpen = false;
  private breakerTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private closed = false;
  private lastUp = false;

  constructor(opts: RedisTierOptions) {
    this.getTimeoutMs = opts.getTimeoutMs ?? 50;
    this.onStateChange = opts.onStateChange;
    const RedisClass = loadRedisClass();
    this.client = new RedisClass(opts.url, {
      keyPrefix: opts.keyPrefix ?? 'sluice:',
      lazyConnect: true,
      // Fail at once while disconnected instead of queueing: a cache that waits is slower than
      // no cache.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: redisRetryDelay,
      commandTimeout: COMMAND_TIMEOUT_MS,
      connectionName: 'sluice-cache',
    });
    // Unhandled, an 'error' event would crash the process; the state change is logged instead.
    this.client.on('error', (err: Error) => log.debug({ err: err.message }, 'redis connection error'));
    this.client.on('ready', () => {
      this.ready = true;
      this.failures = 0;
      this.update();
    });
    this.client.on('close', () => {
      this.ready = false;
      this.update();
    });
    // connect() rejects when the first attempt fails; retryStrategy keeps trying after that.
    this.client.connect().catch((err: Error) => log.debug({ err: err.message }, 'redis connect failed'));
  }

  /** False while disconnected or after repeated failures: callers skip the tier then. */
  get up(): boolean {
    return this.ready && !this.breakerOpen && !this.closed;
  }

  /** The entry, or undefined on a miss, on any error, when down, or after getTimeoutMs. */
  get(key: string): Promise<Buffer | undefined> {
    if (!this.up) {
      this.stats.misses++;
      return Promise.resolve(undefined);
    }
    return new Promise((resolve) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        this.stats.errors++;
        this.failed();
        resolve(undefined);
      }, this.getTimeoutMs);
      this.client.getBuffer(key).then(
        (value) => {
          if (settled) return;
          clearTimeout(timer);
          this.failures = 0;
          if (value === null) {
            this.stats.misses++;
            resolve(undefined);
          } else {
            this.stats.hits++;
            resolve(value);
          }
        },
        (err: Error) => {
          if (settled) return;
          clearTimeout(timer);
          this.stats.errors++;
          this.failed();
          log.debug({ err: err.message }, 'redis get failed');
          resolve(undefined);
        },
      );
    });
  }

  /** Stores `value` for `ttlMs` without waiting; skipped when down or the TTL is under 1 ms. */
  set(key: string, value: Buffer, ttlMs: number): void {
    const ttl = Math.ceil(ttlMs);
    if (!this.up || !(ttl >= 1)) return;
    this.stats.sets++;
    this.client.set(key, value, 'PX', ttl).then(
      () => {
        this.failures = 0;
      },
      (err: Error) => {
        this.stats.errors++;
        this.failed();
        log.debug({ err: err.message }, 'redis set failed');
      },
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.breakerTimer);
    try {
      if (this.client.status === 'ready') await this.client.quit();
    } catch {
      // Already gone: disconnect() below is all that is left to do.
    }
    this.client.disconnect();
  }

  private failed(): void {
    this.failures++;
    if (this.failures < BREAKER_FAILURES || this.breakerOpen || this.closed) return;
    this.breakerOpen = true;
    log.warn({ failures: this.failures }, 'redis cache tier failing: skipping it for a while');
    this.update();
    this.breakerTimer = setTimeout(() => {
      // Half-open: the next failure opens it again at once (failures stays at the threshold).
      this.breakerOpen = false;
      this.failures = BREAKER_FAILURES - 1;
      this.update();
    }, BREAKER_OPEN_MS);
    this.breakerTimer.unref();
  }

  /** Reports a change of `up`, once per change. */
  private update(): void {
    const up = this.up;
    if (up === this.lastUp || this.closed) return;
    this.lastUp = up;
    if (up) log.info('redis cache tier up');
    else log.warn('redis cache tier down: skipping it');
    this.onStateChange?.(up);
  }
}
