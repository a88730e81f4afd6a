// Owns the circuit breaker (opossum) in front of one upstream: every new server connection and
// every half-open probe goes through it, so that while the upstream is unreachable clients get
// 57P03 at once instead of each waiting out its own connect timeout.
import CircuitBreaker from 'opossum';
import { logger } from '../observe/logger.js';
import { ProxyError } from '../protocol/proxy-error.js';
import { SqlState } from '../protocol/sqlstate.js';
import {
  InternalQueryError,
  ServerConnection,
  UpstreamRejectedError,
  type UpstreamTarget,
} from './server-connection.js';

export interface BreakerSettings {
  /** Connection attempts failing in a row (no success between them) that open the breaker. */
  failureThreshold: number;
  /** How long the breaker stays open before a half-open probe tries the upstream again. */
  resetTimeoutMs: number;
}

export type BreakerState = 'closed' | 'open' | 'half-open';

/** The breaker as plain data, for metrics, /readyz and SHOW BREAKERS. */
export interface BreakerSnapshot {
  upstream: string;
  state: BreakerState;
  /** Connection failures since the last success (reset when the upstream answers). */
  failures: number;
  /** When the breaker last opened (ms since the epoch), null while closed. */
  openedAt: number | null;
  lastError: string | null;
}

/** What a client that needs a new server connection gets while the breaker is not closed. */
export class BreakerOpenError extends ProxyError {
  constructor(upstream: string, lastError: string | null, retryMs: number) {
    super(
      SqlState.CannotConnectNow,
      `upstream ${upstream} is unreachable: Sluice is not connecting to it now`,
      {
        detail: lastError === null ? undefined : `last connection error: ${lastError}`,
        hint: `Sluice tries the upstream again every ${Math.ceil(retryMs / 1000)} s; retry later`,
      },
    );
  }
}

/**
 * True for errors that say nothing about reachability: the upstream answered (bad password,
 * unknown database, too many connections, an SQL error). Only silence, refused or dropped sockets,
 * timeouts and "cannot connect now"/shutdown answers count against the upstream.
 */
export function isUpstreamAnswer(err: unknown): boolean {
  if (err instanceof InternalQueryError) return true;
  if (err instanceof UpstreamRejectedError) return !(err.sqlState ?? '').startsWith('57P');
  return false;
}

export class UpstreamBreaker {
  private readonly breaker: CircuitBreaker<[UpstreamTarget], ServerConnection>;
  private consecutiveFailures = 0;
  private lastError: string | null = null;
  private openedAt: number | null = null;
  /** The last target connected to: what a half-open probe logs in as. */
  private probeTarget: UpstreamTarget | undefined;
  /** Called when the breaker opens, so pools fail the clients queued for a connection. */
  onOpen: (() => void) | undefined;

  constructor(
    readonly upstream: string,
    private readonly settings: BreakerSettings,
  ) {
    this.breaker = new CircuitBreaker((target: UpstreamTarget) => ServerConnection.connect(target), {
      // server_connect_timeout already bounds each attempt inside ServerConnection.
      timeout: false,
      resetTimeout: settings.resetTimeoutMs,
      // Opossum's own rule (a failure rate over a rolling window) never trips it: a window mixing
      // the successes of a busy minute with a fresh outage made "N failures" mean anything from N
      // to several times N. It trips below on failures in a row; opossum still re-opens it when a
      // half-open trial fails.
      errorThresholdPercentage: 100,
      errorFilter: isUpstreamAnswer,
    });
    this.breaker.on('success', () => {
      this.consecutiveFailures = 0;
    });
    this.breaker.on('failure', (err: Error) => {
      this.consecutiveFailures++;
      this.lastError = err.message;
      if (this.consecutiveFailures >= settings.failureThreshold && this.breaker.closed) this.breaker.open();
    });
    this.breaker.on('open', () => {
      this.openedAt ??= Date.now();
      logger.warn(
        { upstream, failures: this.consecutiveFailures, lastError: this.lastError },
        'circuit breaker open: refusing new server connections',
      );
      this.onOpen?.();
    });
    this.breaker.on('halfOpen', () => this.probe());
    this.breaker.on('close', () => {
      if (this.openedAt !== null) logger.warn({ upstream }, 'circuit breaker closed: upstream answers again');
      this.openedAt = null;
      this.consecutiveFailures = 0;
    });
  }

  /** A new authenticated server connection, or BreakerOpenError at once while not closed. */
  connect(target: UpstreamTarget): Promise<ServerConnection> {
    this.probeTarget = target;
    return this.breaker.fire(target).catch((err: Error & { code?: string }) => {
      throw err.code === 'EOPENBREAKER' ? this.openError() : err;
    });
  }

  openError(): BreakerOpenError {
    return new BreakerOpenError(this.upstream, this.lastError, this.settings.resetTimeoutMs);
  }

  get state(): BreakerState {
    if (this.breaker.closed) return 'closed';
    return this.breaker.halfOpen ? 'half-open' : 'open';
  }

  get closed(): boolean {
    return this.breaker.closed;
  }

  snapshot(): BreakerSnapshot {
    return {
      upstream: this.upstream,
      state: this.state,
      failures: this.consecutiveFailures,
      openedAt: this.openedAt,
      lastError: this.lastError,
    };
  }

  /**
   * The half-open health check: one login to the upstream through the breaker, so it closes as
   * soon as the upstream answers even when no client asks for a connection meanwhile.
   */
  private probe(): void {
    const target = this.probeTarget;
    if (target === undefined) return;
    this.breaker.fire(target).then(
      (server) => server.close(),
      (err: Error) => logger.debug({ upstream: this.upstream, err: err.message }, 'breaker probe failed'),
    );
  }

  shutdown(): void {
    this.onOpen = undefined;
    this.breaker.shutdown();
  }
}
