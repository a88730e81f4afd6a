// Owns one connection to the upstream PostgreSQL: connecting and authenticating as a frontend
// (trust, cleartext, md5, SCRAM-SHA-256), then forwarding its byte stream to whichever client
// currently owns it while peeking only at ReadyForQuery, ParameterStatus, ErrorResponse and the
// COPY responses. It knows nothing about clients beyond the ServerOwner interface.
import { connect, type Socket } from 'node:net';
import { serialize } from 'pg-protocol';
import type { ResponseCapture } from '../cache/response-capture.js';
import { logger } from '../observe/logger.js';
import {
  AuthCode,
  BackendType,
  createErrorResponse,
  decodeErrorFields,
  decodeParameterStatus,
  peekTransactionStatus,
} from '../protocol/backend-messages.js';
import { type FrameHandler, FrameReader, inspectTable } from '../protocol/frame-reader.js';
import { isMd5PasswordHash, md5Response } from '../protocol/md5-auth.js';
import { ProxyError } from '../protocol/proxy-error.js';
import { ScramClientSession } from '../protocol/scram.js';
import { SqlState } from '../protocol/sqlstate.js';
import { OutboundFrames } from './outbound-frames.js';
import { LoginInterruptedError, openUpstreamSocket, type UpstreamTls } from './upstream-tls.js';

export { LoginInterruptedError };

export interface UpstreamTarget {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string | undefined;
  /** Extra startup parameters (e.g. client_encoding) sent on every new server connection. */
  startupParameters: Record<string, string>;
  connectTimeoutMs: number;
  maxMessageBytes: number;
  /** sslmode / sslrootcert from the upstream URL; absent: plaintext. */
  tls?: UpstreamTls | undefined;
  /** SO_KEEPALIVE with this idle time (0: the OS default); absent: no keepalive. */
  keepAliveMs?: number | undefined;
}

/** What a ServerConnection forwards to while a client owns it. */
export interface ServerOwner {
  /** Bytes from the server for the client; false means the client is full: pause the server. */
  writeToClient(chunk: Buffer): boolean;
  /**
   * A ReadyForQuery arrived with this transaction status (0x49 'I', 0x54 'T', 0x45 'E'). Returns
   * true when the owner lets go of the server right after this frame has been forwarded.
   */
  onReadyForQuery(status: number): boolean;
  /** Called after the last byte up to the releasing ReadyForQuery went to the client. */
  onServerReleasable(server: ServerConnection): void;
  onCopyInResponse(): void;
  /**
   * A ParseComplete or CloseComplete arrived: true drops it (it answers a message Sluice
   * injected), a frame replaces it, false forwards it.
   */
  onParseOrCloseComplete(): boolean | Buffer;
  /**
   * A ParameterDescription (only ever the first reply to Describe statement) arrived: true drops
   * it and hands the RowDescription or NoData that follows to onStatementDescription, dropped too.
   */
  onParameterDescription(): boolean;
  /** The whole RowDescription or NoData answering a Describe statement Sluice sent itself. */
  onStatementDescription(buf: Buffer, start: number, end: number): void;
  /** An ErrorResponse arrived; a returned frame replaces it (errors Sluice words itself). */
  onServerError(fatal: boolean, fields: Readonly<Record<string, string>>): Buffer | undefined;
  onServerParameterStatus(name: string, value: string): void;
  /** A CommandComplete arrived (metrics read the row count from its tag). */
  onCommandComplete?(buf: Buffer, start: number, end: number): void;
  /** The server connection died while owned (socket error or close). */
  onServerLost(server: ServerConnection, err: Error | undefined): void;
  /** True while a request is out on the server and its ReadyForQuery not in (query_timeout). */
  readonly awaitingReply?: boolean;
  /** query_timeout passed for the oldest request: the owner cancels, lets go and answers. */
  onQueryTimeout?(server: ServerConnection, timeoutMs: number): void;
}

