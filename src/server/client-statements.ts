// Owns a client's named prepared statements under transaction pooling: client names map to
// server-side names derived from (query text, parameter types); a server that lacks a statement
// gets a Parse injected just before the Bind/Describe that needs it; replies to injected messages
// are dropped in order. It also keeps the FIFO that pairs each ParseComplete/CloseComplete and
// each ReadyForQuery with what was sent, which is what lets replies be dropped exactly.
import type { ServerConnection } from '../pool/server-connection.js';
import { createErrorResponse } from '../protocol/backend-messages.js';
import {
  createCloseStatement,
  createDescribeStatement,
  createParse,
  parseQueryEnd,
  parseQueryStart,
  peekBindStatement,
  peekParseName,
  peekTarget,
  renameBind,
  renameParse,
  STATEMENT,
  serverStatementName,
} from '../protocol/statement-frames.js';

export interface PreparedStatement {
  serverName: string;
  /** The client's Parse, renamed to serverName: what gets injected on servers lacking it. */
  parse: Buffer;
  /** Query text and parameter-type bytes, decoded once when the result cache asks. */
  source?: StatementSource;
}

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

/** What a reply in the FIFO answers. */
type Expected =
  | typeof FORWARD
  | typeof DROP
  | typeof BATCH_END
  | ParseExpected
  | { replaceError: Buffer }
  | { replaceComplete: Buffer }
  | DeferredParse;

const FORWARD = 0; // the client's own Parse/Close: its reply goes to the client
const DROP = 1; // an injected Close: its reply is Sluice's
const BATCH_END = 2; // a Sync or Query: answered by ReadyForQuery

/** A client's Parse queued before a server was assigned: what it becomes depends on that server. */
export interface DeferredParse {
  deferred: PreparedStatement;
  clientName: string;
}

/** Where rewritten frames go: the server now, or the queue until one is assigned. */
export interface FrameSink {
  emit(frame: Buffer | DeferredParse): void;
  readonly server: ServerConnection | null;
}

/** Plan-cache counters: a hit is a Parse/Bind/Describe on a server that already had the statement. */
export const statementCacheStats = { hits: 0, misses: 0 };

/**
 * Bumped by DDL through Sluice and by every "cached plan must not change result type" error.
 * It is part of the server-side name of statements parsed afterwards, so a client that parses
 * after a schema change gets a fresh statement, while clients holding the old one get 0A000
 * from PostgreSQL exactly as they would without Sluice (and their drivers re-prepare).
 */
let schemaEpoch = 0;

export function noteSchemaChange(): void {
  schemaEpoch++;
}

// A Parse that PostgreSQL is sure to reject (named, so a failure leaves the client's unnamed
// statement alone): its error stands in for 42P05 at the right place in the reply stream.
const FAILING_PARSE = createParse('sluice_duplicate', 'SLUICE DUPLICATE PREPARED STATEMENT');
const PARSE_COMPLETE = Buffer.from([0x31, 0, 0, 0, 4]);
// Closing a statement that does not exist succeeds: a harmless message whose CloseComplete
// stands in for the ParseComplete of a Parse the server did not need.
const NOOP_CLOSE = createCloseStatement('sluice_noop');

export class ClientStatements {
  private readonly statements = new Map<string, PreparedStatement>();
  private expected: Expected[] = [];
  /** Statements referenced while no server was assigned: checked against the server we get. */
  private neededAtAttach: PreparedStatement[] = [];
  /** The server name last bound or described: the suspect when a plan turns out stale. */
  private lastUsed: string | undefined;

  // ---- client → server --------------------------------------------------------------------

