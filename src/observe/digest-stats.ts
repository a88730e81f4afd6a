// Owns per-digest statistics (the pg_stat_statements view from the proxy) and which digests
// get their own `digest` label on the query-duration histogram: a bounded set of entries, the
// heaviest by time spent, everything else folded into `other`.
import { createHash } from 'node:crypto';
import type { Histogram } from 'hdr-histogram-js';
// The plain-JS histograms only: the package's index also loads its WebAssembly variant (a base64
// module, pako, the AssemblyScript loader), about 3.5 MB resident that build() never uses here.
import { constructorFromBucketSize } from 'hdr-histogram-js/dist/JsHistogramFactory.js';
import { BucketSeries, QUERY_BUCKETS } from './buckets.js';

export interface DigestEntry {
  readonly pool: string;
  readonly digest: string;
  /** Statements answered by the server. */
  calls: number;
  totalSeconds: number;
  /** From CommandComplete tags (SELECT n, INSERT 0 n, ...). */
  rows: number;
  /** Requests answered from the result cache instead (not in calls). */
  cacheHits: number;
  /** Server time in microseconds. */
  readonly latency: Histogram;
  /** Where this digest's observations go: its own labelled series, or its pool's `other`. */
  sink: BucketSeries;
  labelled: boolean;
}

export interface DigestStatsOptions {
  /** Digests with a label of their own on sluice_query_duration_seconds (the rest: `other`). */
  topN: number;
  /** Entries kept for SHOW DIGESTS and /status; beyond it the one with least time goes. */
  maxTracked: number;
}

/** Prometheus label values are bounded in length too: long digests are cut. */
const MAX_LABEL_CHARS = 200;

const Int32Histogram = constructorFromBucketSize(32);

/** What hdr-histogram-js's build({ numberOfSignificantValueDigits: 2 }) makes. */
function newLatencyHistogram(): Histogram {
  const histogram = new Int32Histogram(1, 2, 2);
  histogram.autoResize = true;
  return histogram;
}

export class DigestStats {
  /** By pool, then digest: no key string is built per statement. */
  private readonly byPool = new Map<string, Map<string, DigestEntry>>();
  private count = 0;
  private readonly others = new Map<string, BucketSeries>();
  private labelled = 0;
  /** Entries evicted since start: their numbers are gone from SHOW DIGESTS. */
  evicted = 0;

  constructor(readonly options: DigestStatsOptions) {}

  get size(): number {
    return this.count;
  }

  private *entries(): Iterable<DigestEntry> {
    for (const entries of this.byPool.values()) yield* entries.values();
  }

  /** The entry of a (pool, digest), created (and maybe labelled) on first sight. */
  entry(pool: string, digest: string): DigestEntry {
    let entries = this.byPool.get(pool);
    if (entries === undefined) {
      entries = new Map();
      this.byPool.set(pool, entries);
    }
    const found = entries.get(digest);
    if (found !== undefined) return found;
    if (this.count >= this.options.maxTracked) this.evictLightest();
    const entry: DigestEntry = {
      pool,
      digest,
      calls: 0,
      totalSeconds: 0,
      rows: 0,
      cacheHits: 0,
      // 2 significant digits, auto-resizing: 4 KiB for sub-second values. (Packed buckets are
      // smaller but cost 1.5 µs per record against 0.35 µs here.)
      latency: newLatencyHistogram(),
      sink: this.other(pool),
      labelled: false,
    };
    if (this.labelled < this.options.topN) this.label(entry);
    entries.set(digest, entry);
    this.count++;
    return entry;
  }

  record(entry: DigestEntry, seconds: number, rows: number): void {
    entry.calls++;
    entry.totalSeconds += seconds;
    entry.rows += rows;
    entry.latency.recordValue(Math.max(1, Math.round(seconds * 1e6)));
    entry.sink.observe(seconds);
  }

  /** The entries by time spent, heaviest first. */
  top(n = Number.POSITIVE_INFINITY): DigestEntry[] {
    const all = [...this.entries()].sort((a, b) => b.totalSeconds - a.totalSeconds);
    return n < all.length ? all.slice(0, n) : all;
  }

  /**
   * The histogram series to export: the labels go to the top N by time spent now (a digest that
   * drops out loses its series, one that enters starts a new one), `other` per pool holds the rest.
   * Every series only ever grows, so rate() stays right across the changes.
   */
  *querySeries(): Iterable<BucketSeries> {
    const top = new Set(this.top(this.options.topN));
    for (const entry of this.entries()) {
      if (entry.labelled && !top.has(entry)) this.unlabel(entry);
    }
    for (const entry of top) {
      if (!entry.labelled) this.label(entry);
      yield entry.sink;
    }
    yield* this.others.values();
  }

  private other(pool: string): BucketSeries {
    let series = this.others.get(pool);
    if (series === undefined) {
      series = new BucketSeries({ pool, digest: 'other' }, QUERY_BUCKETS);
      this.others.set(pool, series);
    }
    return series;
  }

  private label(entry: DigestEntry): void {
    // Cut digests end with a hash of the whole text, so two that share a prefix stay two series.
    const digest =
      entry.digest.length > MAX_LABEL_CHARS
        ? `${entry.digest.slice(0, MAX_LABEL_CHARS - 10)}… ${createHash('sha1').update(entry.digest).digest('hex').slice(0, 8)}`
        : entry.digest;
    entry.sink = new BucketSeries({ pool: entry.pool, digest }, QUERY_BUCKETS);
    entry.labelled = true;
    this.labelled++;
  }

  private unlabel(entry: DigestEntry): void {
    entry.sink = this.other(entry.pool);
    entry.labelled = false;
    this.labelled--;
  }

  /**
   * New digests are what arrives when the set is full, so the one that goes is the lightest:
   * a flood of one-off texts evicts each other while the heavy digests stay. A scan, but only
   * on a new digest with the set full.
   */
  private evictLightest(): void {
    let lightest: DigestEntry | undefined;
    for (const entries of this.byPool.values()) {
      for (const entry of entries.values()) {
        if (lightest === undefined || entry.totalSeconds < lightest.totalSeconds) lightest = entry;
      }
    }
    if (lightest === undefined) return;
    if (lightest.labelled) this.unlabel(lightest);
    this.byPool.get(lightest.pool)?.delete(lightest.digest);
    this.count--;
    this.evicted++;
  }
}
