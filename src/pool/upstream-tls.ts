// Owns the way to the upstream PostgreSQL up to its first protocol byte: the TCP connect, and
// the SSLRequest / TLS upgrade that sslmode and sslrootcert in the upstream URL ask for (libpq's
// meanings: https://www.postgresql.org/docs/current/libpq-ssl.html#LIBPQ-SSL-PROTECTION).
import fs from 'node:fs';
import { isIP, connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { ProxyError } from '../protocol/proxy-error.js';
import { SqlState } from '../protocol/sqlstate.js';

export const SSL_MODES = ['disable', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];

export interface UpstreamTls {
  mode: SslMode;
  /** Trusted roots (sslrootcert); undefined: the system store ("system", or none given). */
  ca: Buffer | undefined;
}

export interface UpstreamSocketTarget {
  host: string;
  port: number;
  connectTimeoutMs: number;
  tls?: UpstreamTls | undefined;
  /** SO_KEEPALIVE with this idle time (0: the OS default); absent: no keepalive. */
  keepAliveMs?: number | undefined;
}

const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

/**
 * Reads sslmode and sslrootcert from an upstream URL's query. Like libpq: the default is prefer,
 * and require with a root certificate given verifies the chain as verify-ca does.
 */
export function parseUpstreamTls(params: URLSearchParams): UpstreamTls {
  const given = params.get('sslmode') ?? 'prefer';
  if (!(SSL_MODES as readonly string[]).includes(given)) {
    throw new Error(`upstream sslmode ${given} is not supported (use one of ${SSL_MODES.join(', ')})`);
  }
  const rootcert = params.get('sslrootcert') ?? undefined;
  const ca = rootcert === undefined || rootcert === 'system' ? undefined : fs.readFileSync(rootcert);
  const mode = given === 'require' && ca !== undefined ? 'verify-ca' : (given as SslMode);
  return { mode, ca };
}

/**
 * The TCP connection was up and the login under way when it closed or reset: the backend went
 * away (a crash restart, a terminated backend), which a fresh connection may well not meet.
 */
export class LoginInterruptedError extends ProxyError {}

function connectionFailure(target: UpstreamSocketTarget, reason: string, connected = false): ProxyError {
  return new (connected ? LoginInterruptedError : ProxyError)(
    SqlState.ConnectionFailure,
    `could not connect to upstream ${target.host}:${target.port}: ${reason}`,
    { severity: 'FATAL' },
  );
}

/** A connected socket to the upstream, TLS when sslmode asks for it and the server agrees. */
export function openUpstreamSocket(target: UpstreamSocketTarget): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: target.host, port: target.port, noDelay: true });
    // On the TCP socket itself, under any TLS layer. libuv (1.46, Node 20) sets TCP_KEEPIDLE to
    // this and TCP_KEEPINTVL 1 s, TCP_KEEPCNT 10 with it; 0 leaves the OS's idle time.
    if (target.keepAliveMs !== undefined) socket.setKeepAlive(true, target.keepAliveMs);
    let settled = false;
    const timer = setTimeout(
      () => fail(connectionFailure(target, `timeout after ${target.connectTimeoutMs} ms`)),
      target.connectTimeoutMs,
    );
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    const succeed = (ready: Socket) => {
      settled = true;
      clearTimeout(timer);
      socket.off('error', onError);
      resolve(ready);
    };
    let connected = false;
    const onError = (err: Error) => fail(connectionFailure(target, err.message, connected));
    socket.on('error', onError);
    socket.once('close', () =>
      fail(connectionFailure(target, 'the server closed the connection', connected)),
    );
    socket.once('connect', () => {
      connected = true;
      const tls = target.tls;
      if (!tls || tls.mode === 'disable') {
        succeed(socket);
        return;
      }
      socket.once('data', (answer: Buffer) => {
        if (answer[0] === 0x4e /* N */) {
          if (tls.mode === 'prefer') succeed(socket);
          else fail(connectionFailure(target, `the server does not support TLS (sslmode=${tls.mode})`));
          return;
        }
        if (answer[0] !== 0x53 /* S */) {
          fail(connectionFailure(target, 'unexpected answer to SSLRequest'));
          return;
        }
        // Bytes after 'S' would be read as if they came over TLS (CVE-2021-23222).
        if (answer.length > 1) {
          fail(connectionFailure(target, 'received unencrypted data after SSL response'));
          return;
        }
        upgrade(socket, tls, target).then(succeed, (err: Error) =>
          fail(connectionFailure(target, err.message)),
        );
      });
      socket.write(SSL_REQUEST);
    });
  });
}

function upgrade(socket: Socket, tls: UpstreamTls, target: UpstreamSocketTarget): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const verify = tls.mode === 'verify-ca' || tls.mode === 'verify-full';
    const secure = tlsConnect({
      socket,
      // What verify-full checks the certificate against (tls would otherwise assume localhost).
      host: target.host,
      ca: tls.ca,
      rejectUnauthorized: verify,
      // SNI takes host names only; verify-full checks the name (or IP) against the certificate.
      ...(isIP(target.host) === 0 ? { servername: target.host } : {}),
      ...(tls.mode === 'verify-full' ? {} : { checkServerIdentity: () => undefined }),
    });
    secure.once('error', reject);
    secure.once('secureConnect', () => {
      secure.off('error', reject);
      // The TLS socket reports the stream's errors; the raw one must not throw them unheard.
      socket.on('error', () => {});
      secure.setNoDelay(true);
      resolve(secure);
    });
  });
}
