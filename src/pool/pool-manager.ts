// Owns the set of pools keyed by (database, user), how each one reaches the upstream, and the
// periodic upkeep timer that drives their timeouts.
import { isMd5PasswordHash } from '../protocol/md5-auth.js';
import { Pool, type PoolSettings, type PoolStats } from './pool.js';
import type { UpstreamTarget } from './server-connection.js';
import { type BreakerSettings, type BreakerSnapshot, UpstreamBreaker } from './upstream-breaker.js';
import type { UpstreamTls } from './upstream-tls.js';

export interface UpstreamEndpoint {
  host: string;
  port: number;
  /** The upstream URL's own user and password: used when a client logs in as that user. */
  user: string;
  password: string | undefined;
  /** sslmode / sslrootcert of the upstream URL. */
  tls?: UpstreamTls | undefined;
}

export interface PoolManagerOptions {
  upstream: UpstreamEndpoint;
  settings: PoolSettings;
  connectTimeoutMs: number;
  maxMessageBytes: number;
  /** Sent in the startup packet of every server connection (PostgreSQL sets them as GUCs). */
  startupParameters?: Record<string, string>;
  breaker: BreakerSettings;
  /** SO_KEEPALIVE on server sockets with this idle time (0: the OS default); absent: none. */
  keepAliveMs?: number | undefined;
  /** What Sluice knows of this user's password for the upstream: plaintext or an md5 hash. */
  upstreamPasswordFor(user: string): string | undefined;
}

const TICK_MS = 100;

export class PoolManager {
  private readonly pools = new Map<string, Pool>();
  private readonly timer: NodeJS.Timeout;
  /** One upstream today, so one breaker; keyed by host:port should upstreams ever multiply. */
  private readonly breaker: UpstreamBreaker;
  /** PAUSE without a database name: pools created meanwhile start paused too. */
  private allPaused = false;

  constructor(private readonly options: PoolManagerOptions) {
    const { host, port } = options.upstream;
    this.breaker = new UpstreamBreaker(`${host}:${port}`, options.breaker);
    this.breaker.onOpen = () => {
      const err = this.breaker.openError();
      for (const pool of this.pools.values()) pool.onBreakerOpen(err);
    };
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
  }

  get upstream(): UpstreamEndpoint {
    return this.options.upstream;
  }

  get(database: string, user: string): Pool {
    const key = `${database}\0${user}`;
    let pool = this.pools.get(key);
    if (!pool) {
      const { upstream } = this.options;
      const target: UpstreamTarget = {
        host: upstream.host,
        port: upstream.port,
        database,
        user,
        password: this.upstreamPassword(user),
        startupParameters: this.options.startupParameters ?? {},
        connectTimeoutMs: this.options.connectTimeoutMs,
        maxMessageBytes: this.options.maxMessageBytes,
        tls: upstream.tls,
        keepAliveMs: this.options.keepAliveMs,
      };
      pool = new Pool(database, user, target, this.options.settings, this.breaker);
      if (this.allPaused) pool.pause();
      this.pools.set(key, pool);
    }
    return pool;
  }

  /** A plaintext password beats the URL's, which beats a stored md5 hash (md5 challenges only). */
  private upstreamPassword(user: string): string | undefined {
    const stored = this.options.upstreamPasswordFor(user);
    const fromUrl = user === this.options.upstream.user ? this.options.upstream.password : undefined;
    if (stored !== undefined && isMd5PasswordHash(stored)) return fromUrl ?? stored;
    return stored ?? fromUrl;
  }

  list(): Pool[] {
    return [...this.pools.values()];
  }

  /** PAUSE: every pool, or one database's. */
  pause(database?: string): void {
    if (database === undefined) this.allPaused = true;
    for (const pool of this.pools.values())
      if (database === undefined || pool.database === database) pool.pause();
  }

  resume(database?: string): void {
    if (database === undefined) this.allPaused = false;
    for (const pool of this.pools.values())
      if (database === undefined || pool.database === database) pool.resume();
  }

  stats(): PoolStats[] {
    return [...this.pools.values()].map((p) => p.stats());
  }

  /** Each upstream's circuit breaker as plain data (metrics, /readyz, SHOW BREAKERS). */
  breakers(): BreakerSnapshot[] {
    return [this.breaker.snapshot()];
  }

  close(): void {
    clearInterval(this.timer);
    this.breaker.shutdown();
    for (const pool of this.pools.values()) pool.close();
  }

  private tick(): void {
    const now = Date.now();
    for (const pool of this.pools.values()) pool.tick(now);
  }
}
