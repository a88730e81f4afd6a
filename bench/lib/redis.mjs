// Owns the redis-server a benchmark shares between Sluice processes (Debian `redis-server`): on a
// free loopback port, no persistence, stopped by PID on cleanup. Undefined when it is not on PATH.
import { spawn } from 'node:child_process';
import { onCleanup } from './cleanup.mjs';
import { freePort, run, stopProcess, tcpConnects, waitFor } from './processes.mjs';

export async function startRedis() {
  const which = await run('sh', ['-c', 'command -v redis-server']);
  if (which.code !== 0) return undefined;
  const port = await freePort();
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  onCleanup('redis-server', () => stopProcess(child));
  if (!(await waitFor(() => tcpConnects('127.0.0.1', port), { timeoutMs: 10_000 })))
    throw new Error(`redis-server did not listen on ${port}`);
  return { url: `redis://127.0.0.1:${port}`, pid: child.pid };
}
