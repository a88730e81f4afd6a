// Owns one logged-in client: splitting its stream into frames, counting the Query/Sync messages
// that each owe a ReadyForQuery, acquiring a server from the pool when there is something to
// send, forwarding in whole runs with backpressure both ways, and deciding, at each
// ReadyForQuery, whether the pool mode lets the server go back to the pool.
import type { Socket } from 'node:net';
import { serialize } from 'pg-protocol';
import type { ResponseCapture } from '../cache/response-capture.js';
import type { CacheContext, CacheRule, ReadPlan, ResultCache, Writes } from '../cache/result-cache.js';
import { logger } from '../observe/logger.js';
import type { SluiceMetrics } from '../observe/metrics.js';
import type { QueryObserver } from '../observe/query-observer.js';
import type { Pool, PoolWaiter } from '../pool/pool.js';
import { queryTimeoutError } from '../pool/query-deadline.js';
import { type ServerConnection, type ServerOwner, UpstreamRejectedError } from '../pool/server-connection.js';
import { createCommandComplete, createErrorResponse, READY_FOR_QUERY } from '../protocol/backend-messages.js';
import { type FrameHandler, FrameReader, inspectTable } from '../protocol/frame-reader.js';
import { FrontendType } from '../protocol/frontend-messages.js';
import { ProxyError } from '../protocol/proxy-error.js';
import { SqlState } from '../protocol/sqlstate.js';
import {
  parseQueryEnd,
  parseQueryStart,
  peekBindStatement,
  peekParseName,
  peekTarget,
  STATEMENT,
} from '../protocol/statement-frames.js';
import { blockedError, concurrencyError, type RuleEngine } from '../rules/rule-engine.js';
import type { MatchContext } from '../rules/rule-set.js';
import { shiftErrorPosition } from '../rules/text-actions.js';
import {
  ClientStatements,
  isVerification,
  type ListenEffect,
  noteSchemaChange,
  type QueuedItem,
  type Verification,
} from './client-statements.js';
import { rollbackAndRelease } from './client-timeouts.js';
import { CLOSE_UNNAMED_PORTAL, queryPortalMayBeFailed } from './query-portal-guard.js';
import { classifyQuery, mayAffectSession, NO_SETTINGS, SessionSettings } from './session-state.js';
import { staleAnswer } from './stale-answer.js';

export type PoolMode = 'session' | 'transaction' | 'statement';

/** Sent in place of a blocked Query that cannot be answered at once: it fails on any server. */
const BLOCKED_QUERY = serialize.query('SLUICE BLOCKED STATEMENT');

/**
 * Parse (unnamed) / Bind / Describe / Execute / Sync read with the cache on: what it sends is
 * held back until Sync tells whether a cached reply can stand in for it.
 */
interface CandidateBatch {
  /** Runs and rewritten frames of the batch, in order, not yet sent. */
  diverted: QueuedItem[];
  sql: string | undefined;
  paramTypes: string;
  bindTail: string | undefined;
  bindFrame: Buffer | undefined;
  /** The message types (and Describe kinds, Execute row limit) that shape the reply. */
  shape: string;
  bytes: number;
}

/** Extended-protocol batches larger than this are sent on rather than held for a cache lookup. */
const MAX_HELD_BATCH_BYTES = 64 * 1024;

const STATUS_IDLE = 0x49; // 'I'

// Whole frames are needed for what may be rewritten (Parse, Bind, Describe, Close), read for
// session state (Query) or intercepted (Terminate); everything else only needs its header.
const CLIENT_INSPECT = inspectTable('XPBDCQ');

// Sluice's own answers inside an extended-protocol LISTEN batch, as PostgreSQL words them.
const PARSE_COMPLETE = Buffer.from([0x31, 0, 0, 0, 4]);
const BIND_COMPLETE = Buffer.from([0x32, 0, 0, 0, 4]);
const NO_PARAMETERS = Buffer.from([0x74, 0, 0, 0, 6, 0, 0]); // ParameterDescription, 0 types
const NO_DATA = Buffer.from([0x6e, 0, 0, 0, 4]);

/** An extended-protocol LISTEN/UNLISTEN batch answered by the listen hub (see hubFrame). */
interface HubBatch {
  effect: ListenEffect;
  /** The client's statement name ('' for the unnamed statement). */
  name: string;
  /** A copy of an unnamed Parse, for handing the batch on to a server. */
  unnamedParse: Buffer | undefined;
  /** Sluice's replies not yet written (a Flush or the Sync sends them). */
  replies: Buffer[];
  /** Copies of the Bind and of the Describe portal / Execute after it. */
  bind: Buffer | undefined;
  afterBind: Buffer[];
  executed: boolean;
}

/** A statement that is exactly one LISTEN or UNLISTEN. */
function loneListen(sql: string): ListenEffect | undefined {
  const effects = classifyQuery(sql);
  const effect = effects[0];
  if (effects.length !== 1 || !effect || (effect.kind !== 'listen' && effect.kind !== 'unlisten'))
    return undefined;
  return effect;
}

/** Sessions pinned to their server because their state cannot be moved, since start. */
export const pinningStats = { pinned: 0 };

export interface SessionHooks {
  onSessionClosed(session: ClientSession): void;
}

/** What a session is given by the listener; services a deployment may lack are optional. */
export interface ClientSessionOptions {
  pool: Pool;
  mode: PoolMode;
  processId: number;
  secretKey: number;
  /**
   * The ParameterStatus values the client was told at login. Read-only: it may be the set shared
   * by every client of the pool; the session copies it before its first change.
   */
  parameters: ReadonlyMap<string, string>;
  maxMessageBytes: number;
  hooks: SessionHooks;
  /** The client's settings, starting from its startup ones; replayed on whichever server it gets. */
  settings?: SessionSettings;
  cache?: ResultCache | undefined;
  rules?: RuleEngine | undefined;
  metrics?: SluiceMetrics | undefined;
}

// Shared and empty until a session has something to put in them (ownQueue, onNotification):
// most of 10 000 idle clients never do. Only ever read or emptied, never added to.
const NOTHING_QUEUED: QueuedItem[] = [];
const NO_NOTIFICATIONS: Buffer[] = [];

/** The session a client socket belongs to, for the listener functions all sockets share. */
const SESSION = Symbol('sluice.clientSession');
type SessionSocket = Socket & { [SESSION]: ClientSession };

// One set of listener functions for every client socket, not four closures per session: the
// socket is `this` and carries its session.
function onSocketData(this: Socket, chunk: Buffer): void {
  (this as SessionSocket)[SESSION].onClientData(chunk);
}

function onSocketDrain(this: Socket): void {
  (this as SessionSocket)[SESSION].onClientDrain();
}

function onSocketClose(this: Socket): void {
  (this as SessionSocket)[SESSION].close();
}

function onSocketError(err: Error): void {
  logger.debug({ err: err.message }, 'client socket error');
}

export class ClientSession implements FrameHandler, ServerOwner, PoolWaiter {
  server: ServerConnection | null = null;
  closed = false;
  readonly connectedAt = Date.now();
  /** Bumped per client chunk and ReadyForQuery; the idle sweeper watches it stand still. */
  activity = 0;

  private readonly reader: FrameReader;
  private runStart = 0;
  /** Query, Sync and FunctionCall messages sent that have not been answered by ReadyForQuery. */
  private awaitingReady = 0;
  /** Extended-protocol messages sent since the last Sync: the server must stay with us. */
  private unsynced = false;
  private syncsSinceExecute = 0;
  private clientInCopyIn = false;
  /**
   * The unnamed portal may still be a failed Query's (see query-portal-guard.ts): set by a Query,
   * cleared once the Query's answer is in and left no failed block.
   */
  private queryPortal = false;
  /** The guard's Close went out after the last Query and Sync: this batch's Executes are covered. */
  private queryPortalClosedInBatch = false;
  private transactionStatus = STATUS_IDLE;
  /** Runs of client bytes waiting for a server connection, or held behind a verification. */
  private queued: QueuedItem[] = NOTHING_QUEUED;
  /**
   * A statement re-parsed after DDL whose row type is being compared: until its verdict, what the
   * client sends next is held in `queued` (only ever after DDL, never on the common path).
   */
  private holding: Verification | undefined;
  /** DDL went through this client: the schema epoch moves again once it has committed. */
  private ddlPending = false;
  private acquiring = false;
  /** The server socket whose 'drain' this session waits for, if any. */
  private drainAwaited: Socket | undefined;
  private pausedForAcquire = false;
  private terminating = false;
  private shuttingDown = false;
  private statementModeViolation = false;
  private frameBuf: Buffer | undefined;
  /** The LISTEN/UNLISTEN being answered by the pool's listen hub, if any. */
  private hubCommand: string | undefined;
  /** An extended-protocol LISTEN/UNLISTEN batch Sluice is answering itself, until its Sync. */
  private hubBatch: HubBatch | undefined;
  private usedHub = false;
  private pendingNotifications: Buffer[] = NO_NOTIFICATIONS;
  private frameStart = 0;
  private frameFlushed = true;
  /** Set when the session did something that ties it to its server (e.g. a temp table). */
  pinnedReason: string | undefined;
  /** Made at the first request: a client that only ever idles never needs one. */
  private statementsValue: ClientStatements | undefined;
  private readonly settings: SessionSettings;
  /** Set while a Query waits for the shared cache tier or for an identical read in flight. */
  private cacheParked = false;
  /** The capture to start on the server with the next bytes sent: this client leads a read. */
  private pendingCapture: ResponseCapture | null = null;
  /** Tables written in the current transaction, bumped again when it ends. */
  private transactionWrites: Set<string> | 'all' | 'schema' | null = null;
  /** Statements (named, and the unnamed one) that may write: judged again at each Bind. */
  private statementWrites: Map<string, { sql: string; paramTypes: Buffer }> | undefined;
  /** State (a temp table, say) that may shadow what the cache knows: no cached reads. */
  private cacheReadsUnsafe = false;
  private pausedForClientDrain = false;
  /** Replies held until a write's invalidation has reached the other instances. */
  private heldReplies: Buffer[] | null = null;
  private cacheContextValue: CacheContext | undefined;
  private matchContextValue: MatchContext | undefined;
  /** An extended-protocol batch being read up to its Sync, to be answered from the cache if possible. */
  private batch: CandidateBatch | null = null;
  /** A Query carrying a rule's timeout prefix, until it is written to a server. */
  private timedQuery: Buffer | undefined;
  /** Characters of that prefix, until its ReadyForQuery (error positions are moved back by it). */
  private timedPrefixLength = 0;
  /** The `max_concurrency` slot this client holds until its statement's ReadyForQuery. */
  private concurrencySlot: string | undefined;

