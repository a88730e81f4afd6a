// Tests DigestStats (per-digest statistics and the bounded digest labels of the query-duration
// histogram) and the logger's redaction of passwords and statement values.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { DigestStats } from '../../src/observe/digest-stats.js';
import { REDACTED_PATHS } from '../../src/observe/logger.js';

function labelsOf(stats: DigestStats): string[] {
  return [...stats.querySeries()].map((s) => `${s.labels.pool}|${s.labels.digest}`);
}

describe('DigestStats', () => {
  it('labels at most topN digests plus one "other" per pool, whatever arrives', () => {
    const stats = new DigestStats({ topN: 3, maxTracked: 50 });
    for (let i = 0; i < 500; i++) stats.record(stats.entry('db/u', `select $1 as c${i}`), 0.001 * (i % 7), 1);
    const labels = labelsOf(stats);
    expect(labels.length).toBeLessThanOrEqual(4);
    expect(labels).toContain('db/u|other');
    expect(stats.size).toBeLessThanOrEqual(50);
  });

  it('gives the labels to the digests with most time spent, and keeps every series growing', () => {
    const stats = new DigestStats({ topN: 2, maxTracked: 10 });
    const a = stats.entry('p', 'a');
    const b = stats.entry('p', 'b');
    const c = stats.entry('p', 'c');
    stats.record(a, 1, 0);
    stats.record(b, 2, 0);
    stats.record(c, 0.5, 0);
    expect(labelsOf(stats).sort()).toEqual(['p|a', 'p|b', 'p|other']);
    const other = [...stats.querySeries()].find((s) => s.labels.digest === 'other')!;
    expect(other.count).toBe(1);
    // c overtakes a: until the next scrape c still counts in other; then c gets a (new) series
    // and a's later observations go to other.
    stats.record(c, 5, 0);
    expect(other.count).toBe(2);
    expect(labelsOf(stats).sort()).toEqual(['p|b', 'p|c', 'p|other']);
    stats.record(a, 0.1, 0);
    expect(other.count).toBe(3);
    expect(a.calls).toBe(2);
    expect(c.totalSeconds).toBeCloseTo(5.5);
  });

  it('evicts the lightest digest when full, so heavy ones survive a flood of one-off texts', () => {
    const stats = new DigestStats({ topN: 1, maxTracked: 5 });
    const heavy = stats.entry('p', 'heavy');
    stats.record(heavy, 10, 3);
    for (let i = 0; i < 100; i++) stats.record(stats.entry('p', `one-off ${i}`), 0.001, 0);
    expect(stats.top(1)[0]).toBe(heavy);
    expect(stats.size).toBe(5);
    expect(stats.evicted).toBe(96);
    expect(heavy.rows).toBe(3);
  });

  it('cuts long digests in labels with a hash, so two long digests stay two series', () => {
    const stats = new DigestStats({ topN: 5, maxTracked: 10 });
    const prefix = `select ${'x, '.repeat(200)}`;
    stats.record(stats.entry('p', `${prefix} a`), 0.1, 0);
    stats.record(stats.entry('p', `${prefix} b`), 0.1, 0);
    const digests = [...stats.querySeries()].map((s) => s.labels.digest!).filter((d) => d !== 'other');
    expect(digests).toHaveLength(2);
    expect(new Set(digests).size).toBe(2);
    for (const d of digests) expect(d.length).toBeLessThanOrEqual(200);
  });

  it('reports p50 and p99 from the hdr histogram', () => {
    const stats = new DigestStats({ topN: 5, maxTracked: 10 });
    const e = stats.entry('p', 'q');
    for (let i = 1; i <= 100; i++) stats.record(e, i / 1000, 1);
    expect(e.latency.getValueAtPercentile(50) / 1000).toBeCloseTo(50, -1);
    expect(e.latency.getValueAtPercentile(99) / 1000).toBeCloseTo(99, -1);
  });
});

describe('logger redaction', () => {
  it('never writes passwords or statement parameter values', () => {
    let out = '';
    const sink = new Writable({
      write(chunk, _enc, done) {
        out += String(chunk);
        done();
      },
    });
    const log = pino({ redact: { paths: REDACTED_PATHS, censor: '[redacted]' } }, sink);
    log.info(
      { password: 'hunter2', upstream: { password: 'pw2' }, params: ['4111-1111'], digest: 'select $1' },
      'x',
    );
    expect(out).not.toContain('hunter2');
    expect(out).not.toContain('pw2');
    expect(out).not.toContain('4111');
    expect(out).toContain('select $1');
  });
});
