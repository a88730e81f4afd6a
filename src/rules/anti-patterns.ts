// Owns the anti-pattern report: statements Sluice cannot rewrite safely but should point out
// (SELECT * without a bound, DELETE/UPDATE without WHERE, NOT IN (subquery), leading-wildcard LIKE,
// deep OFFSET paging, N+1 bursts of one digest in a transaction), counted per pattern and digest in
// a bounded table, logged once per digest and interval, and handed out as plain data.
import { parseSync } from 'libpg-query';
import { logger } from '../observe/logger.js';
import type { QueryAnalysis, RelationRef } from '../query/analysis.js';
import { statementConstants } from './text-actions.js';

export type AntiPattern =
  | 'select-star-unbounded'
  | 'write-without-where'
  | 'not-in-subquery'
  | 'leading-wildcard-like'
  | 'deep-offset'
  | 'n-plus-one';

export interface AntiPatternEntry {
  pattern: AntiPattern;
  digest: string;
  count: number;
  /** Date.now() of the last sighting. */
  lastSeen: number;
  /** The first statement text seen, cut to `exampleChars`. */
  example: string;
}

export interface AntiPatternOptions {
  /** Entries kept; the least recently seen goes first. */
  maxEntries?: number;
  /** A digest's pattern is logged at most once per this many milliseconds. */
  logIntervalMs?: number;
  /** OFFSET above this is deep paging. */
  offsetThreshold?: number;
  /** This many runs of one digest inside one transaction is an N+1 burst. */
  burstThreshold?: number;
  exampleChars?: number;
  /**
   * Whether a table is large enough for an unbounded SELECT * to matter; undefined (not known,
   * e.g. no catalog at hand) counts as large.
   */
  isLargeTable?: (database: string, table: RelationRef) => boolean | undefined;
}

/** What the digest's parse tree says, found once per digest. */
interface DigestFacts {
  patterns: AntiPattern[];
  /** Parameter numbers ($k of the digest) used as a LIKE/ILIKE pattern. */
  likeParams: number[];
  /** The parameter number of the top-level OFFSET, or a literal offset. */
  offsetParam: number | undefined;
}

const NO_FACTS: DigestFacts = { patterns: [], likeParams: [], offsetParam: undefined };
const MAX_FACTS = 10_000;

type Obj = Record<string, unknown>;

export class AntiPatternReport {
  private readonly entries = new Map<string, AntiPatternEntry & { lastLogged: number }>();
  private readonly facts = new Map<string, DigestFacts>();
  /** Runs per digest in the current transaction, by session (its match context object). */
  private readonly bursts = new WeakMap<object, Map<string, number>>();
  private readonly maxEntries: number;
  private readonly logIntervalMs: number;
  private readonly offsetThreshold: number;
  private readonly burstThreshold: number;
  private readonly exampleChars: number;
  private readonly isLargeTable: AntiPatternOptions['isLargeTable'];

  constructor(options: AntiPatternOptions = {}) {
    this.maxEntries = options.maxEntries ?? 1000;
    this.logIntervalMs = options.logIntervalMs ?? 60_000;
    this.offsetThreshold = options.offsetThreshold ?? 1000;
    this.burstThreshold = options.burstThreshold ?? 20;
    this.exampleChars = options.exampleChars ?? 200;
    this.isLargeTable = options.isLargeTable;
  }

