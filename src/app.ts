// Owns assembling a running Sluice from a validated configuration: the upstream (given, or the
// embedded PostgreSQL), the pools, the listener, and stopping them all in order.
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { AdminConsole } from './admin/admin-console.js';
import type { ResultCache } from './cache/result-cache.js';
import { ORIGIN_PARAMETER } from './cache/write-notify.js';
import type { SluiceConfig } from './config/schema.js';
import { loadUsers } from './config/users.js';
import type { RunningPostgres } from './embedded/embedded-postgres.js';
import type { ObserveHttpServer } from './observe/http-server.js';
import { logger } from './observe/logger.js';
import { SluiceMetrics } from './observe/metrics.js';
import { PoolManager, type UpstreamEndpoint } from './pool/pool-manager.js';
import { parseUpstreamTls, type UpstreamTls } from './pool/upstream-tls.js';
import { ProxyError } from './protocol/proxy-error.js';
import { SqlState } from './protocol/sqlstate.js';
import { loadQueryParser, QueryAnalyzer } from './query/analysis.js';
import type { CatalogConnection } from './query/catalog-registry.js';
import type { RuleEngine } from './rules/rule-engine.js';
import type { RulesWatcher } from './rules/watcher.js';
import { type ClientTls, loadClientTls } from './server/client-tls.js';
import { ProxyServer } from './server/proxy-server.js';

export interface RunningSluice {
  host: string;
  port: number;
  /** What a client should connect with (psql accepts it as is). */
  connectionString: string;
  upstream: UpstreamEndpoint & { database: string };
  embedded: RunningPostgres | undefined;
  proxy: ProxyServer;
  pools: PoolManager;
  cache: ResultCache | undefined;
  rules: RuleEngine | undefined;
  /** The watcher behind `rules` (reload counts, the last refused file); RELOAD may replace it. */
  rulesWatcher: RulesWatcher | undefined;
  /** Per-instance metrics and digest stats (undefined with metrics: false). */
  metrics: SluiceMetrics | undefined;
  /** Where /metrics, /healthz, /readyz and /status answer, when `http` is set. */
  http: { host: string; port: number; server: ObserveHttpServer } | undefined;
  admin: AdminConsole;
  /** The configuration in force (RELOAD replaces it). */
  readonly config: SluiceConfig;
  /** What RELOAD does: read the configuration again and apply what can change while running. */
  reload(): string;
  /** Graceful: let transactions finish up to shutdown_timeout, then close. */
  stop(): Promise<void>;
}

export function parseUpstreamUrl(url: string): UpstreamEndpoint & { database: string } {
  const u = new URL(url);
  return {
    host: u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port: u.port ? Number(u.port) : 5432,
    user: decodeURIComponent(u.username) || 'postgres',
    password: u.password ? decodeURIComponent(u.password) : undefined,
    database: decodeURIComponent(u.pathname.replace(/^\//, '')) || 'postgres',
    tls: parseUpstreamTls(u.searchParams),
  };
}

/**
 * node-postgres's ssl option for the catalog reader. It cannot fall back as prefer does, so
 * prefer reads the catalog in plaintext.
 */
function pgSsl(tls: UpstreamTls | undefined, host: string): pg.ClientConfig['ssl'] {
  if (!tls || tls.mode === 'disable' || tls.mode === 'prefer') return false;
  if (tls.mode === 'require') return { rejectUnauthorized: false };
  return {
    ca: tls.ca,
    rejectUnauthorized: true,
    // node-postgres sets SNI for host names only; the identity check needs the host (or IP) itself.
    ...(tls.mode === 'verify-full' ? { host } : { checkServerIdentity: () => undefined }),
  };
}

function splitHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) };
}

/** Where `npm start` keeps the embedded cluster: a directory the `postgres` user can reach. */
export function defaultEmbeddedDataDir(): string {
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  return path.join(os.tmpdir(), `sluice-embedded-${uid}`, 'data');
}

export interface StartOptions {
  /** Reads the configuration again, for RELOAD (without it RELOAD reloads the rules only). */
  reloadConfig?: () => SluiceConfig;
  /** Called once a SHUTDOWN from the admin console has stopped everything (the CLI exits). */
  onShutdown?: () => void;
}

