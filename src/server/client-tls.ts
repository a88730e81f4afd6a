// Owns TLS towards clients: loading the certificate pair, upgrading an accepted socket after
// SSLRequest, and the tls-server-end-point channel-binding data SCRAM-SHA-256-PLUS checks.
import { createHash, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import type { Socket } from 'node:net';
import { createSecureContext, type SecureContext, TLSSocket } from 'node:tls';

export interface ClientTls {
  context: SecureContext;
  /** Clients that do not ask for TLS are refused with 28000. */
  required: boolean;
  /**
   * RFC 5929 tls-server-end-point: the hash of our certificate (DER), the same for every client,
   * so it is computed once.
   */
  endPoint: Buffer;
}

/**
 * RFC 5929 section 4.1: the certificate's signature hash, except that MD5 and SHA-1 become SHA-256.
 * PostgreSQL's be_tls_get_certificate_hash does the same.
 */
export function tlsServerEndPoint(certPem: string | Buffer): Buffer {
  const cert = new X509Certificate(certPem);
  const algorithm = signatureHash(cert);
  return createHash(algorithm).update(cert.raw).digest();
}

/** DER tag-length header at `pos`: where the value starts and where it ends. */
function derItem(der: Buffer, pos: number): { start: number; end: number } {
  const first = der[pos + 1] ?? 0;
  if (first < 0x80) return { start: pos + 2, end: pos + 2 + first };
  const bytes = first & 0x7f;
  let length = 0;
  for (let i = 0; i < bytes; i++) length = length * 256 + (der[pos + 2 + i] ?? 0);
  return { start: pos + 2 + bytes, end: pos + 2 + bytes + length };
}

const SIGNATURE_HASHES: Record<string, string> = {
  '2a864886f70d01010c': 'sha384', // sha384WithRSAEncryption
  '2a864886f70d01010d': 'sha512', // sha512WithRSAEncryption
  '2a8648ce3d040303': 'sha384', // ecdsa-with-SHA384
  '2a8648ce3d040304': 'sha512', // ecdsa-with-SHA512
};

/** Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, ... }, ... } */
function signatureHash(cert: X509Certificate): string {
  const der = cert.raw;
  const outer = derItem(der, 0);
  const tbs = derItem(der, outer.start);
  const algorithm = derItem(der, tbs.end);
  const oid = derItem(der, algorithm.start);
  return SIGNATURE_HASHES[der.toString('hex', oid.start, oid.end)] ?? 'sha256';
}

export function loadClientTls(certFile: string, keyFile: string, required: boolean): ClientTls {
  const cert = fs.readFileSync(certFile);
  const key = fs.readFileSync(keyFile);
  return {
    context: createSecureContext({ cert, key, minVersion: 'TLSv1.2' }),
    required,
    endPoint: tlsServerEndPoint(cert),
  };
}

/** Runs the server side of the TLS handshake on an accepted socket (after we answered 'S'). */
export function upgradeClientSocket(socket: Socket, tls: ClientTls): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const secure = new TLSSocket(socket, { isServer: true, secureContext: tls.context });
    const onError = (err: Error) => {
      secure.destroy();
      reject(err);
    };
    secure.once('error', onError);
    secure.once('close', () => reject(new Error('client closed the connection during the TLS handshake')));
    secure.once('secure', () => {
      secure.off('error', onError);
      secure.setNoDelay(true);
      resolve(secure);
    });
  });
}
