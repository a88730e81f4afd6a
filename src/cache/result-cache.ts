// Owns the result cache's decisions: which statement text may be answered from the cache and
// under which key, which tables a write invalidates (bumped when it is sent and again when its
// transaction ends), the two storage tiers, and coalescing identical reads in flight.
import { createHash } from 'node:crypto';
import { logger } from '../observe/logger.js';
import { loadQueryParser, type QueryAnalysis, QueryAnalyzer } from '../query/analysis.js';
import type { DatabaseCatalog, RelationRef, Volatility } from '../query/catalog.js';
import type { CatalogRegistry } from '../query/catalog-registry.js';
import { shapeWithLiterals } from '../query/literal-shape.js';
import { MemoryTier } from './memory-tier.js';
import {
  type BoundParameters,
  nonPointKey,
  pointKey,
  pointValues,
  wholeTableWriteKeys,
} from './point-versions.js';
import { RedisTier } from './redis-tier.js';
import { ResponseCapture } from './response-capture.js';
import { TableVersions } from './table-versions.js';
import { type NotifyConnection, WriteNotifyListener } from './write-notify.js';

export interface ResultCacheOptions {
  maxBytes: number;
  maxEntryBytes: number;
  /** How long an entry lives: bounds staleness from writes that bypass Sluice. */
  ttlMs: number;
  /** TTL while the shared tier is down and other instances' writes cannot reach us. */
  degradedTtlMs: number;
  /** How long past its TTL an entry whose rule has serve_stale is kept (cache_stale_max_age). */
  staleMaxAgeMs: number;
  redisUrl: string | undefined;
  catalogs: CatalogRegistry;
  /**
   * Opens a connection to `database` on which to LISTEN for writes that bypass Sluice
   * (cache_notify_writes); absent: such writes are bounded by the TTL alone.
   */
  notifyConnect?: ((database: string) => Promise<NotifyConnection>) | undefined;
}

/** What a session tells the cache about itself; `settingsKey` holds the settings that shape output. */
export interface CacheContext {
  readonly database: string;
  readonly user: string;
  readonly settingsKey: string;
  /** undefined: the server's default, which Sluice does not know (see resolve()). */
  readonly searchPath: string | undefined;
}

/** What a rules file's `cache` action asks for a statement. */
export interface CacheRule {
  /** Seconds the entry lives (instead of cache_ttl). */
  readonly ttl: number;
  /** Stable functions (now(), current_date...) may be cached for that TTL. */
  readonly allow_stable?: boolean | undefined;
  /** The entry may be served past its TTL while the upstream's breaker is open. */
  readonly serve_stale?: boolean | undefined;
  /** Seconds past the TTL during which the expired entry answers while one read refreshes it. */
  readonly stale_while_revalidate?: number | undefined;
}

/** A cacheable read: where its entry lives. */
export interface ReadPlan {
  readonly key: string;
  readonly ttlMs: number;
  /** How long past ttlMs the entry is kept for serve_stale or stale_while_revalidate (0: not at all). */
  readonly keepStaleMs: number;
  /** How long past ttlMs the entry may answer while a refresh of it is in flight (0: never). */
  readonly revalidateMs: number;
  /** The rule allows answering from the expired entry while the upstream is unreachable. */
  readonly serveStale: boolean;
}

/**
 * Tables ("schema.name") a statement writes; 'all' when they cannot be pinned down (a volatile
 * user function); 'schema' when it may also change the catalog (DDL, DO, CALL, unparsed text).
 */
export type Writes = readonly string[] | 'all' | 'schema';

export interface Verdict {
  /** Present when the statement may be answered from the cache. */
  read: ReadPlan | undefined;
  /** Present when the statement may write: already bumped once; bump again at transaction end. */
  writes: Writes | undefined;
}

const NO_EFFECT: Verdict = Object.freeze({ read: undefined, writes: undefined });

