// Runs one check of a driver program (Python, Java) against the proxy or, with
// SLUICE_DRIVERS_DIRECT=1, straight against PostgreSQL: connection settings go in PG* variables,
// the program prints one JSON object as its last line.
import { pgInfo } from './database.js';
import { execFileAsync, type TestProxy } from './proxy.js';

export const DIRECT = process.env.SLUICE_DRIVERS_DIRECT === '1';

export interface DriverError {
  type: string;
  sqlstate: string | null;
  message: string;
  phase: string;
}

export interface DriverRun {
  command: string;
  args: string[];
  /** Variables to drop from the inherited environment, by prefix, besides PG*. */
  dropEnv?: string[];
  /** Extra PG* settings (e.g. PGAPPNAME, PGSSLMODE). */
  env?: Record<string, string>;
  timeoutMs: number;
}

export async function runDriverCheck<T>(
  label: string,
  proxy: TestProxy | undefined,
  database: string,
  run: DriverRun,
): Promise<T & { error?: DriverError }> {
  const pg = pgInfo();
  const dropped = ['PG', ...(run.dropEnv ?? [])];
  const env: NodeJS.ProcessEnv = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !dropped.some((p) => k.startsWith(p))),
  );
  Object.assign(env, {
    PGHOST: proxy?.host ?? pg.host,
    PGPORT: String(proxy?.port ?? pg.port),
    PGUSER: pg.user,
    PGPASSWORD: pg.password,
    PGDATABASE: database,
    ...run.env,
  });
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync(run.command, run.args, {
      env,
      timeout: run.timeoutMs,
      killSignal: 'SIGKILL',
      maxBuffer: 16 * 1024 * 1024,
    }));
  } catch (e) {
    const err = e as { message: string; stdout?: string; stderr?: string; killed?: boolean };
    throw new Error(
      `${label}: ${err.killed ? 'killed after timeout' : err.message}\nstdout: ${err.stdout}\nstderr: ${err.stderr}`,
    );
  }
  const line = stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as T & { error?: DriverError };
}
