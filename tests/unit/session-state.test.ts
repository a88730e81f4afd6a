import { describe, expect, it } from 'vitest';
import {
  classifyQuery,
  mayAffectSession,
  parseOptions,
  SessionSettings,
  splitStatements,
  startupSettings,
  UNKNOWN_SETTINGS,
} from '../../src/server/session-state.js';

describe('classifyQuery', () => {
  it('reads SET in its spellings and keys it by setting name', () => {
    expect(classifyQuery('SET search_path TO alpha, public')).toEqual([
      { kind: 'set', name: 'search_path', sql: 'SET search_path TO alpha, public' },
    ]);
    expect(classifyQuery("set session TimeZone = 'UTC';")[0]).toMatchObject({
      kind: 'set',
      name: 'timezone',
    });
    expect(classifyQuery("SET TIME ZONE 'Asia/Tokyo'")[0]).toMatchObject({ kind: 'set', name: 'timezone' });
    expect(classifyQuery('set "my.knob" = 1')[0]).toMatchObject({ kind: 'set', name: 'my.knob' });
    expect(classifyQuery("select set_config('app.user', 'bob', false)")[0]).toMatchObject({
      kind: 'set',
      name: 'app.user',
    });
  });

  it('needs nothing for SET LOCAL, SET TRANSACTION or set_config(..., true)', () => {
    expect(classifyQuery("SET LOCAL statement_timeout = '1s'")).toEqual([]);
    expect(classifyQuery('SET TRANSACTION ISOLATION LEVEL SERIALIZABLE')).toEqual([]);
    expect(classifyQuery("select set_config('a.b', 'c', true)")).toEqual([]);
  });

  it('reads RESET, DISCARD ALL, DEALLOCATE ALL, ROLLBACK and DDL', () => {
    expect(classifyQuery('RESET ALL')).toEqual([{ kind: 'reset-all' }]);
    expect(classifyQuery('reset search_path;')).toEqual([{ kind: 'reset', name: 'search_path' }]);
    expect(classifyQuery('DISCARD ALL')).toEqual([{ kind: 'discard-all' }]);
    expect(classifyQuery('deallocate all')).toEqual([{ kind: 'deallocate-all' }]);
    expect(classifyQuery('ROLLBACK')).toEqual([{ kind: 'rollback' }]);
    expect(classifyQuery('rollback to savepoint a')).toEqual([]);
    expect(classifyQuery('alter table t add column c int')).toEqual([{ kind: 'ddl' }]);
  });

  it('pins what cannot move between servers', () => {
    for (const sql of [
      'PREPARE q AS SELECT 1',
      'create temp table t(x int)',
      'CREATE TEMPORARY TABLE t(x int)',
      'DECLARE c CURSOR WITH HOLD FOR SELECT 1',
      "LOAD 'auto_explain'",
      'select pg_advisory_lock(42)',
      'SELECT pg_try_advisory_lock(1, 2)',
      'SET SESSION AUTHORIZATION bob',
    ]) {
      expect(classifyQuery(sql)[0]?.kind, sql).toBe('pin');
    }
    expect(classifyQuery('select pg_advisory_xact_lock(42)')).toEqual([]);
  });

  it('reads LISTEN/UNLISTEN channels as PostgreSQL folds identifiers', () => {
    expect(classifyQuery('LISTEN Ticks')).toEqual([{ kind: 'listen', channel: 'ticks' }]);
    expect(classifyQuery('listen "Ticks"')).toEqual([{ kind: 'listen', channel: 'Ticks' }]);
    expect(classifyQuery('UNLISTEN *')).toEqual([{ kind: 'unlisten', channel: '*' }]);
  });

  it('classifies each statement of a multi-statement query (asyncpg reset query)', () => {
    expect(classifyQuery('SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;')).toEqual([
      { kind: 'unlisten', channel: '*' },
      { kind: 'reset-all' },
    ]);
    expect(classifyQuery('select 1; set search_path = x')[0]).toMatchObject({
      kind: 'set',
      name: 'search_path',
    });
    // Text it cannot split safely: a SET later on pins.
    expect(classifyQuery('do $$ begin end $$; set search_path = x')[0]?.kind).toBe('pin');
  });
});