export interface ResultCacheStats {
  hits: number;
  /** Expired entries served because the upstream's breaker was open (serve_stale). */
  staleHits: number;
  /** Expired entries served inside their stale_while_revalidate window while a refresh ran. */
  revalidateHits: number;
  sharedHits: number;
  misses: number;
  stores: number;
  coalesced: number;
  /** Reads judged not cacheable (volatile functions, system catalogs, unknown relations...). */
  uncacheable: number;
  /** Responses that could not be stored (error, too big, not autocommit at the end). */
  notStored: number;
  invalidations: number;
}

type Waiter = (entry: Buffer | undefined) => void;

interface ReadMemo {
  readonly ctx: CacheContext;
  readonly catalog: DatabaseCatalog;
  readonly rule: CacheRule | undefined;
  readonly keys: readonly string[];
}

/** Texts remembered by judge(); past it the memo starts over (cheaper than an LRU per hit). */
const READ_MEMO_MAX = 10_000;

function sameContext(a: CacheContext, b: CacheContext): boolean {
  return (
    a === b ||
    (a.database === b.database &&
      a.user === b.user &&
      a.settingsKey === b.settingsKey &&
      a.searchPath === b.searchPath)
  );
}

/** Write kinds whose simple-protocol texts are judged by their literal shape (as SELECT is). */
const WRITE_KINDS: ReadonlySet<string> = new Set(['insert', 'update', 'delete', 'merge']);

export class ResultCache {
  readonly analyzer = new QueryAnalyzer();
  readonly memory: MemoryTier;
  readonly redis: RedisTier | undefined;
  readonly versions: TableVersions;
  readonly stats: ResultCacheStats = {
    hits: 0,
    staleHits: 0,
    revalidateHits: 0,
    sharedHits: 0,
    misses: 0,
    stores: 0,
    coalesced: 0,
    uncacheable: 0,
    notStored: 0,
    invalidations: 0,
  };
  private readonly flights = new Map<string, Waiter[]>();
  /** Simple-protocol read text → what judge() found for it, valid while catalog and rule stand. */
  private readonly readMemo = new Map<string, ReadMemo>();
  private readonly catalogs: CatalogRegistry;
  readonly writeNotify: WriteNotifyListener | undefined;

  constructor(private readonly options: ResultCacheOptions) {
    this.catalogs = options.catalogs;
    const notifyConnect = options.notifyConnect;
    if (notifyConnect !== undefined) {
      const notify = new WriteNotifyListener({
        connect: notifyConnect,
        onWrite: (database, table) => this.bumpBypassingWrite(database, table),
        onGap: (database) => this.bump(database, 'all'),
      });
      this.writeNotify = notify;
      // The first time the cache looks at a database is when its catalog is first asked for.
      this.catalogs.onFirstUse = (database) => notify.watch(database);
    }
    this.memory = new MemoryTier({ maxBytes: options.maxBytes, maxEntryBytes: options.maxEntryBytes });
    this.redis = options.redisUrl ? new RedisTier({ url: options.redisUrl }) : undefined;
    this.versions = new TableVersions({
      redisUrl: options.redisUrl,
      onSharedStateChange: (up) => {
        // Other instances' bumps may have been missed: nothing kept locally can be trusted.
        if (!up) this.memory.clear();
        logger.warn({ shared: up }, up ? 'shared cache tier back' : 'shared cache tier down');
      },
    });
  }

  async start(): Promise<void> {
    await loadQueryParser();
    await this.versions.start();
  }

  async close(): Promise<void> {
    await Promise.all([this.versions.close(), this.redis?.close(), this.writeNotify?.close()]);
    this.catalogs.close();
  }

  private get ttlMs(): number {
    return this.options.redisUrl && !this.versions.shared ? this.options.degradedTtlMs : this.options.ttlMs;
  }

  /** False while other instances' writes may be unseen and no degraded TTL was allowed. */
  private get mayServe(): boolean {
    return this.ttlMs > 0;
  }