  readonly pool: Pool;
  readonly mode: PoolMode;
  readonly processId: number;
  readonly secretKey: number;
  /** Shared with other clients until a ParameterStatus changes it (see onServerParameterStatus). */
  private parametersValue: ReadonlyMap<string, string>;
  private parametersCopied = false;
  private readonly maxMessageBytes: number;
  private readonly hooks: SessionHooks;
  private readonly cache: ResultCache | undefined;
  private readonly rules: RuleEngine | undefined;
  private readonly metrics: SluiceMetrics | undefined;
  /** Per-request timing and digests for metrics, made at the first request (see `observer`). */
  private observerValue: QueryObserver | undefined;

  constructor(
    readonly socket: Socket,
    options: ClientSessionOptions,
  ) {
    this.pool = options.pool;
    this.mode = options.mode;
    this.processId = options.processId;
    this.secretKey = options.secretKey;
    this.parametersValue = options.parameters;
    this.maxMessageBytes = options.maxMessageBytes;
    this.hooks = options.hooks;
    this.cache = options.cache;
    this.rules = options.rules;
    this.metrics = options.metrics;
    this.settings = options.settings ?? new SessionSettings(NO_SETTINGS);
    this.reader = new FrameReader(CLIENT_INSPECT, this.maxMessageBytes);
    (socket as SessionSocket)[SESSION] = this;
    socket.on('data', onSocketData);
    socket.on('drain', onSocketDrain);
    socket.on('close', onSocketClose);
    socket.on('error', onSocketError);
    // The login left the socket paused so nothing sent meanwhile was lost.
    socket.resume();
  }

  /** Feeds bytes that arrived together with the login. */
  start(leftover: Buffer | undefined): void {
    if (leftover && leftover.length > 0) this.reader.read(leftover, this);
  }

  /** The ParameterStatus values as this client last heard them. */
  get parameters(): ReadonlyMap<string, string> {
    return this.parametersValue;
  }

  get user(): string {
    return this.pool.user;
  }

  get database(): string {
    return this.pool.database;
  }

  /** True while the client waits for a server connection from the pool. */
  get waiting(): boolean {
    return this.acquiring;
  }

  /** The client's prepared statements and what each pending reply is to become. */
  private get statements(): ClientStatements {
    this.statementsValue ??= new ClientStatements(this.metrics?.statementCache);
    return this.statementsValue;
  }

  /** Per-request timing and digests; undefined with metrics off. An idle client never makes one. */
  private get observer(): QueryObserver | undefined {
    if (this.observerValue === undefined && this.metrics !== undefined) {
      this.observerValue = this.metrics.observer(this.pool.database, this.pool.user);
    }
    return this.observerValue;
  }

  /** The queue, made the session's own before anything is put in it. */
  private ownQueue(): QueuedItem[] {
    if (this.queued === NOTHING_QUEUED) this.queued = [];
    return this.queued;
  }

  /** One ReadyForQuery will answer a request just counted. */
  private expectReady(): void {
    this.statements.expectReady();
    this.observer?.expect();
  }

  /** Sluice answered the oldest request itself (cache, listen hub). */
  private answeredLocally(): void {
    this.statements.onReadyForQuery();
    this.observer?.answeredLocally();
  }

  /** A CommandComplete from the server (its tag holds the row count). */
  onCommandComplete(buf: Buffer, start: number, end: number): void {
    this.observer?.onCommandComplete(buf, start, end);
  }

  /**
   * Both streams are between messages: the client's as read, and what reached the server. They
   * differ when a client is refused on a message in the chunk that also ended a part-sent one:
   * that rest was read but never written (the fuzzer's route to a server handed on mid-message).
   */
  private atMessageBoundary(server: ServerConnection): boolean {
    return !this.reader.isMidFrame && !server.sentPartialMessage;
  }

  /** True while the client is between transactions with nothing in flight. */
  get isIdle(): boolean {
    return (
      this.awaitingReady === 0 &&
      !this.unsynced &&
      this.transactionStatus === STATUS_IDLE &&
      !this.clientInCopyIn
    );
  }

  /** For the idle timeouts: waiting for the client outside or inside a transaction, or busy. */
  get waitState(): 'busy' | 'idle' | 'in-transaction' {
    if (
      this.awaitingReady > 0 ||
      this.unsynced ||
      this.clientInCopyIn ||
      this.acquiring ||
      this.cacheParked
    ) {
      return 'busy';
    }
    return this.transactionStatus === STATUS_IDLE ? 'idle' : 'in-transaction';
  }

  /** client_idle_timeout: closes an idle client (57P05, as PostgreSQL's idle_session_timeout). */
  expireIdle(): void {
    this.fail(
      new ProxyError(SqlState.IdleSessionTimeout, 'terminating connection due to idle-session timeout', {
        severity: 'FATAL',
      }),
    );
  }

  /** idle_transaction_timeout: closes the client (25P03); its server is rolled back and reused. */
  expireIdleTransaction(): void {
    const server = this.server;
    if (this.closed || this.waitState !== 'in-transaction') return;
    if (server) {
      this.server = null;
      rollbackAndRelease(
        this.pool,
        server,
        this.atMessageBoundary(server) && this.pinnedReason === undefined,
      );
    }
    this.fail(
      new ProxyError(
        SqlState.IdleInTransactionSessionTimeout,
        'terminating connection due to idle-in-transaction timeout',
        { severity: 'FATAL' },
      ),
    );
  }

  // ---- client → server ------------------------------------------------------------------------

  /** Called by the socket's 'data' listener (onSocketData); not for other callers. */
  onClientData(chunk: Buffer): void {
    this.activity++;
    // A bug in handling one client's bytes costs that client (XX000), never the process.
    // try/catch costs nothing in V8 while nothing throws.
    try {
      this.reader.read(chunk, this);
    } catch (err) {
      this.fail(err as Error);
    }
  }

  /** Runs a deferred step (a promise callback) so that a bug in it closes only this client. */
  private guarded(step: () => void): void {
    try {
      step();
    } catch (err) {
      this.fail(err as Error);
    }
  }

