// Owns hearing about writes that bypass Sluice: per database the cache is used on, one upstream
// connection LISTENs on the channel that migration 0008's statement trigger notifies (the table's
// "schema.name", sent when the writing transaction commits), and hands each table to the cache to
// invalidate. While that connection is down, notifications are lost: once LISTEN is back the
// database's entries are orphaned, so nothing cached before or during the gap outlives it. Not
// at the loss itself: that is usually the upstream going away, when serve_stale entries are
// exactly what should stay (they stay bounded by their TTL, as without the trigger).
import { logger } from '../observe/logger.js';

/** The channel migrations/0008_sluice_write_notify.up.sql notifies. */
export const WRITE_NOTIFY_CHANNEL = 'sluice_writes';

/**
 * A startup parameter of Sluice's server connections: the trigger skips writes that carry it,
 * since Sluice has invalidated those itself (per row where it can; a notification could only
 * name the whole table).
 */
export const ORIGIN_PARAMETER = 'sluice.origin';

/** The part of a node-postgres Client the listener uses. */
export interface NotifyConnection {
  query(sql: string): Promise<unknown>;
  on(
    event: 'notification',
    listener: (message: { channel: string; payload?: string | undefined }) => void,
  ): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  on(event: 'end', listener: () => void): unknown;
  end(): Promise<void>;
}

export interface WriteNotifyOptions {
  connect(database: string): Promise<NotifyConnection>;
  /** A committed write to `table` ("schema.name") that did not come through Sluice. */
  onWrite(database: string, table: string): void;
  /** Notifications for `database` may have been missed. */
  onGap(database: string): void;
}

export interface WriteNotifyStats {
  notifications: number;
  /** Times a database's listener (re)started listening: each orphaned that database's entries. */
  gaps: number;
  /** Databases whose listener is up now. */
  listening: number;
}

const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5000;

interface Watch {
  connection: NotifyConnection | undefined;
  /** LISTEN has taken effect on `connection`. */
  up: boolean;
  attempts: number;
  retry: NodeJS.Timeout | undefined;
}

const log = logger.child({ component: 'write-notify' });

export class WriteNotifyListener {
  readonly stats: WriteNotifyStats = { notifications: 0, gaps: 0, listening: 0 };
  private readonly watches = new Map<string, Watch>();
  private closed = false;

  constructor(private readonly options: WriteNotifyOptions) {}

  /** Starts listening for `database` unless already done; returns at once. */
  watch(database: string): void {
    if (this.closed || this.watches.has(database)) return;
    const watch: Watch = { connection: undefined, up: false, attempts: 0, retry: undefined };
    this.watches.set(database, watch);
    void this.open(database, watch);
  }

  async close(): Promise<void> {
    this.closed = true;
    const connections: NotifyConnection[] = [];
    for (const watch of this.watches.values()) {
      clearTimeout(watch.retry);
      if (watch.connection) connections.push(watch.connection);
      watch.connection = undefined;
    }
    this.watches.clear();
    this.stats.listening = 0;
    await Promise.all(connections.map((c) => c.end().catch(() => {})));
  }

  private async open(database: string, watch: Watch): Promise<void> {
    let connection: NotifyConnection | undefined;
    try {
      connection = await this.options.connect(database);
      if (this.closed) {
        await connection.end().catch(() => {});
        return;
      }
      const current = connection;
      watch.connection = current;
      current.on('error', (err) =>
        log.debug({ database, err: err.message }, 'write-notify connection error'),
      );
      current.on('end', () => this.lost(database, watch, current, 'connection ended'));
      current.on('notification', (message) => {
        if (message.channel !== WRITE_NOTIFY_CHANNEL || watch.connection !== current) return;
        this.stats.notifications++;
        this.options.onWrite(database, message.payload ?? '');
      });
      await current.query(`LISTEN ${WRITE_NOTIFY_CHANNEL}`);
      if (watch.connection !== current) return;
      watch.attempts = 0;
      watch.up = true;
      this.stats.listening++;
      // Writes that committed before LISTEN took effect were never announced to us.
      this.gap(database);
      log.debug({ database }, 'listening for writes that bypass Sluice');
    } catch (err) {
      if (watch.connection === undefined || watch.connection === connection) {
        log.warn({ database, err: (err as Error).message }, 'cannot listen for writes that bypass Sluice');
        this.lost(database, watch, connection, 'listen failed');
      }
    }
  }

  private lost(database: string, watch: Watch, connection: NotifyConnection | undefined, why: string): void {
    if (this.closed || this.watches.get(database) !== watch) return;
    if (connection !== undefined && watch.connection !== connection) return;
    if (watch.connection !== undefined) {
      watch.connection = undefined;
      if (watch.up) this.stats.listening--;
      watch.up = false;
      connection?.end().catch(() => {});
    }
    log.debug({ database, why }, 'write-notify listener down');
    const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** watch.attempts++);
    clearTimeout(watch.retry);
    watch.retry = setTimeout(() => void this.open(database, watch), delay);
    watch.retry.unref();
  }

  private gap(database: string): void {
    this.stats.gaps++;
    this.options.onGap(database);
  }
}
