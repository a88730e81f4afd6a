// Tests the embedded PostgreSQL launcher against the real server binaries.
import { readdirSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres } from '../../src/embedded/embedded-postgres.js';
import { SqlState } from '../../src/protocol/sqlstate.js';
import { createRole, directClient, dropRole, pgInfo } from './harness/database.js';

function connectAs(user: string, password: string, port = pgInfo().port): Promise<pg.Client> {
  const client = new pg.Client({ host: pgInfo().host, port, user, password, database: 'postgres' });
  client.on('error', () => {});
  return client.connect().then(() => client);
}

/** Linux: pids whose parent is `ppid`, read from /proc. */
function childPids(ppid: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Field 4 (ppid) follows the parenthesised command name, which may contain spaces.
      const ppidField = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1];
      if (Number(ppidField) === ppid) pids.push(Number(entry));
    } catch {
      // exited while we looked
    }
  }
  return pids;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

describe('embedded PostgreSQL', () => {
  it('answers select version() over TCP with the superuser password', async () => {
    const { user, password } = pgInfo();
    const client = await connectAs(user, password);
    try {
      const { rows } = await client.query<{ version: string }>('select version()');
      expect(rows[0]?.version).toMatch(/^PostgreSQL 17\./);
    } finally {
      await client.end();
    }
  });

  it('refuses a wrong password with 28P01', async () => {
    await expect(connectAs(pgInfo().user, 'not-the-password')).rejects.toMatchObject({
      code: SqlState.InvalidPassword,
    });
  });

  describe('password methods', () => {
    const suffix = Math.random().toString(36).slice(2, 8);
    const scramRole = `ep_scram_${suffix}`;
    const md5Role = `ep_md5_${suffix}`;
    const md5Outsider = `ep_md5_outsider_${suffix}`;

    beforeAll(async () => {
      await createRole(scramRole, 'scram-pw', 'scram-sha-256');
      await createRole(md5Role, 'md5-pw', 'md5');
      // Stored as md5 but not granted the md5 opt-in role.
      const su = await directClient('postgres');
      try {
        await su.query("SET password_encryption = 'md5'");
        await su.query(`CREATE ROLE ${md5Outsider} LOGIN PASSWORD 'md5-pw'`);
      } finally {
        await su.end();
      }
    });
    afterAll(async () => {
      for (const role of [scramRole, md5Role, md5Outsider]) await dropRole(role);
    });

    it('stores each role password with the requested method', async () => {
      const su = await directClient('postgres');
      try {
        const { rows } = await su.query<{ rolname: string; rolpassword: string }>(
          'SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY($1)',
          [[scramRole, md5Role]],
        );
        const byName = new Map(rows.map((r) => [r.rolname, r.rolpassword]));
        expect(byName.get(scramRole)).toMatch(/^SCRAM-SHA-256\$/);
        expect(byName.get(md5Role)).toMatch(/^md5[0-9a-f]{32}$/);
      } finally {
        await su.end();
      }
    });

    it('lets SCRAM roles and md5 roles made by createRole log in', async () => {
      for (const [role, pw] of [
        [scramRole, 'scram-pw'],
        [md5Role, 'md5-pw'],
      ] as const) {
        const client = await connectAs(role, pw);
        const { rows } = await client.query<{ current_user: string }>('select current_user');
        expect(rows[0]?.current_user).toBe(role);
        await client.end();
      }
    });

    it('requires SCRAM from an md5-stored role outside the md5 opt-in role', async () => {
      await expect(connectAs(md5Outsider, 'md5-pw')).rejects.toMatchObject({
        code: SqlState.InvalidPassword,
      });
    });
  });

  it('reuses a persistent cluster across a restart on the same data directory', async () => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'sluice-ep-test-'));
    try {
      const first = await startEmbeddedPostgres({
        persistent: true,
        dataDir,
        fast: true,
        password: 'keep-me',
      });
      try {
        const client = await connectAs(first.user, 'keep-me', first.port);
        await client.query('CREATE TABLE survivor (id int PRIMARY KEY, note text)');
        await client.query("INSERT INTO survivor VALUES (1, 'still here')");
        await client.end();
      } finally {
        await first.stop();
      }
      expect(isAlive(first.pid)).toBe(false);
      expect(await fs.readFile(path.join(dataDir, 'PG_VERSION'), 'utf8')).toMatch(/^17/);

      const second = await startEmbeddedPostgres({
        persistent: true,
        dataDir,
        fast: true,
        password: 'keep-me',
      });
      try {
        const client = await connectAs(second.user, 'keep-me', second.port);
        const { rows } = await client.query<{ note: string }>('SELECT note FROM survivor WHERE id = 1');
        expect(rows).toEqual([{ note: 'still here' }]);
        await client.end();
      } finally {
        await second.stop();
      }
      expect((await fs.stat(dataDir)).isDirectory()).toBe(true);
    } finally {
      await fs.rm(dataDir, { recursive: true, force: true });
    }
  });

  it('stop() leaves neither the postmaster nor its children nor a temporary data directory', async () => {
    const server = await startEmbeddedPostgres({ fast: true });
    const children = childPids(server.pid);
    expect(isAlive(server.pid)).toBe(true);
    expect(children.length).toBeGreaterThan(0);

    await server.stop();

    expect(isAlive(server.pid)).toBe(false);
    expect(children.filter(isAlive)).toEqual([]);
    await expect(fs.stat(server.dataDir)).rejects.toMatchObject({ code: 'ENOENT' });
    await server.stop(); // idempotent
  });

  it('gives up with an Error once startTimeoutMs has passed, removing its temporary directory', async () => {
    const before = new Set(await fs.readdir(os.tmpdir()));
    await expect(startEmbeddedPostgres({ fast: true, startTimeoutMs: 50 })).rejects.toThrow(
      /before the start timeout/,
    );
    const leftovers = (await fs.readdir(os.tmpdir())).filter(
      (e) => e.startsWith('sluice-pg-') && !before.has(e),
    );
    expect(leftovers).toEqual([]);
  });

  it('fails with the server log when it cannot start, instead of hanging', async () => {
    const { port } = pgInfo(); // already taken by the shared server
    const start = startEmbeddedPostgres({ fast: true, port, startTimeoutMs: 30_000 });
    await expect(start).rejects.toThrow(/exited during startup[\s\S]*could not bind/);
  });
});