  onFrame(type: number, buf: Buffer, start: number, end: number): void {
    // One field test per frame; set only between a lone LISTEN's Parse (or Bind) and its Sync.
    if (this.hubBatch !== undefined && this.hubFrame(type, buf, start, end)) return;
    if (
      this.cache !== undefined &&
      (this.batch !== null || type === FrontendType.Parse || type === FrontendType.Bind)
    ) {
      if (this.onBatchFrame(this.cache, type, buf, start, end)) return;
    }
    switch (type) {
      case FrontendType.Query: {
        this.observer?.onQuery(buf, start, end);
        let cacheRule: CacheRule | undefined;
        if (this.rules !== undefined) {
          const handled = this.onQueryWithRules(this.rules, buf, start, end);
          if (handled === true) return;
          cacheRule = handled;
        }
        if (this.cache !== undefined && this.onQueryWithCache(this.cache, buf, start, end, cacheRule)) return;
        this.awaitingReady++;
        this.syncsSinceExecute = 0;
        this.queryPortal = true;
        this.queryPortalClosedInBatch = false;
        this.expectReady();
        // Query text: from after the header to before its terminating NUL.
        if (mayAffectSession(buf, start + 5, end - 1)) {
          const sql = buf.toString('utf8', start + 5, end - 1);
          if (!this.tryListenHub(sql, buf, start, end)) this.noteSessionEffect(sql);
        }
        return;
      }
      case FrontendType.Sync:
        // PostgreSQL ignores Sync during COPY IN; counting it would wait for a reply never sent.
        // Unless bad data has already ended the COPY on the server: then it is answered.
        if (!this.clientInCopyIn) {
          this.awaitingReady++;
          this.syncsSinceExecute++;
          this.expectReady();
        } else {
          this.server?.distrustReplyCount();
        }
        this.unsynced = false;
        this.queryPortalClosedInBatch = false;
        return;
      case FrontendType.FunctionCall:
        this.awaitingReady++;
        this.expectReady();
        return;
      case FrontendType.Execute:
        this.syncsSinceExecute = 0;
        this.unsynced = true;
        if (this.queryPortal && !this.queryPortalClosedInBatch) {
          this.beginFrame(buf, start);
          this.closeQueryPortal();
        }
        return;
      case FrontendType.Parse: {
        // Bytes first: the common statement is never decoded here.
        const queryStart = parseQueryStart(buf, start, end);
        const queryEnd = queryStart < 0 ? -1 : parseQueryEnd(buf, queryStart, end);
        if (this.observer !== undefined && queryEnd >= 0)
          this.observer.onParse(buf, start, end, queryStart, queryEnd);
        if (this.rules !== undefined && queryEnd >= 0 && this.rules.rules.rules.length > 0) {
          const blocked = this.blockedBy(this.rules, buf.toString('utf8', queryStart, queryEnd));
          if (blocked !== undefined) {
            // Its error is still to come: nothing may be answered from the cache before it.
            this.unsynced = true;
            this.beginFrame(buf, start);
            this.statements.blockParse(this, blocked);
            this.runStart = end;
            return;
          }
        }
        if (queryEnd >= 0 && mayAffectSession(buf, queryStart, queryEnd)) {
          const sql = buf.toString('utf8', queryStart, queryEnd);
          if (this.tryHubParse(sql, buf, start, end, queryEnd)) return;
          this.noteSessionEffect(sql);
        }
        this.unsynced = true;
        if (this.cache !== undefined && queryEnd >= 0) {
          // A batch that just began with this Parse already holds its text.
          const sql = this.batch?.shape === 'P' ? this.batch.sql : undefined;
          this.noteParsedWrites(this.cache, buf, start, end, queryStart, queryEnd, sql);
        }
        this.beginFrame(buf, start);
        if (this.statements.onParse(buf, start, end, this)) this.runStart = end;
        return;
      }
      case FrontendType.Bind:
        this.observer?.onBind(buf, start, end);
        if (this.statementWrites !== undefined) this.noteBoundWrites(buf, start, end);
        this.beginFrame(buf, start);
        if (this.queryPortal && !this.queryPortalClosedInBatch) this.closeQueryPortal();
        // unsynced afterwards: a Bind starting a batch may be a LISTEN the hub answers.
        if (this.statements.onBind(buf, start, end, this)) this.runStart = end;
        this.unsynced = true;
        return;
      case FrontendType.Describe:
        this.unsynced = true;
        this.beginFrame(buf, start);
        if (this.statements.onDescribe(buf, start, end, this)) this.runStart = end;
        return;
      case FrontendType.Close:
        this.unsynced = true;
        this.statements.onClose(buf, start, end);
        return;
      case FrontendType.Flush:
        this.unsynced = true;
        return;
      case FrontendType.CopyDone:
      case FrontendType.CopyFail:
        this.clientInCopyIn = false;
        return;
      case FrontendType.Terminate:
        this.forwardRun(buf, start);
        this.runStart = end;
        this.terminating = true;
        return;
      case FrontendType.CopyData:
        return;
      default:
        // PostgreSQL answers any other type with FATAL and closes: forwarded, that FATAL would
        // arrive after the ReadyForQuery that released the server, under its next client (the
        // fuzzer's canary saw it). Refused here, as PostgreSQL and PgBouncer refuse it.
        this.fail(
          new ProxyError(SqlState.ProtocolViolation, `invalid frontend message type ${type}`, {
            severity: 'FATAL',
          }),
        );
    }
  }

  onChunkEnd(buf: Buffer, forwardable: number): void {
    if (forwardable > this.runStart) this.forwardRun(buf, forwardable);
    // A batch may span chunks (node-postgres writes each message on its own): holding it until
    // Sync is safe, since PostgreSQL owes no reply before Sync or Flush either; a big one is not
    // worth holding.
    if (this.batch !== null && this.batch.bytes > MAX_HELD_BATCH_BYTES) this.abandonBatch();
    this.runStart = 0;
    this.frameBuf = undefined;
    if (this.terminating && !this.closed) this.finishTerminate();
  }

  onBadLength(buf: Buffer, start: number, length: number): void {
    // onChunkEnd has already forwarded everything before the bad header.
    this.fail(
      new ProxyError(SqlState.ProtocolViolation, `invalid message length ${length}`, {
        severity: 'FATAL',
        detail: `message type "${String.fromCharCode(buf[start]!)}" announced ${length} bytes`,
        hint: length > 4 ? `the limit is max_message_bytes = ${this.maxMessageBytes}` : undefined,
      }),
    );
  }

  /**
   * Before the first Bind/Execute of each batch (the frame begun) while the unnamed portal may be a
   * failed Query's: see query-portal-guard.ts. Once per batch, not once per Query: an error
   * earlier in the batch makes PostgreSQL skip the Close up to the Sync, and an Execute of ""
   * after that Sync would find the failed portal still there (the fuzzer's route past a
   * once-per-Query guard). Within the batch, an Execute that runs proves the Close ran before it.
   */
  private closeQueryPortal(): void {
    // Even during what looks like COPY IN: a client that pipelines COPY FROM STDIN with its end
    // looks in COPY from the CopyInResponse until the next error or ReadyForQuery, while the
    // server is long out of it (the fuzzer's second route). In a real COPY IN the Close only
    // changes which message PostgreSQL names in its error.
    if (!queryPortalMayBeFailed(this.awaitingReady, this.transactionStatus)) {
      this.queryPortal = false;
      return;
    }
    this.queryPortalClosedInBatch = true;
    this.statements.expectDroppedClose();
    this.emit(CLOSE_UNNAMED_PORTAL);
  }

  /** Marks the frame ClientStatements may replace: emit() first flushes what precedes it. */
  private beginFrame(buf: Buffer, start: number): void {
    this.frameBuf = buf;
    this.frameStart = start;
    this.frameFlushed = false;
  }

  /** FrameSink: a frame Sluice wrote in place of (or ahead of) the client's current one. */
  emit(frame: QueuedItem): void {
    if (!this.frameFlushed && this.frameBuf) {
      this.frameFlushed = true;
      this.forwardRun(this.frameBuf, this.frameStart);
    }
    this.send(frame);
  }

  private forwardRun(buf: Buffer, end: number): void {
    if (end <= this.runStart || this.closed) {
      this.runStart = end;
      return;
    }
    const run = this.runStart === 0 && end === buf.length ? buf : buf.subarray(this.runStart, end);
    this.runStart = end;
    this.send(run);
  }

  private send(run: QueuedItem): void {
    if (this.closed) return;
    const server = this.server;
    const batch = this.batch;
    if (batch !== null) {
      batch.diverted.push(run);
      if (Buffer.isBuffer(run)) batch.bytes += run.length;
      return;
    }
    if (server) {
      // A parked Query (cache or max_concurrency) keeps its place ahead of what follows it.
      if (this.holding === undefined && !this.cacheParked) {
        if (Buffer.isBuffer(run)) {
          if (run === this.timedQuery) this.writingTimedQuery(server);
          const flowing = server.write(run);
          if (this.pendingCapture) this.startCapture(server);
          if (!flowing) this.waitForServerDrain(server);
        } else if (isVerification(run)) {
          this.holding = run;
        } else {
          // A Parse deferred for want of a server, whose emit() flushed the run before it and so
          // got a server at once (the pool had one free).
          server.write(this.statements.resolveQueued(server, run));
        }
        return;
      }
      this.ownQueue().push(run);
      // A verdict may have been waiting to see what follows a held Bind.
      if (this.holding?.result !== undefined) this.resolveHold();
      return;
    }
    this.ownQueue().push(run);
    // A LISTEN/UNLISTEN or a cache lookup is being answered: what follows waits its turn.
    if (this.hubCommand !== undefined || this.cacheParked) return;
    this.acquireForQueued();
  }

