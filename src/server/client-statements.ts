// Owns a client's named prepared statements under transaction pooling: client names map to
// server-side names derived from (query text, parameter types); a server that lacks a statement
// gets a Parse injected just before the Bind/Describe that needs it; replies to injected messages
// are dropped in order. It also keeps the FIFO that pairs each ParseComplete/CloseComplete and
// each ReadyForQuery with what was sent, which is what lets replies be dropped exactly.
import type { ServerConnection } from '../pool/server-connection.js';
import { createErrorResponse } from '../protocol/backend-messages.js';
import { SqlState } from '../protocol/sqlstate.js';
import {
  createCloseStatement,
  createDescribeStatement,
  createParse,
  FLUSH,
  parseQueryEnd,
  parseQueryStart,
  peekBindStatement,
  peekDescribeKind,
  peekParseName,
  peekTarget,
  renameBind,
  renameParse,
  STATEMENT,
  sameRowType,
  serverStatementName,
} from '../protocol/statement-frames.js';

export interface PreparedStatement {
  serverName: string;
  /** The client's Parse, renamed to serverName: what gets injected on servers lacking it. */
  parse: Buffer;
  /**
   * The statement's result row type (its RowDescription or NoData) as PostgreSQL described it
   * when the client parsed it: what the client's driver may have cached.
   */
  shape: Buffer | undefined;
  /** The schema epoch in which `shape` was last known to hold. */
  shapeEpoch: number;
  /** Its result type changed under DDL: every use answers 0A000, as PostgreSQL's own would. */
  broken: boolean;
  /** A re-parse whose description is awaited before any use of it goes to the server. */
  verifying: Verification | undefined;
  /** A LISTEN/UNLISTEN the listen hub answered: its Binds may be answered there too. */
  hubEffect?: ListenEffect;
  /** Query text and parameter-type bytes, decoded once when the result cache asks. */
  source?: StatementSource;
}

export interface ListenEffect {
  kind: 'listen' | 'unlisten';
  channel: string;
}

/**
 * A statement re-parsed on a server after DDL, followed by a Describe and a Flush. Until its
 * description is in, the client's later messages are held back (a barrier in the session's queue),
 * so a changed result type can still become PostgreSQL's 0A000 before any row is produced.
 */
export interface Verification {
  statement: PreparedStatement;
  /** The name the re-parse used (the statement's server name at the time). */
  serverName: string;
  epoch: number;
  result: undefined | 'match' | 'mismatch' | 'aborted';
  newShape: Buffer | undefined;
}

/** Query text and parameter-type bytes of a statement, decoded once when the result cache asks. */
export interface StatementSource {
  sql: string;
  /** The Parse's parameter-type section as latin1 (one char per byte): part of cache keys. */
  paramTypes: string;
}

interface ParseExpected {
  parse: string;
  drop: boolean;
  clientName: string | undefined;
}

/** A Bind or Describe of a statement under verification, held until the verdict. */
interface UseExpected {
  use: PreparedStatement;
  frame: Buffer;
}

/** What a reply in the FIFO answers. */
type Expected =
  | typeof FORWARD
  | typeof DROP
  | typeof BATCH_END
  | ParseExpected
  | { replaceError: Buffer }
  | { replaceComplete: Buffer }
  | { capture: PreparedStatement | undefined }
  | { verify: Verification }
  | UseExpected
  | DeferredParse;

const FORWARD = 0; // the client's own Parse/Close/Describe statement: its reply goes to the client
const DROP = 1; // an injected Close: its reply is Sluice's
const BATCH_END = 2; // a Sync or Query: answered by ReadyForQuery

/** A client's Parse queued before a server was assigned: what it becomes depends on that server. */
export interface DeferredParse {
  deferred: PreparedStatement;
  clientName: string;
}

/** What the session's queue holds: client runs, deferred Parses, verification barriers. */
export type QueuedItem = Buffer | DeferredParse | Verification;

export function isVerification(item: QueuedItem): item is Verification {
  return !Buffer.isBuffer(item) && 'result' in item;
}

