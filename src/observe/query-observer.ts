// Owns one client session's view for metrics: which digest each request owed a ReadyForQuery
// belongs to, when it went out, the rows its CommandCompletes reported, and the pool wait. The
// session calls it with a line per event; everything here is a few numbers and a Map lookup.
import { performance } from 'node:perf_hooks';
import { peekBindStatement, peekParseName } from '../protocol/statement-frames.js';
import type { BucketSeries } from './buckets.js';
import type { DigestEntry } from './digest-stats.js';
import type { SluiceMetrics } from './metrics.js';

/** Named statements remembered per session; beyond this the map starts afresh. */
const MAX_NAMED = 1000;

/** Never written to (see QueryObserver.named). */
const NO_NAMED = new Map<string, DigestEntry>();

export class QueryObserver {
  /** Requests sent and not yet answered (FIFO, as their ReadyForQuery replies arrive). */
  private readonly pendingEntries: (DigestEntry | undefined)[] = [];
  private readonly pendingSince: number[] = [];
  private current: DigestEntry | undefined;
  private unnamed: DigestEntry | undefined;
  /** Shared and empty until the first named Parse: an idle client carries no Map of its own. */
  private named = NO_NAMED;
  private lastReadyAt = 0;
  private acquireStartedAt = 0;
  private acquiredAt = 0;
  private rows = 0;
  private readonly poolWait: BucketSeries;

  constructor(
    private readonly metrics: SluiceMetrics,
    readonly pool: string,
  ) {
    this.poolWait = metrics.poolWaitSeries(pool);
  }

  /** A simple-protocol Query frame: its text is the statement. */
  onQuery(buf: Buffer, start: number, end: number): void {
    this.current = this.metrics.entryFor(this.pool, buf.toString('utf8', start + 5, end - 1));
  }

  /** A Parse frame whose query text lies at [queryStart, queryEnd). */
  onParse(buf: Buffer, start: number, end: number, queryStart: number, queryEnd: number): void {
    const entry = this.metrics.entryFor(this.pool, buf.toString('utf8', queryStart, queryEnd));
    const name = peekParseName(buf, start, end);
    if (name === '' || name === undefined) {
      this.unnamed = entry;
    } else {
      if (this.named === NO_NAMED || this.named.size >= MAX_NAMED) this.named = new Map();
      this.named.set(name, entry);
    }
    this.current = entry;
  }

  /** A Bind: the statement it runs is the current one. */
  onBind(buf: Buffer, start: number, end: number): void {
    const target = peekBindStatement(buf, start, end);
    if (target !== undefined) this.current = target.name === '' ? this.unnamed : this.named.get(target.name);
  }

  /** A Query or Sync went out (or will, once a server is there): one ReadyForQuery will answer it. */
  expect(): void {
    this.pendingEntries.push(this.current);
    this.pendingSince.push(performance.now());
  }

  /** COPY IN: the last n Syncs will not be answered. */
  unexpect(n: number): void {
    for (let i = 0; i < n; i++) {
      this.pendingEntries.pop();
      this.pendingSince.pop();
    }
  }

  /** Sluice answered the oldest request itself (cache, LISTEN hub): nothing to time. */
  answeredLocally(): void {
    this.pendingEntries.shift();
    this.pendingSince.shift();
  }

  /** The requests in flight were dropped (an error answered them all, the server was lost). */
  reset(): void {
    this.pendingEntries.length = 0;
    this.pendingSince.length = 0;
    this.rows = 0;
  }

  onCommandComplete(buf: Buffer, start: number, end: number): void {
    // The tag's last word is the row count when there is one: "SELECT 5", "INSERT 0 5".
    let i = end - 2;
    let n = 0;
    let scale = 1;
    while (i > start + 5) {
      const c = buf[i]!;
      if (c < 0x30 || c > 0x39) break;
      n += (c - 0x30) * scale;
      scale *= 10;
      i--;
    }
    if (scale > 1 && buf[i] === 0x20) this.rows += n;
  }

  /**
   * A ReadyForQuery from the server: the oldest request is answered. Its time runs from when it
   * could reach the server (sent, the server acquired, or the previous reply in a pipeline) to now.
   */
  onReady(): void {
    const now = performance.now();
    const entry = this.pendingEntries.shift();
    const since = this.pendingSince.shift();
    const rows = this.rows;
    this.rows = 0;
    if (since !== undefined) {
      const from = Math.max(since, this.acquiredAt, this.lastReadyAt);
      this.metrics.recordQuery(this.pool, entry, (now - from) / 1000, rows);
    }
    this.lastReadyAt = now;
  }

  onCacheHit(): void {
    this.metrics.recordCacheHit(this.current);
  }

  onAcquireStart(): void {
    this.acquireStartedAt = performance.now();
  }

  onAcquired(): void {
    const now = performance.now();
    this.acquiredAt = now;
    if (this.acquireStartedAt > 0) this.poolWait.observe((now - this.acquireStartedAt) / 1000);
    this.acquireStartedAt = 0;
  }
}
