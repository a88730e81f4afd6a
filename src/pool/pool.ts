// Owns the server connections of one (database, user) pair: idle stack, connection creation up
// to the size limit, a FIFO of waiting clients with a wait deadline, lifetime and idle expiry.
// Acquire and release are callback-based and allocation-free because transaction pooling calls
// them once per transaction.
import { logger } from '../observe/logger.js';
import { ProxyError } from '../protocol/proxy-error.js';
import { SqlState } from '../protocol/sqlstate.js';
import { ListenHub } from './listen-hub.js';
import { QueryDeadline } from './query-deadline.js';
import {
  InternalQueryError,
  LoginInterruptedError,
  type ServerConnection,
  type UpstreamTarget,
} from './server-connection.js';
import { BreakerOpenError, type UpstreamBreaker } from './upstream-breaker.js';

/**
 * After a server connection closed or reset in the middle of its login, the clients waiting for it
 * stay queued and a new attempt starts this much later: a backend lost during login (killed by a
 * crash restart, terminated) costs no client. Refused or timed-out connects and PostgreSQL's own
 * refusals (28P01, 3D000, 53300, 57P03) still fail a waiter at once. Retrying 57P03 too was tried:
 * every queued client's retry failed at once during recovery, which opened the breaker and cost
 * the canary 5 s of 57P03 instead of one error. The breaker bounds these retries as well: each
 * counts as a failure. PgBouncer's server_login_retry (15 s) plays the same part.
 */
const LOGIN_RETRY_MS = 250;

export interface PoolSettings {
  size: number;
  minSize: number;
  idleTimeoutMs: number;
  lifetimeMs: number;
  queryWaitTimeoutMs: number;
  /** Run before an idle server is reused by another client (session mode), or null. */
  resetQuery: string | null;
  /** query_timeout; 0: off. */
  queryTimeoutMs?: number;
  /** server_check_query, run on a server idle for checkDelayMs before reuse; null: no check. */
  checkQuery?: string | null;
  checkDelayMs?: number;
  /** How long the check may take before the server is taken for dead. */
  checkTimeoutMs?: number;
}

/** A client waiting for a server connection. */
export interface PoolWaiter {
  onServerAcquired(server: ServerConnection): void;
  onAcquireFailed(err: Error): void;
}

interface QueuedWaiter {
  waiter: PoolWaiter;
  since: number;
  deadline: number;
}

export interface PoolStats {
  database: string;
  user: string;
  active: number;
  idle: number;
  connecting: number;
  waiting: number;
  maxWaitMs: number;
}

