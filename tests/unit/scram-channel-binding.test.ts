// SCRAM-SHA-256-PLUS on the server side (tls-server-end-point, RFC 5929): a client that binds to
// our certificate hash logs in; one that binds to another hash, downgrades with 'y' while we
// offered -PLUS, or mixes mechanism and GS2 flag is refused; and the end-point hash follows the
// certificate's signature algorithm.
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import selfsigned from 'selfsigned';
import { describe, expect, it } from 'vitest';
import { ensureSelfSignedPair } from '../../src/embedded/self-signed-tls.js';
import { makeScramVerifier, ScramError, ScramServerSession } from '../../src/protocol/scram.js';
import { tlsServerEndPoint } from '../../src/server/client-tls.js';

const PASSWORD = 'pencil';
const verifier = makeScramVerifier(PASSWORD, Buffer.from('salt-of-sixteen!'), 4096);
const endPoint = createHash('sha256').update('our certificate').digest();

const hmac = (key: Buffer, data: string) => createHmac('sha256', key).update(data).digest();
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest();

/** Plays a client: returns the server's verdict on client-final for the given GS2 header and cbind data. */
function exchange(
  session: ScramServerSession,
  gs2Header: string,
  cbindData: Buffer = Buffer.alloc(0),
): ReturnType<ScramServerSession['handleClientFinal']> {
  const clientFirstBare = 'n=*,r=clientnonce';
  const serverFirst = session.handleClientFirst(`${gs2Header}${clientFirstBare}`);
  const nonce = /r=([^,]+)/.exec(serverFirst)?.[1] ?? '';
  const c = Buffer.concat([Buffer.from(gs2Header), cbindData]).toString('base64');
  const withoutProof = `c=${c},r=${nonce}`;
  const authMessage = `${clientFirstBare},${serverFirst},${withoutProof}`;
  const saltedPassword = pbkdf2Sync(PASSWORD, verifier.salt, verifier.iterations, 32, 'sha256');
  const clientKey = hmac(saltedPassword, 'Client Key');
  const signature = hmac(sha256(clientKey), authMessage);
  const proof = Buffer.from(clientKey.map((b, i) => b ^ (signature[i] ?? 0)));
  return session.handleClientFinal(`${withoutProof},p=${proof.toString('base64')}`);
}

describe('SCRAM-SHA-256-PLUS (tls-server-end-point)', () => {
  it('accepts a client bound to our certificate hash', () => {
    const session = new ScramServerSession(verifier, undefined, { endPoint, selected: true });
    expect(exchange(session, 'p=tls-server-end-point,,', endPoint).ok).toBe(true);
  });

  it('refuses a client bound to another certificate (a man in the middle)', () => {
    const session = new ScramServerSession(verifier, undefined, { endPoint, selected: true });
    const other = createHash('sha256').update('the attacker certificate').digest();
    expect(() => exchange(session, 'p=tls-server-end-point,,', other)).toThrow(ScramError);
  });

  it("refuses 'y' (client thinks we cannot bind) when -PLUS was offered: a downgrade", () => {
    const session = new ScramServerSession(verifier, undefined, { endPoint, selected: false });
    expect(() => session.handleClientFirst('y,,n=*,r=abc')).toThrow(/channel binding negotiation/);
  });

  it("still accepts 'n' with plain SCRAM-SHA-256 over TLS (a client that cannot bind)", () => {
    const session = new ScramServerSession(verifier, undefined, { endPoint, selected: false });
    expect(exchange(session, 'n,,').ok).toBe(true);
  });

  it('refuses -PLUS selected with no binding data, and SCRAM-SHA-256 selected with binding data', () => {
    expect(() =>
      new ScramServerSession(verifier, undefined, { endPoint, selected: true }).handleClientFirst(
        'n,,n=*,r=abc',
      ),
    ).toThrow(ScramError);
    expect(() =>
      new ScramServerSession(verifier, undefined, { endPoint, selected: false }).handleClientFirst(
        'p=tls-server-end-point,,n=*,r=abc',
      ),
    ).toThrow(ScramError);
  });

  it('refuses other channel-binding types and binding without TLS', () => {
    expect(() =>
      new ScramServerSession(verifier, undefined, { endPoint, selected: true }).handleClientFirst(
        'p=tls-unique,,n=*,r=abc',
      ),
    ).toThrow(/unsupported SCRAM channel-binding type/);
    expect(() =>
      new ScramServerSession(verifier).handleClientFirst('p=tls-server-end-point,,n=*,r=abc'),
    ).toThrow(ScramError);
  });

  it('hashes a SHA-256-signed certificate with SHA-256 over its DER', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'sluice-cbind-'));
    try {
      const { certFile } = await ensureSelfSignedPair(dir);
      const pem = await readFile(certFile, 'utf8');
      const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
      expect(tlsServerEndPoint(pem).equals(sha256(der))).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('hashes a SHA-384-signed certificate with SHA-384 (the signature hash, RFC 5929 4.1)', async () => {
    const { cert } = await selfsigned.generate([{ name: 'commonName', value: 'x' }], { algorithm: 'sha384' });
    const der = Buffer.from(cert.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    expect(tlsServerEndPoint(cert).equals(createHash('sha384').update(der).digest())).toBe(true);
  });
});
