// Tests the MD5 password scheme against values computed outside Node (printf … | md5sum).
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  isMd5PasswordHash,
  md5PasswordHash,
  md5Response,
  verifyMd5Response,
} from '../../src/protocol/md5-auth.js';

// printf 'secretpostgres' | md5sum
const SECRET_POSTGRES_MD5 = '53f48b7c4b76a86ce72276c5755f217d';
// printf '53f48b7c4b76a86ce72276c5755f217d\x01\x02\x03\x04' | md5sum
const RESPONSE_SALT_01020304 = 'md5bb41a296aab6baccb36ff243a562abff';
// printf '53f48b7c4b76a86ce72276c5755f217d\xff\x00\x80\x7f' | md5sum
const RESPONSE_SALT_FF00807F = 'md5af5825a82e8a131090770b6d3ea127f9';

const SALT = Buffer.from([1, 2, 3, 4]);
const BINARY_SALT = Buffer.from([0xff, 0x00, 0x80, 0x7f]);

describe('md5PasswordHash', () => {
  it('hashes password then user, as pg_authid stores it', () => {
    expect(md5PasswordHash('postgres', 'secret')).toBe('md5' + SECRET_POSTGRES_MD5);
  });

  it('agrees with node:crypto on a non-ASCII password (UTF-8 bytes)', () => {
    const expected = 'md5' + createHash('md5').update('pässwörd☃alice', 'utf8').digest('hex');
    expect(md5PasswordHash('alice', 'pässwörd☃')).toBe(expected);
  });
});

describe('isMd5PasswordHash', () => {
  it('accepts only md5 followed by 32 lowercase hex digits', () => {
    expect(isMd5PasswordHash('md5' + SECRET_POSTGRES_MD5)).toBe(true);
    expect(isMd5PasswordHash('md5' + SECRET_POSTGRES_MD5.toUpperCase())).toBe(false);
    expect(isMd5PasswordHash('md5' + SECRET_POSTGRES_MD5.slice(1))).toBe(false);
    expect(isMd5PasswordHash('md5' + SECRET_POSTGRES_MD5 + '0')).toBe(false);
    expect(isMd5PasswordHash('md5' + 'g'.repeat(32))).toBe(false);
  });
});

describe('md5Response', () => {
  it('salts the inner hash with the 4 salt bytes', () => {
    expect(md5Response('postgres', 'secret', SALT)).toBe(RESPONSE_SALT_01020304);
  });

  it('appends salt bytes that are not valid UTF-8 unchanged', () => {
    expect(md5Response('postgres', 'secret', BINARY_SALT)).toBe(RESPONSE_SALT_FF00807F);
  });

  it('uses a stored md5 hash as the inner hash', () => {
    expect(md5Response('postgres', 'md5' + SECRET_POSTGRES_MD5, SALT)).toBe(RESPONSE_SALT_01020304);
  });
});

describe('verifyMd5Response', () => {
  it('accepts the right response against a plaintext password', () => {
    expect(verifyMd5Response('postgres', 'secret', SALT, RESPONSE_SALT_01020304)).toBe(true);
  });

  it('accepts the right response against a stored md5 hash', () => {
    expect(verifyMd5Response('postgres', 'md5' + SECRET_POSTGRES_MD5, SALT, RESPONSE_SALT_01020304)).toBe(
      true,
    );
  });

  it('rejects a wrong password', () => {
    const response = md5Response('postgres', 'wrong', SALT);
    expect(verifyMd5Response('postgres', 'secret', SALT, response)).toBe(false);
  });

  it('rejects the right password for another user', () => {
    const response = md5Response('other', 'secret', SALT);
    expect(verifyMd5Response('postgres', 'secret', SALT, response)).toBe(false);
  });

  it('rejects a response made with another salt (replay)', () => {
    expect(verifyMd5Response('postgres', 'secret', BINARY_SALT, RESPONSE_SALT_01020304)).toBe(false);
  });

  it('rejects responses of the wrong length without throwing', () => {
    expect(verifyMd5Response('postgres', 'secret', SALT, RESPONSE_SALT_01020304.slice(0, -1))).toBe(false);
    expect(verifyMd5Response('postgres', 'secret', SALT, RESPONSE_SALT_01020304 + 'a')).toBe(false);
    expect(verifyMd5Response('postgres', 'secret', SALT, '')).toBe(false);
    // Same number of characters, more UTF-8 bytes.
    expect(verifyMd5Response('postgres', 'secret', SALT, 'md5' + 'é'.repeat(32))).toBe(false);
  });

  it('refuses an empty stored password', () => {
    expect(verifyMd5Response('postgres', '', SALT, md5Response('postgres', '', SALT))).toBe(false);
  });

  it('refuses to treat a SCRAM secret as a plaintext password', () => {
    const secret = 'SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5';
    expect(verifyMd5Response('postgres', secret, SALT, md5Response('postgres', secret, SALT))).toBe(false);
  });
});