export class Pool {
  private readonly idle: ServerConnection[] = [];
  private readonly waiting: QueuedWaiter[] = [];
  /** Every connected server of this pool, idle or not (what the query_timeout sweep looks at). */
  private readonly servers = new Set<ServerConnection>();
  private readonly deadline: QueryDeadline | undefined;
  private total = 0;
  private connecting = 0;
  /** ParameterStatus values of the first server: what clients are told at login. */
  serverParameters: Map<string, string> | undefined;
  private everConnected = false;
  /** PAUSE (admin console): clients queue, servers are handed to nobody until RESUME. */
  private paused = false;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly database: string,
    readonly user: string,
    private readonly target: UpstreamTarget,
    private readonly settings: PoolSettings,
    private readonly breaker: UpstreamBreaker,
  ) {
    const timeoutMs = settings.queryTimeoutMs ?? 0;
    if (timeoutMs > 0) this.deadline = new QueryDeadline(timeoutMs);
  }

  /**
   * True when a client without a server would get 57P03 now: the upstream's breaker is not closed
   * and no idle server is left (what decides whether a stale cache entry may be served).
   */
  get cannotConnectNow(): boolean {
    return !this.breaker.closed && this.idle.length === 0;
  }

  /**
   * The breaker just opened: clients queued for a connection get 57P03 now rather than when their
   * own attempt times out, unless a live server of this pool may still come back to them.
   */
  onBreakerOpen(err: BreakerOpenError): void {
    if (this.total - this.connecting > 0) return;
    for (const { waiter } of this.waiting.splice(0)) waiter.onAcquireFailed(err);
  }

  /** Calls `waiter.onServerAcquired` now if a server is free, later otherwise. */
  acquire(waiter: PoolWaiter): void {
    const server = this.paused ? undefined : this.takeIdle();
    if (server) {
      this.handIdle(server, waiter);
      return;
    }
    // query_wait_timeout 0 means wait for ever, as in PgBouncer.
    const wait = this.settings.queryWaitTimeoutMs;
    const now = Date.now();
    this.waiting.push({ waiter, since: now, deadline: wait > 0 ? now + wait : Number.POSITIVE_INFINITY });
    this.maybeConnect();
  }

  private hub: ListenHub | undefined;

  /** The one server connection that LISTENs for every client of this pool (created on use). */
  get listenHub(): ListenHub {
    this.hub ??= new ListenHub(this.target);
    return this.hub;
  }

  /** Withdraws a waiter that went away before it was served. */
  cancelWait(waiter: PoolWaiter): void {
    const i = this.waiting.findIndex((q) => q.waiter === waiter);
    if (i >= 0) this.waiting.splice(i, 1);
  }

  /**
   * Returns a server. `clean` is false when the client left it mid-transaction or mid-protocol:
   * then it is closed, never handed to anyone else.
   */
  release(server: ServerConnection, clean: boolean): void {
    server.detach();
    if (clean && server.sentPartialMessage && !server.closed) {
      // The client's bookkeeping said it was between messages; the bytes say otherwise.
      logger.warn(
        { server: server.id, user: this.user, database: this.database },
        'server released with part of a client message written to it; closing it',
      );
      clean = false;
    }
    if (
      !clean ||
      server.closed ||
      server.outOfSync ||
      Date.now() - server.createdAt > this.settings.lifetimeMs
    ) {
      this.discard(server);
      return;
    }
    if (this.settings.resetQuery !== null) {
      const started = server.runInternal(this.settings.resetQuery, 10_000);
      started.then(
        () => {
          // The reset (DISCARD ALL) dropped every prepared statement and setting.
          server.forgetAllStatements();
          server.settingsSignature = '';
          this.returnToService(server);
        },
        (err: Error) => {
          logger.warn({ server: server.id, err: err.message }, 'server reset failed; closing it');
          this.discard(server);
        },
      );
      return;
    }
    this.returnToService(server);
  }

  /** Settings signatures a server has accepted: later logins with them skip the check. */
  private readonly validSettings = new Set<string>();

  /**
   * Checks a client's startup settings once per distinct set, by running them on a server, as
   * PostgreSQL checks them at login. Rejects with PostgreSQL's error (e.g. 22023) as FATAL.
   */
  async validateSettings(signature: string, sql: string): Promise<void> {
    if (signature === '' || this.validSettings.has(signature)) return;
    const server = await new Promise<ServerConnection>((resolve, reject) =>
      this.acquire({ onServerAcquired: resolve, onAcquireFailed: reject }),
    );
    try {
      await server.runInternal(sql, 10_000);
      server.settingsSignature = signature;
      this.validSettings.add(signature);
      this.release(server, true);
    } catch (err) {
      this.release(server, err instanceof InternalQueryError);
      if (err instanceof InternalQueryError) {
        throw new ProxyError(err.fields.C ?? SqlState.InternalError, err.message, {
          severity: 'FATAL',
          ...(err.fields.D ? { detail: err.fields.D } : {}),
          ...(err.fields.H ? { hint: err.fields.H } : {}),
        });
      }
      throw err;
    }
  }

  /** Resolves the server's ParameterStatus values, connecting once if no server ever has. */
  parametersForLogin(): Promise<Map<string, string>> {
    if (this.serverParameters) return Promise.resolve(this.serverParameters);
    return new Promise((resolve, reject) => {
      this.acquire({
        onServerAcquired: (server) => {
          this.release(server, true);
          resolve(this.serverParameters ?? server.parameters);
        },
        onAcquireFailed: reject,
      });
    });
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Servers in use now (for admin views). */
  get activeCount(): number {
    return this.total - this.idle.length - this.connecting;
  }

  /** The idle server connections (for admin views). */
  get idleServers(): readonly ServerConnection[] {
    return this.idle;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    while (this.waiting.length > 0) {
      const server = this.takeIdle();
      if (!server) break;
      this.handIdle(server, this.waiting.shift()!.waiter);
    }
    this.maybeConnect();
  }

  stats(): PoolStats {
    const now = Date.now();
    return {
      database: this.database,
      user: this.user,
      active: this.total - this.idle.length - this.connecting,
      idle: this.idle.length,
      connecting: this.connecting,
      waiting: this.waiting.length,
      maxWaitMs: this.waiting.length > 0 ? now - this.waiting[0]!.since : 0,
    };
  }

  /** Periodic upkeep: wait deadlines, idle and lifetime expiry, min pool size. */
  tick(now: number): void {
    this.deadline?.sweep(this.servers, now);
    while (this.waiting.length > 0 && this.waiting[0]!.deadline <= now) {
      const { waiter } = this.waiting.shift()!;
      waiter.onAcquireFailed(
        new ProxyError(
          SqlState.QueryCanceled,
          'query_wait_timeout: no server connection became free in time',
          {
            hint: 'the pool is saturated; raise pool_size or query_wait_timeout, or look for long transactions',
          },
        ),
      );
    }
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const server = this.idle[i]!;
      const expired = now - server.createdAt > this.settings.lifetimeMs;
      const idleTooLong =
        this.settings.idleTimeoutMs > 0 &&
        now - server.lastUsedAt > this.settings.idleTimeoutMs &&
        this.total > this.settings.minSize;
      if (expired || idleTooLong || server.closed) {
        this.idle.splice(i, 1);
        this.discard(server);
      }
    }
    if (this.everConnected) {
      while (this.total < this.settings.minSize) this.connectOne();
    }
  }

  close(): void {
    clearTimeout(this.retryTimer);
    this.hub?.close();
    for (const server of this.idle.splice(0)) this.discard(server);
    for (const { waiter } of this.waiting.splice(0)) {
      waiter.onAcquireFailed(
        new ProxyError(SqlState.AdminShutdown, 'pool is shutting down', { severity: 'FATAL' }),
      );
    }
  }

  private takeIdle(): ServerConnection | undefined {
    const now = Date.now();
    let server = this.idle.pop();
    while (server && (server.closed || now - server.createdAt > this.settings.lifetimeMs)) {
      this.discard(server);
      server = this.idle.pop();
    }
    return server;
  }

  /**
   * Hands an idle server to a waiter, first running server_check_query on one idle longer than
   * server_check_delay (as PgBouncer does): a server whose upstream went silent while it sat in
   * the pool is found dead here, not under a client. A failed check closes it and tries again.
   */
  private handIdle(server: ServerConnection, waiter: PoolWaiter): void {
    const { checkQuery, checkDelayMs = 0, checkTimeoutMs = 10_000 } = this.settings;
    if (checkQuery === undefined || checkQuery === null || Date.now() - server.lastUsedAt < checkDelayMs) {
      waiter.onServerAcquired(server);
      return;
    }
    server.runInternal(checkQuery, checkTimeoutMs).then(
      () => {
        server.lastUsedAt = Date.now();
        waiter.onServerAcquired(server);
      },
      (err: Error) => {
        logger.warn({ server: server.id, err: err.message }, 'server check failed; closing it');
        this.discard(server);
        this.acquire(waiter);
      },
    );
  }

  private returnToService(server: ServerConnection): void {
    if (server.closed) {
      this.servers.delete(server);
      this.total--;
      this.maybeConnect();
      return;
    }
    const next = this.paused ? undefined : this.waiting.shift();
    if (next) {
      next.waiter.onServerAcquired(server);
      return;
    }
    this.idle.push(server);
  }

  private discard(server: ServerConnection): void {
    this.servers.delete(server);
    server.onClosed = undefined;
    server.close();
    this.total--;
    this.maybeConnect();
  }

  /** Opens connections while clients wait and the pool has room (beyond those already opening). */
  private maybeConnect(): void {
    if (this.paused) return;
    while (this.waiting.length > this.connecting && this.total < this.settings.size) this.connectOne();
  }

  private connectOne(): void {
    this.total++;
    this.connecting++;
    this.breaker.connect(this.target).then(
      (server) => {
        this.connecting--;
        this.everConnected = true;
        if (!this.serverParameters) this.serverParameters = new Map(server.parameters);
        this.servers.add(server);
        server.onClosed = (s) => this.onIdleServerClosed(s);
        this.returnToService(server);
      },
      (err: Error) => {
        this.connecting--;
        this.total--;
        // The breaker already logged why it opened: one line per refused client would flood.
        if (!(err instanceof BreakerOpenError)) {
          logger.warn(
            { database: this.database, user: this.user, err: err.message },
            'server connection failed',
          );
        }
        if (err instanceof LoginInterruptedError && this.waiting.length > 0) {
          this.retryTimer ??= setTimeout(() => {
            this.retryTimer = undefined;
            this.maybeConnect();
          }, LOGIN_RETRY_MS);
          this.retryTimer.unref();
          return;
        }
        // PostgreSQL refused (or the breaker did): one failed attempt fails one waiter; the others
        // keep waiting for the next attempt.
        const next = this.waiting.shift();
        next?.waiter.onAcquireFailed(err);
        this.maybeConnect();
      },
    );
  }

  private onIdleServerClosed(server: ServerConnection): void {
    const i = this.idle.indexOf(server);
    if (i >= 0) {
      this.idle.splice(i, 1);
      this.servers.delete(server);
      this.total--;
      this.maybeConnect();
    }
  }
}