/** A query Sluice ran on its own behalf failed; `fields` are PostgreSQL's error fields. */
export class InternalQueryError extends Error {
  constructor(readonly fields: Readonly<Record<string, string>>) {
    super(fields.M ?? 'internal query failed');
    this.name = 'InternalQueryError';
  }
}

/** The upstream refused us during the handshake: forward its ErrorResponse to the client. */
export class UpstreamRejectedError extends Error {
  constructor(
    readonly errorResponse: Buffer,
    readonly fields: Record<string, string>,
  ) {
    super(fields.M ?? 'upstream rejected the connection');
    this.name = 'UpstreamRejectedError';
  }

  get sqlState(): string | undefined {
    return this.fields.C;
  }
}

// Frames the handshake must decode; after it, only these need whole frames in one buffer.
const HANDSHAKE_INSPECT = inspectTable('RSKZEvN');
// 'A' (NotificationResponse) only so that a response being captured for the cache can tell one
// was mixed into it; notifications are rare on pooled servers. 'C' (CommandComplete, one per
// statement, a few bytes) for the row counts of per-digest stats.
const FORWARD_INSPECT = inspectTable('ZSEG13AC');
const NOTIFICATION_RESPONSE = 0x41; // 'A'
// While a statement description is being captured its RowDescription/NoData must arrive whole.
// Only then: RowDescription answers every query, and most need no more than their header read.
const DESCRIBE_INSPECT = inspectTable('ZSEG13TnAC');
// While the CommandComplete of a rule's `SET LOCAL statement_timeout` prefix is due (src/rules/
// text-actions.ts): only then is CommandComplete looked at, so nothing is added per statement.
const PREFIX_INSPECT = inspectTable('ZSEG13AC');
const PARSE_COMPLETE = 0x31; // '1'
const CLOSE_COMPLETE = 0x33; // '3'
/** Server-side prepared statements kept per connection before the least recently used is closed. */
const MAX_PREPARED_STATEMENTS = 1000;

const STATUS_IDLE = 0x49; // 'I'

let nextServerId = 1;

export class ServerConnection implements FrameHandler {
  readonly id = nextServerId++;
  readonly createdAt = Date.now();
  lastUsedAt = Date.now();
  readonly parameters = new Map<string, string>();
  backendProcessId = 0;
  backendSecretKey = 0;
  /** Last ReadyForQuery status byte: 'I' idle, 'T' in transaction, 'E' failed transaction. */
  transactionStatus = STATUS_IDLE;
  closed = false;
  /** ReadyForQuery messages seen: the query_timeout sweep tells progress from a stall by it. */
  readyCount = 0;
  /**
   * A ReadyForQuery came that no owner was waiting for: the count of replies owed went wrong
   * somewhere, and what this server sends next may belong to a request nobody made. It never
   * serves another client (Pool.release discards it; an idle one is closed at once).
   */
  outOfSync = false;
  /** Where the bytes written so far stand: a server left mid-message serves no one else. */
  private readonly outbound = new OutboundFrames();

  /** SET statements this connection runs with, as a signature clients compare against their own. */
  settingsSignature = '';
  /**
   * Server-side statement names prepared here, least recently used first, each with the schema
   * epoch in which it was parsed (or last checked): a copy from an older epoch may be stale.
   */
  private readonly preparedStatements = new Map<string, number>();
  /** The next RowDescription/NoData answers a Describe statement Sluice sent: capture it. */
  private capturingDescription = false;
  private droppingPrefix = false;
  /** Injected simple queries whose replies, up to their ReadyForQuery, clients must not see. */
  private swallowing = 0;
  private owner: ServerOwner | null = null;
  private releasing: ServerOwner | null = null;
  private readonly reader: FrameReader;
  private runStart = 0;
  private paused = false;
  /** The response being collected for the result cache, from the next byte to ReadyForQuery. */
  private capture: ResponseCapture | null = null;

