// Owns the throwaway redis-server processes Redis-tier tests run against, and the policy for a
// machine without redis-server: skip loudly, except under CI=true, where the tests fail instead.
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterAll, beforeAll, describe } from 'vitest';

export interface RedisServer {
  url: string;
  port: number;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<void>;
  /** SIGKILL, as a crash would: clients see their connections drop. */
  kill(): Promise<void>;
  /** Starts a fresh (empty) server on the same port. */
  restart(): Promise<void>;
}

const READY_TIMEOUT_MS = 10_000;
const EXIT_TIMEOUT_MS = 5_000;

/** Whether redis-server is on PATH. */
export function redisAvailable(): boolean {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, 'redis-server'), constants.X_OK);
      return true;
    } catch {
      // Not in this directory.
    }
  }
  return false;
}

/** Spawns redis-server on a free local port, without persistence, and waits until it answers PING. */
export async function startRedis(): Promise<RedisServer> {
  const port = await freePort();
  // Its working directory: with nothing to save it writes nothing, but never into the checkout.
  const dir = mkdtempSync(join(tmpdir(), 'sluice-redis-'));
  let child: ChildProcess | undefined = await spawnRedis(port, dir);

  const end = async (signal: NodeJS.Signals): Promise<void> => {
    const running = child;
    child = undefined;
    if (running) await terminate(running, signal);
  };
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop: async () => {
      await end('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
    kill: () => end('SIGKILL'),
    restart: async () => {
      await end('SIGTERM');
      child = await spawnRedis(port, dir);
    },
  };
}

/**
 * `describe` for tests that need a redis-server: `server()` is the one started for the block.
 * Without redis-server on PATH the block is skipped with a warning, or fails under CI=true.
 */
export function describeWithRedis(name: string, fn: (server: () => RedisServer) => void): void {
  const available = redisAvailable();
  if (!available && process.env.CI !== 'true') {
    console.warn(
      `\n${'!'.repeat(78)}\n!! redis-server is not on PATH: SKIPPING "${name}".\n` +
        `!! Install it (apt-get install redis-server) to run the Redis cache tier tests.\n${'!'.repeat(78)}\n`,
    );
    describe.skip(name, () => fn(unavailable));
    return;
  }
  describe(name, () => {
    let running: RedisServer | undefined;
    beforeAll(async () => {
      if (!available) {
        throw new Error(
          'redis-server is not on PATH and CI=true: these tests must run in CI (.ci/run installs it)',
        );
      }
      running = await startRedis();
    });
    afterAll(async () => {
      await running?.stop();
    });
    fn(() => running ?? unavailable());
  });
}

function unavailable(): never {
  throw new Error('no redis-server was started for this block');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('no port assigned'))));
    });
  });
}

async function spawnRedis(port: number, dir: string): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  child.once('error', (err) => {
    exited = true;
    output += `\n${err.message}`;
  });

  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (exited) break;
    if (await answersPing(port)) return child;
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!exited) await terminate(child, 'SIGKILL');
  throw new Error(`redis-server on port ${port} did not start:\n${output}`);
}

/** One PING over a raw socket: no client library, no reconnect logic to get in the way. */
function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let reply = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 500);
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString();
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
    socket.on('error', () => done(false));
  });
}

/** Signals the process by its PID and waits for it to exit (SIGKILL after EXIT_TIMEOUT_MS). */
async function terminate(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  signalPid(child, signal);
  const timer = setTimeout(() => signalPid(child, 'SIGKILL'), EXIT_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

function signalPid(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(child.pid, signal);
  } catch {
    // Exited in between: its 'exit' event is on its way.
  }
}