  /** Writes queued items in order, stopping at a verification barrier (which then holds). */
  private writeQueued(server: ServerConnection): boolean {
    const queued = this.queued;
    let flowing = true;
    let i = 0;
    for (; i < queued.length; i++) {
      const item = queued[i]!;
      if (isVerification(item)) {
        this.holding = item;
        i++;
        break;
      }
      if (item === this.timedQuery) this.writingTimedQuery(server);
      flowing = server.write(Buffer.isBuffer(item) ? item : this.statements.resolveQueued(server, item));
    }
    queued.splice(0, i);
    // A barrier whose verdict came early (its messages skipped after an error) lifts at once.
    if (this.holding?.result !== undefined) this.resolveHold();
    return flowing;
  }

  /** The held verification's verdict is in: rewrite the held uses, then let the queue flow. */
  private resolveHold(): void {
    const v = this.holding;
    const server = this.server;
    if (!v || !server || this.closed) return;
    if (!this.statements.resolveVerification(v, this.ownQueue(), server)) return;
    this.holding = undefined;
    if (!this.writeQueued(server)) this.waitForServerDrain(server);
  }

  private waitForServerDrain(server: ServerConnection): void {
    this.socket.pause();
    // Several runs of one chunk can each find the server backed up: one listener per backlog
    // (the fuzzer saw a pipelined stream pile up more than ten of them).
    const socket = server.socket;
    if (this.drainAwaited === socket) return;
    this.drainAwaited = socket;
    socket.once('drain', () => {
      if (this.drainAwaited === socket) this.drainAwaited = undefined;
      if (!this.closed && !this.acquiring) this.socket.resume();
    });
  }

  // ---- pool ---------------------------------------------------------------------------------

  onServerAcquired(server: ServerConnection): void {
    this.acquiring = false;
    if (this.closed) {
      this.pool.release(server, true);
      return;
    }
    if (this.terminating && this.awaitingReady === 0) {
      this.pool.release(server, true);
      this.close();
      return;
    }
    this.server = server;
    server.attach(this);
    this.observer?.onAcquired();
    const queued = this.ownQueue();
    // Before the client's own bytes: its settings (when the server runs someone else's) and the
    // statements its queued messages use that this server lacks.
    const ahead = this.statements.prepareServer(server, queued);
    const replaySettings = server.settingsSignature !== this.settings.signature;
    let flowing = true;
    const first = queued[0];
    if (queued.length === 1 && ahead.length === 0 && !replaySettings && Buffer.isBuffer(first)) {
      if (first === this.timedQuery) this.writingTimedQuery(server);
      flowing = server.write(first);
      queued.length = 0;
    } else {
      server.socket.cork();
      if (replaySettings) {
        server.writeSilentQuery(this.settings.replayQuery);
        server.settingsSignature = this.settings.signature;
      }
      for (const frame of ahead) server.write(frame);
      flowing = this.writeQueued(server);
      server.socket.uncork();
    }
    if (this.pendingCapture) this.startCapture(server);
    if (!flowing) this.waitForServerDrain(server);
    else if (this.pausedForAcquire) this.socket.resume();
    this.pausedForAcquire = false;
  }

  onAcquireFailed(err: Error): void {
    this.acquiring = false;
    this.pausedForAcquire = false;
    this.queued.length = 0;
    // No ReadyForQuery will come for what was queued: a rule's slot and prefix go with it.
    this.releaseConcurrencySlot();
    this.timedQuery = undefined;
    this.timedPrefixLength = 0;
    this.abortPendingCapture();
    if (this.closed) return;
    // With the head of a frame dropped, its tail must never reach a server as new messages.
    if (err instanceof ProxyError && !err.fatal && !this.reader.isMidFrame && !this.terminating) {
      // Answer every request the client is waiting on, as PostgreSQL would after an error.
      const error = err.toErrorResponse();
      const replies: Buffer[] = [];
      if (this.awaitingReady === 0) replies.push(error);
      for (let i = 0; i < this.awaitingReady; i++) replies.push(error, READY_FOR_QUERY.I);
      this.awaitingReady = 0;
      this.unsynced = false;
      this.statements.reset();
      this.observer?.reset();
      this.metrics?.noteError(err.code);
      this.socket.write(Buffer.concat(replies));
      this.socket.resume();
      return;
    }
    // Mid-frame (or terminating) the client cannot go on: the same error, as FATAL.
    this.fail(
      err instanceof ProxyError && !err.fatal
        ? new ProxyError(err.code, err.message, { severity: 'FATAL', detail: err.detail, hint: err.hint })
        : err,
    );
  }

  // ---- server → client (ServerOwner) ---------------------------------------------------------

  writeToClient(chunk: Buffer): boolean {
    const held = this.heldReplies;
    if (held !== null) {
      held.push(chunk);
      return true;
    }
    return this.socket.write(chunk);
  }

  onReadyForQuery(status: number): boolean {
    this.activity++;
    if (this.awaitingReady > 0) this.awaitingReady--;
    // Rule actions are applied only with nothing else in flight: this ReadyForQuery ends theirs.
    this.timedPrefixLength = 0;
    if (this.concurrencySlot !== undefined && this.awaitingReady === 0) this.releaseConcurrencySlot();
    this.transactionStatus = status;
    // The server is out of any COPY by now (a pipelined one ends before the client hears of it).
    this.clientInCopyIn = false;
    this.observer?.onReady();
    this.statements.onReadyForQuery();
    if (this.ddlPending && status === STATUS_IDLE) {
      // Statements parsed (or checked) while the DDL was uncommitted saw the old schema.
      this.ddlPending = false;
      noteSchemaChange();
    }
    if (status === STATUS_IDLE && this.settings.hasPending) this.commitSettings();
    if (status === STATUS_IDLE && this.matchContextValue !== undefined)
      this.rules?.endTransaction(this.matchContextValue);
    if (status === STATUS_IDLE && this.transactionWrites !== null) this.endTransactionWrites();
    // A terminating client lets go once its last reply is in; release() judges cleanliness.
    if (this.terminating) return this.awaitingReady === 0;
    if (this.awaitingReady > 0 || this.unsynced || this.clientInCopyIn || this.reader.isMidFrame)
      return false;
    if (this.server?.sentPartialMessage) return false;
    if (this.shuttingDown) return status === STATUS_IDLE;
    if (this.pinnedReason !== undefined) return false;
    switch (this.mode) {
      case 'transaction':
        return status === STATUS_IDLE;
      case 'statement':
        if (status !== STATUS_IDLE) this.statementModeViolation = true;
        return true;
      case 'session':
        return false;
    }
  }

  onServerReleasable(server: ServerConnection): void {
    this.server = null;
    if (this.statementModeViolation) {
      this.pool.release(server, false);
      this.fail(
        new ProxyError(
          SqlState.FeatureNotSupported,
          'transaction blocks are not allowed in statement pooling mode',
          {
            severity: 'FATAL',
            hint: 'use pool_mode transaction or session for multi-statement transactions',
          },
        ),
      );
      return;
    }
    if (this.terminating) {
      this.pool.release(server, this.isIdle && this.atMessageBoundary(server));
      this.close();
      return;
    }
    this.pool.release(server, true);
    if (this.shuttingDown) this.sendShutdownAndClose();
    else this.flushNotifications();
  }

  onCopyInResponse(): void {
    // Syncs sent after the Execute that started COPY IN are ignored by the server, unless bad
    // data sent with them ends the COPY first: then they are answered, and the count is a guess.
    if (this.syncsSinceExecute > 0) this.server?.distrustReplyCount();
    this.statements.unexpectReady(Math.min(this.awaitingReady, this.syncsSinceExecute));
    this.observer?.unexpect(Math.min(this.awaitingReady, this.syncsSinceExecute));
    this.awaitingReady = Math.max(0, this.awaitingReady - this.syncsSinceExecute);
    this.syncsSinceExecute = 0;
    this.clientInCopyIn = true;
  }

  onServerError(_fatal: boolean, fields: Readonly<Record<string, string>>): Buffer | undefined {
    // An error ends COPY IN on the server side; later Syncs count again.
    this.clientInCopyIn = false;
    this.metrics?.noteError(fields.C);
    this.settings.noteFailure();
    const { replacement, aborted } = this.statements.onError(this.server, fields.C);
    // The held verification's messages were skipped: the barrier lifts after this frame.
    if (aborted !== undefined && aborted === this.holding) queueMicrotask(() => this.resolveHold());
    if (replacement === undefined && this.timedPrefixLength > 0 && fields.P !== undefined) {
      return shiftErrorPosition(fields, this.timedPrefixLength);
    }
    return replacement;
  }

  onParseOrCloseComplete(): boolean | Buffer {
    return this.statements.onParseOrCloseComplete();
  }

  onParameterDescription(): boolean {
    return this.statements.onParameterDescription();
  }

  onStatementDescription(buf: Buffer, start: number, end: number): void {
    const v = this.statements.onStatementDescription(buf, start, end);
    if (v !== undefined && v === this.holding) this.resolveHold();
  }

  // ---- rules -----------------------------------------------------------------------------------

  /** Built once and again only when application_name changes: judged on every statement. */
  private get matchContext(): MatchContext {
    const applicationName = this.parameters.get('application_name');
    let ctx = this.matchContextValue;
    if (ctx === undefined || ctx.applicationName !== applicationName) {
      ctx = { user: this.user, database: this.database, applicationName };
      this.matchContextValue = ctx;
    }
    return ctx;
  }

