// A bounded slice of `npm run fuzz`: mutated frames into the decoders in-process, and mutated
// startup packets, auth exchanges and message streams against Sluice child processes (SCRAM and
// md5), with a canary client querying throughout. The long run is `npm run fuzz` (10M frames).
import { randomInt } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase, dropTestDatabase, pgInfo } from './harness/database.js';
import { execFileAsync } from './harness/proxy.js';

const FUZZ = path.join(import.meta.dirname, '..', '..', 'fuzz', 'run.mjs');

interface FuzzReport {
  seed: number;
  frames: number;
  inProcess: { frames: number; findings: unknown[] };
  live: {
    frames: number;
    sessions: number;
    rejected: number;
    crashes: unknown[];
    maxRssMB: number;
    canary: { queries: number; failures: number; dirty: number; errors: string[] };
    findings: unknown[];
  };
}

let db: string;

beforeAll(async () => {
  db = await createTestDatabase('fuzz');
});

afterAll(async () => {
  await dropTestDatabase(db);
});

it('survives mutated startup, auth and message streams, answering every refusal with an error', async () => {
  const { host, port, user, password } = pgInfo();
  const upstream = `postgres://${user}:${encodeURIComponent(password)}@${host}:${port}/postgres`;
  const seed = randomInt(2 ** 31);
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync(
      process.execPath,
      [
        FUZZ,
        '--json',
        '--frames',
        '30000',
        '--live-share',
        '0.15',
        '--seed',
        String(seed),
        '--upstream',
        upstream,
        '--database',
        db,
      ],
      { timeout: 100_000, killSignal: 'SIGTERM', maxBuffer: 64 * 1024 * 1024, env: { ...process.env } },
    ));
  } catch (err) {
    // Exit code 1 means findings: the report on stdout says which.
    const e = err as { stdout?: string; stderr?: string; message: string };
    if (!e.stdout) throw new Error(`fuzz run failed (seed ${seed}): ${e.message}\n${e.stderr}`);
    stdout = e.stdout;
  }
  const report = JSON.parse(stdout.trim().split('\n').pop() ?? '') as FuzzReport;
  const context = `seed ${seed}: ${JSON.stringify({ ...report.live, rssMB: undefined }).slice(0, 4000)}`;
  expect(report.inProcess.findings, context).toEqual([]);
  expect(report.inProcess.frames).toBeGreaterThanOrEqual(25_500);
  expect(report.live.crashes, context).toEqual([]);
  expect(report.live.findings, context).toEqual([]);
  expect(report.live.frames).toBeGreaterThanOrEqual(4_500);
  expect(report.live.canary.failures, context).toBe(0);
  expect(report.live.canary.dirty, context).toBe(0);
  expect(report.live.canary.queries).toBeGreaterThan(0);
  // The ErrorResponse check ran: some sessions were refused and closed by Sluice.
  expect(report.live.rejected).toBeGreaterThan(0);
}, 120_000);