/** Where rewritten frames go: the server now, or the queue until one is assigned. */
export interface FrameSink {
  emit(frame: QueuedItem): void;
  readonly server: ServerConnection | null;
  /** A Bind of a statement the listen hub answered before: true when the hub answers it again. */
  onListenStatementBind(effect: ListenEffect, name: string, buf: Buffer, start: number, end: number): boolean;
}

/** Plan-cache counters: a hit is a Parse/Bind/Describe on a server that already had the statement. */
export const statementCacheStats = { hits: 0, misses: 0, verified: 0, changed: 0 };

/**
 * Bumped by DDL through Sluice (when it is sent, and again when it has committed) and by every
 * "cached plan must not change result type" error. Statements parsed afterwards get new server-side
 * names; a server's copy parsed in an earlier epoch is closed and parsed afresh before its next use,
 * and when the client's driver may have cached the old row type, the fresh description is compared
 * with it first (see Verification).
 */
let schemaEpoch = 0;

export function noteSchemaChange(): void {
  schemaEpoch++;
}

// A Parse that PostgreSQL is sure to reject (named, so a failure leaves the client's unnamed
// statement alone): its error stands in for 42P05 or 0A000 at the right place in the reply stream.
const FAILING_PARSE = createParse('sluice_duplicate', 'SLUICE DUPLICATE PREPARED STATEMENT');
const PARSE_COMPLETE = Buffer.from([0x31, 0, 0, 0, 4]);
// Closing a statement that does not exist succeeds: a harmless message whose CloseComplete
// stands in for the ParseComplete of a Parse the server did not need.
const NOOP_CLOSE = createCloseStatement('sluice_noop');
// PostgreSQL's own wording and routine: asyncpg and postgres.js re-prepare on this routine.
const CACHED_PLAN_CHANGED = createErrorResponse({
  severity: 'ERROR',
  code: SqlState.FeatureNotSupported,
  message: 'cached plan must not change result type',
  file: 'plancache.c',
  routine: 'RevalidateCachedQuery',
});
const DESCRIBE_PORTAL = 0x50; // 'P'

/** Never written to (see ClientStatements.statements). */
const NO_STATEMENTS = new Map<string, PreparedStatement>();

export class ClientStatements {
  /** Counters of the running Sluice this session belongs to (the module's when there is none). */
  constructor(private readonly cacheStats: typeof statementCacheStats = statementCacheStats) {}

  /** Shared and empty until the first named statement: an idle client carries no Map of its own. */
  private statements = NO_STATEMENTS;
  private expected: Expected[] = [];
  /** Statements referenced while no server was assigned: checked against the server we get. */
  private neededAtAttach: PreparedStatement[] = [];

  // ---- client → server --------------------------------------------------------------------

  /** A Sync or Query went out: one ReadyForQuery will answer it. */
  expectReady(): void {
    this.expected.push(BATCH_END);
  }

  /**
   * The next message fails on the server on purpose (a statement a rule blocked): its error is
   * replaced by `error`, in order with every other reply, and the transaction is aborted as
   * PostgreSQL would abort it.
   */
  expectReplacedError(error: Buffer): void {
    this.expected.push({ replaceError: error });
  }

  /** A Parse a rule blocked: a Parse the server is sure to reject goes in its place. */
  blockParse(sink: FrameSink, error: Buffer): void {
    this.expected.push({ replaceError: error });
    sink.emit(FAILING_PARSE);
  }

  /** Syncs the server will ignore (sent during COPY IN) get no ReadyForQuery. */
  unexpectReady(count: number): void {
    for (let i = this.expected.length - 1; i >= 0 && count > 0; i--) {
      if (this.expected[i] === BATCH_END) {
        this.expected.splice(i, 1);
        count--;
      }
    }
  }