  /** The error for `sql` if a rule blocks it. */
  private blockedBy(rules: RuleEngine, sql: string): Buffer | undefined {
    const verdict = rules.judge(sql, this.matchContext);
    return verdict?.blockedBy ? blockedError(verdict.blockedBy) : undefined;
  }

  /**
   * A Query with rules loaded: blocked (answered 42501, never run) or rewritten (the new text
   * goes instead). Returns true when the frame was handled here, else the `cache` action of a
   * matching rule, if any, for the cache to apply.
   */
  private onQueryWithRules(
    rules: RuleEngine,
    buf: Buffer,
    start: number,
    end: number,
  ): true | CacheRule | undefined {
    // No rules loaded: not even the text is decoded.
    if (rules.rules.rules.length === 0) return undefined;
    const sql = buf.toString('utf8', start + 5, end - 1);
    const verdict = rules.judge(sql, this.matchContext);
    if (verdict === undefined) return undefined;
    if (verdict.blockedBy) {
      this.refuseQuery(blockedError(verdict.blockedBy), SqlState.InsufficientPrivilege, buf, start, end);
      return true;
    }
    // Timeouts and concurrency slots apply to a statement with nothing else in flight, so the
    // next ReadyForQuery is its own; a timeout only outside a transaction block (see
    // src/rules/text-actions.ts timeoutPrefix).
    const quiet = this.awaitingReady === 0 && !this.unsynced && !this.clientInCopyIn && !this.cacheParked;
    const prefix = quiet && this.transactionStatus === STATUS_IDLE ? verdict.timeoutPrefix : undefined;
    const slot = quiet ? verdict.concurrency : undefined;
    const rewritten = verdict.rewritten;
    if (rewritten === undefined && prefix === undefined && slot === undefined) {
      return verdict.matched.find((rule) => rule.cache !== undefined)?.cache;
    }
    let wait: Promise<void> | undefined;
    if (slot !== undefined) {
      const { limit, queue } = slot.rule.max_concurrency!;
      if (rules.concurrency.tryAcquire(slot.key, limit)) {
        this.concurrencySlot = slot.key;
      } else if (queue) {
        wait = rules.concurrency.wait(slot.key);
      } else {
        rules.concurrency.stats.refused++;
        this.refuseQuery(concurrencyError(slot.rule), SqlState.TooManyConnections, buf, start, end);
        return true;
      }
    }
    this.forwardRun(buf, start);
    this.runStart = end;
    this.awaitingReady++;
    this.syncsSinceExecute = 0;
    this.expectReady();
    const text = rewritten ?? sql;
    // Rewrites touch WHERE clauses, templates replace the text: what it writes is judged anew.
    if (this.cache !== undefined && rewritten !== undefined) {
      const writes = this.cache.judge(this.cacheContext, rewritten, false).writes;
      if (writes !== undefined) this.noteTransactionWrites(writes);
    }
    const frame =
      rewritten === undefined && prefix === undefined
        ? Buffer.from(buf.subarray(start, end))
        : serialize.query(prefix === undefined ? text : prefix + text);
    if (prefix !== undefined) {
      this.timedQuery = frame;
      this.timedPrefixLength = prefix.length;
    }
    if (wait === undefined) this.send(frame);
    else this.parkForSlot(rules, slot!.key, frame, wait);
    return true;
  }

  /**
   * Answers a Query with a rule's error instead of running it. With nothing in flight and no
   * transaction it is answered at once; otherwise replies must stay in order and an error inside
   * a transaction aborts it, so a statement the server is sure to reject goes instead and its
   * error is replaced by the rule's.
   */
  private refuseQuery(error: Buffer, sqlState: string, buf: Buffer, start: number, end: number): void {
    this.forwardRun(buf, start);
    this.runStart = end;
    if (this.mayReadFromCache) {
      // (Otherwise the server's error, replaced by this one, is counted in onServerError.)
      this.metrics?.noteError(sqlState);
      // Nothing in flight, no transaction: answer at once, no server needed.
      this.writeCached(Buffer.concat([error, READY_FOR_QUERY.I]));
      return;
    }
    // Replies must stay in order, and an error inside a transaction aborts it: a statement the
    // server is sure to reject goes instead, and its error is replaced by the rule's.
    this.awaitingReady++;
    this.syncsSinceExecute = 0;
    this.statements.expectReplacedError(error);
    this.expectReady();
    this.send(BLOCKED_QUERY);
  }

  private writingTimedQuery(server: ServerConnection): void {
    this.timedQuery = undefined;
    server.expectPrefixComplete();
  }

  private releaseConcurrencySlot(): void {
    const key = this.concurrencySlot;
    this.concurrencySlot = undefined;
    if (key !== undefined) this.rules?.concurrency.release(key);
  }

  /** Waits for a `max_concurrency` slot (`queue: true`); what the client sends meanwhile queues behind. */
  private parkForSlot(rules: RuleEngine, key: string, frame: Buffer, wait: Promise<void>): void {
    this.cacheParked = true;
    this.socket.pause();
    void wait.then(() =>
      this.guarded(() => {
        this.cacheParked = false;
        if (this.closed) {
          rules.concurrency.release(key);
          return;
        }
        this.concurrencySlot = key;
        this.ownQueue().unshift(frame);
        this.resumeQueued();
      }),
    );
  }

  // ---- result cache ---------------------------------------------------------------------------

  private get cacheContext(): CacheContext {
    const settingsKey = this.settings.cacheSignature;
    let ctx = this.cacheContextValue;
    if (ctx === undefined || ctx.settingsKey !== settingsKey) {
      ctx = {
        database: this.database,
        user: this.user,
        settingsKey,
        searchPath: this.settings.searchPath,
      };
      this.cacheContextValue = ctx;
    }
    return ctx;
  }

  /**
   * A Query with the cache on: its writes are bumped, and a cacheable read with nothing else in
   * flight is answered here when an entry exists. Returns true when the frame was consumed.
   */
  private onQueryWithCache(
    cache: ResultCache,
    buf: Buffer,
    start: number,
    end: number,
    rule: CacheRule | undefined,
  ): boolean {
    const sql = buf.toString('utf8', start + 5, end - 1);
    const verdict = cache.judge(this.cacheContext, sql, this.mayReadFromCache, rule);
    if (verdict.writes !== undefined) this.noteTransactionWrites(verdict.writes);
    const plan = verdict.read;
    if (plan === undefined) return false;
    const entry =
      cache.lookup(plan) ??
      cache.lookupWhileRefreshing(plan) ??
      staleAnswer(cache, plan, this.server === null && this.pool.cannotConnectNow);
    if (entry !== undefined) {
      this.forwardRun(buf, start);
      this.runStart = end;
      this.observer?.onCacheHit();
      this.writeCached(entry);
      return true;
    }
    const wait = cache.wait(plan);
    if (wait === undefined) {
      this.pendingCapture = cache.lead(plan);
      return false;
    }
    this.forwardRun(buf, start);
    this.runStart = end;
    this.awaitingReady++;
    this.expectReady();
    this.park(cache, plan, [buf.subarray(start, end)], wait);
    return true;
  }

  /** True when a request arriving now could be answered from the cache. */
  private get mayReadFromCache(): boolean {
    return (
      this.awaitingReady === 0 &&
      !this.unsynced &&
      this.transactionStatus === STATUS_IDLE &&
      !this.clientInCopyIn &&
      !this.cacheReadsUnsafe &&
      !this.acquiring &&
      !this.cacheParked &&
      this.hubCommand === undefined &&
      this.queued.length === 0 &&
      this.pendingCapture === null
    );
  }

