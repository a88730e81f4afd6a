// Tests the PgBouncer-style userlist parser (comments, doubled quotes, malformed lines reported as
// file:line:col) and how loadUsers combines the file with the config's users.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/load.js';
import { loadUsers, parseUserlist } from '../../src/config/users.js';

const dir = mkdtempSync(join(tmpdir(), 'sluice-users-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function parseError(text: string, file = 'userlist.txt'): ConfigError {
  try {
    parseUserlist(text, file);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  return expect.fail('expected a ConfigError');
}

describe('parseUserlist', () => {
  it('reads "user" "password" lines and skips comments and blank lines', () => {
    const text = [
      '; PgBouncer userlist',
      '# also a comment',
      '"alice" "s3cret"',
      '',
      '   ',
      '  "bob"   "md5c1bd9ee85e9ff1cba0a6e4ad1f4fa27b"  ',
      '  ; indented comment',
      '"carol" "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"',
    ].join('\n');
    expect(parseUserlist(text, 'userlist.txt')).toEqual([
      { name: 'alice', password: 's3cret' },
      { name: 'bob', password: 'md5c1bd9ee85e9ff1cba0a6e4ad1f4fa27b' },
      { name: 'carol', password: 'SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy' },
    ]);
  });

  it('reads a doubled quote as one quote, also at the start and end of a field', () => {
    expect(parseUserlist('"we""ird" "pa""ss"""\n"""q" "x y"\n', 'u')).toEqual([
      { name: 'we"ird', password: 'pa"ss"' },
      { name: '"q', password: 'x y' },
    ]);
  });

  it('handles CRLF line endings, a missing final newline and an empty file', () => {
    expect(parseUserlist('"a" "1"\r\n"b" "2"', 'u')).toEqual([
      { name: 'a', password: '1' },
      { name: 'b', password: '2' },
    ]);
    expect(parseUserlist('', 'u')).toEqual([]);
  });

  it('keeps non-ASCII names and passwords', () => {
    expect(parseUserlist('"zoë" "pässwörd ☃"\n', 'u')).toEqual([{ name: 'zoë', password: 'pässwörd ☃' }]);
  });

  it('reports an unterminated field as file:line:col, the column being the first non-blank', () => {
    const err = parseError('"alice" "x"\n\n  "bob" "unterminated\n', '/etc/sluice/userlist.txt');
    expect(err.message).toBe('/etc/sluice/userlist.txt:3:3: expected "user" "password"');
  });

  it('reports lines without quotes, with one field, or with an empty name', () => {
    expect(parseError('alice secret\n').message).toBe('userlist.txt:1:1: expected "user" "password"');
    expect(parseError('"a" "b"\n"alice"\n').message).toBe('userlist.txt:2:1: expected "user" "password"');
    expect(parseError('\t"" "pw"\n').message).toBe('userlist.txt:1:2: expected "user" "password"');
  });

  it('reports every malformed line, one problem each', () => {
    const err = parseError('x\n"a" "b"\n   "y\n');
    expect(err.problems).toEqual([
      'userlist.txt:1:1: expected "user" "password"',
      'userlist.txt:3:4: expected "user" "password"',
    ]);
  });
});

describe('loadUsers', () => {
  it('reads the users file and lets the config users override it', () => {
    const file = join(dir, 'userlist.txt');
    writeFileSync(file, '"alice" "from-file"\n"bob" "bob-pw"\n');
    const table = loadUsers([{ name: 'alice', password: 'from-config' }], file);
    expect([...table]).toEqual([
      ['alice', 'from-config'],
      ['bob', 'bob-pw'],
    ]);
  });

  it('uses only the config users without a file', () => {
    expect([...loadUsers([{ name: 'a', password: 'b' }], undefined)]).toEqual([['a', 'b']]);
  });

  it('names the file when it cannot be read', () => {
    const file = join(dir, 'missing.txt');
    expect(() => loadUsers([], file)).toThrow(ConfigError);
    expect(() => loadUsers([], file)).toThrow(`${file}: cannot read users file`);
  });

  it('reports a malformed line of the file with its path', () => {
    const file = join(dir, 'bad.txt');
    writeFileSync(file, '"alice" "ok"\n"bob\n');
    expect(() => loadUsers([], file)).toThrow(`${file}:2:1: expected "user" "password"`);
  });
});