  /** Handles a Parse; returns false when the frame goes out unchanged. */
  onParse(buf: Buffer, start: number, end: number, sink: FrameSink): boolean {
    const name = peekParseName(buf, start, end);
    if (name === undefined || name === '') {
      this.expected.push(FORWARD);
      return false;
    }
    if (this.statements.has(name)) {
      // PostgreSQL's answer must come in order with the rest: make the server fail here, and
      // put PostgreSQL's own wording for the duplicate in place of its error.
      this.expected.push({
        replaceError: createErrorResponse({
          severity: 'ERROR',
          code: '42P05',
          message: `prepared statement "${name}" already exists`,
        }),
      });
      sink.emit(FAILING_PARSE);
      return true;
    }
    const statement = this.define(name, buf, start, end);
    if (!statement) {
      this.expected.push(FORWARD);
      return false;
    }
    const server = sink.server;
    if (!server) {
      const deferred: DeferredParse = { deferred: statement, clientName: name };
      this.expected.push(deferred);
      sink.emit(deferred);
      return true;
    }
    const entries: Expected[] = [];
    sink.emit(this.parseOn(server, statement, name, entries));
    for (const e of entries) this.expected.push(e);
    return true;
  }

  /** Records a client statement without sending anything; undefined when the Parse is malformed. */
  define(name: string, buf: Buffer, start: number, end: number): PreparedStatement | undefined {
    const serverName = serverStatementName(buf, start, end, schemaEpoch);
    if (serverName === undefined) return undefined;
    const statement: PreparedStatement = {
      serverName,
      parse: renameParse(buf, start, end, serverName),
      shape: undefined,
      shapeEpoch: schemaEpoch,
      broken: false,
      verifying: undefined,
    };
    if (this.statements === NO_STATEMENTS) this.statements = new Map();
    this.statements.set(name, statement);
    return statement;
  }

  /** Sluice sent a Close of its own (query-portal-guard.ts): its CloseComplete is dropped. */
  expectDroppedClose(): void {
    this.expected.push(DROP);
  }

  /** A client's unnamed Parse Sluice answered itself goes to a server after all: drop its reply. */
  expectDroppedParse(): void {
    this.expected.push({ parse: '', drop: true, clientName: undefined });
  }

  get(name: string): PreparedStatement | undefined {
    return this.statements.get(name);
  }

  /**
   * What a client's Parse becomes on `server`, and the replies to expect. A statement another
   * client already prepared there in this schema epoch is never re-parsed: a no-op Close answers
   * in its place, its CloseComplete turned into the ParseComplete the client waits for. Either
   * way a Describe follows (its replies dropped), recording the row type the client may cache.
   */
  private parseOn(
    server: ServerConnection,
    statement: PreparedStatement,
    clientName: string,
    entries: Expected[],
  ): Buffer {
    const frames: Buffer[] = [];
    const copy = server.statementEpoch(statement.serverName);
    if (copy === schemaEpoch) {
      this.cacheStats.hits++;
      entries.push({ replaceComplete: PARSE_COMPLETE });
      frames.push(NOOP_CLOSE);
    } else {
      this.cacheStats.misses++;
      frames.push(...this.makeRoom(server, statement.serverName, copy, entries), statement.parse);
      entries.push({ parse: statement.serverName, drop: false, clientName });
    }
    statement.shapeEpoch = schemaEpoch;
    frames.push(createDescribeStatement(statement.serverName));
    entries.push({ capture: statement });
    return Buffer.concat(frames);
  }

  /** Closes what must go before `name` is parsed on `server`: an older copy, an evicted one. */
  private makeRoom(server: ServerConnection, name: string, copy: number, entries: Expected[]): Buffer[] {
    const frames: Buffer[] = [];
    if (copy >= 0) {
      frames.push(createCloseStatement(name));
      entries.push(DROP);
    }
    const evicted = server.addStatement(name, schemaEpoch);
    if (evicted !== undefined) {
      frames.push(createCloseStatement(evicted));
      entries.push(DROP);
    }
    return frames;
  }