  /**
   * Reads a frame of a possible cached batch. Returns true when the frame was consumed here
   * (the batch was answered from the cache, or parked); false lets normal handling go on.
   */
  private onBatchFrame(cache: ResultCache, type: number, buf: Buffer, start: number, end: number): boolean {
    let batch = this.batch;
    if (batch === null) {
      if (!this.mayReadFromCache) return false;
      // Whatever precedes goes out now; the batch's own bytes are held from here.
      this.forwardRun(buf, start);
      batch = {
        diverted: [],
        sql: undefined,
        paramTypes: '',
        bindTail: undefined,
        bindFrame: undefined,
        shape: '',
        bytes: 0,
      };
      this.batch = batch;
    }
    switch (type) {
      case FrontendType.Parse: {
        const queryStart = parseQueryStart(buf, start, end);
        const queryEnd = queryStart < 0 ? -1 : parseQueryEnd(buf, queryStart, end);
        if (buf[start + 5] !== 0 || batch.shape !== '' || queryEnd < 0) break;
        batch.sql = buf.toString('utf8', queryStart, queryEnd);
        // Only reads are worth holding (a LISTEN here belongs to the listen hub, say).
        if (cache.analyzer.analyze(batch.sql).kind !== 'select') break;
        batch.paramTypes = buf.toString('latin1', queryEnd + 1, end);
        batch.shape = 'P';
        return false;
      }
      case FrontendType.Bind: {
        const target = peekBindStatement(buf, start, end);
        if (target === undefined || buf[start + 5] !== 0 || batch.bindTail !== undefined) break;
        if (target.name !== '') {
          // A named statement on a server Sluice holds would be prepared there as a side effect.
          const source = this.server === null ? this.statements.sourceOf(target.name) : undefined;
          if (source === undefined || batch.shape !== '') break;
          if (cache.analyzer.analyze(source.sql).kind !== 'select') break;
          batch.sql = source.sql;
          batch.paramTypes = source.paramTypes;
        } else if (batch.shape !== 'P') {
          break;
        }
        batch.bindTail = buf.toString('latin1', target.nameEnd, end);
        batch.bindFrame = buf.subarray(start, end);
        batch.shape += 'B';
        return false;
      }
      case FrontendType.Describe:
        if (batch.bindTail === undefined || buf[start + 6] !== 0) break;
        batch.shape += buf[start + 5] === 0x53 ? 'S' : 'D';
        return false;
      case FrontendType.Execute:
        // Unnamed portal, no row limit: the reply is the whole result. (Execute is not an
        // inspected type, so its body may lie in the next chunk.)
        if (end > buf.length || batch.bindTail === undefined || buf[start + 5] !== 0) break;
        if (buf.readInt32BE(start + 6) !== 0) break;
        if (batch.shape.endsWith('E')) break;
        batch.shape += 'E';
        return false;
      case FrontendType.Sync:
        if (batch.sql !== undefined && batch.bindTail !== undefined && batch.shape.endsWith('E')) {
          return this.finishBatch(cache, batch, buf, start, end);
        }
        break;
    }
    this.forwardRun(buf, start);
    this.abandonBatch();
    return false;
  }

  /** The batch cannot be answered from the cache: send what was held, in order. */
  private abandonBatch(): void {
    const batch = this.batch;
    if (batch === null) return;
    this.batch = null;
    for (const run of batch.diverted) this.send(run);
  }

  /** At the batch's Sync: answer from the cache, park, or send it and capture the reply. */
  private finishBatch(
    cache: ResultCache,
    batch: CandidateBatch,
    buf: Buffer,
    start: number,
    end: number,
  ): boolean {
    const plan = cache.planRead(
      this.cacheContext,
      batch.sql!,
      `E${batch.shape}\0${batch.paramTypes}\0${batch.bindTail}`,
      { frame: batch.bindFrame!, paramTypes: Buffer.from(batch.paramTypes, 'latin1') },
      this.rules?.cacheActionFor(batch.sql!, this.matchContext),
    );
    if (plan === undefined) {
      this.forwardRun(buf, start);
      this.abandonBatch();
      return false;
    }
    const entry =
      cache.lookup(plan) ??
      cache.lookupWhileRefreshing(plan) ??
      staleAnswer(cache, plan, this.server === null && this.pool.cannotConnectNow);
    if (entry !== undefined) {
      // Nothing of the batch went out: drop what it queued and the replies it expected.
      this.batch = null;
      this.runStart = end;
      this.unsynced = false;
      this.expectReady();
      this.answeredLocally();
      this.observer?.onCacheHit();
      this.writeCached(entry);
      return true;
    }
    const wait = cache.wait(plan);
    // Count the Sync as usual, and hold it with the rest of the batch.
    this.unsynced = false;
    this.awaitingReady++;
    this.syncsSinceExecute++;
    this.expectReady();
    this.forwardRun(buf, end);
    this.runStart = end;
    const frames = batch.diverted;
    this.batch = null;
    if (wait === undefined) {
      this.pendingCapture = cache.lead(plan);
      for (const run of frames) this.send(run);
      return true;
    }
    this.park(cache, plan, frames, wait);
    return true;
  }

  /** Holds a request (and whatever follows) until the shared tier or the read in flight answers. */
  private park(
    cache: ResultCache,
    plan: ReadPlan,
    frames: QueuedItem[],
    wait: Promise<Buffer | undefined>,
  ): void {
    this.cacheParked = true;
    this.socket.pause();
    wait.then(
      (found) => this.guarded(() => this.finishParked(cache, plan, frames, found)),
      () => this.guarded(() => this.finishParked(cache, plan, frames, undefined)),
    );
  }

  private finishParked(
    cache: ResultCache,
    plan: ReadPlan,
    frames: QueuedItem[],
    entry: Buffer | undefined,
  ): void {
    this.cacheParked = false;
    if (this.closed) return;
    if (entry !== undefined) {
      this.awaitingReady--;
      this.answeredLocally();
      this.observer?.onCacheHit();
      this.writeCached(entry);
    } else {
      // Run it after all: lead a new flight unless someone else already does.
      if (!cache.inFlight(plan)) this.pendingCapture = cache.lead(plan);
      this.ownQueue().unshift(...frames);
    }
    this.resumeQueued();
  }

  /** After a park: what queued meanwhile goes to the server (or waits for one). */
  private resumeQueued(): void {
    if (this.server === null) {
      this.acquireForQueued();
    } else if (this.queued.length > 0) {
      // Session mode or a pinned client: its server is still here.
      const server = this.server;
      const flowing = this.holding === undefined ? this.writeQueued(server) : true;
      if (this.pendingCapture) this.startCapture(server);
      if (!flowing) {
        this.waitForServerDrain(server);
        return;
      }
    }
    if (!this.acquiring) this.socket.resume();
  }

  /** A cached reply: a client that stops reading stops being read, as with server replies. */
  private writeCached(entry: Buffer): void {
    if (this.heldReplies !== null) {
      this.heldReplies.push(entry);
      return;
    }
    if (!this.socket.write(entry) && !this.pausedForClientDrain) {
      this.pausedForClientDrain = true;
      this.socket.pause();
    }
  }

  private startCapture(server: ServerConnection): void {
    const capture = this.pendingCapture;
    this.pendingCapture = null;
    if (capture) server.startCapture(capture);
  }

  private abortPendingCapture(): void {
    const capture = this.pendingCapture;
    this.pendingCapture = null;
    capture?.abort();
  }

  private noteTransactionWrites(writes: Writes): void {
    if (writes === 'schema' || this.transactionWrites === 'schema') {
      this.transactionWrites = 'schema';
      return;
    }
    if (writes === 'all' || this.transactionWrites === 'all') {
      this.transactionWrites = 'all';
      return;
    }
    this.transactionWrites ??= new Set();
    for (const table of writes) this.transactionWrites.add(table);
  }

  /**
   * The transaction that wrote ended: bump again so nothing read while it ran survives. With a
   * shared tier, replies (this ReadyForQuery on) wait until the bump is published.
   */
  private endTransactionWrites(): void {
    const writes = this.transactionWrites;
    this.transactionWrites = null;
    if (writes === null || this.cache === undefined) return;
    const published = this.cache.endTransaction(
      this.database,
      typeof writes === 'string' ? writes : [...writes],
    );
    if (published === undefined) return;
    const held: Buffer[] = this.heldReplies ?? [];
    this.heldReplies = held;
    const release = () => {
      if (this.heldReplies !== held) return;
      this.heldReplies = null;
      if (!this.closed && held.length > 0)
        this.writeCached(held.length === 1 ? held[0]! : Buffer.concat(held));
    };
    published.then(
      () => this.guarded(release),
      () => this.guarded(release),
    );
  }

  /**
   * A Parse with the cache on: whether the statement may write is remembered; what it writes is
   * bumped at each Bind, when its parameter values are known and it is about to run.
   */
  private noteParsedWrites(
    cache: ResultCache,
    buf: Buffer,
    start: number,
    end: number,
    queryStart: number,
    queryEnd: number,
    decoded: string | undefined,
  ): void {
    const name = peekParseName(buf, start, end);
    if (name === undefined) return;
    const sql = decoded ?? buf.toString('utf8', queryStart, queryEnd);
    if (cache.writeTemplate(this.cacheContext, sql) === undefined) {
      this.statementWrites?.delete(name);
      return;
    }
    this.statementWrites ??= new Map();
    this.statementWrites.set(name, { sql, paramTypes: Buffer.from(buf.subarray(queryEnd + 1, end)) });
  }

  /** A Bind of a statement that may write: bump what it writes with these values. */
  private noteBoundWrites(buf: Buffer, start: number, end: number): void {
    const target = peekBindStatement(buf, start, end);
    const template = target === undefined ? undefined : this.statementWrites?.get(target.name);
    if (template === undefined || this.cache === undefined) return;
    const writes = this.cache.bindWrites(this.cacheContext, template.sql, {
      frame: buf.subarray(start, end),
      paramTypes: template.paramTypes,
    });
    this.noteTransactionWrites(writes);
  }

  // ---- LISTEN / NOTIFY ------------------------------------------------------------------------

