// Owns the Sluice under test: the built CLI (dist/cli.js) run as a child process in transaction
// mode, optionally under `node --cpu-prof`, stopped by PID on cleanup.

import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { onCleanup } from './cleanup.mjs';
import { REPO_ROOT } from './postgres.mjs';
import { freePort, run, spawnLogged, stopProcess, waitUntilServing } from './processes.mjs';

export const SLUICE_CLI = path.join(REPO_ROOT, 'dist/cli.js');
export const PROFILE_DIR = path.join(REPO_ROOT, 'bench/results/profiles');

/** Undefined when `node dist/cli.js serve --help` works, else why Sluice cannot be benchmarked. */
export async function sluiceUnavailable() {
  if (!existsSync(SLUICE_CLI)) return 'dist/cli.js not found (run `npm run build`)';
  const r = await run(process.execPath, [SLUICE_CLI, 'serve', '--help'], { timeoutMs: 20_000 });
  if (r.code !== 0) {
    const why = (r.stderr || r.stdout).trim().split('\n').slice(0, 3).join(' ');
    return `\`node dist/cli.js serve --help\` failed (code ${r.code}): ${why}`;
  }
  if (!r.stdout.includes('--listen')) return '`node dist/cli.js serve --help` does not offer --listen yet';
  return undefined;
}

/**
 * Starts `sluice serve` in front of `upstream` ({ host, port, user, password }) with trust auth for
 * clients; resolves { host, port, pid, logFile, profileDir?, stop } once psql gets through it.
 * `extraArgs` go after the standard ones (e.g. `['--cache']`); none by default.
 */
export async function startSluice(upstream, { poolSize = 20, profile = false, extraArgs = [] } = {}) {
  const dir = await mkdtemp(path.join(tmpdir(), 'sluice-bench-sluice-'));
  onCleanup('sluice log dir', () => rm(dir, { recursive: true, force: true }));
  const logFile = path.join(dir, 'sluice.log');
  const port = await freePort();
  const url = new URL('postgres://127.0.0.1/postgres');
  url.hostname = upstream.host;
  url.port = String(upstream.port);
  url.username = encodeURIComponent(upstream.user);
  url.password = encodeURIComponent(upstream.password);
  // The V8 flags the `sluice` command's shebang gives node (src/node-startup-flags.ts).
  const { NODE_STARTUP_FLAGS } = await import(path.join(REPO_ROOT, 'dist/node-startup-flags.js'));
  const nodeArgs = [...NODE_STARTUP_FLAGS];
  if (profile) {
    await mkdir(PROFILE_DIR, { recursive: true });
    nodeArgs.push('--cpu-prof', '--cpu-prof-dir', PROFILE_DIR);
  }
  const args = [
    ...nodeArgs,
    SLUICE_CLI,
    'serve',
    '--listen',
    `127.0.0.1:${port}`,
    '--upstream',
    url.href,
    '--auth',
    'trust',
    '--pool-mode',
    'transaction',
    '--pool-size',
    String(poolSize),
    ...extraArgs,
  ];
  const before = profile ? new Set(await listProfiles()) : new Set();
  const child = spawnLogged(process.execPath, args, { logFile, cwd: REPO_ROOT });
  const stop = async () => {
    // SIGTERM rather than SIGKILL first: --cpu-prof writes its profile only on an orderly exit.
    await stopProcess(child, { signal: 'SIGTERM', graceMs: 15_000 });
  };
  onCleanup('sluice', stop);
  const conn = { host: '127.0.0.1', port, user: upstream.user, password: '' };
  const problem = await waitUntilServing(conn, { child, timeoutMs: 30_000, logFile });
  if (problem) {
    await stop();
    throw new Error(`Sluice ${problem}`);
  }
  return {
    ...conn,
    pid: child.pid,
    child,
    logFile,
    command: `node ${args.map((a) => (a === url.href ? url.href.replace(/:[^:@/]*@/, ':***@') : a)).join(' ')}`,
    /** Profiles written since start (call after stop). */
    newProfiles: async () => (await listProfiles()).filter((f) => !before.has(f)),
    stop,
  };
}

async function listProfiles() {
  try {
    return (await readdir(PROFILE_DIR))
      .filter((f) => f.endsWith('.cpuprofile'))
      .map((f) => path.join(PROFILE_DIR, f));
  } catch {
    return [];
  }
}
