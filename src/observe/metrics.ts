// Owns one running Sluice's metrics: its own prom-client Registry (several Sluices may share a
// process), the plain counters the hot path bumps, the per-digest statistics, and the collect()
// callbacks that read pools, sessions and the cache when /metrics is scraped.

import { LRUCache } from 'lru-cache';
import type { Metric, Registry } from 'prom-client';
import { digestOf, type QueryAnalyzer } from '../query/analysis.js';
import { literalShape } from '../query/literal-shape.js';
import { BucketHistogramMetric, BucketSeries, WAIT_BUCKETS } from './buckets.js';
import { type DigestEntry, DigestStats } from './digest-stats.js';
import { logger } from './logger.js';
import { QueryObserver } from './query-observer.js';

export interface MetricsOptions {
  /** Digests with their own label on sluice_query_duration_seconds. */
  topDigests: number;
  /** Digests whose statistics are kept (SHOW DIGESTS, /status). */
  trackedDigests: number;
  /** Statements slower than this are logged with their digest (0: off). */
  slowQueryMs: number;
  /** With analysis on (cache or rules), its digests are reused rather than computed again. */
  analyzer?: QueryAnalyzer | undefined;
}

/** Labels and value of one sample a callback gauge or counter reports at scrape time. */
export type Sample = readonly [labels: Record<string, string>, value: number];

/** A client session as the collectors read it. */
export interface SessionView {
  readonly pool: { readonly database: string; readonly user: string };
  readonly server: unknown;
  readonly pinnedReason: string | undefined;
  readonly waiting: boolean;
  readonly socket: { readonly bytesRead: number; readonly bytesWritten: number };
}

export interface PoolView {
  database: string;
  user: string;
  active: number;
  idle: number;
  connecting: number;
  waiting: number;
  maxWaitMs: number;
}

export interface CacheView {
  readonly stats: { hits: number; sharedHits: number; misses: number; invalidations: number };
  readonly memory: { readonly stats: { readonly bytes: number; evictions: number } };
}

/** What the collectors read; set once the proxy and pools exist. */
export interface MetricsSources {
  sessions(): Iterable<SessionView>;
  pools(): PoolView[];
  cache: CacheView | undefined;
}

/** The `pool` label: PgBouncer's pools are (database, user) pairs. */
export function poolLabel(database: string, user: string): string {
  return `${database}/${user}`;
}

/** Text (or literal shape) → digest, so a repeated statement costs a Map lookup and no parse. */
const DIGEST_TEXTS = 10_000;

type PromClient = typeof import('prom-client');
/** One metric's registration, run once prom-client is loaded. */
type Definition = (prom: PromClient, registry: Registry) => void;

/** prom-client's Registry.PROMETHEUS_CONTENT_TYPE, for before the first scrape. */
const PROMETHEUS_TEXT = 'text/plain; version=0.0.4; charset=utf-8';

export class SluiceMetrics {
  /**
   * Built at the first scrape: prom-client (about 4 MB resident) is only loaded when something
   * reads /metrics. Until then the metrics are plain numbers and closures that read them.
   */
  private registryValue: Registry | undefined;
  private registryLoading: Promise<Registry> | undefined;
  private prom: PromClient | undefined;
  private readonly definitions: Definition[] = [];
  /** The plan cache (prepared statements reused on a server), counted by ClientStatements. */
  readonly statementCache = { hits: 0, misses: 0, verified: 0, changed: 0 };
  readonly digests: DigestStats;
  /** ErrorResponses sent to clients, by SQLSTATE class. */
  readonly errorsByClass = new Map<string, number>();
  /** Bytes of client sockets already closed (live ones are read from their sockets). */
  closedBytesReceived = 0;
  closedBytesSent = 0;
  slowQueryMs: number;
  private readonly poolWaits = new Map<string, BucketSeries>();
  private readonly texts: LRUCache<string, string>;
  private sources: MetricsSources | undefined;

  constructor(private readonly options: MetricsOptions) {
    this.slowQueryMs = options.slowQueryMs;
    this.digests = new DigestStats({ topN: options.topDigests, maxTracked: options.trackedDigests });
    // Bounded in characters too: texts with inlined values are each distinct and can be large.
    this.texts = new LRUCache<string, string>({
      max: DIGEST_TEXTS,
      maxSize: 16 * 1024 * 1024,
      sizeCalculation: (digest, sql) => sql.length + digest.length + 1,
    });
    this.defineMetrics();
  }

  /** Connects the collectors to what they read (the proxy is built after the metrics). */
  attach(sources: MetricsSources): void {
    this.sources = sources;
  }

  observer(database: string, user: string): QueryObserver {
    return new QueryObserver(this, poolLabel(database, user));
  }

  // ---- hot path (via QueryObserver and the session) ----------------------------------------------