  /** Handles a Bind; returns false when the frame goes out unchanged. */
  onBind(buf: Buffer, start: number, end: number, sink: FrameSink, hub = true): boolean {
    const target = peekBindStatement(buf, start, end);
    if (!target || target.name === '') return false;
    const statement = this.statements.get(target.name);
    // Unknown names go through as they are: PostgreSQL answers 26000 in its own words.
    if (!statement) return false;
    if (
      statement.hubEffect !== undefined &&
      hub &&
      sink.onListenStatementBind(statement.hubEffect, target.name, buf, start, end)
    ) {
      return true;
    }
    this.use(
      statement,
      renameBind(buf, start, end, target.nameStart, target.nameEnd, statement.serverName),
      sink,
    );
    return true;
  }

  /**
   * Handles Describe: only statement targets with a name are rewritten; every Describe
   * statement gets an entry, since its ParameterDescription is matched against the FIFO.
   */
  onDescribe(buf: Buffer, start: number, end: number, sink: FrameSink): boolean {
    if (buf[start + 5] !== STATEMENT) return false;
    const target = peekTarget(buf, start, end);
    const statement = target && target.name !== '' ? this.statements.get(target.name) : undefined;
    if (!statement) {
      this.expected.push(FORWARD);
      return false;
    }
    this.use(statement, createDescribeStatement(statement.serverName), sink);
    return true;
  }

  /**
   * Sends `frame` (a Bind or Describe of `statement`, renamed) after whatever the server needs
   * first. The common case, a server holding a copy from this schema epoch, is one Map lookup.
   */
  private use(statement: PreparedStatement, frame: Buffer, sink: FrameSink): void {
    const describe = frame[0] === 0x44;
    if (statement.broken) {
      // PostgreSQL keeps answering 0A000 for a statement whose result type changed.
      this.expected.push({ replaceError: CACHED_PLAN_CHANGED });
      sink.emit(FAILING_PARSE);
      return;
    }
    const server = sink.server;
    if (!server || statement.verifying) {
      if (!server) this.neededAtAttach.push(statement);
      // Checked at attach (or at the verdict): a placeholder marks where its answer goes.
      if (statement.verifying || this.mayNeedCheck(statement)) {
        this.expected.push({ use: statement, frame });
      }
      if (describe) this.expected.push(FORWARD);
      sink.emit(frame);
      return;
    }
    const copy = server.statementEpoch(statement.serverName);
    if (copy === schemaEpoch) {
      this.cacheStats.hits++;
      // A copy from this epoch has the statement's row type (any other was compared first).
      if (statement.shapeEpoch !== schemaEpoch) statement.shapeEpoch = schemaEpoch;
    } else {
      this.cacheStats.misses++;
      const entries: Expected[] = [];
      const frames = this.makeRoom(server, statement.serverName, copy, entries);
      frames.push(statement.parse);
      entries.push({ parse: statement.serverName, drop: true, clientName: undefined });
      if (this.mayNeedCheck(statement)) {
        const v = this.startVerification(statement, frames, entries);
        sink.emit(Buffer.concat(frames));
        for (const e of entries) this.expected.push(e);
        sink.emit(v);
        this.expected.push({ use: statement, frame });
        if (describe) this.expected.push(FORWARD);
        sink.emit(frame);
        return;
      }
      for (const f of frames) sink.emit(f);
      for (const e of entries) this.expected.push(e);
    }
    if (describe) this.expected.push(FORWARD);
    sink.emit(frame);
  }

  /** DDL since the row type the client may have cached was known: a fresh parse must be compared. */
  private mayNeedCheck(statement: PreparedStatement): boolean {
    return statement.shapeEpoch < schemaEpoch && statement.shape !== undefined;
  }

  /** Adds Describe + Flush to a re-parse, so its row type comes back before anything else runs. */
  private startVerification(
    statement: PreparedStatement,
    frames: Buffer[],
    entries: Expected[],
  ): Verification {
    const v: Verification = {
      statement,
      serverName: statement.serverName,
      epoch: schemaEpoch,
      result: undefined,
      newShape: undefined,
    };
    statement.verifying = v;
    frames.push(createDescribeStatement(statement.serverName), FLUSH);
    entries.push({ verify: v });
    return v;
  }