  /**
   * Judges a statement text about to go to the server (or to be answered here). Its writes are
   * bumped now, before it runs, so no read that starts from here on can be answered with what
   * it replaces. `mayRead` says whether the session is in a state where a cached answer is valid
   * (autocommit, nothing in flight).
   */
  judge(ctx: CacheContext, sql: string, mayRead: boolean, rule?: CacheRule): Verdict {
    const catalog = this.catalogs.get(ctx.database);
    if (mayRead) {
      const memo = this.readMemo.get(sql);
      if (
        memo !== undefined &&
        memo.catalog === catalog &&
        memo.rule === rule &&
        sameContext(memo.ctx, ctx) &&
        this.mayServe
      ) {
        return { read: this.planFor(ctx, memo.keys, sql, '', rule), writes: undefined };
      }
    }
    // A write with inlined values is usually a new text each time (a price update): judge it by
    // its literal shape, parsed once, with the literals standing in for the parameters.
    // A read with inlined values is judged the same way: what it reads, calls and locks does not
    // depend on the values, and a new text per query would otherwise cost a parse each (pgbench
    // -S -M simple: the parse was most of what the cache added to a miss). The key keeps the text.
    let analysis: QueryAnalysis | undefined;
    let params: BoundParameters | undefined;
    const shaped = shapeWithLiterals(sql);
    if (shaped !== undefined) {
      const shape = this.analyzer.analyze(shaped.shape);
      if (shape.parsed && (WRITE_KINDS.has(shape.kind) || shape.kind === 'select')) {
        analysis = shape;
        params = { literals: shaped.literals };
      }
    }
    analysis ??= this.analyzer.analyze(sql);
    let writes = this.writesOf(analysis, catalog, ctx, params);
    if (writes === undefined && WRITE_KINDS.has(analysis.kind)) writes = 'all';
    if (writes !== undefined) {
      this.bump(ctx.database, writes);
      if (writes === 'schema') this.catalogs.invalidate(ctx.database);
      return { read: undefined, writes };
    }
    if (!mayRead || analysis.kind !== 'select' || !this.mayServe) return NO_EFFECT;
    const keys = catalog ? this.readKeys(analysis, catalog, ctx, params, rule) : undefined;
    if (!keys) {
      this.stats.uncacheable++;
      return NO_EFFECT;
    }
    // The same text judged again (a hot read) skips the shape, the analysis and the catalog.
    if (this.readMemo.size >= READ_MEMO_MAX) this.readMemo.clear();
    this.readMemo.set(sql, { ctx, catalog: catalog!, rule, keys });
    return { read: this.planFor(ctx, keys, sql, '', rule), writes: undefined };
  }

  /**
   * The plan for an extended-protocol read whose writes, if any, were already judged at Parse
   * or Bind. `extra` holds what else shapes the reply: message types, parameter types, the
   * Bind's parameters and result formats.
   */
  planRead(
    ctx: CacheContext,
    sql: string,
    extra: string,
    params: BoundParameters,
    rule?: CacheRule,
  ): ReadPlan | undefined {
    const analysis = this.analyzer.analyze(sql);
    if (analysis.kind !== 'select' || !this.mayServe) return undefined;
    const catalog = this.catalogs.get(ctx.database);
    if (this.writesOf(analysis, catalog, ctx) !== undefined) return undefined;
    const keys = catalog ? this.readKeys(analysis, catalog, ctx, params, rule) : undefined;
    const read = keys ? this.planFor(ctx, keys, sql, extra, rule) : undefined;
    if (!read) this.stats.uncacheable++;
    return read;
  }

