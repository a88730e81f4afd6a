// Owns query_timeout: a sweep over one pool's server connections, run from the pool's periodic
// tick, that finds a request waiting on its server too long. Nothing is timed per message: the
// sweep notes when it first saw a server owe a ReadyForQuery, and any ReadyForQuery since
// (ServerConnection.readyCount) counts as progress, as PgBouncer's janitor checks request times.
import { ProxyError } from '../protocol/proxy-error.js';
import { SqlState } from '../protocol/sqlstate.js';
import type { ServerConnection, ServerOwner } from './server-connection.js';

interface Seen {
  owner: ServerOwner;
  readyCount: number;
  since: number;
}

export class QueryDeadline {
  private readonly seen = new WeakMap<ServerConnection, Seen>();

  constructor(readonly timeoutMs: number) {}

  /**
   * Calls onQueryTimeout for each server whose owner has waited on it, with no ReadyForQuery in
   * between, for timeoutMs. The overshoot is at most one sweep interval.
   */
  sweep(servers: Iterable<ServerConnection>, now: number): void {
    for (const server of servers) {
      const owner = server.currentOwner;
      if (owner === null || owner.onQueryTimeout === undefined || owner.awaitingReply !== true) {
        this.seen.delete(server);
        continue;
      }
      const seen = this.seen.get(server);
      if (seen === undefined) {
        this.seen.set(server, { owner, readyCount: server.readyCount, since: now });
      } else if (seen.owner !== owner || seen.readyCount !== server.readyCount) {
        seen.owner = owner;
        seen.readyCount = server.readyCount;
        seen.since = now;
      } else if (now - seen.since >= this.timeoutMs) {
        this.seen.delete(server);
        owner.onQueryTimeout(server, this.timeoutMs);
      }
    }
  }
}

/** 57014, as PostgreSQL's statement_timeout says it, naming Sluice's own setting. */
export function queryTimeoutError(timeoutMs: number, fatal: boolean): ProxyError {
  return new ProxyError(
    SqlState.QueryCanceled,
    `canceling statement due to query_timeout (${timeoutMs / 1000} s without a reply from the server)`,
    {
      severity: fatal ? 'FATAL' : 'ERROR',
      detail:
        'Sluice sent a cancel request and closed the server connection. A statement that had already ' +
        'committed on the server stays committed.',
      hint: fatal
        ? 'the session or transaction state lived on that server connection, so this connection is closed too'
        : 'the server may be overloaded or unreachable; raise query_timeout for longer statements',
    },
  );
}