  /** A Sync or Query went out: one ReadyForQuery will answer it. */
  expectReady(): void {
    this.expected.push(BATCH_END);
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
    const serverName = serverStatementName(buf, start, end, schemaEpoch);
    if (serverName === undefined) {
      this.expected.push(FORWARD);
      return false;
    }
    const statement = { serverName, parse: renameParse(buf, start, end, serverName) };
    this.statements.set(name, statement);
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

  /**
   * What a client's Parse becomes on `server`, and the replies to expect. A statement another
   * client already prepared there is never re-parsed (that would change its result type behind
   * that client's back after DDL): a no-op Close answers in its place, its CloseComplete turned
   * into the ParseComplete the client waits for.
   */
  private parseOn(
    server: ServerConnection,
    statement: PreparedStatement,
    clientName: string,
    entries: Expected[],
  ): Buffer {
    if (server.hasStatement(statement.serverName)) {
      statementCacheStats.hits++;
      entries.push({ replaceComplete: PARSE_COMPLETE });
      return NOOP_CLOSE;
    }
    statementCacheStats.misses++;
    const frames = this.makeRoom(server, statement.serverName, entries);
    frames.push(statement.parse);
    entries.push({ parse: statement.serverName, drop: false, clientName });
    return frames.length === 1 ? statement.parse : Buffer.concat(frames);
  }

  /** Closes what must go before `name` is parsed on `server`: a stale copy, an evicted one. */
  private makeRoom(server: ServerConnection, name: string, entries: Expected[]): Buffer[] {
    const frames: Buffer[] = [];
    if (server.takeStale(name)) {
      frames.push(createCloseStatement(name));
      entries.push(DROP);
    }
    const evicted = server.addStatement(name);
    if (evicted !== undefined) {
      frames.push(createCloseStatement(evicted));
      entries.push(DROP);
    }
    return frames;
  }

  /** Handles a Bind; returns false when the frame goes out unchanged. */
  onBind(buf: Buffer, start: number, end: number, sink: FrameSink): boolean {
    const target = peekBindStatement(buf, start, end);
    if (!target || target.name === '') return false;
    const statement = this.statements.get(target.name);
    // Unknown names go through as they are: PostgreSQL answers 26000 in its own words.
    if (!statement) return false;
    this.ensurePrepared(statement, sink);
    this.lastUsed = statement.serverName;
    sink.emit(renameBind(buf, start, end, target.nameStart, target.nameEnd, statement.serverName));
    return true;
  }

  /** Handles Describe: only statement targets with a name are rewritten. */
  onDescribe(buf: Buffer, start: number, end: number, sink: FrameSink): boolean {
    const target = peekTarget(buf, start, end);
    if (!target || target.kind !== STATEMENT || target.name === '') return false;
    const statement = this.statements.get(target.name);
    if (!statement) return false;
    this.ensurePrepared(statement, sink);
    this.lastUsed = statement.serverName;
    sink.emit(createDescribeStatement(statement.serverName));
    return true;
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

  private ensurePrepared(statement: PreparedStatement, sink: FrameSink): void {
    const server = sink.server;
    if (!server) {
      this.neededAtAttach.push(statement);
      return;
    }
    if (server.hasStatement(statement.serverName)) {
      statementCacheStats.hits++;
      return;
    }
    statementCacheStats.misses++;
    const entries: Expected[] = [];
    const frames = this.makeRoom(server, statement.serverName, entries);
    frames.push(statement.parse);
    entries.push({ parse: statement.serverName, drop: true, clientName: undefined });
    for (const frame of frames) sink.emit(frame);
    for (const e of entries) this.expected.push(e);
  }

  /**
   * A server was just assigned and nothing queued has gone out yet: returns the frames to send
   * first so that it has every statement the queued messages use.
   */
  prepareServer(server: ServerConnection): Buffer[] {
    const frames: Buffer[] = [];
    const front: Expected[] = [];
    for (const statement of this.neededAtAttach) {
      if (server.hasStatement(statement.serverName)) {
        statementCacheStats.hits++;
        continue;
      }
      statementCacheStats.misses++;
      frames.push(...this.makeRoom(server, statement.serverName, front), statement.parse);
      front.push({ parse: statement.serverName, drop: true, clientName: undefined });
    }
    this.neededAtAttach = [];
    if (front.length > 0) this.expected = front.concat(this.expected);
    return frames;
  }

  /** Turns a Parse queued before `server` was assigned into what it must be on that server. */
  resolveQueued(server: ServerConnection, deferred: DeferredParse): Buffer {
    const entries: Expected[] = [];
    const frame = this.parseOn(server, deferred.deferred, deferred.clientName, entries);
    const at = this.expected.indexOf(deferred);
    if (at >= 0) this.expected.splice(at, 1, ...entries);
    return frame;
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

  /**
   * An ErrorResponse: the server now skips to the next Sync, so nothing Parsed in this batch
   * exists there. Returns a replacement when the error is one Sluice provoked on purpose.
   */
  onError(server: ServerConnection | null, code: string | undefined): Buffer | undefined {
    // "cached plan must not change result type": that server's copy is stale after DDL; it is
    // closed and parsed afresh the next time anyone needs it.
    if (code === '0A000' && server && this.lastUsed !== undefined) {
      server.markStale(this.lastUsed);
      noteSchemaChange();
    }
    const head = this.expected[0];
    const replacement = typeof head === 'object' && 'replaceError' in head ? head.replaceError : undefined;
    while (this.expected.length > 0 && this.expected[0] !== BATCH_END) {
      const dropped = this.expected.shift()!;
      if (typeof dropped === 'object' && 'parse' in dropped) {
        server?.forgetStatement(dropped.parse);
        if (
          dropped.clientName !== undefined &&
          this.statements.get(dropped.clientName)?.serverName === dropped.parse
        ) {
          this.statements.delete(dropped.clientName);
        }
      }
    }
    return replacement;
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
  }
}
