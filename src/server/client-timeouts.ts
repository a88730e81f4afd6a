// Owns the idle timeouts of logged-in clients (client_idle_timeout, idle_transaction_timeout): a
// periodic sweep, as PgBouncer's janitor does, so the per-message path only bumps a counter.
import { logger } from '../observe/logger.js';
import type { Pool } from '../pool/pool.js';
import type { ServerConnection } from '../pool/server-connection.js';
import type { ClientSession } from './client-session.js';

export interface IdleTimeoutSettings {
  /** Between transactions; 0: never. */
  idleMs: number;
  /** Inside a transaction, waiting for the client; 0: never. */
  idleInTransactionMs: number;
}

interface Seen {
  activity: number;
  since: number;
}

const ROLLBACK_TIMEOUT_MS = 10_000;

export class IdleSweeper {
  private readonly seen = new WeakMap<ClientSession, Seen>();
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly sessions: () => Iterable<ClientSession>,
    private readonly settings: IdleTimeoutSettings,
  ) {
    const shortest = Math.min(...[settings.idleMs, settings.idleInTransactionMs].filter((ms) => ms > 0));
    if (!Number.isFinite(shortest)) return;
    // A quarter of the shortest timeout bounds the overshoot; 1 s bounds the sweep's cost.
    this.timer = setInterval(() => this.sweep(), Math.max(50, Math.min(1000, shortest / 4)));
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private sweep(): void {
    const now = Date.now();
    const { idleMs, idleInTransactionMs } = this.settings;
    for (const session of this.sessions()) {
      const state = session.waitState;
      const seen = this.seen.get(session);
      if (!seen) {
        this.seen.set(session, { activity: session.activity, since: now });
        continue;
      }
      if (state === 'busy' || seen.activity !== session.activity) {
        seen.activity = session.activity;
        seen.since = now;
        continue;
      }
      const idleFor = now - seen.since;
      if (state === 'idle' && idleMs > 0 && idleFor >= idleMs) session.expireIdle();
      else if (state === 'in-transaction' && idleInTransactionMs > 0 && idleFor >= idleInTransactionMs) {
        session.expireIdleTransaction();
      }
    }
  }
}

/**
 * Rolls back a server a client abandoned inside a transaction and returns it to the pool when that
 * left it idle; anything else (an error, a timeout, a still-open transaction) discards it.
 */
export function rollbackAndRelease(pool: Pool, server: ServerConnection, reusable: boolean): void {
  server.detach();
  if (!reusable || server.closed) {
    pool.release(server, false);
    return;
  }
  server.runInternal('ROLLBACK', ROLLBACK_TIMEOUT_MS).then(
    () => pool.release(server, server.transactionStatus === 0x49),
    (err: Error) => {
      logger.warn(
        { server: server.id, err: err.message },
        'rollback after idle-in-transaction timeout failed',
      );
      pool.release(server, false);
    },
  );
}