  private writesOf(
    analysis: QueryAnalysis,
    catalog: DatabaseCatalog | undefined,
    ctx: CacheContext,
    params?: BoundParameters,
  ): Writes | undefined {
    // Text PostgreSQL's own parser rejects should fail on the server too; if not, assume the worst.
    if (!analysis.parsed || analysis.kind === 'ddl') return 'schema';
    if (analysis.writesUnknown) {
      const mayChangeSchema =
        analysis.kind === 'do' ||
        analysis.kind === 'call' ||
        analysis.kind === 'multi' ||
        analysis.kind === 'utility';
      return mayChangeSchema ? 'schema' : 'all';
    }
    let writes: string[] | undefined;
    if (analysis.tablesWritten.length > 0) {
      if (!catalog) return 'all';
      writes = [];
      const searchPath = ctx.searchPath ?? catalog.defaultSearchPath(ctx.user);
      for (const ref of analysis.tablesWritten) {
        const key = catalog.resolve(ref, searchPath, ctx.user);
        // Unknown, or triggers/rules that write elsewhere: assume it writes anything.
        if (key === undefined || catalog.hasOpaqueWrites(key)) return 'all';
        const point = this.pointWrite(analysis, catalog, ref, key, params);
        for (const k of catalog.writeKeys(key)) {
          if (k === key && point !== undefined) {
            writes.push(k);
            for (const value of point) writes.push(pointKey(k, value));
          } else {
            for (const w of wholeTableWriteKeys(k)) writes.push(w);
          }
        }
      }
    }
    // A volatile function of the user's own may write anything; pg_catalog's volatile ones
    // (random, nextval, clock_timestamp...) write no table.
    for (const fn of analysis.functions) {
      if (fn.schema === 'pg_catalog') continue;
      if (!catalog) return 'all';
      const searchPath = ctx.searchPath ?? catalog.defaultSearchPath(ctx.user);
      const volatility = catalog.volatility(fn, searchPath, ctx.user);
      if (volatility === undefined) return 'all';
      // pg_catalog comes first on every search path: an unqualified builtin name is the builtin.
      const builtin =
        fn.schema === undefined &&
        catalog.volatility({ schema: 'pg_catalog', name: fn.name }, searchPath, ctx.user) !== undefined;
      if (volatility === 'volatile' && !builtin) return 'all';
    }
    for (const op of analysis.operators) {
      if (catalog?.userOperatorVolatility(op.name) === 'volatile') return 'all';
    }
    return writes;
  }

  /** The key values a write is confined to on its table's point column, if it provably is. */
  private pointWrite(
    analysis: QueryAnalysis,
    catalog: DatabaseCatalog,
    ref: RelationRef,
    key: string,
    params: BoundParameters | undefined,
  ): string[] | undefined {
    const access = analysis.pointAccess;
    const kind = analysis.kind;
    if (access === undefined || analysis.tablesWritten.length !== 1) return undefined;
    if (kind !== 'insert' && kind !== 'update' && kind !== 'delete') return undefined;
    if (access.table.name !== ref.name || access.table.schema !== ref.schema) return undefined;
    const column = catalog.pointColumn(key);
    return column === undefined ? undefined : pointValues(access, column, params, kind);
  }

  /**
   * Whether an extended-protocol statement may write: a template to judge at each Bind (when
   * the values are known and the statement runs), or undefined when it writes nothing.
   */
  writeTemplate(ctx: CacheContext, sql: string): string | undefined {
    const analysis = this.analyzer.analyze(sql);
    return this.writesOf(analysis, this.catalogs.get(ctx.database), ctx) === undefined ? undefined : sql;
  }

  /** A Bind of a statement that may write: bumps what it writes with these values. */
  bindWrites(ctx: CacheContext, sql: string, params: BoundParameters): Writes {
    const analysis = this.analyzer.analyze(sql);
    const writes = this.writesOf(analysis, this.catalogs.get(ctx.database), ctx, params) ?? 'all';
    this.bump(ctx.database, writes);
    if (writes === 'schema') this.catalogs.invalidate(ctx.database);
    return writes;
  }

