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
}

/** What a reply in the FIFO answers. */
type Expected =
  | typeof FORWARD
  | typeof DROP
  | typeof BATCH_END
  | { parse: string; drop: boolean; clientName: string | undefined }
  | { replaceError: Buffer };

const FORWARD = 0; // the client's own Parse/Close: its reply goes to the client
const DROP = 1; // an injected Close: its reply is Sluice's
const BATCH_END = 2; // a Sync or Query: answered by ReadyForQuery

/** Where rewritten frames go: the server now, or the queue until one is assigned. */
export interface FrameSink {
  emit(frame: Buffer): void;
  readonly server: ServerConnection | null;
}

/** Plan-cache counters: a hit is a Bind/Describe on a server that already had the statement. */
export const statementCacheStats = { hits: 0, misses: 0 };

// A Parse that PostgreSQL is sure to reject (named, so a failure leaves the client's unnamed
// statement alone): its error stands in for 42P05 at the right place in the reply stream.
const FAILING_PARSE = createParse('sluice_duplicate', 'SLUICE DUPLICATE PREPARED STATEMENT');

export class ClientStatements {
  private readonly statements = new Map<string, PreparedStatement>();
  private expected: Expected[] = [];
  /** Statements referenced while no server was assigned: checked against the server we get. */
  private neededAtAttach: PreparedStatement[] = [];
  /** Server names Parsed while no server was assigned: that server will have them. */
  private parsedWhileQueued: string[] = [];

  get size(): number {
    return this.statements.size;
  }

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
    const serverName = serverStatementName(buf, start, end);
    if (serverName === undefined) {
      this.expected.push(FORWARD);
      return false;
    }
    const statement = { serverName, parse: renameParse(buf, start, end, serverName) };
    this.statements.set(name, statement);
    // Another client may have prepared the same text here: close it first so the Parse (and its
    // ParseComplete, which the client waits for) happens exactly as the client asked.
    sink.emit(createCloseStatement(serverName));
    this.expected.push(DROP);
    sink.emit(statement.parse);
    this.expected.push({ parse: serverName, drop: false, clientName: name });
    this.noteParsed(serverName, sink);
    return true;
  }

  /** Handles a Bind; returns false when the frame goes out unchanged. */
  onBind(buf: Buffer, start: number, end: number, sink: FrameSink): boolean {
    const target = peekBindStatement(buf, start, end);
    if (!target || target.name === '') return false;
    const statement = this.statements.get(target.name);
    // Unknown names go through as they are: PostgreSQL answers 26000 in its own words.
    if (!statement) return false;
    this.ensurePrepared(statement, sink);
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
    sink.emit(statement.parse);
    this.expected.push({ parse: statement.serverName, drop: true, clientName: undefined });
    this.noteParsed(statement.serverName, sink);
  }

  private noteParsed(serverName: string, sink: FrameSink): void {
    const server = sink.server;
    if (!server) {
      this.parsedWhileQueued.push(serverName);
      return;
    }
    const evicted = server.addStatement(serverName);
    if (evicted !== undefined) {
      sink.emit(createCloseStatement(evicted));
      this.expected.push(DROP);
    }
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
      frames.push(statement.parse);
      front.push({ parse: statement.serverName, drop: true, clientName: undefined });
      const evicted = server.addStatement(statement.serverName);
      if (evicted !== undefined) {
        frames.push(createCloseStatement(evicted));
        front.push(DROP);
      }
    }
    // Queued Parses will run on this server after the injected frames.
    for (const name of this.parsedWhileQueued) server.addStatement(name);
    this.neededAtAttach = [];
    this.parsedWhileQueued = [];
    if (front.length > 0) this.expected = front.concat(this.expected);
    return frames;
  }

  // ---- server → client ------------------------------------------------------------------------

  /** ParseComplete or CloseComplete: true when it answers an injected message. */
  onParseOrCloseComplete(): boolean {
    const head = this.expected.shift();
    if (head === DROP) return true;
    if (typeof head === 'object' && 'parse' in head) return head.drop;
    return false;
  }

  /**
   * An ErrorResponse: the server now skips to the next Sync, so nothing Parsed in this batch
   * exists there. Returns a replacement when the error is one Sluice provoked on purpose.
   */
  onError(server: ServerConnection | null): Buffer | undefined {
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

  /** Nothing is owed by the server: safe to hand it over. */
  get settled(): boolean {
    return this.expected.length === 0;
  }

  /** Drops what a server that went away still owed. */
  reset(): void {
    this.expected = [];
    this.neededAtAttach = [];
    this.parsedWhileQueued = [];
  }
}
