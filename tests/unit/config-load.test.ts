// Tests loadConfig: defaults, YAML file values, precedence flags > SLUICE_* > file, and error
// messages that name the key and, for the file, its line and column.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, type LoadOptions, loadConfig } from '../../src/config/load.js';

const dir = mkdtempSync(join(tmpdir(), 'sluice-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let fileCount = 0;
function yamlFile(text: string): string {
  const file = join(dir, `sluice-${++fileCount}.yaml`);
  writeFileSync(file, text);
  return file;
}

/** The ConfigError `loadConfig(options)` throws; fails the test when it returns instead. */
function configError(options: LoadOptions): ConfigError {
  try {
    loadConfig(options);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  return expect.fail('expected a ConfigError');
}

describe('loadConfig defaults and file values', () => {
  it('returns the documented defaults with no file, no variables and no flags', () => {
    const c = loadConfig({ env: {} });
    expect(c).toEqual({
      listen: '127.0.0.1:6432',
      auth: 'scram-sha-256',
      users: [],
      pool_mode: 'transaction',
      pool_size: 20,
      min_pool_size: 0,
      server_idle_timeout: 600,
      server_lifetime: 3600,
      server_connect_timeout: 15,
      query_wait_timeout: 120,
      max_client_conn: 1000,
      max_message_bytes: 2 ** 30,
      client_login_timeout: 60,
      shutdown_timeout: 30,
      server_reset_query: 'DISCARD ALL',
      cache: false,
      cache_max_bytes: 256 * 1024 * 1024,
      cache_max_entry_bytes: 16 * 1024 * 1024,
      cache_notify_writes: true,
      cache_ttl: 60,
      cache_degraded_ttl: 0,
      log_level: 'info',
      embedded: { port: 0 },
      breaker_failure_threshold: 5,
      breaker_reset_timeout: 5,
      cache_stale_max_age: 3600,
      metrics: true,
      metrics_top_digests: 50,
      digest_stats_max: 1000,
      slow_query_ms: 1000,
      admin_users: [],
      tcp_keepalive: true,
      tcp_keepidle: 0,
      query_timeout: 0,
      server_check_delay: 30,
      server_check_query: 'select 1',
    });
    expect(c.upstream).toBeUndefined();
  });

  it('reads cache switches from the environment as booleans and refuses anything else', () => {
    expect(loadConfig({ env: { SLUICE_CACHE: 'true', SLUICE_CACHE_TTL: '5' } })).toMatchObject({
      cache: true,
      cache_ttl: 5,
    });
    expect(loadConfig({ env: { SLUICE_CACHE: '0' } }).cache).toBe(false);
    expect(() => loadConfig({ env: { SLUICE_CACHE: 'maybe' } })).toThrow(
      /SLUICE_CACHE: expected true or false/,
    );
    expect(() => loadConfig({ env: { SLUICE_REDIS: 'localhost:6379' } })).toThrow(
      /SLUICE_REDIS: redis: expected redis:\/\/host:port/,
    );
  });

  it('treats an empty file and a comment-only file as all defaults', () => {
    expect(loadConfig({ file: yamlFile(''), env: {} })).toEqual(loadConfig({ env: {} }));
    expect(loadConfig({ file: yamlFile('# nothing yet\n'), env: {} })).toEqual(loadConfig({ env: {} }));
  });

  it('reads values from the file and keeps defaults for the rest', () => {
    const file = yamlFile(
      [
        'listen: 0.0.0.0:7432',
        'upstream: postgres://app:secret@db.internal:5432/metrics',
        'auth: md5',
        'pool_mode: session',
        'pool_size: 50',
        'min_pool_size: 5',
        'server_idle_timeout: 0.5',
        'users:',
        '  - name: alice',
        '    password: s3cret',
        'embedded:',
        '  data_dir: /var/lib/sluice',
        '  port: 5433',
        '',
      ].join('\n'),
    );
    const c = loadConfig({ file, env: {} });
    expect(c).toMatchObject({
      listen: '0.0.0.0:7432',
      upstream: 'postgres://app:secret@db.internal:5432/metrics',
      auth: 'md5',
      pool_mode: 'session',
      pool_size: 50,
      min_pool_size: 5,
      server_idle_timeout: 0.5,
      users: [{ name: 'alice', password: 's3cret' }],
      embedded: { data_dir: '/var/lib/sluice', port: 5433 },
      // Untouched keys keep their defaults.
      max_client_conn: 1000,
      log_level: 'info',
    });
  });

  it('accepts an IPv6 listen address and postgresql:// upstreams', () => {
    const c = loadConfig({
      file: yamlFile('listen: "[::1]:6432"\nupstream: postgresql://localhost/db\n'),
      env: {},
    });
    expect(c.listen).toBe('[::1]:6432');
    expect(c.upstream).toBe('postgresql://localhost/db');
  });
});

describe('loadConfig precedence', () => {
  const file = yamlFile('pool_size: 3\nauth: md5\n');

  it('lets SLUICE_* variables override the file', () => {
    const c = loadConfig({ file, env: { SLUICE_POOL_SIZE: '7', SLUICE_AUTH: 'trust' } });
    expect(c.pool_size).toBe(7);
    expect(c.auth).toBe('trust');
  });

  it('lets flags override variables and the file', () => {
    const c = loadConfig({ file, env: { SLUICE_POOL_SIZE: '7' }, flags: { pool_size: 9 } });
    expect(c.pool_size).toBe(9);
    expect(c.auth).toBe('md5');
  });

  it('ignores flags that are undefined', () => {
    const c = loadConfig({
      file,
      env: { SLUICE_POOL_SIZE: '7' },
      flags: { pool_size: undefined, auth: undefined },
    });
    expect(c.pool_size).toBe(7);
    expect(c.auth).toBe('md5');
  });

  it('keeps the file value when neither a variable nor a flag sets the key', () => {
    expect(loadConfig({ file, env: { SLUICE_LISTEN: '127.0.0.1:1' } }).pool_size).toBe(3);
  });

  it('merges embedded settings from the file and SLUICE_EMBEDDED_* variables', () => {
    const c = loadConfig({
      file: yamlFile('embedded:\n  data_dir: /data\n  port: 5433\n'),
      env: { SLUICE_EMBEDDED_PORT: '6543' },
    });
    expect(c.embedded).toEqual({ data_dir: '/data', port: 6543 });
  });

  it('ignores SLUICE_LOG_LEVEL_OVERRIDE and variables without the prefix', () => {
    const c = loadConfig({ env: { SLUICE_LOG_LEVEL_OVERRIDE: 'debug', POOL_SIZE: '2', PGUSER: 'x' } });
    expect(c.pool_size).toBe(20);
    expect(c.log_level).toBe('info');
  });
});

describe('loadConfig errors', () => {
  it('points at the line of an unknown key (a typo) in the file', () => {
    const file = yamlFile('listen: 127.0.0.1:7000\npool_size: 4\npool_sise: 5\n');
    const err = configError({ file, env: {} });
    expect(err.message).toContain(`${file}:3:1`);
    expect(err.message).toContain('pool_sise');
    expect(err.problems).toHaveLength(1);
  });

  it('points at an unknown key inside a flow mapping by column', () => {
    const file = yamlFile('{pool_size: 4, pool_sise: 3}\n');
    expect(configError({ file, env: {} }).message).toContain(`${file}:1:16: pool_sise`);
  });

  it('points at the line of a value of the wrong type and names the key', () => {
    const file = yamlFile('listen: 127.0.0.1:7000\npool_size: many\n');
    const err = configError({ file, env: {} });
    expect(err.message).toMatch(new RegExp(`^${escapeRegExp(file)}:2:\\d+: pool_size: `));
    expect(err.message).toContain('pool_size');
  });

  it('points at a nested key by line and column', () => {
    const file = yamlFile('pool_size: 4\nembedded:\n  port: abc\n');
    expect(configError({ file, env: {} }).message).toContain(`${file}:3:3: embedded.port:`);
    const typo = yamlFile('users:\n  - name: a\n    password: b\n    passwrd: c\n');
    expect(configError({ file: typo, env: {} }).message).toContain(
      `${typo}:4:5: users.0.passwrd: unknown key`,
    );
  });

  it('reports YAML syntax errors as file:line:col', () => {
    const file = yamlFile('listen: 127.0.0.1:7000\npool_size: 4\nauth: md5: x\n');
    expect(configError({ file, env: {} }).message).toMatch(new RegExp(`^${escapeRegExp(file)}:3:7: `));
    const tabs = yamlFile('pool_size: 4\n\tauth: md5\n');
    expect(configError({ file: tabs, env: {} }).message).toMatch(new RegExp(`^${escapeRegExp(tabs)}:2:1: `));
  });

  it('reports a duplicate key as a syntax error on its second line', () => {
    const file = yamlFile('pool_size: 3\npool_size: 4\n');
    expect(configError({ file, env: {} }).message).toMatch(new RegExp(`^${escapeRegExp(file)}:2:1: `));
  });

  it('rejects a file that is not a mapping', () => {
    const file = yamlFile('- a\n- b\n');
    expect(configError({ file, env: {} }).message).toBe(
      `${file}:1:1: expected a mapping of configuration keys`,
    );
  });

  it('names the file when it cannot be read', () => {
    const file = join(dir, 'missing.yaml');
    expect(configError({ file, env: {} }).message).toMatch(new RegExp(`^${escapeRegExp(file)}: cannot read`));
  });

  it('rejects an upstream that is not a postgres:// URL, and one that does not parse', () => {
    const http = yamlFile('pool_size: 4\nupstream: http://db:5432/x\n');
    expect(configError({ file: http, env: {} }).message).toBe(
      `${http}:2:1: upstream: expected postgres://user[:password]@host:port/database`,
    );
    const broken = yamlFile('upstream: "postgres://[oops/db"\n');
    expect(configError({ file: broken, env: {} }).message).toBe(`${broken}:1:1: upstream: not a valid URL`);
  });

  it('rejects a listen address without a port or with a port over 65535', () => {
    expect(configError({ env: { SLUICE_LISTEN: 'localhost' } }).message).toContain('SLUICE_LISTEN: listen:');
    expect(configError({ env: { SLUICE_LISTEN: 'localhost:70000' } }).message).toContain(
      'port must be at most 65535',
    );
  });

  it('names the variable when SLUICE_POOL_SIZE is not a number', () => {
    const err = configError({ env: { SLUICE_POOL_SIZE: 'abc' } });
    expect(err.message).toBe('SLUICE_POOL_SIZE: expected a number, got "abc"');
    expect(configError({ env: { SLUICE_POOL_SIZE: '  ' } }).message).toContain('SLUICE_POOL_SIZE');
  });

  it('names the variable when a SLUICE_* value fails validation', () => {
    expect(configError({ env: { SLUICE_POOL_SIZE: '2.5' } }).message).toMatch(
      /^SLUICE_POOL_SIZE: pool_size: /,
    );
    expect(configError({ env: { SLUICE_AUTH: 'password' } }).message).toMatch(/^SLUICE_AUTH: auth: /);
    expect(configError({ env: { SLUICE_EMBEDDED_PORT: 'x' } }).message).toMatch(/^SLUICE_EMBEDDED_PORT: /);
    expect(configError({ env: { SLUICE_EMBEDDED_PORT: '' } }).message).toMatch(/^SLUICE_EMBEDDED_PORT: /);
  });

  it('names an unknown SLUICE_* variable', () => {
    expect(configError({ env: { SLUICE_POOLSIZE: '7' } }).message).toBe(
      'SLUICE_POOLSIZE: poolsize: unknown key "poolsize"',
    );
  });

  it('names the flag when a flag value fails validation', () => {
    expect(configError({ env: {}, flags: { pool_size: 0 } }).message).toMatch(/^--pool-size: pool_size: /);
  });

  it('names min_pool_size when it exceeds pool_size, where min_pool_size was set', () => {
    const file = yamlFile('pool_size: 3\nmin_pool_size: 5\n');
    expect(configError({ file, env: {} }).message).toBe(
      `${file}:2:1: min_pool_size: min_pool_size must not exceed pool_size`,
    );
    const fromEnv = configError({ file: yamlFile('pool_size: 3\n'), env: { SLUICE_MIN_POOL_SIZE: '4' } });
    expect(fromEnv.message).toMatch(/^SLUICE_MIN_POOL_SIZE: min_pool_size: /);
    // Lowering pool_size below the file's min_pool_size with a flag is caught too.
    const viaFlag = configError({ file: yamlFile('min_pool_size: 5\n'), env: {}, flags: { pool_size: 2 } });
    expect(viaFlag.message).toContain('min_pool_size');
  });

  it('reports every problem, one per line', () => {
    const file = yamlFile('pool_sise: 1\nauth: nope\nlog_levl: info\n');
    const err = configError({ file, env: {} });
    expect(err.problems).toHaveLength(3);
    expect(err.message.split('\n')).toHaveLength(3);
    expect(err.message).toContain(`${file}:1:1: pool_sise`);
    expect(err.message).toContain(`${file}:2:1: auth`);
    expect(err.message).toContain(`${file}:3:1: log_levl`);
  });

  it('blames the file for a bad embedded.port even when SLUICE_EMBEDDED_DATA_DIR is set', () => {
    const file = yamlFile('embedded:\n  port: abc\n');
    const err = configError({ file, env: { SLUICE_EMBEDDED_DATA_DIR: '/tmp/pg' } });
    expect(err.message).toContain(`${file}:2:3: embedded.port`);
  });
});

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