  entryFor(pool: string, sql: string): DigestEntry {
    return this.digests.entry(pool, this.digestOf(sql));
  }

  /**
   * Texts without literals (extended protocol, prepared statements) are keys themselves; texts
   * with inlined values go by their parser-free literal shape, so a bot's stream of distinct
   * texts costs a scan (about 1 µs) and a lookup, not a parse each (measured: normalize on a new
   * text 300 µs on this machine under load, literalShape 1.3 µs). Only shapes are stored.
   */
  private digestOf(sql: string): string {
    const known = this.texts.get(sql);
    if (known !== undefined) return known;
    const key = literalShape(sql) ?? sql;
    let digest = key === sql ? undefined : this.texts.get(key);
    if (digest === undefined) {
      // With analysis on, its LRU may know the shape already (rules analyze shapes too).
      const analyzer = this.options.analyzer;
      digest = analyzer !== undefined ? analyzer.analyze(key).digest : digestOf(key);
      this.texts.set(key, digest);
    }
    return digest;
  }

  recordQuery(pool: string, entry: DigestEntry | undefined, seconds: number, rows: number): void {
    // A reply to something without a statement text (a FunctionCall, a bare Sync).
    const e = entry ?? this.digests.entry(pool, '(no statement)');
    this.digests.record(e, seconds, rows);
    if (this.slowQueryMs > 0 && seconds * 1000 >= this.slowQueryMs) {
      logger.warn({ pool, digest: e.digest, duration_ms: Math.round(seconds * 1000), rows }, 'slow query');
    }
  }

  recordCacheHit(entry: DigestEntry | undefined): void {
    if (entry !== undefined) entry.cacheHits++;
  }

  poolWaitSeries(pool: string): BucketSeries {
    let series = this.poolWaits.get(pool);
    if (series === undefined) {
      series = new BucketSeries({ pool }, WAIT_BUCKETS);
      this.poolWaits.set(pool, series);
    }
    return series;
  }

  /** Seconds waited for a server connection, by pool label. */
  poolWaitTotals(): [string, number][] {
    return [...this.poolWaits].map(([pool, series]) => [pool, series.sum]);
  }

  /** An ErrorResponse went to a client. */
  noteError(sqlState: string | undefined): void {
    // Only a well-formed class becomes a label value.
    const cls = sqlState !== undefined && /^[0-9A-Z]{2}/.test(sqlState) ? sqlState.slice(0, 2) : 'XX';
    this.errorsByClass.set(cls, (this.errorsByClass.get(cls) ?? 0) + 1);
  }

  noteClientClosed(socket: { readonly bytesRead: number; readonly bytesWritten: number }): void {
    this.closedBytesReceived += socket.bytesRead;
    this.closedBytesSent += socket.bytesWritten;
  }

  // ---- scrape side -------------------------------------------------------------------------------

  get contentType(): string {
    return this.registryValue?.contentType ?? PROMETHEUS_TEXT;
  }

  async scrape(): Promise<string> {
    return (await this.registry()).metrics();
  }

  /** This instance's prom-client Registry (loading prom-client the first time). */
  registry(): Promise<Registry> {
    this.registryLoading ??= import('prom-client').then((prom) => {
      const registry = new prom.Registry();
      for (const define of this.definitions) define(prom, registry);
      this.prom = prom;
      this.registryValue = registry;
      return registry;
    });
    return this.registryLoading;
  }

  private define(definition: Definition): void {
    this.definitions.push(definition);
    if (this.prom !== undefined && this.registryValue !== undefined)
      definition(this.prom, this.registryValue);
  }

  /**
   * A gauge read at scrape time: `read` returns one number, or samples with labels. Adding one
   * (a breaker state, say) is one call.
   */
  gauge(
    name: string,
    help: string,
    labelNames: readonly string[],
    read: () => number | Iterable<Sample>,
  ): void {
    this.define(
      (prom, registry) =>
        new prom.Gauge({
          name,
          help,
          labelNames: [...labelNames],
          registers: [registry],
          collect() {
            this.reset();
            const value = read();
            if (typeof value === 'number') this.set(value);
            else for (const [labels, v] of value) this.set(labels, v);
          },
        }),
    );
  }

  /** A counter read at scrape time from a plain number (or labelled numbers) kept elsewhere. */
  counter(
    name: string,
    help: string,
    labelNames: readonly string[],
    read: () => number | Iterable<Sample>,
  ): void {
    this.define(
      (prom, registry) =>
        new prom.Counter({
          name,
          help,
          labelNames: [...labelNames],
          registers: [registry],
          collect() {
            this.reset();
            const value = read();
            if (typeof value === 'number') this.inc(value);
            else for (const [labels, v] of value) this.inc(labels, v);
          },
        }),
    );
  }