export async function startSluice(
  config: SluiceConfig,
  startOptions: StartOptions = {},
): Promise<RunningSluice> {
  logger.level = config.log_level;
  const users = loadUsers(config.users, config.users_file);
  let embedded: RunningPostgres | undefined;
  let upstreamUrl = config.upstream;
  let tlsFiles =
    config.tls_cert && config.tls_key ? { certFile: config.tls_cert, keyFile: config.tls_key } : undefined;
  // What a configuration does not use is not imported (see docs: memory with many clients): the
  // embedded PostgreSQL, migrations, the cache (pg, ioredis), the rules engine, the HTTP server.
  if (!upstreamUrl) {
    const { startEmbeddedPostgres } = await import('./embedded/embedded-postgres.js');
    const dataDir = config.embedded.data_dir ?? defaultEmbeddedDataDir();
    embedded = await startEmbeddedPostgres({
      persistent: true,
      dataDir,
      port: config.embedded.port,
    });
    upstreamUrl = embedded.url;
  }
  if (config.migrate_on_start ?? embedded !== undefined) {
    const { migrateOnStart } = await import('./migrate/on-start.js');
    await migrateOnStart(upstreamUrl).catch(async (err: unknown) => {
      await embedded?.stop();
      throw err;
    });
  }
  let tls: ClientTls | undefined;
  try {
    // The embedded default speaks TLS out of the box, with a pair made once beside its data.
    if (embedded && !tlsFiles) {
      const { ensureSelfSignedPair } = await import('./embedded/self-signed-tls.js');
      tlsFiles = await ensureSelfSignedPair(path.dirname(embedded.dataDir));
    }
    tls = tlsFiles && loadClientTls(tlsFiles.certFile, tlsFiles.keyFile, config.tls_required === true);
  } catch (err) {
    await embedded?.stop();
    throw err;
  }
  const upstream = parseUpstreamUrl(upstreamUrl);
  // Without a users list, the upstream's own user may log in with the upstream's password.
  if (upstream.password !== undefined && !users.has(upstream.user) && config.auth !== 'trust') {
    users.set(upstream.user, upstream.password);
  }
  const passwordOf = (user: string) => users.get(user);
  const pools = new PoolManager({
    upstream,
    settings: {
      size: config.pool_size,
      minSize: config.min_pool_size,
      idleTimeoutMs: config.server_idle_timeout * 1000,
      lifetimeMs: config.server_lifetime * 1000,
      queryWaitTimeoutMs: config.query_wait_timeout * 1000,
      resetQuery:
        config.pool_mode === 'session' && config.server_reset_query !== '' ? config.server_reset_query : null,
      queryTimeoutMs: config.query_timeout * 1000,
      checkQuery: config.server_check_query === '' ? null : config.server_check_query,
      checkDelayMs: config.server_check_delay * 1000,
      checkTimeoutMs: config.server_connect_timeout * 1000,
    },
    keepAliveMs: config.tcp_keepalive ? config.tcp_keepidle * 1000 : undefined,
    connectTimeoutMs: config.server_connect_timeout * 1000,
    maxMessageBytes: config.max_message_bytes,
    // Marks writes through Sluice, which invalidates them itself, so migration 0008's trigger
    // announces only the writes that bypass it.
    startupParameters: config.cache ? { [ORIGIN_PARAMETER]: 'proxy' } : {},
    breaker: {
      failureThreshold: config.breaker_failure_threshold,
      resetTimeoutMs: config.breaker_reset_timeout * 1000,
    },
    // A plaintext password answers any upstream challenge and an md5 hash answers md5 ones
    // (the server-connection refuses to use it for anything else); a SCRAM verifier cannot log in.
    upstreamPasswordFor: (user) => {
      const stored = users.get(user);
      return stored === undefined || stored.startsWith('SCRAM-SHA-256$') ? undefined : stored;
    },
  });
  let cache: ResultCache | undefined;
  try {
    cache = config.cache ? await createResultCache(config, upstream) : undefined;
    await cache?.start();
  } catch (err) {
    pools.close();
    await embedded?.stop();
    throw err;
  }
  let watcher: RulesWatcher | undefined;
  let rules: RuleEngine | undefined;
  let RulesWatcherClass: typeof RulesWatcher | undefined;
  if (config.rules !== undefined) {
    let RuleEngineClass: typeof RuleEngine;
    try {
      ({ RulesWatcher: RulesWatcherClass } = await import('./rules/watcher.js'));
      ({ RuleEngine: RuleEngineClass } = await import('./rules/rule-engine.js'));
      await loadQueryParser();
      watcher = new RulesWatcherClass(config.rules, {
        onReload: (set) =>
          logger.info({ rules: set.rules.length, files: set.files.length }, 'rules reloaded'),
        onError: (err) =>
          logger.warn({ problems: err.problems }, 'rules file refused; the rules in force stay in force'),
      });
      watcher.start();
    } catch (err) {
      pools.close();
      await cache?.close();
      await embedded?.stop();
      throw err;
    }
    // Through a getter, so RELOAD can put a watcher of another directory in its place.
    rules = new RuleEngineClass(
      {
        get current() {
          return watcher!.current;
        },
      },
      cache?.analyzer ?? new QueryAnalyzer(),
    );
  }
  let metrics: SluiceMetrics | undefined;
  if (config.metrics) {
    const analyzer = cache?.analyzer ?? rules?.analyzer;
    // Digests without an analyzer use the parser's normalize (a text-keyed LRU in front).
    if (analyzer === undefined) await loadQueryParser();
    metrics = new SluiceMetrics({
      topDigests: config.metrics_top_digests,
      trackedDigests: config.digest_stats_max,
      slowQueryMs: config.slow_query_ms,
      analyzer,
    });
  }
  let current = config;
  let proxyRef: ProxyServer | undefined;
  let stopSluice: () => Promise<void> = async () => {};
  const reload = (): string => {
    const applied: string[] = [];
    if (startOptions.reloadConfig) {
      let next: SluiceConfig;
      try {
        next = startOptions.reloadConfig();
      } catch (err) {
        throw new ProxyError(SqlState.ConfigFileError, `RELOAD refused: ${(err as Error).message}`);
      }
      if (
        next.rules !== current.rules &&
        next.rules !== undefined &&
        rules !== undefined &&
        RulesWatcherClass !== undefined
      ) {
        const replacement = new RulesWatcherClass(next.rules, {
          onReload: (set) =>
            logger.info({ rules: set.rules.length, files: set.files.length }, 'rules reloaded'),
          onError: (err) =>
            logger.warn({ problems: err.problems }, 'rules file refused; the rules in force stay in force'),
        });
        try {
          replacement.start();
        } catch (err) {
          throw new ProxyError(
            SqlState.ConfigFileError,
            `RELOAD refused: rules ${next.rules}: ${(err as Error).message}`,
          );
        }
        watcher?.close();
        watcher = replacement;
        applied.push(`rules from ${next.rules}`);
      } else if (next.rules !== current.rules) {
        applied.push('rules on/off needs a restart');
      }
      logger.level = next.log_level;
      if (metrics) metrics.slowQueryMs = next.slow_query_ms;
      current = next;
      applied.push(
        `log_level ${next.log_level}`,
        `slow_query_ms ${next.slow_query_ms}`,
        `admin_users ${next.admin_users.length}`,
      );
    }
    if (watcher && !applied.some((a) => a.startsWith('rules from'))) {
      watcher.reload();
      applied.push(`rules ${watcher.current.rules.length}`);
    }
    return applied.join(', ');
  };
  const admin = new AdminConsole({
    pools,
    poolMode: config.pool_mode,
    sessions: () => proxyRef?.sessionList() ?? [],
    metrics,
    cache,
    rules: () => (rules ? { engine: rules, watcher } : undefined),
    config: () => current,
    reload,
    advise: async (database) => {
      const { adviseFromDigests } = await import('./admin/observed-advice.js');
      return adviseFromDigests(metrics?.digests, pools.stats(), upstream, database);
    },
    shutdown: () => {
      stopSluice().then(
        () => startOptions.onShutdown?.(),
        (err: unknown) => logger.error({ err }, 'shutdown failed'),
      );
    },
  });
  const listen = splitHostPort(config.listen);
  const proxy = new ProxyServer({
    host: listen.host,
    port: listen.port,
    auth: config.auth,
    poolMode: config.pool_mode,
    maxClientConnections: config.max_client_conn,
    maxMessageBytes: config.max_message_bytes,
    loginTimeoutMs: (config.auth_timeout ?? config.client_login_timeout) * 1000,
    passwordOf,
    pools,
    cache,
    rules,
    metrics,
    admin,
    tls,
    maxUserClientConnections: config.max_user_client_connections,
    maxDbClientConnections: config.max_db_client_connections,
    clientIdleTimeoutMs: (config.client_idle_timeout ?? 0) * 1000,
    idleTransactionTimeoutMs: (config.idle_transaction_timeout ?? 0) * 1000,
    keepAliveMs: config.tcp_keepalive ? config.tcp_keepidle * 1000 : undefined,
  });
  proxyRef = proxy;
  metrics?.attach({ sessions: () => proxy.sessionList(), pools: () => pools.stats(), cache });
  if (metrics) observeBreakersAndRules(metrics, pools, rules);
  let address: { host: string; port: number };
  try {
    address = await proxy.listen();
  } catch (err) {
    watcher?.close();
    pools.close();
    await cache?.close();
    await embedded?.stop();
    throw err;
  }
  let http: RunningSluice['http'];
  if (config.http !== undefined) {
    const { ObserveHttpServer, parseHttpAddress } = await import('./observe/http-server.js');
    const server = new ObserveHttpServer({
      ...parseHttpAddress(config.http),
      metrics,
      upstream,
      status: () => statusOf(pools, proxy, metrics, cache, rules, watcher),
    });
    server.readinessChecks.push(() => {
      const open = pools.breakers().find((b) => b.state !== 'closed');
      return (
        open && `circuit breaker for ${open.upstream} is ${open.state} (${open.lastError ?? 'no error'})`
      );
    });
    try {
      http = { ...(await server.listen()), server };
    } catch (err) {
      watcher?.close();
      await proxy.shutdown(0);
      await cache?.close();
      await embedded?.stop();
      throw err;
    }
  }
  const hostForUrl = address.host.includes(':') ? `[${address.host}]` : address.host;
  const clientPassword = config.auth === 'trust' ? undefined : users.get(upstream.user);
  const credentials =
    clientPassword && embedded ? `${upstream.user}:${encodeURIComponent(clientPassword)}` : upstream.user;
  const connectionString = `postgres://${credentials}@${hostForUrl}:${address.port}/${upstream.database}`;
  let stopping: Promise<void> | undefined;
  const running: RunningSluice = {
    host: address.host,
    port: address.port,
    connectionString,
    upstream,
    embedded,
    proxy,
    pools,
    cache,
    rules,
    get rulesWatcher() {
      return watcher;
    },
    metrics,
    http,
    admin,
    get config() {
      return current;
    },
    reload,
    stop() {
      stopping ??= (async () => {
        watcher?.close();
        const httpClosed = http?.server.close();
        // The listener closes at once; its close waits for every socket, console ones included.
        const proxyStopped = proxy.shutdown(current.shutdown_timeout * 1000);
        admin.closeAll();
        await proxyStopped;
        await httpClosed;
        await cache?.close();
        await embedded?.stop();
      })();
      return stopping;
    },
  };
  stopSluice = () => running.stop();
  return running;
}

