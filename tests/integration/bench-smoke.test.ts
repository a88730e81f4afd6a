// The bench harness end to end, kept small: the suite's ingestion scenario for 1 s per cell
// against the test PostgreSQL (--upstream) and one Sluice, then the report directory's three kinds
// of output must exist and parse.
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';
import { pgInfo } from './harness/database.js';

const execFileAsync = promisify(execFile);
let outDir: string | undefined;

afterAll(async () => {
  if (outDir) await rm(outDir, { recursive: true, force: true });
});

it('npm run bench -- --scenarios ingest writes results.json, summary.md and SVG charts', async () => {
  const { host, port, user, password } = pgInfo();
  outDir = await mkdtemp(path.join(os.tmpdir(), 'bench-smoke-'));
  const upstream = `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${host}:${port}/postgres`;
  await execFileAsync(
    process.execPath,
    [
      'bench/run.mjs',
      '--scenarios',
      'ingest',
      '--duration',
      '1',
      '--targets',
      'direct,sluice',
      '--upstream',
      upstream,
      '--out',
      outDir,
    ],
    { timeout: 55_000, maxBuffer: 16 * 1024 * 1024 },
  );

  const results = JSON.parse(await readFile(path.join(outDir, 'results.json'), 'utf8'));
  expect(results.suite).toBe(true);
  expect(results.machine.nproc).toBeGreaterThan(0);
  expect(results.machine.gitCommit).toMatch(/\S/);
  expect(results.targets.sluice.available).toBe(true);
  expect(results.targets.pgbouncer.available).toBe(false);
  const ingest = results.scenarios.find((s: { id: string }) => s.id === 'ingest');
  expect(ingest.error).toBeUndefined();
  expect(ingest.rows.map((r: { id: string }) => r.id)).toEqual(['copy', 'insert']);
  for (const row of ingest.rows) {
    for (const target of ['direct', 'sluice']) {
      const cell = row.cells[target];
      expect(cell.error).toBeUndefined();
      expect(cell.throughput).toBeGreaterThan(0);
      // Every acknowledged row is in the table, and every batch is in the histogram.
      expect(cell.rowsStored).toBe(cell.rows);
      expect(cell.latency.count).toBe(cell.batches);
      expect(cell.latency.p99).toBeGreaterThanOrEqual(cell.latency.p50);
    }
  }

  const summary = await readFile(path.join(outDir, 'summary.md'), 'utf8');
  expect(summary).toContain('## Market-data ingestion');
  expect(summary).toMatch(/\| COPY, 4 writers .*\| Sluice cache off \| [\d,]+ rows\/s \| [\d.]+× \|/);

  const svgs = (await readdir(outDir)).filter((f) => f.endsWith('.svg'));
  expect(svgs).toEqual(expect.arrayContaining(['ingest-throughput.svg', 'ingest-copy-latency.svg']));
  for (const f of svgs) {
    const svg = await readFile(path.join(outDir, f), 'utf8');
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
  }
  expect(results.charts.sort()).toEqual(svgs.sort());
});
