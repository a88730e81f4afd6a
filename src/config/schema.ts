// Owns the shape of Sluice's configuration: every key, its default and its validation (zod).
// Keys are snake_case as ops write them in YAML; each also maps to a SLUICE_<KEY> variable.
import { z } from 'zod';

const seconds = z.number().nonnegative();

const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, 'expected HOST:PORT, e.g. 127.0.0.1:6432')
  .refine((s) => Number(s.slice(s.lastIndexOf(':') + 1)) <= 65535, 'port must be at most 65535');

const upstreamUrl = z
  .string()
  .refine((s) => /^postgres(ql)?:\/\//.test(s), 'expected postgres://user[:password]@host:port/database')
  .refine((s) => URL.canParse(s), 'not a valid URL')
  .refine(
    (s) =>
      !URL.canParse(s) ||
      /^(|disable|prefer|require|verify-ca|verify-full)$/.test(new URL(s).searchParams.get('sslmode') ?? ''),
    'sslmode must be disable, prefer, require, verify-ca or verify-full',
  );

export const userSchema = z
  .object({
    name: z.string().min(1),
    /** Plaintext, an md5 hash ("md5" + 32 hex) or a SCRAM-SHA-256 verifier as in pg_authid. */
    password: z.string().min(1),
  })
  .strict();

export const configSchema = z
  .object({
    listen: hostPort.default('127.0.0.1:6432'),
    /** Absent: start the embedded PostgreSQL and proxy to it. */
    upstream: upstreamUrl.optional(),
    auth: z.enum(['trust', 'md5', 'scram-sha-256']).default('scram-sha-256'),
    users: z.array(userSchema).default([]),
    /** PgBouncer userlist.txt format: `"user" "password"` per line. */
    users_file: z.string().optional(),
    pool_mode: z.enum(['session', 'transaction', 'statement']).default('transaction'),
    pool_size: z.number().int().positive().default(20),
    min_pool_size: z.number().int().nonnegative().default(0),
    server_idle_timeout: seconds.default(600),
    server_lifetime: seconds.default(3600),
    server_connect_timeout: seconds.default(15),
    query_wait_timeout: seconds.default(120),
    max_client_conn: z.number().int().positive().default(1000),
    /** PostgreSQL itself refuses messages over 1 GiB; lower it to bound what one client can send. */
    max_message_bytes: z
      .number()
      .int()
      .min(1024)
      .max(2 ** 30)
      .default(2 ** 30),
    client_login_timeout: seconds.default(60),
    shutdown_timeout: seconds.default(30),
    server_reset_query: z.string().default('DISCARD ALL'),
    /** A directory of rules/*.yaml files, watched and reloaded when they change. */
    rules: z.string().optional(),
    /** The result cache (off unless asked for: it changes what "fresh" means for reads). */
    cache: z.boolean().default(false),
    cache_max_bytes: z
      .number()
      .int()
      .min(1024 * 1024)
      .default(256 * 1024 * 1024),
    /** Results larger than this stream through uncached. */
    cache_max_entry_bytes: z
      .number()
      .int()
      .min(1024)
      .default(16 * 1024 * 1024),
    /** Seconds an entry lives: the bound on staleness from writes that bypass Sluice. */
    cache_ttl: z.number().positive().default(60),
    /**
     * Seconds an entry lives while the shared (Redis) tier is down and other instances' writes
     * cannot reach this one. 0 (the default): nothing is answered from the cache meanwhile.
     */
    cache_degraded_ttl: z.number().nonnegative().default(0),
    /** redis://host:port: the shared cache tier and invalidation bus between Sluice instances. */
    redis: z
      .string()
      .refine((s) => /^rediss?:\/\//.test(s) && URL.canParse(s), 'expected redis://host:port[/db]')
      .optional(),
    log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    embedded: z
      .object({
        data_dir: z.string().optional(),
        port: z.number().int().min(0).max(65535).default(0),
      })
      .strict()
      .default({ port: 0 }),
    /**
     * Connection attempts to the upstream failing in a row (refused, dropped, timed out) that open
     * its circuit breaker. SQL errors and login refusals (28P01, 3D000...) never count.
     */
    breaker_failure_threshold: z.number().int().positive().default(5),
    /** Seconds the breaker stays open (clients get 57P03) before a probe tries the upstream again. */
    breaker_reset_timeout: z.number().positive().default(5),
    /**
     * Seconds past its TTL that an entry whose rule has serve_stale is kept, to be served (with a
     * NOTICE) while the upstream's breaker is open. Such entries still count towards cache_max_bytes.
     */
    cache_stale_max_age: seconds.default(3600),
    /** Apply pending migrations (the package's migrations/) at start. Absent: only with the embedded server. */
    migrate_on_start: z.boolean().optional(),
    /** HOST:PORT (or a port alone, on 127.0.0.1) for /metrics, /healthz, /readyz, /status; off when absent. */
    http: z
      .union([
        hostPort,
        z.string().regex(/^\d{1,5}$/, 'expected HOST:PORT or PORT'),
        z.number().int().min(0).max(65535),
      ])
      .optional(),
    /** Per-statement metrics and digest stats (on by default; off only to measure their cost). */
    metrics: z.boolean().default(true),
    /** Digests with a label of their own on sluice_query_duration_seconds; the rest are "other". */
    metrics_top_digests: z.number().int().positive().default(50),
    /** Digests whose statistics are kept for SHOW DIGESTS and /status. */
    digest_stats_max: z.number().int().positive().default(1000),
    /** Statements slower than this many milliseconds are logged with their digest (0: never). */
    slow_query_ms: z.number().nonnegative().default(1000),
    /** Users who may log in to the admin console (database "sluice"): a list or "a,b". */
    admin_users: z
      .union([z.array(z.string().min(1)), z.string()])
      .default([])
      .transform((v) =>
        (typeof v === 'string' ? v.split(',') : v).map((u) => u.trim()).filter((u) => u !== ''),
      ),
    // Issue 9 (hardening). Absent keys mean "off", so the defaults stay as they were.
    /** PEM files: with both, clients may (or with tls_required, must) use TLS. */
    tls_cert: z.string().optional(),
    tls_key: z.string().optional(),
    /** Refuse (28000) clients that do not ask for TLS. */
    tls_required: z.boolean().optional(),
    /** Seconds a client may take from connecting to logging in; replaces client_login_timeout. */
    auth_timeout: seconds.optional(),
    /** Client connections per user / per database (0 or absent: no limit), as PgBouncer 1.24 names them. */
    max_user_client_connections: z.number().int().nonnegative().optional(),
    max_db_client_connections: z.number().int().nonnegative().optional(),
    /** Seconds a client may sit idle outside a transaction before it is closed (0: never). */
    client_idle_timeout: seconds.optional(),
    /** Seconds a client may sit idle inside a transaction before it is closed and rolled back. */
    idle_transaction_timeout: seconds.optional(),
    /**
     * With the cache on, LISTEN (one connection per database) for the notifications of migration
     * 0008's trigger, so writes that bypass Sluice orphan cached reads within milliseconds of their
     * commit instead of at cache_ttl.
     */
    cache_notify_writes: z.boolean().default(true),
    /** SO_KEEPALIVE on client and server sockets (PgBouncer's tcp_keepalive). */
    tcp_keepalive: z.boolean().default(true),
    /** Seconds of silence before the first keepalive probe; 0: the OS default (Linux: 7200). */
    tcp_keepidle: seconds.default(0),
    /** Seconds a request may wait on its server before it is cancelled (57014) and the server closed; 0: never. */
    query_timeout: seconds.default(0),
    /** Seconds a server may sit idle in the pool before server_check_query is run on it before reuse. */
    server_check_delay: seconds.default(30),
    /** Run on a server idle longer than server_check_delay before reuse; '' turns the check off. */
    server_check_query: z.string().default('select 1'),
  })
  .strict()
  .refine((c) => (c.tls_cert === undefined) === (c.tls_key === undefined), {
    message: 'tls_cert and tls_key go together',
    path: ['tls_key'],
  })
  .refine((c) => !c.tls_required || c.tls_cert !== undefined || c.upstream === undefined, {
    message: 'tls_required needs tls_cert and tls_key (only the embedded default makes its own pair)',
    path: ['tls_required'],
  })
  .refine((c) => c.min_pool_size <= c.pool_size, {
    message: 'min_pool_size must not exceed pool_size',
    path: ['min_pool_size'],
  });

export type SluiceConfig = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
export type UserEntry = z.infer<typeof userSchema>;

/** Top-level keys whose values come from the environment as numbers rather than strings. */
export const numericKeys = new Set([
  'pool_size',
  'min_pool_size',
  'server_idle_timeout',
  'server_lifetime',
  'server_connect_timeout',
  'query_wait_timeout',
  'max_client_conn',
  'max_message_bytes',
  'client_login_timeout',
  'shutdown_timeout',
  'cache_max_bytes',
  'cache_max_entry_bytes',
  'cache_ttl',
  'cache_degraded_ttl',
  'breaker_failure_threshold',
  'breaker_reset_timeout',
  'cache_stale_max_age',
  'metrics_top_digests',
  'digest_stats_max',
  'slow_query_ms',
  'auth_timeout',
  'max_user_client_connections',
  'max_db_client_connections',
  'client_idle_timeout',
  'idle_transaction_timeout',
  'tcp_keepidle',
  'query_timeout',
  'server_check_delay',
]);

/** Top-level keys whose values come from the environment as booleans (true/false/1/0). */
export const booleanKeys = new Set([
  'cache',
  'migrate_on_start',
  'metrics',
  'tls_required',
  'cache_notify_writes',
  'tcp_keepalive',
]);