/** The JSON of /status: pools, top digests, cache and rules, as of now. */
function statusOf(
  pools: PoolManager,
  proxy: ProxyServer,
  metrics: SluiceMetrics | undefined,
  cache: ResultCache | undefined,
  rules: RuleEngine | undefined,
  watcher: RulesWatcher | undefined,
): unknown {
  return {
    clients: proxy.clients,
    pools: pools.list().map((p) => ({ ...p.stats(), paused: p.isPaused })),
    digests: (metrics?.digests.top(20) ?? []).map((e) => ({
      pool: e.pool,
      digest: e.digest,
      calls: e.calls,
      total_ms: Math.round(e.totalSeconds * 1e6) / 1000,
      mean_ms: e.calls > 0 ? Math.round((e.totalSeconds / e.calls) * 1e6) / 1000 : 0,
      p50_ms: e.calls > 0 ? e.latency.getValueAtPercentile(50) / 1000 : 0,
      p99_ms: e.calls > 0 ? e.latency.getValueAtPercentile(99) / 1000 : 0,
      rows: e.rows,
      cache_hits: e.cacheHits,
    })),
    cache: cache
      ? {
          ...cache.stats,
          entries: cache.memory.stats.entries,
          bytes: cache.memory.stats.bytes,
          evictions: cache.memory.stats.evictions,
        }
      : null,
    rules: rules
      ? {
          dir: watcher?.dir,
          count: rules.rules.rules.length,
          files: rules.rules.files,
          matches: Object.fromEntries(rules.matchesByRule),
          reloads: watcher?.stats.reloads ?? 0,
          failures: watcher?.stats.failures ?? 0,
        }
      : null,
  };
}

