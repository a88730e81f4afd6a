// Owns latency recording: HDR histograms (hdr-histogram-js) fed one value per operation — by a
// Node-driven scenario as it goes, or from pgbench's per-transaction log (`-l`) — and their
// summaries (count, percentiles, the percentile curve the charts draw).

import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import hdr from 'hdr-histogram-js';

/** Percentiles kept for the curve in results.json and the latency charts. */
export const CURVE_PERCENTILES = [0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100];

/** A histogram of µs values, 1 µs to one hour, 3 significant digits. */
export function newHistogram() {
  return hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 3_600_000_000,
    numberOfSignificantValueDigits: 3,
  });
}

/** Records one latency in µs (fractions rounded; values below 1 µs count as 1 µs). */
export function recordUs(histogram, us) {
  histogram.recordValue(Math.max(1, Math.round(us)));
}

/** Starts a timer; calling the returned function records the µs since into `histogram`. */
export function startTimer(histogram) {
  const t0 = performance.now();
  return () => recordUs(histogram, (performance.now() - t0) * 1000);
}

/**
 * A histogram's figures in µs: { count, min, mean, p50, p90, p95, p99, p999, max, curve }, curve
 * being [[percentile, µs]] at CURVE_PERCENTILES; null when nothing was recorded.
 */
export function summarise(histogram) {
  if (!histogram || histogram.totalCount === 0) return null;
  const at = (p) => histogram.getValueAtPercentile(p);
  return {
    count: histogram.totalCount,
    min: histogram.minNonZeroValue,
    mean: Math.round(histogram.mean * 10) / 10,
    p50: at(50),
    p90: at(90),
    p95: at(95),
    p99: at(99),
    p999: at(99.9),
    max: histogram.maxValue,
    curve: CURVE_PERCENTILES.map((p) => [p, p === 0 ? histogram.minNonZeroValue : at(p)]),
  };
}

/**
 * Reads the logs of `pgbench -l --log-prefix <prefix>` (one file per thread, `<prefix>.<pid>` and
 * `<prefix>.<pid>.<thread>`; each line `client_id transaction_no time script_no time_epoch time_us
 * …`, `time` being the transaction's latency in µs or "failed"/"skipped") into a histogram.
 * Resolves { histogram, failed, files }.
 */
export async function histogramFromPgbenchLog(prefix) {
  const dir = path.dirname(prefix);
  const base = path.basename(prefix);
  const files = (await readdir(dir)).filter((f) => f === base || f.startsWith(`${base}.`));
  const histogram = newHistogram();
  let failed = 0;
  for (const f of files) {
    const text = await readFile(path.join(dir, f), 'utf8');
    let start = 0;
    while (start < text.length) {
      let end = text.indexOf('\n', start);
      if (end === -1) end = text.length;
      // The third field, without splitting the whole line.
      const a = text.indexOf(' ', start);
      const b = a === -1 ? -1 : text.indexOf(' ', a + 1);
      const c = b === -1 ? -1 : text.indexOf(' ', b + 1);
      if (b !== -1 && b < end) {
        const v = Number(text.slice(b + 1, c === -1 || c > end ? end : c));
        if (Number.isFinite(v)) recordUs(histogram, v);
        else failed++;
      }
      start = end + 1;
    }
  }
  return { histogram, failed, files: files.length };
}