  /**
   * Handles Close. A statement is forgotten by the client only: the frame goes to the server
   * unchanged, where the client's own name does not exist, so PostgreSQL still answers
   * CloseComplete in order while the shared statement stays prepared for others.
   */
  onClose(buf: Buffer, start: number, end: number): void {
    const target = peekTarget(buf, start, end);
    if (target && target.kind === STATEMENT && target.name !== '') this.statements.delete(target.name);
    this.expected.push(FORWARD);
  }

  /** The text and parameter types of a client's named statement (for the result cache). */
  sourceOf(name: string): StatementSource | undefined {
    const statement = this.statements.get(name);
    if (!statement) return undefined;
    if (!statement.source) {
      const parse = statement.parse;
      const queryStart = parseQueryStart(parse, 0, parse.length);
      const queryEnd = queryStart < 0 ? -1 : parseQueryEnd(parse, queryStart, parse.length);
      if (queryEnd < 0) return undefined;
      statement.source = {
        sql: parse.toString('utf8', queryStart, queryEnd),
        paramTypes: parse.toString('latin1', queryEnd + 1),
      };
    }
    return statement.source;
  }

  /** DISCARD ALL / DEALLOCATE ALL: every statement of this session is gone. */
  forgetAll(): void {
    this.statements.clear();
  }

  /**
   * A server was just assigned and nothing queued has gone out yet: returns the frames to send
   * first so that it has every statement the queued messages use. A statement whose row type must
   * be checked gets its re-parse and a barrier put into `queued` right before its first use.
   */
  prepareServer(server: ServerConnection, queued: QueuedItem[]): Buffer[] {
    const frames: Buffer[] = [];
    const front: Expected[] = [];
    for (const statement of this.neededAtAttach) {
      if (statement.broken || statement.verifying) continue;
      const copy = server.statementEpoch(statement.serverName);
      if (copy === schemaEpoch) {
        this.cacheStats.hits++;
        if (statement.shapeEpoch !== schemaEpoch) {
          statement.shapeEpoch = schemaEpoch;
          this.dropPlaceholders(statement);
        }
        continue;
      }
      this.cacheStats.misses++;
      const first = this.firstPlaceholder(statement);
      if (first) {
        this.insertVerification(server, statement, copy, first, queued);
        continue;
      }
      frames.push(...this.makeRoom(server, statement.serverName, copy, front), statement.parse);
      front.push({ parse: statement.serverName, drop: true, clientName: undefined });
    }
    this.neededAtAttach = [];
    if (front.length > 0) this.expected = front.concat(this.expected);
    return frames;
  }

  private firstPlaceholder(statement: PreparedStatement): UseExpected | undefined {
    for (const e of this.expected) {
      if (typeof e === 'object' && 'use' in e && e.use === statement) return e;
    }
    return undefined;
  }

  private dropPlaceholders(statement: PreparedStatement): void {
    this.expected = this.expected.filter(
      (e) => !(typeof e === 'object' && 'use' in e && e.use === statement),
    );
  }

  /** Puts a re-parse with Describe + Flush and a barrier right before `at`, a held use. */
  private insertVerification(
    server: ServerConnection,
    statement: PreparedStatement,
    copy: number,
    at: UseExpected,
    queued: QueuedItem[],
  ): void {
    const entries: Expected[] = [];
    const frames = this.makeRoom(server, statement.serverName, copy, entries);
    frames.push(statement.parse);
    entries.push({ parse: statement.serverName, drop: true, clientName: undefined });
    const v = this.startVerification(statement, frames, entries);
    this.expected.splice(this.expected.indexOf(at), 0, ...entries);
    const q = queued.indexOf(at.frame);
    queued.splice(q < 0 ? queued.length : q, 0, Buffer.concat(frames), v);
  }