/**
 * The result cache, reading each database's catalog as the upstream URL's user (the catalog
 * tables it needs are readable by every role).
 */
async function createResultCache(config: SluiceConfig, upstream: UpstreamEndpoint): Promise<ResultCache> {
  const [{ default: pg }, { CatalogRegistry }, { ResultCache }] = await Promise.all([
    import('pg'),
    import('./query/catalog-registry.js'),
    import('./cache/result-cache.js'),
  ]);
  const connect = async (database: string, applicationName: string): Promise<pg.Client> => {
    const client = new pg.Client({
      host: upstream.host,
      port: upstream.port,
      user: upstream.user,
      password: upstream.password,
      database,
      application_name: applicationName,
      ssl: pgSsl(upstream.tls, upstream.host),
    });
    client.on('error', () => {});
    await client.connect();
    return client;
  };
  const catalogs = new CatalogRegistry(
    (database): Promise<CatalogConnection> => connect(database, 'sluice catalog'),
  );
  return new ResultCache({
    maxBytes: config.cache_max_bytes,
    maxEntryBytes: config.cache_max_entry_bytes,
    ttlMs: config.cache_ttl * 1000,
    degradedTtlMs: config.cache_degraded_ttl * 1000,
    staleMaxAgeMs: config.cache_stale_max_age * 1000,
    redisUrl: config.redis,
    catalogs,
    notifyConnect: config.cache_notify_writes
      ? (database) => connect(database, 'sluice write-notify')
      : undefined,
  });
}