  private histogram(metric: BucketHistogramMetric): void {
    // prom-client reads get() and getForPromString(); its Metric type is a union of its classes.
    this.define((_prom, registry) => registry.registerMetric(metric as unknown as Metric));
  }

  private defineMetrics(): void {
    this.histogram(
      new BucketHistogramMetric(
        'sluice_query_duration_seconds',
        'Server time per request (Query or Sync), from when it could reach the server to its ReadyForQuery; top digests by time spent have their own label, the rest are "other". Cache hits are not in it (sluice_cache_hits_total).',
        () => this.digests.querySeries(),
      ),
    );
    this.histogram(
      new BucketHistogramMetric(
        'sluice_pool_wait_seconds',
        'Time a client waited for a server connection, per transaction (or statement) that needed one',
        () => this.poolWaits.values(),
      ),
    );
    this.gauge('sluice_client_connections', 'Logged-in clients by pool and state', ['pool', 'state'], () =>
      this.clientSamples(),
    );
    this.gauge('sluice_server_connections', 'Server connections by pool and state', ['pool', 'state'], () =>
      this.serverSamples(),
    );
    this.gauge('sluice_pinned_clients', 'Clients pinned to their server connection', [], () => {
      let n = 0;
      for (const s of this.sources?.sessions() ?? []) if (s.pinnedReason !== undefined) n++;
      return n;
    });
    this.counter(
      'sluice_prepared_statement_cache_hits_total',
      'Prepared statements found already prepared on the server a client got',
      [],
      () => this.statementCache.hits,
    );
    this.counter(
      'sluice_prepared_statement_cache_misses_total',
      'Prepared statements Sluice had to prepare on the server a client got',
      [],
      () => this.statementCache.misses,
    );
    const cache = () => this.sources?.cache;
    this.counter(
      'sluice_cache_hits_total',
      'Requests answered from the result cache (memory or shared tier)',
      [],
      () => {
        const c = cache();
        return c ? c.stats.hits + c.stats.sharedHits : 0;
      },
    );
    this.counter(
      'sluice_cache_misses_total',
      'Cacheable reads sent to the server',
      [],
      () => cache()?.stats.misses ?? 0,
    );
    this.gauge(
      'sluice_cache_bytes',
      'Bytes held by the in-process result cache',
      [],
      () => cache()?.memory.stats.bytes ?? 0,
    );
    this.counter(
      'sluice_cache_evictions_total',
      'Entries evicted from the in-process cache for room',
      [],
      () => cache()?.memory.stats.evictions ?? 0,
    );
    this.counter(
      'sluice_cache_invalidations_total',
      'Table-version bumps (writes seen) that invalidate cached reads',
      [],
      () => cache()?.stats.invalidations ?? 0,
    );
    this.counter('sluice_bytes_received_total', 'Bytes received from clients', [], () => {
      let n = this.closedBytesReceived;
      for (const s of this.sources?.sessions() ?? []) n += s.socket.bytesRead;
      return n;
    });
    this.counter('sluice_bytes_sent_total', 'Bytes sent to clients', [], () => {
      let n = this.closedBytesSent;
      for (const s of this.sources?.sessions() ?? []) n += s.socket.bytesWritten;
      return n;
    });
    this.counter('sluice_errors_total', 'ErrorResponses sent to clients, by SQLSTATE class', ['class'], () =>
      [...this.errorsByClass].map(([cls, n]): Sample => [{ class: cls }, n]),
    );
  }

  private clientSamples(): Sample[] {
    const counts = new Map<string, { active: number; idle: number; waiting: number }>();
    for (const pool of this.sources?.pools() ?? []) {
      counts.set(poolLabel(pool.database, pool.user), { active: 0, idle: 0, waiting: 0 });
    }
    for (const s of this.sources?.sessions() ?? []) {
      const label = poolLabel(s.pool.database, s.pool.user);
      let c = counts.get(label);
      if (c === undefined) {
        c = { active: 0, idle: 0, waiting: 0 };
        counts.set(label, c);
      }
      if (s.waiting) c.waiting++;
      else if (s.server !== null) c.active++;
      else c.idle++;
    }
    const samples: Sample[] = [];
    for (const [pool, c] of counts) {
      samples.push(
        [{ pool, state: 'active' }, c.active],
        [{ pool, state: 'idle' }, c.idle],
        [{ pool, state: 'waiting' }, c.waiting],
      );
    }
    return samples;
  }

  private serverSamples(): Sample[] {
    const samples: Sample[] = [];
    for (const p of this.sources?.pools() ?? []) {
      const pool = poolLabel(p.database, p.user);
      samples.push(
        [{ pool, state: 'active' }, p.active],
        [{ pool, state: 'idle' }, p.idle],
        [{ pool, state: 'login' }, p.connecting],
      );
    }
    return samples;
  }
}
