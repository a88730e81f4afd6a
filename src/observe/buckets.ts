// Owns the hot-path half of a Prometheus histogram: cumulative bucket counts in plain arrays that
// an observation bumps with a few comparisons, exported by a prom-client metric at scrape time.

/** What prom-client's Registry reads from a metric's get() (its own types are not exported). */
export interface ScrapedValue {
  metricName?: string;
  labels: Record<string, string | number>;
  value: number;
}
export interface ScrapedMetric {
  name: string;
  help: string;
  type: 'histogram';
  values: ScrapedValue[];
  aggregator: 'sum';
}

/** Upper bounds in seconds: 100 µs (a cached or point read) to 10 s (a report gone wrong). */
export const QUERY_BUCKETS: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** Pool waits are zero in a healthy pool; the upper buckets show saturation. */
export const WAIT_BUCKETS: readonly number[] = [
  0.00001, 0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120,
];

/** One labelled series: a count per bucket (not cumulative until exported), its sum and count. */
export class BucketSeries {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    readonly labels: Readonly<Record<string, string>>,
    readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(seconds: number): void {
    const bounds = this.bounds;
    let i = 0;
    // Linear: at most 16 comparisons, and the common (fast) values exit in the first few.
    while (i < bounds.length && seconds > bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += seconds;
    this.count++;
  }
}

/**
 * A prom-client metric (registered with `registry.registerMetric`) whose series come from
 * `series()` at scrape time, so no prom-client call happens per observation.
 */
export class BucketHistogramMetric {
  readonly type = 'histogram' as const;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly series: () => Iterable<BucketSeries>,
  ) {}

  get(): Promise<ScrapedMetric> {
    const values: ScrapedValue[] = [];
    for (const s of this.series()) {
      let cumulative = 0;
      for (let i = 0; i < s.bounds.length; i++) {
        cumulative += s.counts[i]!;
        values.push({
          metricName: `${this.name}_bucket`,
          labels: { ...s.labels, le: s.bounds[i]! },
          value: cumulative,
        });
      }
      values.push({
        metricName: `${this.name}_bucket`,
        labels: { ...s.labels, le: '+Inf' },
        value: s.count,
      });
      values.push({ metricName: `${this.name}_sum`, labels: { ...s.labels }, value: s.sum });
      values.push({ metricName: `${this.name}_count`, labels: { ...s.labels }, value: s.count });
    }
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      values,
      aggregator: 'sum',
    });
  }

  // prom-client's Registry calls these on the metrics it holds.
  reset(): void {}
  async getForPromString(): Promise<ScrapedMetric> {
    return this.get();
  }
}
