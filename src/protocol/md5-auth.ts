// Owns PostgreSQL's MD5 password scheme: the pg_authid hash and the salted AuthenticationMD5Password reply.
// https://www.postgresql.org/docs/current/auth-password.html
import { createHash, timingSafeEqual } from 'node:crypto';

/** PostgreSQL's own test (get_password_type): 'md5' + 32 lowercase hex digits, nothing else. */
const MD5_PASSWORD_HASH = /^md5[0-9a-f]{32}$/;

function md5hex(data: string | Buffer): string {
  return createHash('md5').update(data).digest('hex');
}

/** Whether `s` is a stored MD5 hash rather than a plaintext password (same rule as PostgreSQL). */
export function isMd5PasswordHash(s: string): boolean {
  return MD5_PASSWORD_HASH.test(s);
}

/**
 * The pg_authid.rolpassword form: 'md5' + md5hex(password + user).
 * https://www.postgresql.org/docs/current/catalog-pg-authid.html
 */
export function md5PasswordHash(user: string, password: string): string {
  return 'md5' + md5hex(password + user);
}

/**
 * The PasswordMessage a frontend sends for AuthenticationMD5Password:
 * 'md5' + md5hex(md5hex(password + user) + salt), where salt is the message's 4 raw bytes.
 * `passwordOrHash` may already be the stored 'md5…' hash, which is all a pooler needs to know.
 * https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP
 */
export function md5Response(user: string, passwordOrHash: string, salt: Buffer): string {
  const inner = isMd5PasswordHash(passwordOrHash) ? passwordOrHash.slice(3) : md5hex(passwordOrHash + user);
  // The salt is binary, so it is appended as bytes; decoding it into a string would mangle it.
  return 'md5' + md5hex(Buffer.concat([Buffer.from(inner, 'ascii'), salt]));
}

/**
 * Checks a client's PasswordMessage against a stored plaintext password or 'md5…' hash, in
 * constant time for equal lengths.
 * https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP
 */
export function verifyMd5Response(
  user: string,
  storedPasswordOrMd5Hash: string,
  salt: Buffer,
  response: string,
): boolean {
  // PostgreSQL refuses empty passwords, and a SCRAM secret cannot answer an MD5 challenge
  // (md5_crypt_verify); treating either as a plaintext password would let its text log in.
  if (storedPasswordOrMd5Hash === '' || storedPasswordOrMd5Hash.startsWith('SCRAM-SHA-256$')) return false;
  const expected = Buffer.from(md5Response(user, storedPasswordOrMd5Hash, salt), 'utf8');
  const actual = Buffer.from(response, 'utf8');
  if (actual.length !== expected.length) return false;
  return timingSafeEqual(actual, expected);
}