const BREAKER_STATE_VALUE = { closed: 0, 'half-open': 1, open: 2 } as const;

/** The gauges and counters other stages keep as plain data: breakers, rule matches, anti-patterns. */
function observeBreakersAndRules(
  metrics: SluiceMetrics,
  pools: PoolManager,
  rules: RuleEngine | undefined,
): void {
  metrics.gauge(
    'sluice_breaker_state',
    'Upstream circuit breaker: 0 closed, 1 half-open, 2 open',
    ['upstream'],
    () => pools.breakers().map((b) => [{ upstream: b.upstream }, BREAKER_STATE_VALUE[b.state]] as const),
  );
  if (rules === undefined) return;
  metrics.counter('sluice_rule_matches_total', 'Statements each rule matched', ['rule'], () =>
    [...rules.matchCounts()].map(([rule, n]) => [{ rule }, n] as const),
  );
  const antiPatterns = rules.antiPatterns;
  if (antiPatterns === null) return;
  metrics.counter(
    'sluice_antipatterns_total',
    'Statements showing an anti-pattern (tracked digests)',
    ['pattern'],
    () => {
      const byPattern = new Map<string, number>();
      for (const e of antiPatterns.report())
        byPattern.set(e.pattern, (byPattern.get(e.pattern) ?? 0) + e.count);
      return [...byPattern].map(([pattern, n]) => [{ pattern }, n] as const);
    },
  );
}
