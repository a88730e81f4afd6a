// Owns the admin console: a client that logs in to database "sluice" as an admin user talks to
// Sluice itself, PgBouncer-style (SHOW POOLS, SHOW CLIENTS, ..., RELOAD, PAUSE, RESUME,
// SHUTDOWN), over the simple query protocol; extended-protocol messages get a clear error.
import type { Socket } from 'node:net';
import type { ResultCache } from '../cache/result-cache.js';
import type { SluiceConfig } from '../config/schema.js';
import { logger } from '../observe/logger.js';
import { poolLabel, type SluiceMetrics } from '../observe/metrics.js';
import type { PoolManager } from '../pool/pool-manager.js';
import {
  createBackendKeyData,
  createErrorResponse,
  createParameterStatus,
  READY_FOR_QUERY,
} from '../protocol/backend-messages.js';
import { ProxyError } from '../protocol/proxy-error.js';
import { SqlState } from '../protocol/sqlstate.js';
import type { IndexAdvice } from '../rules/index-advisor.js';
import type { RuleEngine } from '../rules/rule-engine.js';
import type { RulesWatcher } from '../rules/watcher.js';
import type { ClientSession, PoolMode } from '../server/client-session.js';
import { type Cell, encodeResultSet, type ResultSet } from './result-set.js';

/** The database name that reaches the console instead of a pool. */
export const ADMIN_DATABASE = 'sluice';

export interface AdminServices {
  pools: PoolManager;
  poolMode: PoolMode;
  sessions(): ClientSession[];
  metrics: SluiceMetrics | undefined;
  cache: ResultCache | undefined;
  rules(): { engine: RuleEngine; watcher: RulesWatcher | undefined } | undefined;
  /** The configuration in force (after the last RELOAD). */
  config(): SluiceConfig;
  /** Reads the configuration again and applies what can change while running; returns a summary. */
  reload(): string;
  /** Graceful shutdown of the whole proxy. */
  shutdown(): void;
  /** Index advice per database from the observed digests (all databases, or one). */
  advise(database: string | undefined): Promise<Map<string, IndexAdvice[]>>;
}

const MAX_ADMIN_MESSAGE = 1024 * 1024;

export class AdminConsole {
  private readonly sockets = new Set<Socket>();

  constructor(private readonly services: AdminServices) {}

  /** True when `user` may use the console (the list in force, so RELOAD changes it). */
  isAdmin(user: string): boolean {
    return this.services.config().admin_users.includes(user);
  }

  /**
   * Takes over a logged-in socket whose database is "sluice". Throws (FATAL 42501) for a user
   * who is not an admin; the caller sends that and closes.
   */
  accept(socket: Socket, user: string, leftover: Buffer | undefined): void {
    if (!this.isAdmin(user)) {
      throw new ProxyError(
        SqlState.InsufficientPrivilege,
        `user "${user}" may not use the Sluice admin console`,
        {
          severity: 'FATAL',
          hint: 'admin users are listed in admin_users (--admin-users)',
        },
      );
    }
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    const welcome = [
      createParameterStatus('server_version', '16.0 (Sluice admin console)'),
      createParameterStatus('server_encoding', 'UTF8'),
      createParameterStatus('client_encoding', 'UTF8'),
      createParameterStatus('DateStyle', 'ISO, MDY'),
      createParameterStatus('integer_datetimes', 'on'),
      createParameterStatus('standard_conforming_strings', 'on'),
      createParameterStatus('TimeZone', 'UTC'),
      createBackendKeyData(0, 0),
      READY_FOR_QUERY.I,
    ];
    socket.write(Buffer.concat(welcome));
    let pending: Buffer = leftover ?? Buffer.alloc(0);
    /** After an extended-protocol message: skip to Sync, as PostgreSQL does after an error. */
    let skipping = false;
    // Some answers read the upstream (SHOW ADVICE): replies go out in the order asked.
    let replies: Promise<void> = Promise.resolve();
    const reply = (make: () => Buffer | Promise<Buffer>) => {
      replies = replies
        .then(make)
        .then((b) => {
          if (!socket.destroyed) socket.write(b);
        })
        .catch((err: unknown) => {
          logger.error({ err }, 'internal error in the admin console');
          socket.destroy();
        });
    };
    const onData = (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      while (pending.length >= 5) {
        const type = pending[0]!;
        const length = pending.readInt32BE(1);
        if (length < 4 || length > MAX_ADMIN_MESSAGE) {
          socket.end(
            createErrorResponse({
              severity: 'FATAL',
              code: SqlState.ProtocolViolation,
              message: `invalid message length ${length}`,
            }),
          );
          return;
        }
        if (pending.length < 1 + length) return;
        const body = pending.subarray(5, 1 + length);
        pending = pending.subarray(1 + length);
        switch (type) {
          case 0x51: {
            // 'Q'
            const text = body.toString('utf8', 0, Math.max(0, body.length - 1));
            reply(() => this.answer(text));
            break;
          }
          case 0x58: // 'X'
            replies = replies.then(() => {
              socket.end();
            });
            return;
          case 0x53: // 'S' Sync
            skipping = false;
            reply(() => READY_FOR_QUERY.I);
            break;
          case 0x48: // 'H' Flush
            break;
          default:
            if (!skipping) {
              skipping = true;
              reply(() =>
                createErrorResponse({
                  severity: 'ERROR',
                  code: SqlState.FeatureNotSupported,
                  message: 'the Sluice admin console answers the simple query protocol only',
                  hint: 'use psql, or a driver call that sends a plain query (e.g. pg: client.query(text) without values)',
                }),
              );
            }
        }
      }
    };
    socket.on('data', (chunk: Buffer) => {
      try {
        onData(chunk);
      } catch (err) {
        logger.error({ err }, 'internal error in the admin console');
        socket.end(
          createErrorResponse({
            severity: 'FATAL',
            code: SqlState.InternalError,
            message: 'internal error in Sluice',
          }),
        );
      }
    });
    socket.on('error', () => {});
    socket.resume();
    if (pending.length > 0) {
      const first = pending;
      pending = Buffer.alloc(0);
      onData(first);
    }
  }