describe('splitStatements', () => {
  it('splits at semicolons outside quotes and comments', () => {
    expect(splitStatements("select ';'; select 2 -- ; not here\n; /* ; */ select 3")).toEqual([
      "select ';'",
      ' select 2 -- ; not here\n',
      ' /* ; */ select 3',
    ]);
    expect(splitStatements('select $$;$$')).toBeUndefined();
    expect(splitStatements("select E'\\';'")).toBeUndefined();
  });
});

describe('the byte-level pre-check', () => {
  const check = (sql: string) => mayAffectSession(Buffer.from(sql), 0, Buffer.byteLength(sql));
  it('skips plain reads and writes, including a trailing semicolon', () => {
    for (const sql of [
      'SELECT abalance FROM pgbench_accounts WHERE aid = $1;',
      'insert into t values (1)',
      'BEGIN',
      'with x as (select 1) select * from x',
    ]) {
      expect(check(sql), sql).toBe(false);
    }
  });
  it('never skips what classifyQuery would act on', () => {
    for (const sql of [
      'set x = 1',
      '  RESET ALL',
      'select pg_advisory_lock(1)',
      "SELECT set_config('a','b',false)",
      'select 1; set a = 1',
      'listen x',
      'unlisten *',
      'alter table t add c int',
      '/* hi */ set a=1',
    ]) {
      expect(check(sql), sql).toBe(true);
    }
  });
});

describe('startup parameters', () => {
  it('turns startup parameters and options -c into SET statements', () => {
    const settings = startupSettings(
      new Map([
        ['user', 'bot'],
        ['database', 'trading'],
        ['application_name', "momentum's bot"],
        ['options', '-c search_path=beta --statement-timeout=5s -c my.flag=a\\ b'],
      ]),
    );
    expect([...settings.entries()]).toEqual([
      ['application_name', "SET application_name TO 'momentum''s bot'"],
      ['search_path', 'SET search_path TO "beta"'],
      ['statement_timeout', "SET statement_timeout TO '5s'"],
      ['my.flag', "SET my.flag TO 'a b'"],
    ]);
    expect(parseOptions('-csearch_path=x')).toEqual([['search_path', 'x']]);
  });
});

describe('SessionSettings', () => {
  it('commits only what succeeded, and knows when RESET took a server back to defaults', () => {
    const s = new SessionSettings(new Map([['timezone', "SET TimeZone TO 'UTC'"]]));
    const start = s.signature;
    s.note({ kind: 'set', name: 'search_path', sql: 'SET search_path TO a' });
    s.noteFailure();
    expect(s.commit().serverSignature).toBe(start);
    s.note({ kind: 'set', name: 'search_path', sql: 'SET search_path TO a' });
    const after = s.commit();
    expect(after.serverSignature).toBe(s.signature);
    expect(s.signature).toContain('search_path');
    s.note({ kind: 'reset-all' });
    expect(s.commit().serverSignature).toBe(UNKNOWN_SETTINGS);
    expect(s.signature).toBe(start);
    expect(s.replayQuery.toString('utf8', 5)).toBe("RESET ALL; SET TimeZone TO 'UTC'\0");
  });
});

describe('startup search_path', () => {
  it('replays a list as quoted identifiers, not as one quoted schema name', () => {
    const settings = startupSettings(new Map([['search_path', 'trading, Public, "Mixed Case", "$user"']]));
    expect(settings.get('search_path')).toBe('SET search_path TO "trading", "public", "Mixed Case", "$user"');
    const single = new SessionSettings(startupSettings(new Map([['options', '-c search_path=alpha,beta']])));
    expect(single.searchPath).toBe('"alpha", "beta"');
  });

  it('keeps a string-literal SET as one schema, as PostgreSQL does', () => {
    const s = new SessionSettings(new Map());
    s.note({ kind: 'set', name: 'search_path', sql: "SET search_path TO 'a, b'" });
    s.commit();
    expect(s.searchPath).toBe('"a, b"');
  });
});