  /** Turns a Parse queued before `server` was assigned into what it must be on that server. */
  resolveQueued(server: ServerConnection, deferred: DeferredParse): Buffer {
    const entries: Expected[] = [];
    const frame = this.parseOn(server, deferred.deferred, deferred.clientName, entries);
    const at = this.expected.indexOf(deferred);
    if (at >= 0) this.expected.splice(at, 1, ...entries);
    return frame;
  }

  /**
   * The verdict on `v` is in (or its messages were skipped after an error): rewrites the held
   * uses in `queued` and their FIFO entries. Returns false while a held Bind's next message (a
   * Describe portal or not) has yet to arrive, which decides what that Bind becomes.
   *
   * - Same row type: the uses go as they are.
   * - Changed: the fresh copy is closed (its name stands for the old type). A use the client
   *   describes (Describe statement, or Bind followed by Describe portal, as node-postgres and
   *   libpq send every time) runs against a copy under a new name: the client reads the new row
   *   description with the rows, so nothing failed and nothing is retried. Any other use gets
   *   PostgreSQL's 0A000 where its Bind was, and the server skips to Sync: no row of the new type
   *   reaches a driver that cached the old one, and nothing ran twice. Drivers that execute
   *   without describing (asyncpg, postgres.js, pgJDBC) re-prepare on that error by themselves.
   * - Skipped (an earlier message of the batch failed): later uses get a new verification.
   */
  resolveVerification(v: Verification, queued: QueuedItem[], server: ServerConnection): boolean {
    const statement = v.statement;
    const uses: UseExpected[] = [];
    for (const e of this.expected) {
      if (typeof e === 'object' && 'use' in e && e.use === statement) uses.push(e);
    }
    if (v.result === 'match' || v.result === 'aborted' || uses.length === 0) {
      statement.verifying = undefined;
      if (v.result === 'match') {
        this.cacheStats.verified++;
        statement.shapeEpoch = v.epoch;
        this.dropPlaceholders(statement);
      } else if (v.result === 'aborted' && uses.length > 0) {
        // The re-parse never ran; the uses of later batches need one of their own.
        this.insertVerification(
          server,
          statement,
          server.statementEpoch(statement.serverName),
          uses[0]!,
          queued,
        );
      } else if (v.result === 'mismatch') {
        this.closeChanged(v, server);
      }
      return true;
    }
    // Changed row type, with uses held: each needs to know whether the client describes it.
    const described: boolean[] = [];
    for (const u of uses) {
      if (u.frame[0] === 0x44) {
        described.push(true);
        continue;
      }
      const q = queued.indexOf(u.frame);
      const next = queued[q + 1];
      if (next === undefined) return false;
      described.push(Buffer.isBuffer(next) && peekDescribeKind(next) === DESCRIBE_PORTAL);
    }
    statement.verifying = undefined;
    this.cacheStats.changed++;
    const front = this.closeChanged(v, server);
    if (described.includes(true)) {
      // The client learns the new row type: the statement moves to this epoch's name.
      const name = serverStatementName(statement.parse, 0, statement.parse.length, v.epoch)!;
      statement.serverName = name;
      statement.parse = renameParse(statement.parse, 0, statement.parse.length, name);
      statement.shape = v.newShape;
      statement.shapeEpoch = v.epoch;
      const copy = server.statementEpoch(name);
      if (copy !== schemaEpoch) {
        front.frames.push(...this.makeRoom(server, name, copy, front.entries), statement.parse);
        front.entries.push({ parse: name, drop: true, clientName: undefined });
      }
    } else {
      statement.broken = true;
    }
    uses.forEach((u, i) => {
      const q = queued.indexOf(u.frame);
      const at = this.expected.indexOf(u);
      if (described[i]) {
        queued[q] =
          u.frame[0] === 0x44
            ? createDescribeStatement(statement.serverName)
            : this.rebind(u.frame, statement.serverName);
        this.expected.splice(at, 1);
      } else {
        queued[q] = FAILING_PARSE;
        this.expected[at] = { replaceError: CACHED_PLAN_CHANGED };
      }
    });
    // Nothing held has been answered yet, so the head of the FIFO is the head of `queued`.
    if (front.frames.length > 0) {
      queued.unshift(Buffer.concat(front.frames));
      this.expected.unshift(...front.entries);
    }
    return true;
  }