  /** The version keys a cacheable read depends on, or undefined when it is not cacheable. */
  private readKeys(
    analysis: QueryAnalysis,
    catalog: DatabaseCatalog,
    ctx: CacheContext,
    params: BoundParameters | undefined,
    rule: CacheRule | undefined,
  ): string[] | undefined {
    if (!analysis.readOnly || analysis.lockingClause) return undefined;
    const searchPath = ctx.searchPath ?? catalog.defaultSearchPath(ctx.user);
    // Immutable only, or stable too where a rule allows it for its TTL (now() in a dashboard).
    const allowed = (v: Volatility | undefined) =>
      v === 'immutable' || (v === 'stable' && rule?.allow_stable === true);
    for (const fn of analysis.functions) {
      if (!allowed(catalog.volatility(fn, searchPath, ctx.user))) return undefined;
    }
    for (const op of analysis.operators) {
      const volatility = catalog.userOperatorVolatility(op.name);
      if (volatility !== undefined && !allowed(volatility)) return undefined;
    }
    const keys: string[] = [];
    const access = analysis.pointAccess;
    if (access !== undefined && analysis.tablesRead.length === 1) {
      // A read of one table's rows with one key value: versioned by that value.
      const ref = analysis.tablesRead[0]!;
      const key = catalog.resolve(ref, searchPath, ctx.user);
      const column = key === undefined ? undefined : catalog.pointColumn(key);
      const values =
        column === undefined ||
        key === undefined ||
        catalog.isSystem(key) ||
        catalog.relation(key)?.rowSecurity
          ? undefined
          : pointValues(access, column, params, undefined);
      if (key !== undefined && values !== undefined) {
        keys.push(nonPointKey(key), pointKey(key, values[0]!));
        return keys;
      }
    }
    for (const ref of analysis.tablesRead) {
      const key = catalog.resolve(ref, searchPath, ctx.user);
      if (key === undefined) {
        // Created since the catalog was read, or a typo PostgreSQL will report: look again.
        this.catalogs.refreshSoon(ctx.database);
        return undefined;
      }
      // System catalogs change without writes through Sluice; a view over now() is not immutable.
      if (catalog.isSystem(key) || !allowed(catalog.readVolatility(key))) return undefined;
      for (const k of catalog.readKeys(key)) {
        // Row-level security policies may read other tables or settings no key can name.
        if (catalog.isSystem(k) || catalog.relation(k)?.rowSecurity) return undefined;
        keys.push(k);
      }
    }
    return keys;
  }

  private planFor(
    ctx: CacheContext,
    keys: readonly string[],
    sql: string,
    extra: string,
    rule?: CacheRule,
  ): ReadPlan {
    const tokens = this.versions.tokens(ctx.database, keys);
    const degraded = this.options.redisUrl !== undefined && !this.versions.shared;
    // Degraded, other instances' writes may be unseen: nothing is trusted past its TTL then.
    const revalidateMs = rule?.stale_while_revalidate && !degraded ? rule.stale_while_revalidate * 1000 : 0;
    const serveStaleMs = rule?.serve_stale === true && !degraded ? this.options.staleMaxAgeMs : 0;
    return {
      key: `${ctx.database}\0${ctx.user}\0${ctx.settingsKey}\0${tokens}\0${sql}\0${extra}`,
      ttlMs: rule && !degraded ? rule.ttl * 1000 : this.ttlMs,
      keepStaleMs: Math.max(serveStaleMs, revalidateMs),
      revalidateMs,
      serveStale: serveStaleMs > 0,
    };
  }

  /**
   * A transaction that wrote has ended (committed or not): bump its tables again. With Redis,
   * the promise settles once the bump is stored and published: the client's ReadyForQuery waits
   * for it, so no instance can answer from before the write once the client knows it committed.
   */
  endTransaction(database: string, writes: Writes): Promise<void> | undefined {
    const published = this.bump(database, writes);
    // DDL is committed now: read the catalog afresh (a load during the transaction saw the old one).
    if (writes === 'schema') this.catalogs.invalidate(database);
    return this.options.redisUrl ? published : undefined;
  }