  /**
   * Index advice from the digests Sluice has seen (calls, time spent) and the upstream catalog of
   * their databases (or of `database` only). Advice only: nothing is created.
   */
  private async advice(database: string | undefined): Promise<ResultSet> {
    const columns = ['database', 'table', 'columns', 'benefit_rows', 'selectivity', 'statement', 'example'];
    const rows: Cell[][] = [];
    for (const [db, advice] of await this.services.advise(database)) {
      for (const a of advice) {
        rows.push([
          db,
          `${a.schema}.${a.table}`,
          a.columns.join(','),
          Math.round(a.benefit),
          Number(a.selectivity.toPrecision(2)),
          a.statement,
          a.examples[0] ?? null,
        ]);
      }
    }
    return { columns, rows };
  }

  /** Closes every console connection (shutdown). */
  closeAll(): void {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  /** The replies to one Query message: each ;-separated command in turn, then ReadyForQuery. */
  async answer(text: string): Promise<Buffer> {
    const commands = text
      .split(';')
      .map((c) => c.trim())
      .filter((c) => c !== '');
    const replies: Buffer[] = [];
    if (commands.length === 0) replies.push(Buffer.from([0x49, 0, 0, 0, 4])); // EmptyQueryResponse
    for (const command of commands) {
      try {
        replies.push(encodeResultSet(await this.run(command)));
      } catch (err) {
        const e =
          err instanceof ProxyError
            ? err
            : new ProxyError(SqlState.InternalError, `admin command failed: ${String(err)}`);
        if (!(err instanceof ProxyError)) logger.error({ err, command }, 'admin command failed');
        replies.push(e.toErrorResponse());
        break;
      }
    }
    replies.push(READY_FOR_QUERY.I);
    return Buffer.concat(replies);
  }

  run(command: string): ResultSet | Promise<ResultSet> {
    const words = command.split(/\s+/);
    const verb = words[0]!.toUpperCase();
    const arg = words[1];
    if (verb === 'SHOW' && arg?.toUpperCase() === 'ADVICE' && words.length <= 3) return this.advice(words[2]);
    if (verb === 'SHOW' && arg !== undefined && words.length === 2) {
      const view = VIEWS[arg.toUpperCase()];
      if (view) return view(this.services);
    }
    switch (verb) {
      case 'RELOAD':
        if (words.length === 1) {
          const summary = this.services.reload();
          logger.info({ summary }, 'RELOAD from the admin console');
          return { columns: [], rows: [], tag: 'RELOAD' };
        }
        break;
      case 'PAUSE':
      case 'RESUME':
        if (words.length <= 2) {
          if (verb === 'PAUSE') this.services.pools.pause(arg);
          else this.services.pools.resume(arg);
          logger.info({ database: arg ?? '(all)' }, `${verb} from the admin console`);
          return { columns: [], rows: [], tag: verb };
        }
        break;
      case 'SHUTDOWN':
        if (words.length === 1) {
          logger.info('SHUTDOWN from the admin console');
          // After this reply has gone out.
          setImmediate(() => this.services.shutdown());
          return { columns: [], rows: [], tag: 'SHUTDOWN' };
        }
        break;
    }
    throw new ProxyError(SqlState.SyntaxError, `unknown admin command: ${command}`, {
      hint: `try SHOW ${Object.keys(VIEWS).join('|')}|ADVICE [db], RELOAD, PAUSE [db], RESUME [db], SHUTDOWN`,
    });
  }
}

const micros = (seconds: number) => Math.round(seconds * 1e6);
const ms = (seconds: number) => Math.round(seconds * 1e6) / 1000;

function clientState(s: ClientSession): string {
  if (s.waiting) return 'waiting';
  return s.server !== null ? 'active' : 'idle';
}

const VIEWS: Record<string, (s: AdminServices) => ResultSet> = {
  POOLS(s) {
    const clients = new Map<string, { active: number; waiting: number; maxWaitMs: number }>();
    for (const session of s.sessions()) {
      const key = poolLabel(session.database, session.user);
      const c = clients.get(key) ?? { active: 0, waiting: 0, maxWaitMs: 0 };
      if (session.waiting) c.waiting++;
      else c.active++;
      clients.set(key, c);
    }
    return {
      columns: [
        'database',
        'user',
        'cl_active',
        'cl_waiting',
        'cl_active_cancel_req',
        'cl_waiting_cancel_req',
        'sv_active',
        'sv_active_cancel',
        'sv_being_canceled',
        'sv_idle',
        'sv_used',
        'sv_tested',
        'sv_login',
        'maxwait',
        'maxwait_us',
        'pool_mode',
        'paused',
      ],
      rows: s.pools.list().map((pool) => {
        const st = pool.stats();
        const c = clients.get(poolLabel(st.database, st.user)) ?? { active: 0, waiting: 0 };
        return [
          st.database,
          st.user,
          c.active,
          c.waiting,
          0,
          0,
          st.active,
          0,
          0,
          st.idle,
          0,
          0,
          st.connecting,
          Math.floor(st.maxWaitMs / 1000),
          (st.maxWaitMs % 1000) * 1000,
          s.poolMode,
          pool.isPaused,
        ];
      }),
    };
  },

  CLIENTS(s) {
    return {
      columns: [
        'type',
        'user',
        'database',
        'state',
        'addr',
        'port',
        'local_addr',
        'local_port',
        'connect_time',
        'application_name',
        'id',
        'pinned',
      ],
      rows: s
        .sessions()
        .map((c) => [
          'C',
          c.user,
          c.database,
          clientState(c),
          c.socket.remoteAddress ?? null,
          c.socket.remotePort ?? null,
          c.socket.localAddress ?? null,
          c.socket.localPort ?? null,
          new Date(c.connectedAt).toISOString(),
          c.parameters.get('application_name') ?? '',
          c.processId,
          c.pinnedReason ?? null,
        ]),
    };
  },

  SERVERS(s) {
    const rows: Cell[][] = [];
    const row = (
      pool: { database: string; user: string },
      state: string,
      server: NonNullable<ClientSession['server']>,
    ) => [
      'S',
      pool.user,
      pool.database,
      state,
      server.socket.remoteAddress ?? null,
      server.socket.remotePort ?? null,
      server.socket.localAddress ?? null,
      server.socket.localPort ?? null,
      new Date(server.createdAt).toISOString(),
      new Date(server.lastUsedAt).toISOString(),
      server.backendProcessId,
      server.id,
    ];
    for (const session of s.sessions()) {
      if (session.server) rows.push(row(session.pool, 'active', session.server));
    }
    for (const pool of s.pools.list())
      for (const server of pool.idleServers) rows.push(row(pool, 'idle', server));
    return {
      columns: [
        'type',
        'user',
        'database',
        'state',
        'addr',
        'port',
        'local_addr',
        'local_port',
        'connect_time',
        'request_time',
        'remote_pid',
        'id',
      ],
      rows,
    };
  },

  STATS(s) {
    const byDb = new Map<string, { queries: number; seconds: number; rows: number; cacheHits: number }>();
    for (const e of s.metrics?.digests.top() ?? []) {
      const db = e.pool.slice(0, e.pool.lastIndexOf('/'));
      const t = byDb.get(db) ?? { queries: 0, seconds: 0, rows: 0, cacheHits: 0 };
      t.queries += e.calls;
      t.seconds += e.totalSeconds;
      t.rows += e.rows;
      t.cacheHits += e.cacheHits;
      byDb.set(db, t);
    }
    const waits = new Map<string, number>();
    for (const [pool, seconds] of s.metrics?.poolWaitTotals() ?? []) {
      const db = pool.slice(0, pool.lastIndexOf('/'));
      waits.set(db, (waits.get(db) ?? 0) + seconds);
    }
    for (const pool of s.pools.list())
      if (!byDb.has(pool.database))
        byDb.set(pool.database, { queries: 0, seconds: 0, rows: 0, cacheHits: 0 });
    return {
      columns: [
        'database',
        'total_query_count',
        'total_query_time',
        'total_wait_time',
        'avg_query_time',
        'total_rows',
        'total_cache_hits',
      ],
      rows: [...byDb].map(([db, t]) => [
        db,
        t.queries,
        micros(t.seconds),
        micros(waits.get(db) ?? 0),
        t.queries > 0 ? micros(t.seconds / t.queries) : 0,
        t.rows,
        t.cacheHits,
      ]),
    };
  },

  DIGESTS(s) {
    return {
      columns: ['pool', 'digest', 'calls', 'total_ms', 'mean_ms', 'p50_ms', 'p99_ms', 'rows', 'cache_hits'],
      rows: (s.metrics?.digests.top() ?? []).map((e) => [
        e.pool,
        e.digest,
        e.calls,
        ms(e.totalSeconds),
        e.calls > 0 ? ms(e.totalSeconds / e.calls) : 0,
        e.calls > 0 ? e.latency.getValueAtPercentile(50) / 1000 : 0,
        e.calls > 0 ? e.latency.getValueAtPercentile(99) / 1000 : 0,
        e.rows,
        e.cacheHits,
      ]),
    };
  },

  CACHE(s) {
    const c = s.cache;
    const columns = [
      'enabled',
      'hits',
      'shared_hits',
      'misses',
      'stores',
      'coalesced',
      'uncacheable',
      'not_stored',
      'invalidations',
      'entries',
      'bytes',
      'evictions',
      'shared_tier',
    ];
    if (c === undefined) return { columns, rows: [[false, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'off']] };
    const st = c.stats;
    return {
      columns,
      rows: [
        [
          true,
          st.hits,
          st.sharedHits,
          st.misses,
          st.stores,
          st.coalesced,
          st.uncacheable,
          st.notStored,
          st.invalidations,
          c.memory.stats.entries,
          c.memory.stats.bytes,
          c.memory.stats.evictions,
          c.redis ? (c.redis.up ? 'up' : 'down') : 'off',
        ],
      ],
    };
  },

  RULES(s) {
    const r = s.rules();
    const columns = ['name', 'file', 'line', 'actions', 'matches'];
    if (r === undefined) return { columns, rows: [] };
    return {
      columns,
      rows: r.engine.rules.rules.map((rule) => [
        rule.name,
        rule.file,
        rule.line,
        ['block', 'cache', 'rewrite', 'timeout', 'limit', 'max_concurrency', 'route', 'log']
          .filter((k) => (rule as unknown as Record<string, unknown>)[k] !== undefined)
          .join(','),
        r.engine.matchesByRule.get(rule.name) ?? 0,
      ]),
    };
  },

  BREAKERS(s) {
    return {
      columns: ['upstream', 'state', 'failures', 'opened_at', 'last_error'],
      rows: s.pools
        .breakers()
        .map((b) => [
          b.upstream,
          b.state,
          b.failures,
          b.openedAt === null ? null : new Date(b.openedAt).toISOString(),
          b.lastError,
        ]),
    };
  },

  ANTIPATTERNS(s) {
    const report = s.rules()?.engine.antiPatterns?.report() ?? [];
    return {
      columns: ['pattern', 'digest', 'count', 'last_seen', 'example'],
      rows: report
        .sort((a, b) => b.count - a.count)
        .map((e) => [e.pattern, e.digest, e.count, new Date(e.lastSeen).toISOString(), e.example]),
    };
  },

  CONFIG(s) {
    const config = s.config() as unknown as Record<string, unknown>;
    const changeable = new Set(['log_level', 'slow_query_ms', 'admin_users', 'rules']);
    return {
      columns: ['key', 'value', 'changeable'],
      rows: Object.keys(config)
        .sort()
        .map((key) => [key, shownValue(key, config[key]), changeable.has(key)]),
    };
  },
};

/** Config values as SHOW CONFIG prints them: passwords never. */
function shownValue(key: string, value: unknown): string {
  if (value === undefined) return '';
  if (key === 'users') return `(${(value as unknown[]).length} users)`;
  if (key === 'upstream' && typeof value === 'string')
    return value.replace(/\/\/([^:@/]*):[^@]*@/, '//$1:***@');
  if (key === 'redis' && typeof value === 'string') return value.replace(/\/\/([^:@/]*):[^@]*@/, '//$1:***@');
  return typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value);
}
