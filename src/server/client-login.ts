// Owns a client's startup phase: SSLRequest (TLS upgrade or refusal), GSSENCRequest refusal,
// CancelRequest hand-off, protocol version negotiation, and authenticating the client with trust,
// md5 or SCRAM-SHA-256 (-PLUS, with channel binding, over TLS).
// It is off the hot path, so it favours clarity: promises and a small accumulating buffer.
import { createHash, randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import {
  AUTHENTICATION_OK,
  AuthCode,
  createAuthentication,
  createAuthenticationSASL,
  createNegotiateProtocolVersion,
} from '../protocol/backend-messages.js';
import {
  decodePasswordMessage,
  decodeSASLInitialResponse,
  decodeSASLResponse,
  decodeStartupPacket,
  FrontendType,
  MAX_STARTUP_PACKET_BYTES,
} from '../protocol/frontend-messages.js';
import { verifyMd5Response } from '../protocol/md5-auth.js';
import { ProxyError } from '../protocol/proxy-error.js';
import {
  makeScramVerifier,
  parseScramVerifier,
  ScramError,
  ScramServerSession,
  type ScramVerifier,
} from '../protocol/scram.js';
import { SqlState } from '../protocol/sqlstate.js';
import { type ClientTls, upgradeClientSocket } from './client-tls.js';

export type AuthMethod = 'trust' | 'md5' | 'scram-sha-256';

export type LoginResult =
  | {
      kind: 'login';
      user: string;
      database: string;
      parameters: Map<string, string>;
      /** Bytes the client sent after its last login message. */
      leftover: Buffer;
    }
  | { kind: 'cancel'; processId: number; secretKey: number };

export interface LoginOptions {
  auth: AuthMethod;
  /** Stored password (plaintext, md5 hash or SCRAM verifier) of a user, if known. */
  passwordOf(user: string): string | undefined;
  timeoutMs: number;
  /** Set when Sluice has a certificate: SSLRequest is answered 'S' and the socket upgraded. */
  tls?: ClientTls | undefined;
  /** Called once the socket is upgraded: from then on the session must use `secure`. */
  onSecure?(secure: TLSSocket): void;
}

const SUPPORTED_MINOR = 0;
// Bounds what an unauthenticated client can make us hold.
const MAX_AUTH_MESSAGE_BYTES = 8192;

/** Reads length-prefixed packets off a socket during login. */
class LoginReader {
  private buffer: Buffer = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private ended = false;

  constructor(private readonly socket: Socket) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    this.wake?.();
  };

  private readonly onEnd = (): void => {
    this.ended = true;
    this.wake?.();
  };

  /** Stops reading: the socket stays paused until the session takes it over. */
  detach(): Buffer {
    this.socket.pause();
    return this.release();
  }

  /** Stops reading without pausing (the socket is handed to TLS, which reads it itself). */
  release(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    return this.buffer;
  }

  private async need(bytes: number): Promise<void> {
    while (this.buffer.length < bytes) {
      if (this.ended) throw new ClientGone();
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
  }

  private take(bytes: number): Buffer {
    const out = this.buffer.subarray(0, bytes);
    this.buffer = this.buffer.subarray(bytes);
    return out;
  }

  async startupPacket(): Promise<Buffer> {
    await this.need(4);
    const length = this.buffer.readInt32BE(0);
    if (length < 8 || length > MAX_STARTUP_PACKET_BYTES) {
      throw new ProxyError(SqlState.ProtocolViolation, 'invalid length of startup packet', {
        severity: 'FATAL',
      });
    }
    await this.need(length);
    return this.take(length);
  }

  /** A typed message: returns the whole frame (type byte first). */
  async message(): Promise<Buffer> {
    await this.need(5);
    const length = this.buffer.readInt32BE(1);
    if (length < 4 || length > MAX_AUTH_MESSAGE_BYTES) {
      throw new ProxyError(
        SqlState.ProtocolViolation,
        `invalid message length ${length} during authentication`,
        {
          severity: 'FATAL',
        },
      );
    }
    await this.need(1 + length);
    return this.take(1 + length);
  }
}

/** The client hung up during login: nothing to answer. */
export class ClientGone extends Error {
  constructor() {
    super('client closed the connection during login');
    this.name = 'ClientGone';
  }
}

/** The socket being logged in and its reader; both change when TLS starts. */
interface LoginConnection {
  socket: Socket;
  reader: LoginReader;
  secure: boolean;
}

export async function runLogin(socket: Socket, options: LoginOptions): Promise<LoginResult> {
  const conn: LoginConnection = { socket, reader: new LoginReader(socket), secure: false };
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    // 0 disables the timeout, as in PgBouncer.
    if (options.timeoutMs <= 0) return;
    timer = setTimeout(
      () =>
        reject(
          new ProxyError(SqlState.ProtocolViolation, 'canceling authentication due to timeout', {
            severity: 'FATAL',
          }),
        ),
      options.timeoutMs,
    );
  });
  try {
    return await Promise.race([login(conn, options), timeout]);
  } finally {
    clearTimeout(timer);
    conn.reader.detach();
  }
}