  private constructor(
    readonly socket: Socket,
    readonly target: UpstreamTarget,
  ) {
    this.reader = new FrameReader(FORWARD_INSPECT, target.maxMessageBytes);
  }

  static async connect(target: UpstreamTarget): Promise<ServerConnection> {
    const socket = await openUpstreamSocket(target);
    const server = new ServerConnection(socket, target);
    await server.handshake();
    return server;
  }

  get isOwned(): boolean {
    return this.owner !== null;
  }

  get currentOwner(): ServerOwner | null {
    return this.owner;
  }

  /** True when the last bytes forwarded to the client ended inside a message. */
  get isMidFrame(): boolean {
    return this.reader.isMidFrame;
  }

  /** True when the bytes written to the server end inside a message (a client's, part-sent). */
  get sentPartialMessage(): boolean {
    return this.outbound.midMessage;
  }

  /**
   * Asks PostgreSQL to cancel what this connection runs, over a connection of its own
   * (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-CANCELING-REQUESTS).
   */
  sendCancel(): void {
    const { host, port } = this.target;
    const socket = connect({ host, port }, () => {
      socket.end(serialize.cancel(this.backendProcessId, this.backendSecretKey));
    });
    socket.on('error', (err) => logger.warn({ err: err.message }, 'could not send cancel request'));
    // A blackholed upstream never answers the cancel connection either.
    socket.setTimeout(5000, () => socket.destroy());
  }

  /** Hands the connection to a client: from now on its bytes go to `owner`. */
  attach(owner: ServerOwner): void {
    this.owner = owner;
    this.lastUsedAt = Date.now();
    if (this.paused) this.resume();
  }

  detach(): void {
    this.owner = null;
    this.releasing = null;
    this.lastUsedAt = Date.now();
    if (this.paused) this.resume();
  }

  write(chunk: Buffer): boolean {
    this.outbound.advance(chunk);
    return this.socket.write(chunk);
  }

  /**
   * Collects every byte forwarded to the owner from now to the next ReadyForQuery. The caller
   * makes sure nothing else is in flight, so those bytes are exactly one request's response.
   */
  startCapture(capture: ResponseCapture): void {
    this.capture?.abort();
    this.capture = capture;
  }

  private abortCapture(): void {
    const capture = this.capture;
    if (capture) {
      this.capture = null;
      capture.abort();
    }
  }

  /**
   * The query about to be written starts with a statement Sluice added (a rule's timeout): its
   * CommandComplete, the first reply unless an error comes first, is dropped.
   */
  expectPrefixComplete(): void {
    this.droppingPrefix = true;
    this.reader.setInspectTable(PREFIX_INSPECT);
  }

  private endPrefix(): void {
    this.droppingPrefix = false;
    this.reader.setInspectTable(FORWARD_INSPECT);
  }

  /** Sends a simple query ahead of the client's messages; its replies are dropped. */
  writeSilentQuery(query: Buffer): void {
    this.swallowing++;
    this.write(query);
  }

  /** The schema epoch of this server's copy of a statement, or -1 (and marks it recently used). */
  statementEpoch(name: string): number {
    const epoch = this.preparedStatements.get(name);
    if (epoch === undefined) return -1;
    this.preparedStatements.delete(name);
    this.preparedStatements.set(name, epoch);
    return epoch;
  }

  /** Records a statement as prepared; returns one to close when the cache is full. */
  addStatement(name: string, epoch: number): string | undefined {
    this.preparedStatements.delete(name);
    this.preparedStatements.set(name, epoch);
    if (this.preparedStatements.size <= MAX_PREPARED_STATEMENTS) return undefined;
    const oldest = this.preparedStatements.keys().next().value as string;
    this.preparedStatements.delete(oldest);
    return oldest;
  }

  forgetStatement(name: string): void {
    this.preparedStatements.delete(name);
  }