  /**
   * Answers a lone LISTEN/UNLISTEN between transactions through the pool's listen hub, so the
   * client needs no server of its own to receive notifications. Returns false to let the
   * statement go to a server as usual.
   */
  private tryListenHub(sql: string, buf: Buffer, start: number, end: number): boolean {
    const effect = loneListen(sql);
    // The Query itself is already counted in awaitingReady.
    if (!effect || !this.canUseHub(1)) return false;
    this.forwardRun(buf, start);
    this.runStart = end;
    this.runHubCommand(effect, []);
    return true;
  }

  /** Between transactions with nothing in flight or queued: the hub may answer for a server. */
  private canUseHub(awaiting: number): boolean {
    return (
      this.mode === 'transaction' &&
      this.pinnedReason === undefined &&
      this.server === null &&
      !this.acquiring &&
      this.hubCommand === undefined &&
      this.hubBatch === undefined &&
      this.awaitingReady === awaiting &&
      this.transactionStatus === STATUS_IDLE &&
      this.queued.length === 0 &&
      !this.clientInCopyIn
    );
  }

  private runHubCommand(effect: ListenEffect, replies: Buffer[]): void {
    const hub = this.pool.listenHub;
    this.usedHub = true;
    let done: Promise<void>;
    if (effect.kind === 'listen') {
      this.hubCommand = 'LISTEN';
      done = hub.listen(effect.channel, this);
    } else {
      this.hubCommand = 'UNLISTEN';
      if (effect.channel === '*') hub.unlistenAll(this);
      else hub.unlisten(effect.channel, this);
      done = Promise.resolve();
    }
    done.then(
      () => this.guarded(() => this.finishHubCommand(undefined, replies)),
      (err: Error) => this.guarded(() => this.finishHubCommand(err, replies)),
    );
  }

  private finishHubCommand(err: Error | undefined, replies: Buffer[]): void {
    const tag = this.hubCommand ?? 'LISTEN';
    this.hubCommand = undefined;
    if (this.closed) return;
    if (this.awaitingReady > 0) this.awaitingReady--;
    this.answeredLocally();
    const reply = err
      ? createErrorResponse({
          severity: 'ERROR',
          code: SqlState.ConnectionFailure,
          message: `${tag} failed: ${err.message}`,
        })
      : createCommandComplete(tag);
    this.writeCached(
      Buffer.concat([...replies, reply, READY_FOR_QUERY.I, ...this.pendingNotifications.splice(0)]),
    );
    this.acquireForQueued();
  }

  private acquireForQueued(): void {
    if (this.queued.length > 0 && !this.acquiring && !this.closed) {
      this.acquiring = true;
      this.observer?.onAcquireStart();
      this.pool.acquire(this);
      // Only when no server was free at once: hold further input so the queue stays bounded.
      // Pausing unconditionally cost two epoll_ctl syscalls per transaction (readStop/readStart).
      if (this.acquiring) {
        this.pausedForAcquire = true;
        this.socket.pause();
      }
    }
  }

  // An extended-protocol LISTEN (asyncpg's add_listener: Parse + Describe statement + Flush, then
  // Bind + Execute + Sync) is answered like the simple-query one, message by message with the
  // replies PostgreSQL would give, as long as the batch holds nothing else. Anything else in the
  // batch hands the messages seen so far to a server, as they would have gone, and pins.

  private tryHubParse(sql: string, buf: Buffer, start: number, end: number, queryEnd: number): boolean {
    const effect = loneListen(sql);
    // No declared parameter types (a LISTEN takes none): then ParameterDescription is empty.
    if (!effect || queryEnd + 3 > end || buf.readInt16BE(queryEnd + 1) !== 0) return false;
    if (this.unsynced || !this.canUseHub(0)) return false;
    const name = peekParseName(buf, start, end);
    if (name === undefined) return false;
    if (name !== '') {
      if (this.statements.get(name)) return false;
      const statement = this.statements.define(name, buf, start, end);
      if (!statement) return false;
      statement.hubEffect = effect;
    }
    const b = this.startHubBatch(effect, name, buf, start);
    this.runStart = end;
    if (name === '') b.unnamedParse = Buffer.from(buf.subarray(start, end));
    b.replies.push(PARSE_COMPLETE);
    return true;
  }

  /** FrameSink: a Bind of a statement defined by an earlier hub batch; true when answered. */
  onListenStatementBind(
    effect: ListenEffect,
    name: string,
    buf: Buffer,
    start: number,
    end: number,
  ): boolean {
    if (this.unsynced || !this.canUseHub(0)) {
      // On a server like any statement: the client's server now listens.
      this.pin('LISTEN inside a transaction or batch');
      return false;
    }
    this.startHubBatch(effect, name, buf, start);
    return this.hubFrame(FrontendType.Bind, buf, start, end);
  }

  private startHubBatch(effect: ListenEffect, name: string, buf: Buffer, start: number): HubBatch {
    this.forwardRun(buf, start);
    this.unsynced = true;
    this.hubBatch = {
      effect,
      name,
      unnamedParse: undefined,
      replies: [],
      bind: undefined,
      afterBind: [],
      executed: false,
    };
    return this.hubBatch;
  }

  /** A frame inside a hub batch: true when Sluice answers it, false after handing the batch on. */
  private hubFrame(type: number, buf: Buffer, start: number, end: number): boolean {
    const b = this.hubBatch!;
    let ok = false;
    switch (type) {
      case FrontendType.Describe: {
        const target = peekTarget(buf, start, end);
        if (!target) break;
        if (!b.bind && target.kind === STATEMENT && target.name === b.name) {
          b.replies.push(NO_PARAMETERS, NO_DATA);
          ok = true;
        } else if (b.bind && !b.executed && target.kind !== STATEMENT && target.name === '') {
          b.replies.push(NO_DATA);
          b.afterBind.push(Buffer.from(buf.subarray(start, end)));
          ok = true;
        }
        break;
      }
      case FrontendType.Flush:
        if (b.bind) break;
        if (b.replies.length > 0) this.socket.write(Buffer.concat(b.replies));
        b.replies = [];
        ok = true;
        break;
      case FrontendType.Bind: {
        if (b.bind) break;
        const target = peekBindStatement(buf, start, end);
        // Unnamed portal, the batch's statement, no parameters.
        if (!target || buf[start + 5] !== 0 || target.name !== b.name) break;
        // Parameter format codes (asyncpg sends one), then the parameter count, which must be 0.
        const counted = target.nameEnd + 2 + 2 * buf.readInt16BE(target.nameEnd);
        if (counted + 2 > end || buf.readInt16BE(counted) !== 0) break;
        b.bind = Buffer.from(buf.subarray(start, end));
        b.replies.push(BIND_COMPLETE);
        ok = true;
        break;
      }
      case FrontendType.Execute:
        // (Execute is not an inspected frame: one split between chunks is handed on.)
        if (!b.bind || b.executed || end > buf.length || buf[start + 5] !== 0) break;
        b.executed = true;
        b.afterBind.push(Buffer.from(buf.subarray(start, end)));
        ok = true;
        break;
      case FrontendType.Sync: {
        this.forwardRun(buf, start);
        this.runStart = end;
        this.hubBatch = undefined;
        this.unsynced = false;
        this.awaitingReady++;
        this.expectReady();
        if (b.executed) {
          this.runHubCommand(b.effect, b.replies);
        } else {
          this.awaitingReady--;
          this.answeredLocally();
          this.socket.write(Buffer.concat([...b.replies, READY_FOR_QUERY.I]));
        }
        return true;
      }
    }
    if (ok) {
      this.forwardRun(buf, start);
      this.runStart = end;
      return true;
    }
    this.handHubBatchOn(b);
    return false;
  }

  /**
   * Something else joined the batch: what Sluice answered so far (Parse, Describe statement) stays
   * answered; the statement is prepared on the server the batch gets (its replies dropped), and
   * the Bind and what followed it go there as the client sent them. The LISTEN then runs on
   * that server, which pins the client.
   */
  private handHubBatchOn(b: HubBatch): void {
    this.hubBatch = undefined;
    const unanswered = b.bind ? b.replies.slice(0, b.replies.indexOf(BIND_COMPLETE)) : b.replies;
    if (unanswered.length > 0) this.socket.write(Buffer.concat(unanswered));
    this.pin('LISTEN inside a transaction or batch');
    // Whatever precedes the current frame was consumed; emit() must not flush it again.
    this.frameFlushed = true;
    if (b.unnamedParse) {
      this.statements.expectDroppedParse();
      this.send(b.unnamedParse);
    }
    if (b.bind) {
      if (!this.statements.onBind(b.bind, 0, b.bind.length, this, false)) this.send(b.bind);
      for (const frame of b.afterBind) this.send(frame);
    }
  }