  /**
   * Notes one statement on its way. `session` identifies the client (any object that lives as
   * long as it); `database` is for the table-size judgement.
   */
  observe(analysis: QueryAnalysis, sql: string, session: object, database: string): void {
    if (!analysis.parsed) return;
    const digest = analysis.digest;
    let facts = this.facts.get(digest);
    if (facts === undefined) {
      facts = digestFacts(analysis);
      if (this.facts.size >= MAX_FACTS) this.facts.clear();
      this.facts.set(digest, facts);
    }
    for (const pattern of facts.patterns) {
      if (pattern === 'select-star-unbounded' && !this.anyLarge(analysis.tablesRead, database)) continue;
      this.record(pattern, digest, sql);
    }
    if (facts.likeParams.length > 0 || facts.offsetParam !== undefined) {
      const constants = statementConstants(sql);
      if (constants !== undefined) {
        if (facts.likeParams.some((k) => /^'[%_]/.test(constants[k - 1] ?? ''))) {
          this.record('leading-wildcard-like', digest, sql);
        }
        const offset = facts.offsetParam === undefined ? undefined : constants[facts.offsetParam - 1];
        if (offset !== undefined && Number(offset) > this.offsetThreshold)
          this.record('deep-offset', digest, sql);
      }
    }
    let counts = this.bursts.get(session);
    if (counts === undefined) {
      counts = new Map();
      this.bursts.set(session, counts);
    }
    const n = (counts.get(digest) ?? 0) + 1;
    counts.set(digest, n);
    if (n === this.burstThreshold) this.record('n-plus-one', digest, sql);
  }

  /** The session's transaction ended (ReadyForQuery 'I'): N+1 counting starts over. */
  endTransaction(session: object): void {
    this.bursts.get(session)?.clear();
  }

  /** Every entry, most counted first, as plain data (for a metric and `SHOW ANTIPATTERNS`). */
  report(): Array<{
    pattern: AntiPattern;
    digest: string;
    count: number;
    lastSeen: number;
    example: string;
  }> {
    return [...this.entries.values()]
      .map(({ pattern, digest, count, lastSeen, example }) => ({ pattern, digest, count, lastSeen, example }))
      .sort((a, b) => b.count - a.count);
  }

  private anyLarge(tables: readonly RelationRef[], database: string): boolean {
    const judge = this.isLargeTable;
    if (judge === undefined) return tables.length > 0;
    return tables.some((t) => judge(database, t) !== false);
  }

  private record(pattern: AntiPattern, digest: string, sql: string): void {
    const key = `${pattern}\0${digest}`;
    const now = Date.now();
    let entry = this.entries.get(key);
    if (entry === undefined) {
      if (this.entries.size >= this.maxEntries) {
        // Map order is insertion order and each sighting re-inserts: the first is the stalest.
        const stalest = this.entries.keys().next().value;
        if (stalest !== undefined) this.entries.delete(stalest);
      }
      entry = {
        pattern,
        digest,
        count: 0,
        lastSeen: now,
        example: sql.length > this.exampleChars ? `${sql.slice(0, this.exampleChars - 3)}...` : sql,
        lastLogged: 0,
      };
    } else {
      this.entries.delete(key);
    }
    entry.count++;
    entry.lastSeen = now;
    this.entries.set(key, entry);
    if (now - entry.lastLogged >= this.logIntervalMs) {
      entry.lastLogged = now;
      logger.warn({ pattern, digest, count: entry.count, example: entry.example }, 'query anti-pattern');
    }
  }
}

/** The patterns a statement's shape shows, from the analysis and one parse of its digest. */
export function digestFacts(analysis: QueryAnalysis): DigestFacts {
  const patterns: AntiPattern[] = [];
  if ((analysis.kind === 'delete' || analysis.kind === 'update') && !analysis.hasWhere) {
    patterns.push('write-without-where');
  }
  let tree: { stmts?: Array<{ stmt?: Obj }> };
  try {
    tree = parseSync(analysis.digest) as typeof tree;
  } catch {
    return patterns.length === 0 ? NO_FACTS : { ...NO_FACTS, patterns };
  }
  const stmts = tree.stmts ?? [];
  const top = stmts.length === 1 ? (stmts[0]?.stmt?.SelectStmt as Obj | undefined) : undefined;
  let offsetParam: number | undefined;
  if (top !== undefined) {
    if (selectsStar(top) && !hasRangeBound(top.whereClause) && top.limitCount === undefined) {
      patterns.push('select-star-unbounded');
    }
    const offset = top.limitOffset as Obj | undefined;
    const param = offset?.ParamRef as Obj | undefined;
    if (typeof param?.number === 'number') offsetParam = param.number;
  }
  const likeParams: number[] = [];
  let notIn = false;
  walk(tree, (node, key) => {
    if (key === 'A_Expr') {
      const kind = node.kind;
      if (kind === 'AEXPR_LIKE' || kind === 'AEXPR_ILIKE') {
        const p = (node.rexpr as Obj | undefined)?.ParamRef as Obj | undefined;
        if (typeof p?.number === 'number') likeParams.push(p.number);
      }
    } else if (key === 'BoolExpr' && node.boolop === 'NOT_EXPR') {
      const sub = ((node.args as Obj[] | undefined)?.[0]?.SubLink as Obj | undefined) ?? undefined;
      if (sub?.subLinkType === 'ANY_SUBLINK') notIn = true;
    }
  });
  if (notIn) patterns.push('not-in-subquery');
  if (patterns.length === 0 && likeParams.length === 0 && offsetParam === undefined) return NO_FACTS;
  return { patterns, likeParams, offsetParam };
}

function selectsStar(select: Obj): boolean {
  if (!Array.isArray(select.fromClause) || select.fromClause.length === 0) return false;
  for (const target of (select.targetList as Obj[] | undefined) ?? []) {
    const ref = ((target.ResTarget as Obj | undefined)?.val as Obj | undefined)?.ColumnRef as Obj | undefined;
    const fields = ref?.fields as Obj[] | undefined;
    if (fields?.some((f) => 'A_Star' in f)) return true;
  }
  return false;
}

const RANGE_OPERATORS = new Set(['<', '<=', '>', '>=']);

/** A WHERE with a range (<, <=, >, >=, BETWEEN) somewhere: what a time bound looks like. */
function hasRangeBound(where: unknown): boolean {
  if (where === undefined) return false;
  let found = false;
  walk(where, (node, key) => {
    if (key !== 'A_Expr') return;
    const kind = node.kind as string;
    if (kind.startsWith('AEXPR_BETWEEN') || kind.startsWith('AEXPR_NOT_BETWEEN')) found = true;
    const name = ((node.name as Obj[] | undefined)?.[0]?.String as Obj | undefined)?.sval;
    if (kind === 'AEXPR_OP' && typeof name === 'string' && RANGE_OPERATORS.has(name)) found = true;
  });
  return found;
}

function walk(node: unknown, visit: (node: Obj, key: string) => void): void {
  if (Array.isArray(node)) {
    for (const item of node) walk(item, visit);
    return;
  }
  if (node === null || typeof node !== 'object') return;
  for (const [key, value] of Object.entries(node as Obj)) {
    if (value !== null && typeof value === 'object' && !Array.isArray(value) && /^[A-Z]/.test(key)) {
      visit(value as Obj, key);
    }
    walk(value, visit);
  }
}