  /** After DISCARD ALL / DEALLOCATE ALL nothing is prepared any more. */
  forgetAllStatements(): void {
    this.preparedStatements.clear();
  }

  /** Forwards what precedes a frame, then replaces the frame (or drops it). */
  private cut(buf: Buffer, start: number, end: number, replacement?: Buffer): void {
    const owner = this.owner;
    if (owner) {
      if (start > this.runStart) {
        const before = buf.subarray(this.runStart, start);
        this.capture?.add(before);
        owner.writeToClient(before);
      }
      if (replacement) {
        this.capture?.add(replacement);
        owner.writeToClient(replacement);
      }
    }
    this.runStart = end;
  }

  pause(): void {
    if (!this.paused) {
      this.paused = true;
      this.socket.pause();
    }
  }

  resume(): void {
    if (this.paused) {
      this.paused = false;
      this.socket.resume();
    }
  }

  /** Closes the connection, sending Terminate first when the socket is still writable. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.abortCapture();
    if (this.socket.writable) this.socket.end(serialize.end());
    this.socket.destroy();
  }

  /** Sends a query outside any client (e.g. the reset query) and resolves at ReadyForQuery. */
  runInternal(sql: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      let failed: Error | undefined;
      const timer = setTimeout(() => finish(new Error(`"${sql}" timed out`)), timeoutMs);
      const finish = (err?: Error) => {
        clearTimeout(timer);
        if (this.owner === internal) this.owner = null;
        if (err) reject(err);
        else resolve();
      };
      const internal: ServerOwner = {
        writeToClient: () => true,
        onReadyForQuery: () => false,
        onServerReleasable: () => {},
        onCopyInResponse: () => {
          failed = new Error(`"${sql}" asked for COPY data`);
        },
        onParseOrCloseComplete: () => false,
        onParameterDescription: () => false,
        onStatementDescription: () => {},
        onServerError: (_fatal, fields) => {
          failed = new InternalQueryError(fields);
          return undefined;
        },
        onServerParameterStatus: () => {},
        onServerLost: (_s, err) => finish(err ?? new Error('server connection lost')),
      };
      internal.onReadyForQuery = () => {
        queueMicrotask(() => finish(failed));
        return false;
      };
      this.owner = internal;
      this.write(serialize.query(sql));
    });
  }

  // ---- forwarding (after the handshake) -------------------------------------------------------

  onFrame(type: number, buf: Buffer, start: number, end: number): void {
    if (this.swallowing > 0) {
      this.swallowSilentReply(type, buf, start, end);
      return;
    }
    // Set only while a rule's timeout prefix is being answered (a simple Query from an idle client).
    if (this.droppingPrefix) {
      if (type === BackendType.CommandComplete) {
        this.endPrefix();
        this.cut(buf, start, end);
        return;
      }
      // The text failed before the prefix ran (a syntax error): there is no prefix reply.
      if (type === BackendType.ErrorResponse || type === BackendType.ReadyForQuery) this.endPrefix();
    }
    switch (type) {
      case PARSE_COMPLETE:
      case CLOSE_COMPLETE: {
        const verdict = this.owner?.onParseOrCloseComplete();
        if (verdict === true) this.cut(buf, start, end);
        else if (verdict) this.cut(buf, start, end, verdict);
        return;
      }
      case BackendType.ReadyForQuery: {
        const status = peekTransactionStatus(buf, start);
        this.transactionStatus = status;
        this.readyCount++;
        const capture = this.capture;
        if (capture) {
          // Earlier chunks were added as they went out; this one up to and with the ReadyForQuery.
          this.capture = null;
          if (this.owner) {
            capture.add(buf.subarray(this.runStart, end));
            capture.finish(status);
          } else {
            capture.abort();
          }
        }
        const owner = this.owner;
        if (owner === null) this.noteStrayReady(status);
        else if (owner.onReadyForQuery(status)) {
          // Forward through this frame, then stop: later bytes belong to no client.
          if (end > this.runStart) owner.writeToClient(buf.subarray(this.runStart, end));
          this.runStart = end;
          this.owner = null;
          this.releasing = owner;
        }
        return;
      }
      case NOTIFICATION_RESPONSE:
        this.abortCapture();
        return;
      case BackendType.CommandComplete:
        this.owner?.onCommandComplete?.(buf, start, end);
        return;
      case BackendType.ParameterStatus: {
        this.abortCapture();
        const param = decodeParameterStatus(buf, start, end);
        if (param) {
          this.parameters.set(param[0], param[1]);
          this.owner?.onServerParameterStatus(param[0], param[1]);
        }
        return;
      }
      case BackendType.ErrorResponse: {
        this.abortCapture();
        const fields = decodeErrorFields(buf, start, end);
        const fatal = fields.S === 'FATAL' || fields.S === 'PANIC';
        if (!this.owner) {
          logger.warn(
            { server: this.id, code: fields.C, message: fields.M },
            'idle server connection reported an error',
          );
        }
        const replacement = this.owner?.onServerError(fatal, fields);
        if (replacement) this.cut(buf, start, end, replacement);
        return;
      }
      case BackendType.CopyInResponse:
        this.abortCapture();
        this.owner?.onCopyInResponse();
        return;
      case BackendType.ParameterDescription:
        if (this.owner?.onParameterDescription()) {
          this.cut(buf, start, end);
          this.capturingDescription = true;
          this.reader.setInspectTable(DESCRIBE_INSPECT);
        }
        return;
      case BackendType.RowDescription:
      case BackendType.NoData:
        // One boolean test per RowDescription; the capture itself only follows a Describe
        // statement that Sluice sent (a client's Parse, a re-parse after DDL).
        if (this.capturingDescription) {
          this.capturingDescription = false;
          this.reader.setInspectTable(FORWARD_INSPECT);
          this.cut(buf, start, end);
          this.owner?.onStatementDescription(buf, start, end);
        }
        return;
    }
  }

  /**
   * A client sent what may or may not be answered: a Sync during COPY IN is ignored while the COPY
   * lasts, answered once an error has ended it, and which one happens is the server's race. The
   * count of replies owed is then a guess: the server serves no other client after this one.
   */
  distrustReplyCount(): void {
    this.outOfSync = true;
  }

  private noteStrayReady(status: number): void {
    if (!this.outOfSync) {
      logger.warn(
        { server: this.id, status: String.fromCharCode(status), releasing: this.releasing !== null },
        'server sent a ReadyForQuery nobody was waiting for; it will not be reused',
      );
    }
    this.outOfSync = true;
  }

  private swallowSilentReply(type: number, buf: Buffer, start: number, end: number): void {
    this.cut(buf, start, end);
    if (type === BackendType.ReadyForQuery) {
      this.swallowing--;
      this.transactionStatus = peekTransactionStatus(buf, start);
    } else if (type === BackendType.ParameterStatus) {
      const param = decodeParameterStatus(buf, start, end);
      if (param) this.parameters.set(param[0], param[1]);
    } else if (type === BackendType.ErrorResponse) {
      const fields = decodeErrorFields(buf, start, end);
      logger.warn(
        { server: this.id, code: fields.C, message: fields.M },
        'replaying session settings failed',
      );
    }
  }

  onChunkEnd(buf: Buffer, forwardable: number): void {
    const owner = this.owner;
    if (owner) {
      if (forwardable > this.runStart) {
        const chunk =
          this.runStart === 0 && forwardable === buf.length ? buf : buf.subarray(this.runStart, forwardable);
        this.capture?.add(chunk);
        if (!owner.writeToClient(chunk)) this.pause();
      }
    } else if (forwardable > this.runStart && !this.releasing) {
      logger.debug(
        { server: this.id, bytes: forwardable - this.runStart },
        'dropped bytes from an unowned server',
      );
    }
    // A dropped frame may continue into the next chunk: skip its rest there too.
    this.runStart = this.runStart > buf.length ? this.runStart - buf.length : 0;
    const releasing = this.releasing;
    if (releasing) {
      this.releasing = null;
      releasing.onServerReleasable(this);
    } else if (this.outOfSync && owner === null && !this.closed) {
      // Idle in the pool: gone before the pool can hand it to anyone.
      this.close();
    }
  }

  onBadLength(_buf: Buffer, _start: number, length: number): void {
    logger.error({ server: this.id, length }, 'upstream sent a message with an invalid length; closing it');
    const owner = this.owner;
    this.close();
    owner?.onServerLost(this, new Error(`upstream sent invalid message length ${length}`));
  }

  private readonly onData = (chunk: Buffer): void => {
    try {
      this.reader.read(chunk, this);
    } catch (err) {
      // A bug while forwarding: this connection's stream position is unknown now. Its client
      // gets an error and the connection is closed; the process and everyone else go on.
      logger.error({ server: this.id, err }, 'internal error forwarding from the server; closing it');
      const owner = this.owner ?? this.releasing;
      this.owner = null;
      this.releasing = null;
      this.close();
      owner?.onServerLost(this, err as Error);
    }
  };

  private readonly onClose = (): void => {
    const wasClosed = this.closed;
    this.closed = true;
    this.abortCapture();
    const owner = this.owner ?? this.releasing;
    this.owner = null;
    this.releasing = null;
    if (owner) owner.onServerLost(this, wasClosed ? undefined : new Error('server closed the connection'));
    this.onClosed?.(this);
  };

  /** Set by the pool to learn when an idle connection goes away. */
  onClosed: ((server: ServerConnection) => void) | undefined;

  // ---- handshake --------------------------------------------------------------------------------

  private handshake(): Promise<void> {
    const { target, socket } = this;
    return new Promise<void>((resolve, reject) => {
      const reader = new FrameReader(HANDSHAKE_INSPECT, target.maxMessageBytes);
      let scram: ScramClientSession | undefined;
      let settled = false;
      const timer = setTimeout(
        () =>
          fail(
            new ProxyError(
              SqlState.ConnectionFailure,
              `timeout connecting to upstream ${target.host}:${target.port}`,
              { severity: 'FATAL' },
            ),
          ),
        target.connectTimeoutMs,
      );
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.off('data', onHandshakeData);
        this.closed = true;
        socket.destroy();
        reject(err);
      };
      const done = () => {
        settled = true;
        clearTimeout(timer);
        socket.off('data', onHandshakeData);
        socket.off('error', onError);
        socket.on('error', (err) =>
          logger.debug({ server: this.id, err: err.message }, 'server socket error'),
        );
        socket.on('data', this.onData);
        socket.on('close', this.onClose);
        resolve();
      };
      const onError = (err: Error) =>
        fail(
          new LoginInterruptedError(
            SqlState.ConnectionFailure,
            `could not connect to upstream ${target.host}:${target.port}: ${err.message}`,
            {
              severity: 'FATAL',
            },
          ),
        );
      const handler: FrameHandler = {
        onFrame: (type, buf, start, end) => {
          if (settled) return;
          try {
            handleFrame(type, buf, start, end);
          } catch (err) {
            fail(err as Error);
          }
        },
        onChunkEnd: () => {},
        onBadLength: (_b, _s, length) => fail(new Error(`upstream sent invalid message length ${length}`)),
      };
      const handleFrame = (type: number, buf: Buffer, start: number, end: number) => {
        switch (type) {
          case BackendType.Authentication:
            return handleAuth(buf, start, end);
          case BackendType.ParameterStatus: {
            const param = decodeParameterStatus(buf, start, end);
            if (param) this.parameters.set(param[0], param[1]);
            return;
          }
          case BackendType.BackendKeyData:
            this.backendProcessId = buf.readInt32BE(start + 5);
            this.backendSecretKey = buf.readInt32BE(start + 9);
            return;
          case BackendType.ReadyForQuery:
            this.transactionStatus = peekTransactionStatus(buf, start);
            return done();
          case BackendType.ErrorResponse: {
            const bytes = Buffer.from(buf.subarray(start, end));
            return fail(new UpstreamRejectedError(bytes, decodeErrorFields(buf, start, end)));
          }
          case BackendType.NegotiateProtocolVersion:
          case BackendType.NoticeResponse:
            return;
          default:
            throw new Error(`unexpected message type ${String.fromCharCode(type)} during upstream login`);
        }
      };
      const needPassword = (): string => {
        if (target.password === undefined) {
          throw new UpstreamRejectedError(
            createErrorResponse({
              severity: 'FATAL',
              code: SqlState.InvalidPassword,
              message: `upstream asked for a password for user "${target.user}" and Sluice has none`,
              hint: 'give the password in the upstream URL or the users list',
            }),
            { S: 'FATAL', C: SqlState.InvalidPassword, M: 'no password for upstream' },
          );
        }
        return target.password;
      };
      // A stored md5 hash can answer an md5 challenge, nothing else.
      const needPlaintext = (method: string): string => {
        const password = needPassword();
        if (isMd5PasswordHash(password)) {
          throw new UpstreamRejectedError(
            createErrorResponse({
              severity: 'FATAL',
              code: SqlState.InvalidPassword,
              message: `upstream asked for ${method} for user "${target.user}" and Sluice only has an md5 hash`,
              hint: 'give Sluice the plaintext password, or use md5 upstream',
            }),
            { S: 'FATAL', C: SqlState.InvalidPassword, M: 'only an md5 hash for upstream' },
          );
        }
        return password;
      };
      const handleAuth = (buf: Buffer, start: number, end: number) => {
        const code = buf.readInt32BE(start + 5);
        switch (code) {
          case AuthCode.Ok:
            return;
          case AuthCode.CleartextPassword:
            socket.write(serialize.password(needPlaintext('a cleartext password')));
            return;
          case AuthCode.MD5Password: {
            const salt = buf.subarray(start + 9, start + 13);
            socket.write(serialize.password(md5Response(target.user, needPassword(), salt)));
            return;
          }
          case AuthCode.SASL: {
            const mechanisms = buf.toString('utf8', start + 9, end).split('\0');
            if (!mechanisms.includes('SCRAM-SHA-256')) {
              throw new Error(`upstream offers no supported SASL mechanism (${mechanisms.join(', ')})`);
            }
            scram = new ScramClientSession(needPlaintext('SCRAM-SHA-256'));
            socket.write(serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', scram.clientFirst()));
            return;
          }
          case AuthCode.SASLContinue:
            if (!scram) throw new Error('SASLContinue before SASL');
            socket.write(
              serialize.sendSCRAMClientFinalMessage(
                scram.handleServerFirst(buf.toString('utf8', start + 9, end)),
              ),
            );
            return;
          case AuthCode.SASLFinal:
            if (!scram) throw new Error('SASLFinal before SASL');
            scram.verifyServerFinal(buf.toString('utf8', start + 9, end));
            return;
          default:
            throw new Error(`upstream asked for an unsupported authentication method (${code})`);
        }
      };
      const onHandshakeData = (chunk: Buffer) => reader.read(chunk, handler);
      socket.on('data', onHandshakeData);
      socket.on('error', onError);
      socket.once('close', () =>
        fail(
          new LoginInterruptedError(
            SqlState.ConnectionFailure,
            'upstream closed the connection during login',
            {
              severity: 'FATAL',
            },
          ),
        ),
      );
      // Connected (and TLS negotiated) by openUpstreamSocket.
      socket.write(
        serialize.startup({ user: target.user, database: target.database, ...target.startupParameters }),
      );
    });
  }
}