  /** NotificationListener: delivered between transactions, as PostgreSQL does. */
  deliverNotification(frame: Buffer): void {
    if (this.closed) return;
    if (
      this.server === null &&
      !this.acquiring &&
      this.hubCommand === undefined &&
      this.hubBatch === undefined
    )
      this.writeCached(frame);
    else {
      if (this.pendingNotifications === NO_NOTIFICATIONS) this.pendingNotifications = [];
      this.pendingNotifications.push(frame);
    }
  }

  /** NotificationListener: the listening server went away, and with it what was sent meanwhile. */
  listenerLost(err: Error): void {
    if (this.closed) return;
    this.usedHub = false;
    this.fail(
      new ProxyError(
        SqlState.ConnectionFailure,
        'the server connection listening for this client was lost; notifications may have been missed',
        { severity: 'FATAL', detail: err.message },
      ),
    );
  }

  private flushNotifications(): void {
    if (this.pendingNotifications.length > 0 && !this.closed) {
      this.writeCached(Buffer.concat(this.pendingNotifications.splice(0)));
    }
  }

  // ---- session state ----------------------------------------------------------------------------

  private noteSessionEffect(sql: string): void {
    for (const effect of classifyQuery(sql)) {
      switch (effect.kind) {
        case 'pin':
          this.cacheReadsUnsafe = true;
          this.pin(effect.reason);
          break;
        case 'rollback':
          this.settings.noteFailure();
          break;
        case 'ddl':
          noteSchemaChange();
          this.ddlPending = true;
          break;
        case 'listen':
          // Inside a transaction or an extended-protocol batch: the client's server listens.
          this.cacheReadsUnsafe = true;
          this.pin('LISTEN inside a transaction or batch');
          break;
        case 'unlisten':
          break;
        default:
          this.settings.note(effect);
      }
    }
  }

  /** From now on this client keeps its server: its state cannot be moved to another. */
  private pin(reason: string): void {
    if (this.pinnedReason !== undefined || this.mode === 'session') return;
    this.pinnedReason = reason;
    pinningStats.pinned++;
    logger.info(
      { user: this.user, database: this.database, reason },
      'client pinned to its server connection',
    );
  }

  /** Settings changes committed: record what the server now runs, and repair it if needed. */
  private commitSettings(): void {
    const { serverSignature, forgetStatements } = this.settings.commit();
    const server = this.server;
    if (forgetStatements) {
      this.statements.forgetAll();
      server?.forgetAllStatements();
    }
    if (!server) return;
    server.settingsSignature = serverSignature;
    if (
      serverSignature !== this.settings.signature &&
      (this.mode === 'session' || this.pinnedReason !== undefined)
    ) {
      // The client stays on this server: put its session defaults back right away.
      server.writeSilentQuery(this.settings.replayQuery);
      server.settingsSignature = this.settings.signature;
    }
  }

  onServerParameterStatus(name: string, value: string): void {
    if (this.parametersValue.get(name) === value) return;
    const own = this.parametersCopied
      ? (this.parametersValue as Map<string, string>)
      : new Map(this.parametersValue);
    own.set(name, value);
    this.parametersValue = own;
    this.parametersCopied = true;
  }

  onServerLost(server: ServerConnection, err: Error | undefined): void {
    if (this.server === server) this.server = null;
    this.statements.reset();
    this.observer?.reset();
    this.pool.release(server, false);
    if (this.closed) return;
    logger.info(
      { user: this.user, database: this.database, err: err?.message },
      'server connection lost under a client',
    );
    this.fail(new ProxyError(SqlState.ConnectionFailure, 'server connection lost', { severity: 'FATAL' }));
  }

  /** For query_timeout: a request is out on the server (COPY IN waits on the client instead). */
  get awaitingReply(): boolean {
    return this.awaitingReady > 0 && !this.clientInCopyIn;
  }

  /**
   * query_timeout: the server is cancelled and closed (its state is unknown). The client keeps
   * its connection (ERROR and ReadyForQuery per request owed) only where nothing it relies on
   * lived on that server: transaction or statement mode, outside a transaction, at message
   * boundaries both ways and with nothing else held; otherwise FATAL, as PgBouncer always does.
   */
  onQueryTimeout(server: ServerConnection, timeoutMs: number): void {
    if (this.closed || this.server !== server) return;
    server.sendCancel();
    const keep =
      this.mode !== 'session' &&
      this.pinnedReason === undefined &&
      this.transactionStatus === STATUS_IDLE &&
      !this.unsynced &&
      !this.reader.isMidFrame &&
      !server.isMidFrame &&
      !this.terminating &&
      this.heldReplies === null &&
      this.holding === undefined &&
      this.hubBatch === undefined &&
      this.batch === null &&
      this.queued.length === 0 &&
      !this.cacheParked;
    this.server = null;
    this.drainAwaited = undefined;
    this.pool.release(server, false);
    logger.warn(
      { user: this.user, database: this.database, server: server.id, keep },
      'query_timeout: cancelled the request and closed its server connection',
    );
    const err = queryTimeoutError(timeoutMs, !keep);
    if (!keep) {
      this.fail(err);
      return;
    }
    // The statement may have written (or changed the schema) before it was cancelled.
    if (this.transactionWrites !== null) this.endTransactionWrites();
    if (this.ddlPending) {
      this.ddlPending = false;
      noteSchemaChange();
    }
    this.releaseConcurrencySlot();
    this.timedQuery = undefined;
    this.timedPrefixLength = 0;
    this.abortPendingCapture();
    const replies: Buffer[] = [];
    const error = err.toErrorResponse();
    for (let i = 0; i < this.awaitingReady; i++) replies.push(error, READY_FOR_QUERY.I);
    this.awaitingReady = 0;
    this.statements.reset();
    this.observer?.reset();
    this.metrics?.noteError(err.code);
    this.writeCached(Buffer.concat(replies));
    if (!this.pausedForClientDrain) this.socket.resume();
  }

  // ---- lifecycle --------------------------------------------------------------------------------

  /** Graceful shutdown: close now if idle, otherwise once the current transaction ends. */
  requestShutdown(): void {
    if (this.closed) return;
    this.shuttingDown = true;
    if (this.isIdle && !this.acquiring) {
      if (this.server) {
        const server = this.server;
        this.server = null;
        this.pool.release(server, true);
      }
      this.sendShutdownAndClose();
    }
  }

  /** Shutdown deadline reached: drop whatever is in flight. */
  forceShutdown(): void {
    if (this.closed) return;
    this.sendShutdownAndClose();
  }

  private sendShutdownAndClose(): void {
    this.fail(
      new ProxyError(SqlState.AdminShutdown, 'terminating connection due to administrator command', {
        severity: 'FATAL',
      }),
    );
  }

  private finishTerminate(): void {
    // Requests still owed a reply run first, as PostgreSQL runs them before reading Terminate;
    // onServerReleasable closes once they are in. An unsynced batch is dropped, as it would be.
    if (this.awaitingReady > 0) return;
    this.close();
  }

  /** Sends the error (FATAL closes the client, ERROR is followed by ReadyForQuery). */
  fail(err: Error): void {
    if (this.closed) return;
    let reply: Buffer;
    let fatal = true;
    if (err instanceof UpstreamRejectedError) {
      reply = err.errorResponse;
    } else if (err instanceof ProxyError) {
      reply = err.toErrorResponse();
      fatal = err.fatal;
    } else {
      logger.error({ err }, 'internal error in client session');
      reply = createErrorResponse({
        severity: 'FATAL',
        code: SqlState.InternalError,
        message: 'internal error in Sluice',
      });
    }
    this.metrics?.noteError(err instanceof ProxyError ? err.code : (err as UpstreamRejectedError).sqlState);
    if (!fatal) {
      this.writeCached(Buffer.concat([reply, READY_FOR_QUERY.I]));
      return;
    }
    if (this.socket.writable) this.socket.end(reply);
    this.close();
  }

  /** Called by the socket's 'drain' listener (onSocketDrain); not for other callers. */
  onClientDrain(): void {
    this.server?.resume();
    if (this.pausedForClientDrain) {
      this.pausedForClientDrain = false;
      if (!this.acquiring && !this.cacheParked) this.socket.resume();
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.metrics?.noteClientClosed(this.socket);
    if (this.usedHub) this.pool.listenHub.unlistenAll(this);
    if (this.acquiring) this.pool.cancelWait(this);
    this.acquiring = false;
    this.queued.length = 0;
    this.abortPendingCapture();
    this.releaseConcurrencySlot();
    const server = this.server;
    if (server) {
      this.server = null;
      // Anything unanswered, an open transaction or pinned state makes the server unusable
      // for anyone else.
      this.pool.release(
        server,
        this.isIdle && this.atMessageBoundary(server) && this.pinnedReason === undefined,
      );
    }
    if (!this.socket.destroyed) {
      // Drain and discard whatever the client still sends, so its FIN is read even when the
      // socket was paused for backpressure; otherwise a half-closed socket lingers.
      this.socket.off('data', onSocketData);
      this.socket.resume();
      this.socket.end();
      this.socket.destroySoon();
    }
    this.hooks.onSessionClosed(this);
  }
}