async function startTls(conn: LoginConnection, tls: ClientTls, options: LoginOptions): Promise<void> {
  // Bytes after SSLRequest would be read as if they had come over TLS (CVE-2021-23222).
  if (conn.reader.release().length > 0) {
    throw new ProxyError(SqlState.ProtocolViolation, 'received unencrypted data after SSL request', {
      severity: 'FATAL',
    });
  }
  conn.socket.write('S');
  let secure: TLSSocket;
  try {
    secure = await upgradeClientSocket(conn.socket, tls);
  } catch {
    // A failed handshake leaves no channel to answer on.
    conn.socket.destroy();
    throw new ClientGone();
  }
  conn.socket = secure;
  conn.reader = new LoginReader(secure);
  conn.secure = true;
  secure.on('error', () => {});
  options.onSecure?.(secure);
}

async function login(conn: LoginConnection, options: LoginOptions): Promise<LoginResult> {
  // PostgreSQL answers one SSLRequest and one GSSENCRequest per connection (libpq may send both).
  const refused = new Set<string>();
  for (;;) {
    const packet = decodeStartupPacket(await conn.reader.startupPacket());
    if (packet.kind === 'ssl' && options.tls && !conn.secure) {
      refused.add('ssl');
      await startTls(conn, options.tls, options);
      continue;
    }
    const socket = conn.socket;
    switch (packet.kind) {
      case 'ssl':
      case 'gssenc':
        if (refused.has(packet.kind)) {
          throw new ProxyError(
            SqlState.FeatureNotSupported,
            `unsupported frontend protocol ${packet.kind === 'ssl' ? '1234.5679' : '1234.5680'}: server supports 3.0 to 3.0`,
            { severity: 'FATAL' },
          );
        }
        refused.add(packet.kind);
        // No GSSAPI encryption (nor TLS without a certificate): 'N' tells the client to go on.
        socket.write('N');
        continue;
      case 'cancel':
        return { kind: 'cancel', processId: packet.processId, secretKey: packet.secretKey };
      case 'invalid':
        throw new ProxyError(SqlState.ProtocolViolation, packet.reason, { severity: 'FATAL' });
      case 'startup': {
        if (packet.majorVersion !== 3) {
          throw new ProxyError(
            SqlState.FeatureNotSupported,
            `unsupported frontend protocol ${packet.majorVersion}.${packet.minorVersion}: server supports 3.0 to 3.0`,
            { severity: 'FATAL' },
          );
        }
        if (packet.minorVersion > SUPPORTED_MINOR || packet.protocolOptions.length > 0) {
          socket.write(createNegotiateProtocolVersion(SUPPORTED_MINOR, packet.protocolOptions));
        }
        const user = packet.parameters.get('user');
        if (!user) {
          throw new ProxyError(
            SqlState.InvalidAuthorizationSpecification,
            'no PostgreSQL user name specified in startup packet',
            {
              severity: 'FATAL',
            },
          );
        }
        const database = packet.parameters.get('database') || user;
        if (options.tls?.required && !conn.secure) {
          // PostgreSQL's wording for a hostssl-only pg_hba.conf and a plaintext client.
          throw new ProxyError(
            SqlState.InvalidAuthorizationSpecification,
            `no pg_hba.conf entry for host "${socket.remoteAddress ?? ''}", user "${user}", database "${database}", no encryption`,
            { severity: 'FATAL', detail: 'Sluice accepts only TLS connections (tls_required).' },
          );
        }
        await authenticate(conn, user, options);
        const leftover = Buffer.from(conn.reader.detach());
        return { kind: 'login', user, database, parameters: packet.parameters, leftover };
      }
    }
  }
}

function authFailed(user: string): ProxyError {
  return new ProxyError(SqlState.InvalidPassword, `password authentication failed for user "${user}"`, {
    severity: 'FATAL',
  });
}

function expectPasswordMessage(frame: Buffer): void {
  if (frame[0] !== FrontendType.PasswordMessage) {
    throw new ProxyError(
      SqlState.ProtocolViolation,
      `expected password response, got message type ${JSON.stringify(String.fromCharCode(frame[0]!))}`,
      { severity: 'FATAL' },
    );
  }
}

