// Owns child processes and readiness: spawning with logs to a file, bounded waits, stopping by PID,
// free ports, and the "TCP connect + psql select 1" readiness probe.

import { execFile, spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { trackPid, untrackPid } from './cleanup.mjs';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A port the kernel just handed out on 127.0.0.1 (free now; the caller binds it soon after). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Spawns a long-running child with stdout+stderr appended to `logFile` (a file, not a pipe, so a
 * chatty child can never block on a full pipe nobody reads). The PID is tracked for cleanup.
 */
export function spawnLogged(command, args, { logFile, env, uid, gid, cwd } = {}) {
  const fd = openSync(logFile, 'a');
  const child = spawn(command, args, { stdio: ['ignore', fd, fd], env, uid, gid, cwd });
  trackPid(child.pid);
  child.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      untrackPid(child.pid);
      resolve({ code, signal });
    });
    child.once('error', (err) => {
      untrackPid(child.pid);
      resolve({ code: null, signal: null, error: err });
    });
  });
  child.exitInfo = undefined;
  child.exited.then((info) => {
    child.exitInfo = info;
  });
  return child;
}

/** True while `pid` exists (signal 0 probes without delivering anything). */
export function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

/**
 * Stops a child we spawned: `signal`, then up to `graceMs` for it to exit, then SIGKILL.
 * Works from the ChildProcess when we have one (exit event), else by polling the PID.
 */
export async function stopProcess(childOrPid, { signal = 'SIGTERM', graceMs = 10_000 } = {}) {
  const pid = typeof childOrPid === 'number' ? childOrPid : childOrPid.pid;
  if (!pid) return;
  const gone =
    typeof childOrPid === 'number'
      ? () => !isAlive(pid)
      : () => childOrPid.exitInfo !== undefined || !isAlive(pid);
  if (gone()) return;
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  if (await waitFor(gone, { timeoutMs: graceMs, intervalMs: 50 })) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  await waitFor(gone, { timeoutMs: 5_000, intervalMs: 50 });
}

/** Polls `check` (sync or async) until it returns truthy or `timeoutMs` passes. Bounded. */
export async function waitFor(check, { timeoutMs, intervalMs = 200 }) {
  const deadline = Date.now() + timeoutMs;
  const maxTries = Math.ceil(timeoutMs / intervalMs) + 1;
  for (let i = 0; i < maxTries; i++) {
    const value = await check();
    if (value) return value;
    if (Date.now() >= deadline) break;
    await sleep(intervalMs);
  }
  return undefined;
}

/**
 * Runs a short command to completion; resolves { code, stdout, stderr } and never rejects.
 * `onSpawn(pid)` is called once the child exists.
 */
export function run(command, args, { env, timeoutMs = 60_000, onSpawn } = {}) {
  return new Promise((resolve) => {
    const child = execFile(
      command,
      args,
      { env, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        untrackPid(child.pid);
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr || err?.message || '') });
      },
    );
    trackPid(child.pid);
    if (onSpawn && child.pid) onSpawn(child.pid);
  });
}

export function tcpConnects(host, port, timeoutMs = 1_000) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** Runs SQL (a statement or an array of them) with psql; resolves { code, stdout, stderr }. */
export function psql(
  { host, port, user, password, database = 'postgres' },
  sql,
  { timeoutMs = 60_000 } = {},
) {
  const conninfo = `host=${host} port=${port} user=${user} dbname=${database} connect_timeout=3`;
  // One -c per statement: psql runs a single -c string as one transaction, which VACUUM refuses.
  const commands = (Array.isArray(sql) ? sql : [sql]).flatMap((s) => ['-c', s]);
  return run('psql', [conninfo, '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', ...commands], {
    env: { ...process.env, PGPASSWORD: password ?? '', PGAPPNAME: 'sluice-bench' },
    timeoutMs,
  });
}

/**
 * Waits until `conn` accepts TCP and answers `select 1` through psql, giving up early if `child`
 * exits. Returns undefined when ready, else a reason string.
 */
export async function waitUntilServing(conn, { child, timeoutMs = 30_000, logFile } = {}) {
  let last = 'no attempt yet';
  const ok = await waitFor(
    async () => {
      if (child?.exitInfo) return true; // stop polling; reported below
      if (!(await tcpConnects(conn.host, conn.port))) {
        last = `nothing listening on ${conn.host}:${conn.port}`;
        return false;
      }
      const r = await psql(conn, 'select 1', { timeoutMs: 5_000 });
      if (r.code === 0 && r.stdout.trim() === '1') return true;
      last = (r.stderr || r.stdout).trim();
      return false;
    },
    { timeoutMs, intervalMs: 250 },
  );
  if (child?.exitInfo) {
    const { code, signal } = child.exitInfo;
    return `exited (code ${code}, signal ${signal}) before serving${await logTail(logFile)}`;
  }
  if (ok) return undefined;
  return `not serving after ${timeoutMs} ms: ${last}${await logTail(logFile)}`;
}

export async function logTail(logFile, lines = 15) {
  if (!logFile) return '';
  try {
    const text = await readFile(logFile, 'utf8');
    const tail = text.trimEnd().split('\n').slice(-lines).join('\n');
    return tail ? `\n--- last lines of ${logFile} ---\n${tail}` : '';
  } catch {
    return '';
  }
}