  /** The fresh copy under the old name has the new row type: it must not serve that name. */
  private closeChanged(v: Verification, server: ServerConnection): { frames: Buffer[]; entries: Expected[] } {
    server.forgetStatement(v.serverName);
    return { frames: [createCloseStatement(v.serverName)], entries: [DROP] };
  }

  private rebind(bind: Buffer, name: string): Buffer {
    const target = peekBindStatement(bind, 0, bind.length)!;
    return renameBind(bind, 0, bind.length, target.nameStart, target.nameEnd, name);
  }

  // ---- server → client ------------------------------------------------------------------------

  /** ParseComplete or CloseComplete: true to drop it, a frame to send instead, false to forward. */
  onParseOrCloseComplete(): boolean | Buffer {
    const head = this.expected.shift();
    if (head === DROP) return true;
    if (typeof head === 'object') {
      if ('parse' in head) return head.drop;
      if ('replaceComplete' in head) return head.replaceComplete;
    }
    return false;
  }

  /** ParameterDescription: true when it answers a Describe Sluice sent (capture what follows). */
  onParameterDescription(): boolean {
    const head = this.expected[0];
    if (typeof head === 'object' && ('capture' in head || 'verify' in head)) return true;
    this.expected.shift();
    return false;
  }

  /** The row type answering Sluice's Describe; returns a verification whose verdict is now in. */
  onStatementDescription(buf: Buffer, start: number, end: number): Verification | undefined {
    const head = this.expected.shift();
    if (typeof head !== 'object') return undefined;
    const shape = Buffer.from(buf.subarray(start, end));
    if ('capture' in head) {
      if (head.capture) head.capture.shape = shape;
      return undefined;
    }
    if ('verify' in head) {
      const v = head.verify;
      const known = v.statement.shape;
      v.result = known === undefined || sameRowType(known, shape) ? 'match' : 'mismatch';
      v.newShape = shape;
      return v;
    }
    return undefined;
  }

  /**
   * An ErrorResponse: the server now skips to the next Sync, so nothing Parsed in this batch
   * exists there. Returns a replacement when the error is one Sluice provoked on purpose, and
   * any verification whose messages were skipped (its barrier must be lifted).
   */
  onError(
    server: ServerConnection | null,
    code: string | undefined,
  ): { replacement: Buffer | undefined; aborted: Verification | undefined } {
    // "cached plan must not change result type" from a copy Sluice did not know was stale (DDL
    // that bypassed Sluice): PostgreSQL's error goes to the client, and from now on every copy is
    // re-parsed before use.
    if (code === SqlState.FeatureNotSupported) noteSchemaChange();
    const head = this.expected[0];
    const replacement = typeof head === 'object' && 'replaceError' in head ? head.replaceError : undefined;
    let aborted: Verification | undefined;
    while (this.expected.length > 0 && this.expected[0] !== BATCH_END) {
      const dropped = this.expected.shift()!;
      if (typeof dropped !== 'object') continue;
      if ('parse' in dropped) {
        server?.forgetStatement(dropped.parse);
        if (
          dropped.clientName !== undefined &&
          this.statements.get(dropped.clientName)?.serverName === dropped.parse
        ) {
          this.statements.delete(dropped.clientName);
        }
      } else if ('verify' in dropped) {
        dropped.verify.result = 'aborted';
        aborted = dropped.verify;
      }
    }
    return { replacement, aborted };
  }

  onReadyForQuery(): void {
    while (this.expected.length > 0) {
      if (this.expected.shift() === BATCH_END) return;
    }
  }

  /** Drops what a server that went away still owed. */
  reset(): void {
    this.expected = [];
    this.neededAtAttach = [];
    for (const statement of this.statements.values()) statement.verifying = undefined;
  }
}
