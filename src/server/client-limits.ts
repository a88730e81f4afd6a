// Owns the per-user and per-database client connection limits (max_user_client_connections,
// max_db_client_connections): counting admitted clients and refusing the one over the limit.
import { ProxyError } from '../protocol/proxy-error.js';
import { SqlState } from '../protocol/sqlstate.js';

export interface ClientLimitSettings {
  /** 0: no limit. */
  perUser: number;
  perDatabase: number;
}

export class ClientLimits {
  private readonly users = new Map<string, number>();
  private readonly databases = new Map<string, number>();

  constructor(private readonly settings: ClientLimitSettings) {}

  /**
   * Counts the client in, or throws 53300 (worded as PostgreSQL's per-role and per-database
   * limits); `release` with the same names counts it out.
   */
  admit(user: string, database: string): void {
    const { perUser, perDatabase } = this.settings;
    const userCount = this.users.get(user) ?? 0;
    const databaseCount = this.databases.get(database) ?? 0;
    if (perUser > 0 && userCount >= perUser) {
      throw new ProxyError(SqlState.TooManyConnections, `too many connections for role "${user}"`, {
        severity: 'FATAL',
        detail: `max_user_client_connections is ${perUser}`,
      });
    }
    if (perDatabase > 0 && databaseCount >= perDatabase) {
      throw new ProxyError(SqlState.TooManyConnections, `too many connections for database "${database}"`, {
        severity: 'FATAL',
        detail: `max_db_client_connections is ${perDatabase}`,
      });
    }
    this.users.set(user, userCount + 1);
    this.databases.set(database, databaseCount + 1);
  }

  release(user: string, database: string): void {
    decrement(this.users, user);
    decrement(this.databases, database);
  }
}

function decrement(counts: Map<string, number>, key: string): void {
  const n = (counts.get(key) ?? 1) - 1;
  if (n <= 0) counts.delete(key);
  else counts.set(key, n);
}