  /**
   * A write that bypassed Sluice, from migration 0008's trigger: its table and what reads it
   * through views, partitions and cascades, the whole table (the notification names no rows).
   */
  private bumpBypassingWrite(database: string, table: string): void {
    const catalog = this.catalogs.get(database);
    if (catalog === undefined || catalog.relation(table) === undefined) {
      void this.bump(database, 'all');
      return;
    }
    const writes: string[] = [];
    for (const key of catalog.writeKeys(table)) writes.push(...wholeTableWriteKeys(key));
    void this.bump(database, writes);
  }

  bump(database: string, writes: Writes): Promise<void> {
    this.stats.invalidations++;
    return this.versions.bump(database, writes === 'schema' ? 'all' : writes);
  }

  /** The entry for a plan from the in-process tier, counted. */
  lookup(plan: ReadPlan): Buffer | undefined {
    const entry = this.memory.get(plan.key);
    if (entry) this.stats.hits++;
    return entry;
  }

  /**
   * An expired entry kept for serve_stale, from the in-process tier only (the shared tier keeps
   * nothing past its TTL). Still keyed by the current table versions: a write through Sluice
   * orphans it as it does a fresh one, so only the TTL is relaxed. The caller decides that the
   * upstream is unreachable.
   */
  lookupStale(plan: ReadPlan): { value: Buffer; expiredMs: number } | undefined {
    if (!plan.serveStale) return undefined;
    const found = this.memory.getStale(plan.key);
    if (found) this.stats.staleHits++;
    return found;
  }

  /**
   * stale_while_revalidate: an entry expired less than the rule's window ago answers while
   * another session's read of it is in flight (that read refreshes it). The first read after
   * expiry is the refresh and waits for PostgreSQL; Sluice runs no query without a client.
   * Keyed by the current table versions, so a write through Sluice orphans it like a fresh one.
   */
  lookupWhileRefreshing(plan: ReadPlan): Buffer | undefined {
    if (plan.revalidateMs === 0 || !this.flights.has(plan.key)) return undefined;
    const found = this.memory.getStale(plan.key);
    if (found === undefined || found.expiredMs > plan.revalidateMs) return undefined;
    this.stats.revalidateHits++;
    return found.value;
  }

  /**
   * After an in-process miss: a promise of the entry when the shared tier or a read already in
   * flight may supply it, or undefined when the caller should run the query itself now.
   */
  wait(plan: ReadPlan): Promise<Buffer | undefined> | undefined {
    const flight = this.flights.get(plan.key);
    if (flight) {
      this.stats.coalesced++;
      return new Promise((resolve) => flight.push(resolve));
    }
    const redis = this.redis;
    if (!redis?.up || !this.versions.shared) return undefined;
    return redis.get(sharedKey(plan.key)).then((entry) => {
      if (entry) {
        this.stats.sharedHits++;
        this.memory.set(plan.key, entry, plan.ttlMs, plan.keepStaleMs);
      }
      return entry;
    });
  }

  /** True while some session runs this read and others may wait for it. */
  inFlight(plan: ReadPlan): boolean {
    return this.flights.has(plan.key);
  }

  /**
   * The caller runs the query: identical reads arriving meanwhile wait for its response, which
   * the returned capture stores when it ends well.
   */
  lead(plan: ReadPlan): ResponseCapture {
    this.stats.misses++;
    const waiters: Waiter[] = [];
    const ownsFlight = !this.flights.has(plan.key);
    if (ownsFlight) this.flights.set(plan.key, waiters);
    return new ResponseCapture(this.options.maxEntryBytes, (entry) => {
      if (ownsFlight) this.flights.delete(plan.key);
      if (entry) {
        this.stats.stores++;
        this.memory.set(plan.key, entry, plan.ttlMs, plan.keepStaleMs);
        if (this.redis?.up && this.versions.shared) this.redis.set(sharedKey(plan.key), entry, plan.ttlMs);
      } else {
        this.stats.notStored++;
      }
      for (const waiter of waiters) waiter(entry);
    });
  }
}

/** Redis keys are digests: the raw key holds the query text and settings. */
function sharedKey(key: string): string {
  return `e:${createHash('sha1').update(key).digest('base64url')}`;
}