async function authenticate(conn: LoginConnection, user: string, options: LoginOptions): Promise<void> {
  const { socket, reader } = conn;
  switch (options.auth) {
    case 'trust':
      socket.write(AUTHENTICATION_OK);
      return;
    case 'md5': {
      const stored = options.passwordOf(user);
      const salt = randomBytes(4);
      socket.write(createAuthentication(AuthCode.MD5Password, salt));
      const frame = await reader.message();
      expectPasswordMessage(frame);
      const response = decodePasswordMessage(frame, 0, frame.length);
      if (response === undefined) {
        throw new ProxyError(SqlState.ProtocolViolation, 'invalid password packet', { severity: 'FATAL' });
      }
      // A SCRAM verifier cannot answer an md5 challenge: such users must use SCRAM.
      if (
        stored === undefined ||
        stored.startsWith('SCRAM-SHA-256$') ||
        !verifyMd5Response(user, stored, salt, response)
      ) {
        throw authFailed(user);
      }
      socket.write(AUTHENTICATION_OK);
      return;
    }
    case 'scram-sha-256':
      await authenticateScram(conn, user, options);
      socket.write(AUTHENTICATION_OK);
      return;
  }
}

const verifierCache = new Map<string, ScramVerifier>();

function verifierFor(user: string, stored: string | undefined): { verifier: ScramVerifier; real: boolean } {
  if (stored !== undefined && !/^md5[0-9a-f]{32}$/.test(stored)) {
    const parsed = stored.startsWith('SCRAM-SHA-256$') ? parseScramVerifier(stored) : undefined;
    if (parsed) return { verifier: parsed, real: true };
    // Plaintext: derive once per password, since 4096 PBKDF2 rounds cost about a millisecond.
    let cached = verifierCache.get(stored);
    if (!cached) {
      cached = makeScramVerifier(stored);
      verifierCache.set(stored, cached);
    }
    return { verifier: cached, real: true };
  }
  // Unknown user or md5-only password: run the exchange against a mock verifier so the client
  // cannot tell which users exist, then fail, as PostgreSQL does. It costs no PBKDF2 (so timing
  // does not tell either) and its salt is stable per user name.
  return { verifier: mockVerifier(user), real: false };
}

const mockSecret = randomBytes(32);

function mockVerifier(user: string): ScramVerifier {
  const digest = createHash('sha256').update(mockSecret).update(user).digest();
  return {
    iterations: 4096,
    salt: digest.subarray(0, 16),
    storedKey: randomBytes(32),
    serverKey: randomBytes(32),
  };
}

async function authenticateScram(conn: LoginConnection, user: string, options: LoginOptions): Promise<void> {
  const { socket, reader } = conn;
  const { verifier, real } = verifierFor(user, options.passwordOf(user));
  // Over TLS, PostgreSQL offers the channel-binding variant first.
  const endPoint = conn.secure ? options.tls?.endPoint : undefined;
  socket.write(
    createAuthenticationSASL(endPoint ? ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256'] : ['SCRAM-SHA-256']),
  );
  const first = await reader.message();
  expectPasswordMessage(first);
  const initial = decodeSASLInitialResponse(first, 0, first.length);
  if (!initial)
    throw new ProxyError(SqlState.ProtocolViolation, 'malformed SASLInitialResponse message', {
      severity: 'FATAL',
    });
  const plus = initial.mechanism === 'SCRAM-SHA-256-PLUS';
  if (initial.mechanism !== 'SCRAM-SHA-256' && !(plus && endPoint)) {
    throw new ProxyError(
      SqlState.ProtocolViolation,
      'client selected an invalid SASL authentication mechanism',
      { severity: 'FATAL' },
    );
  }
  const session = new ScramServerSession(verifier, undefined, endPoint && { endPoint, selected: plus });
  try {
    const serverFirst = session.handleClientFirst(initial.data.toString('utf8'));
    socket.write(createAuthentication(AuthCode.SASLContinue, Buffer.from(serverFirst)));
    const second = await reader.message();
    expectPasswordMessage(second);
    const result = session.handleClientFinal(decodeSASLResponse(second, 0, second.length).toString('utf8'));
    if (!result.ok || !real) throw authFailed(user);
    socket.write(createAuthentication(AuthCode.SASLFinal, Buffer.from(result.serverFinal)));
  } catch (err) {
    if (err instanceof ScramError) {
      throw new ProxyError(SqlState.ProtocolViolation, `malformed SCRAM message: ${err.message}`, {
        severity: 'FATAL',
      });
    }
    throw err;
  }
}
