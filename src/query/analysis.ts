// Owns what the proxy knows about a query text (kind, tables read and written, functions, digest),
// parsed once with PostgreSQL's own parser (libpg-query) and kept in an LRU keyed by the exact text.

import { fingerprintSync, loadModule, normalizeSync, parseSync, scanSync } from 'libpg-query';
import { LRUCache } from 'lru-cache';
import { type PointAccess, pointAccessOf } from './point-access.js';

export type StatementKind =
  | 'select'
  | 'insert'
  | 'update'
  | 'delete'
  | 'merge'
  | 'truncate'
  | 'copy_from'
  | 'copy_to'
  | 'ddl'
  | 'transaction'
  | 'set'
  | 'show'
  | 'listen'
  | 'notify'
  | 'explain'
  | 'call'
  | 'do'
  | 'utility'
  | 'multi'
  | 'unknown';

export interface RelationRef {
  readonly schema: string | undefined;
  readonly name: string;
}

export interface QueryAnalysis {
  /** false: the parser rejected the text (then kind 'unknown', readOnly false, writesUnknown true). */
  readonly parsed: boolean;
  /** Of the single statement; 'multi' when several; 'utility' for empty or comment-only text. */
  readonly kind: StatementKind;
  /** 0 for empty text and for text the parser rejected. */
  readonly statementCount: number;
  /** Nothing in it can write (function volatility is judged elsewhere). */
  readonly readOnly: boolean;
  /** Relations read anywhere, CTE names excluded, deduplicated. Write targets appear only in tablesWritten. */
  readonly tablesRead: readonly RelationRef[];
  /** Relations whose contents or definition the statement changes. */
  readonly tablesWritten: readonly RelationRef[];
  /** Functions called, plus pseudo-functions (CURRENT_TIMESTAMP, 'now'::timestamptz -> pg_catalog.now). */
  readonly functions: readonly RelationRef[];
  /** Rows touched, when the statement provably touches only rows where a column equals values. */
  readonly pointAccess: PointAccess | undefined;
  /** Operators used in expressions (by name, schema if written OPERATOR(schema.op)). */
  readonly operators: readonly RelationRef[];
  /** FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE in a part that runs. */
  readonly lockingClause: boolean;
  /** A write whose targets cannot be named: every cached reader must be invalidated. */
  readonly writesUnknown: boolean;
  /** Every top-level SELECT/UPDATE/DELETE has a WHERE (false when there is none). */
  readonly hasWhere: boolean;
  /** Every top-level SELECT has LIMIT / FETCH FIRST (false when there is none). */
  readonly hasLimit: boolean;
  /** Normalized text: constants as $n, comments dropped, whitespace collapsed. */
  readonly digest: string;
  /** libpg-query fingerprint (hex); '' when unparsed. */
  readonly fingerprint: string;
}

export interface AnalyzerStats {
  hits: number;
  misses: number;
  unparsable: number;
}

let parserLoad: Promise<void> | undefined;
let parserReady = false;

/** Loads the parser's WASM module once; analyze() needs it. */
export async function loadQueryParser(): Promise<void> {
  parserLoad ??= loadModule().then(
    () => {
      parserReady = true;
    },
    (err: unknown) => {
      parserLoad = undefined; // let a later call retry
      throw err;
    },
  );
  await parserLoad;
}

export class QueryAnalyzer {
  readonly stats: AnalyzerStats = { hits: 0, misses: 0, unparsable: 0 };
  private readonly lru: LRUCache<string, QueryAnalysis>;

  /**
   * maxTextChars bounds the memory held by keys and digests: statements with inlined values
   * (multi-row INSERT batches) are each distinct and can be large, so an entry count alone could
   * pin gigabytes. A text larger than the whole budget is analysed but not kept.
   */
  constructor(maxEntries = 10_000, maxTextChars = 32 * 1024 * 1024) {
    this.lru = new LRUCache<string, QueryAnalysis>({
      max: maxEntries,
      maxSize: maxTextChars,
      sizeCalculation: (analysis, sql) => sql.length + analysis.digest.length + 1,
    });
  }

  analyze(sql: string): QueryAnalysis {
    // The per-query path is this one lookup: 65-160 ns when the string's hash is already cached,
    // 170-540 ns for a string freshly decoded from a frame (it must be hashed), against a 26-39 µs
    // median miss (the 100 texts of tests/unit/query-analysis.test.ts; 2 vCPUs at load 5-11).
    const hit = this.lru.get(sql);
    if (hit !== undefined) {
      this.stats.hits++;
      return hit;
    }
    if (!parserReady) throw new Error('loadQueryParser() must be awaited before analyze()');
    this.stats.misses++;
    const analysis = analyzeText(sql);
    if (!analysis.parsed) this.stats.unparsable++;
    this.lru.set(sql, analysis);
    return analysis;
  }
}

// ---------------------------------------------------------------------------------------------
// Statement-level analysis

type Obj = Record<string, unknown>;

interface StatementFacts {
  kind: StatementKind;
  readOnly: boolean;
  writesUnknown: boolean;
  /** The statement is a SELECT/UPDATE/DELETE, so "missing WHERE" applies to it. */
  whereApplies: boolean;
  hasWhere: boolean;
  limitApplies: boolean;
  hasLimit: boolean;
}

const EMPTY_ARRAY: readonly never[] = Object.freeze([] as never[]);

function analyzeText(sql: string): QueryAnalysis {
  let stmts: unknown[];
  try {
    // The parser refuses '' although PostgreSQL answers it with EmptyQueryResponse.
    stmts = (parseSync(sql === '' ? ' ' : sql) as { stmts?: unknown[] }).stmts ?? [];
  } catch {
    return unparsed(sql);
  }
  try {
    return analyzeStatements(sql, stmts);
  } catch {
    // A tree too deep for the walker's stack, or a shape it does not expect: PostgreSQL still
    // judges the statement; the proxy treats it as it treats any text it cannot read.
    return unparsed(sql);
  }
}

function analyzeStatements(sql: string, stmts: unknown[]): QueryAnalysis {
  const reads = new Map<string, RelationRef>();
  const writes = new Map<string, RelationRef>();
  const functions = new Map<string, RelationRef>();
  const operators = new Map<string, RelationRef>();
  let locking = false;
  let readOnly = true;
  let writesUnknown = false;
  let kind: StatementKind = stmts.length === 1 ? 'unknown' : stmts.length === 0 ? 'utility' : 'multi';
  let whereApplies = 0;
  let whereCount = 0;
  let limitApplies = 0;
  let limitCount = 0;

  const pointAccess = stmts.length === 1 ? pointAccessOf((stmts[0] as Obj).stmt) : undefined;
  for (const raw of stmts) {
    const node = (raw as Obj).stmt as Obj;
    const w = new Walker();
    const facts = analyzeNode(w, node);
    w.mergeInto(reads, writes, functions, false, operators);
    locking ||= w.locking;
    readOnly &&= facts.readOnly;
    writesUnknown ||= facts.writesUnknown;
    if (stmts.length === 1) kind = facts.kind;
    if (facts.whereApplies) {
      whereApplies++;
      if (facts.hasWhere) whereCount++;
    }
    if (facts.limitApplies) {
      limitApplies++;
      if (facts.hasLimit) limitCount++;
    }
  }

  let digest: string;
  try {
    digest = scrubDigest(normalizeSync(sql === '' ? ' ' : sql));
  } catch {
    digest = scrubDigest(sql);
  }
  return Object.freeze({
    parsed: true,
    kind,
    statementCount: stmts.length,
    readOnly,
    tablesRead: freezeRefs(reads),
    tablesWritten: freezeRefs(writes),
    functions: freezeRefs(functions),
    operators: freezeRefs(operators),
    pointAccess,
    lockingClause: locking,
    writesUnknown,
    hasWhere: whereApplies > 0 && whereCount === whereApplies,
    hasLimit: limitApplies > 0 && limitCount === limitApplies,
    digest,
    fingerprint: fingerprintSync(sql === '' ? ' ' : sql),
  });
}

/**
 * The digest alone (normalize and scrub, no parse tree walk): for callers that only label
 * statements, e.g. metrics with analysis off. Same text as QueryAnalysis.digest.
 */
export function digestOf(sql: string): string {
  if (!parserReady) throw new Error('loadQueryParser() must be awaited before digestOf()');
  try {
    return scrubDigest(normalizeSync(sql === '' ? ' ' : sql));
  } catch {
    return scrubDigest(sql.slice(0, MAX_UNPARSED_DIGEST)).slice(0, MAX_UNPARSED_DIGEST);
  }
}

function unparsed(sql: string): QueryAnalysis {
  return Object.freeze({
    parsed: false,
    kind: 'unknown',
    statementCount: 0,
    readOnly: false,
    tablesRead: EMPTY_ARRAY,
    tablesWritten: EMPTY_ARRAY,
    functions: EMPTY_ARRAY,
    operators: EMPTY_ARRAY,
    pointAccess: undefined,
    lockingClause: false,
    writesUnknown: true,
    hasWhere: false,
    hasLimit: false,
    // Scrubbed like a parsed digest: the digest becomes a metric label and log field, and raw
    // text there would leak literals (passwords, customer ids) and explode label cardinality.
    digest: scrubDigest(sql.slice(0, MAX_UNPARSED_DIGEST)).slice(0, MAX_UNPARSED_DIGEST),
    fingerprint: '',
  });
}

const MAX_UNPARSED_DIGEST = 1000;

// Relation kinds whose DROP / RENAME / SET SCHEMA names a relation a query can read.
const RELATION_OBJECTS = new Set([
  'OBJECT_TABLE',
  'OBJECT_VIEW',
  'OBJECT_MATVIEW',
  'OBJECT_INDEX',
  'OBJECT_SEQUENCE',
  'OBJECT_FOREIGN_TABLE',
]);

// Node types PostgreSQL logs as DDL (GetCommandLogLevel) beyond the Create/Alter/Drop/... prefixes.
const OTHER_DDL = new Set([
  'ViewStmt',
  'DefineStmt',
  'CompositeTypeStmt',
  'RuleStmt',
  'GrantStmt',
  'GrantRoleStmt',
  'ReassignOwnedStmt',
  'SecLabelStmt',
  'ImportForeignSchemaStmt',
]);
const DDL_PREFIX = /^(?:Create|Alter|Drop|Rename|Index|Comment)/;

// Utility statements that change no table contents, definitions or privileges, so no cached
// result goes stale: maintenance (VACUUM FULL and CLUSTER rewrite a table but keep its rows),
// cursors, prepared-statement bookkeeping, locks, and COMMENT (only pg_description changes).
const NO_DATA_EFFECT = new Set([
  'VacuumStmt',
  'ClusterStmt',
  'ReindexStmt',
  'CheckPointStmt',
  'LockStmt',
  'DiscardStmt',
  'DeallocateStmt',
  'PrepareStmt',
  'FetchStmt',
  'ClosePortalStmt',
  'LoadStmt',
  'ConstraintsSetStmt',
  'CommentStmt',
]);

function nodeType(node: Obj): [string, Obj] {
  for (const key in node) return [key, node[key] as Obj];
  throw new Error('empty parse node');
}

function facts(kind: StatementKind, readOnly: boolean, writesUnknown: boolean): StatementFacts {
  return {
    kind,
    readOnly,
    writesUnknown,
    whereApplies: false,
    hasWhere: false,
    limitApplies: false,
    hasLimit: false,
  };
}

function analyzeNode(w: Walker, node: Obj): StatementFacts {
  const [type, body] = nodeType(node);
  switch (type) {
    case 'SelectStmt': {
      w.visitSelect(body);
      const f = facts(w.into ? 'ddl' : 'select', !w.dml && !w.into && !w.locking, false);
      f.whereApplies = true;
      f.hasWhere = selectHasWhere(body);
      f.limitApplies = true;
      f.hasLimit = selectHasLimit(body);
      return f;
    }
    case 'InsertStmt':
    case 'UpdateStmt':
    case 'DeleteStmt':
    case 'MergeStmt': {
      w.visit(type, body);
      const kind = DML_KIND[type] as StatementKind;
      const f = facts(kind, false, false);
      if (type === 'UpdateStmt' || type === 'DeleteStmt') {
        f.whereApplies = true;
        f.hasWhere = body.whereClause !== undefined;
      }
      return f;
    }
    case 'TruncateStmt':
      for (const rel of list(body.relations)) w.addWrite((rel as Obj).RangeVar);
      // CASCADE also empties every table with a foreign key to these, which the text does not name.
      return facts('truncate', false, body.behavior === 'DROP_CASCADE');
    case 'CopyStmt':
      if (body.is_from === true) {
        w.addWrite(body.relation);
        return facts('copy_from', false, false);
      }
      if (body.relation !== undefined) w.addRead(body.relation);
      else w.walk(body.query);
      // COPY ... TO STDOUT only reads; TO a server file or PROGRAM writes outside the database.
      return facts('copy_to', body.filename === undefined && !w.dml && !w.locking, false);
    case 'ExplainStmt':
      return analyzeExplain(w, body);
    case 'TransactionStmt':
      return facts('transaction', false, false);
    case 'VariableSetStmt':
      return facts('set', false, false);
    case 'VariableShowStmt':
      return facts('show', true, false);
    case 'ListenStmt':
    case 'UnlistenStmt':
      return facts('listen', false, false);
    case 'NotifyStmt':
      return facts('notify', false, false);
    case 'CallStmt': {
      const call = body.funccall as Obj | undefined;
      if (call !== undefined) w.visit('FuncCall', call);
      return facts('call', false, true);
    }
    case 'DoStmt':
      return facts('do', false, true);
    case 'DeclareCursorStmt':
      w.walk(body.query);
      return facts('utility', false, false);
    case 'RefreshMatViewStmt':
      w.addWrite(body.relation);
      return facts('utility', false, false);
    case 'CreateTableAsStmt':
      w.addWrite((body.into as Obj | undefined)?.rel);
      w.walk(body.query);
      return facts('ddl', false, false);
    case 'ViewStmt':
      w.addWrite(body.view);
      w.walk(body.query);
      return facts('ddl', false, false);
    case 'CreateStmt':
    case 'IndexStmt':
      w.addWrite(body.relation);
      return facts('ddl', false, false);
    case 'CreateSeqStmt':
    case 'AlterSeqStmt':
      w.addWrite(body.sequence);
      return facts('ddl', false, false);
    case 'CreatePolicyStmt':
    case 'AlterPolicyStmt':
      // A policy decides which rows of the table each role sees.
      w.addWrite(body.table);
      return facts('ddl', false, false);
    case 'AlterTableStmt': {
      if (body.objtype === 'OBJECT_TYPE') return facts('ddl', false, true);
      w.addWrite(body.relation);
      // DROP COLUMN ... CASCADE and friends also drop dependent views the text does not name.
      const cascades = list(body.cmds).some(
        (cmd) => ((cmd as Obj).AlterTableCmd as Obj | undefined)?.behavior === 'DROP_CASCADE',
      );
      return facts('ddl', false, cascades);
    }
    case 'RenameStmt': {
      const rel = body.relation as Obj | undefined;
      if (rel === undefined) return facts('ddl', false, true);
      w.addWrite(rel);
      // The new name may shadow or replace what readers of that name saw.
      if (RELATION_OBJECTS.has(body.renameType as string) && typeof body.newname === 'string') {
        w.addWriteRef(rel.schemaname as string | undefined, body.newname);
      }
      return facts('ddl', false, false);
    }
    case 'AlterObjectSchemaStmt': {
      const rel = body.relation as Obj | undefined;
      if (rel === undefined || typeof body.newschema !== 'string') return facts('ddl', false, true);
      w.addWrite(rel);
      w.addWriteRef(body.newschema, rel.relname as string);
      return facts('ddl', false, false);
    }
    case 'DropStmt': {
      if (!RELATION_OBJECTS.has(body.removeType as string) || body.behavior === 'DROP_CASCADE') {
        return facts('ddl', false, true);
      }
      for (const obj of list(body.objects)) w.addWriteNames(((obj as Obj).List as Obj | undefined)?.items);
      return facts('ddl', false, false);
    }
    case 'GrantStmt':
      // Privileges decide what a role may read; only GRANT/REVOKE ON TABLE t names its tables.
      if (body.targtype !== 'ACL_TARGET_OBJECT' || body.objtype !== 'OBJECT_TABLE') {
        return facts('ddl', false, true);
      }
      for (const obj of list(body.objects)) w.addWrite((obj as Obj).RangeVar);
      return facts('ddl', false, false);
    default: {
      const kind: StatementKind = DDL_PREFIX.test(type) || OTHER_DDL.has(type) ? 'ddl' : 'utility';
      // Everything else (functions, types, schemas, extensions, roles, rules, triggers, EXECUTE
      // of a prepared statement we cannot see, ...) may change what any query returns.
      return facts(kind, false, !NO_DATA_EFFECT.has(type));
    }
  }
}

const DML_KIND: Record<string, StatementKind> = {
  InsertStmt: 'insert',
  UpdateStmt: 'update',
  DeleteStmt: 'delete',
  MergeStmt: 'merge',
};

function analyzeExplain(w: Walker, body: Obj): StatementFacts {
  const inner = new Walker();
  const query = body.query as Obj | undefined;
  const innerFacts = query === undefined ? facts('utility', true, false) : analyzeNode(inner, query);
  const runs = list(body.options).some((opt) => isAnalyzeOption((opt as Obj).DefElem as Obj | undefined));
  let f: StatementFacts;
  if (runs) {
    // EXPLAIN ANALYZE executes the statement, writes and locks included.
    inner.mergeInto(w.reads, w.writes, w.functions, false, w.operators);
    w.locking ||= inner.locking;
    f = facts('explain', innerFacts.readOnly, innerFacts.writesUnknown);
  } else {
    // Only planned: its tables are read for statistics, nothing is written or locked.
    inner.mergeInto(w.reads, w.reads, w.functions, true, w.operators);
    f = facts('explain', true, false);
  }
  // Report the explained statement's WHERE/LIMIT so "DELETE without WHERE" rules see it.
  f.whereApplies = innerFacts.whereApplies;
  f.hasWhere = innerFacts.hasWhere;
  f.limitApplies = innerFacts.limitApplies;
  f.hasLimit = innerFacts.hasLimit;
  return f;
}

function isAnalyzeOption(opt: Obj | undefined): boolean {
  if (opt?.defname !== 'analyze') return false;
  const arg = opt.arg as Obj | undefined;
  if (arg === undefined) return true;
  // Zero values are omitted from the JSON tree: {Integer: {}} is 0, {Boolean: {}} is false.
  if ('Integer' in arg) return Boolean((arg.Integer as Obj).ival);
  if ('Boolean' in arg) return Boolean((arg.Boolean as Obj).boolval);
  if ('String' in arg) {
    const v = String((arg.String as Obj).sval).toLowerCase();
    return v !== 'false' && v !== 'off';
  }
  return true; // PostgreSQL rejects other values; assume the worst
}

function selectHasWhere(body: Obj): boolean {
  if (body.op !== undefined && body.op !== 'SETOP_NONE') {
    // A set operation has a WHERE only if every arm does: one unfiltered arm scans a whole table.
    return selectHasWhere(body.larg as Obj) && selectHasWhere(body.rarg as Obj);
  }
  return body.whereClause !== undefined;
}

function selectHasLimit(body: Obj): boolean {
  const count = body.limitCount as Obj | undefined;
  if (count === undefined) return false;
  // LIMIT ALL parses as a NULL constant and limits nothing.
  return (count.A_Const as Obj | undefined)?.isnull !== true;
}

function list(value: unknown): readonly unknown[] {
  return Array.isArray(value) ? value : EMPTY_ARRAY;
}

// ---------------------------------------------------------------------------------------------
// The AST walker: visits every object and array, reacting to the node types that matter.

const NOW: RelationRef = Object.freeze({ schema: 'pg_catalog', name: 'now' });
const CURRENT_USER: RelationRef = Object.freeze({ schema: 'pg_catalog', name: 'current_user' });

// SQL-standard keywords that PostgreSQL evaluates like stable functions.
const SQL_VALUE_FUNCTIONS: Record<string, RelationRef> = {
  SVFOP_CURRENT_DATE: NOW,
  SVFOP_CURRENT_TIME: NOW,
  SVFOP_CURRENT_TIME_N: NOW,
  SVFOP_CURRENT_TIMESTAMP: NOW,
  SVFOP_CURRENT_TIMESTAMP_N: NOW,
  SVFOP_LOCALTIME: NOW,
  SVFOP_LOCALTIME_N: NOW,
  SVFOP_LOCALTIMESTAMP: NOW,
  SVFOP_LOCALTIMESTAMP_N: NOW,
  SVFOP_CURRENT_ROLE: CURRENT_USER,
  SVFOP_CURRENT_USER: CURRENT_USER,
  SVFOP_USER: CURRENT_USER,
  SVFOP_SESSION_USER: CURRENT_USER,
  SVFOP_CURRENT_CATALOG: Object.freeze({ schema: 'pg_catalog', name: 'current_database' }),
  SVFOP_CURRENT_SCHEMA: Object.freeze({ schema: 'pg_catalog', name: 'current_schema' }),
};

const DATE_TIME_TYPES = new Set(['date', 'time', 'timetz', 'timestamp', 'timestamptz']);
// Special date/time input strings that PostgreSQL resolves against the clock at parse time.
const CLOCK_WORD = /\b(?:now|today|tomorrow|yesterday)\b/i;
const CLOCK_LITERAL = /^\s*(?:now|today|tomorrow|yesterday)\s*$/i;

function refKey(schema: string | undefined, name: string): string {
  // A NUL cannot occur in an identifier, so the key cannot collide.
  return schema === undefined ? name : schema + '\0' + name;
}

/** A qualified name as the parse tree spells it: a list of String nodes, [schema,] name. */
function qualifiedName(items: unknown): RelationRef | undefined {
  if (!Array.isArray(items) || items.length === 0) return undefined;
  const name = ((items[items.length - 1] as Obj).String as Obj | undefined)?.sval;
  if (typeof name !== 'string') return undefined;
  const schema =
    items.length > 1
      ? (((items[items.length - 2] as Obj).String as Obj | undefined)?.sval as string | undefined)
      : undefined;
  return { schema, name };
}

function addRef(map: Map<string, RelationRef>, ref: RelationRef | undefined): void {
  if (ref === undefined) return;
  const key = refKey(ref.schema, ref.name);
  if (!map.has(key)) map.set(key, Object.freeze(ref));
}

class Walker {
  readonly reads = new Map<string, RelationRef>();
  readonly writes = new Map<string, RelationRef>();
  readonly functions = new Map<string, RelationRef>();
  readonly operators = new Map<string, RelationRef>();
  /** Candidate reads, filtered against CTE names once the whole statement has been seen. */
  private readonly pendingReads: Obj[] = [];
  private cteNames: Set<string> | undefined;
  dml = false;
  into = false;
  locking = false;

  walk(value: unknown): void {
    if (typeof value !== 'object' || value === null) return;
    if (Array.isArray(value)) {
      for (const item of value) this.walk(item);
      return;
    }
    const obj = value as Obj;
    for (const key in obj) {
      const child = obj[key];
      if (typeof child === 'object' && child !== null) this.visit(key, child as Obj);
    }
  }

  /** key is a node type (for a wrapped node) or a field name; child is its value. */
  visit(key: string, child: Obj): void {
    switch (key) {
      case 'RangeVar':
        this.pendingReads.push(child);
        return;
      case 'FuncCall':
        this.addFunctionNames(child.funcname);
        this.walk(child.args);
        this.walk(child.agg_order);
        this.walk(child.agg_filter);
        this.walk(child.over);
        return;
      case 'A_Expr':
        this.addOperatorNames(child.name);
        this.walk(child.lexpr);
        this.walk(child.rexpr);
        return;
      case 'SubLink':
        this.addOperatorNames(child.operName);
        this.walk(child.testexpr);
        this.walk(child.subselect);
        return;
      case 'SQLValueFunction': {
        const ref = SQL_VALUE_FUNCTIONS[child.op as string];
        if (ref !== undefined) this.functions.set(refKey(ref.schema, ref.name), ref);
        return;
      }
      case 'TypeCast':
        this.visitTypeCast(child);
        return;
      case 'A_Const': {
        // An untyped literal takes its type from context (ts > 'now'), so judge it by its text.
        const s = (child.sval as Obj | undefined)?.sval;
        if (typeof s === 'string' && s.length <= 16 && CLOCK_LITERAL.test(s)) this.addNow();
        return;
      }
      case 'ColumnRef':
      case 'String':
      case 'TypeName':
      case 'typeName':
        return; // nothing below these can read a table or call a function
      case 'SelectStmt':
        this.visitSelect(child);
        return;
      case 'InsertStmt':
      case 'UpdateStmt':
      case 'DeleteStmt':
      case 'MergeStmt':
        this.dml = true;
        this.addWrite(child.relation);
        for (const field in child) {
          if (field === 'relation') continue;
          const v = child[field];
          if (typeof v === 'object' && v !== null) this.visit(field, v as Obj);
        }
        return;
      case 'CommonTableExpr':
        if (typeof child.ctename === 'string') {
          this.cteNames ??= new Set();
          this.cteNames.add(child.ctename);
        }
        this.walk(child.ctequery);
        return;
      default:
        this.walk(child);
    }
  }

  visitSelect(body: Obj): void {
    for (const field in body) {
      const v = body[field];
      if (typeof v !== 'object' || v === null) continue;
      switch (field) {
        case 'lockingClause':
          // Its lockedRels name aliases in FROM, not extra reads.
          if (Array.isArray(v) && v.length > 0) this.locking = true;
          break;
        case 'intoClause':
          this.into = true;
          this.addWrite((v as Obj).rel);
          break;
        case 'larg':
        case 'rarg':
          this.visitSelect(v as Obj); // set-operation arms are bare SelectStmt bodies
          break;
        default:
          this.visit(field, v as Obj);
      }
    }
  }

  private visitTypeCast(cast: Obj): void {
    const names = (cast.typeName as Obj | undefined)?.names;
    const last = Array.isArray(names) ? (names[names.length - 1] as Obj | undefined) : undefined;
    const typeName = (last?.String as Obj | undefined)?.sval;
    let arg = cast.arg as Obj | undefined;
    if (typeof typeName === 'string' && DATE_TIME_TYPES.has(typeName)) {
      // 'now'::text::timestamptz reads the clock too: look through the inner casts.
      while (arg?.TypeCast !== undefined) arg = (arg.TypeCast as Obj).arg as Obj | undefined;
      const s = ((arg?.A_Const as Obj | undefined)?.sval as Obj | undefined)?.sval;
      if (typeof s === 'string') {
        // 'today 09:30'::timestamp is as clock-dependent as 'now'; any such word counts.
        if (CLOCK_WORD.test(s)) this.addNow();
        return;
      }
    } else if ((arg?.A_Const as Obj | undefined)?.sval !== undefined) {
      return; // 'now'::text is just a word
    }
    this.walk(arg);
  }

  private addNow(): void {
    this.functions.set(refKey(NOW.schema, NOW.name), NOW);
  }

  private addOperatorNames(names: unknown): void {
    addRef(this.operators, qualifiedName(names));
  }

  private addFunctionNames(funcname: unknown): void {
    addRef(this.functions, qualifiedName(funcname));
  }

  /** A bare RangeVar body the statement reads (COPY t TO). */
  addRead(rangeVar: unknown): void {
    if (typeof rangeVar === 'object' && rangeVar !== null) this.pendingReads.push(rangeVar as Obj);
  }

  /** A bare RangeVar body the statement writes. */
  addWrite(rangeVar: unknown): void {
    if (typeof rangeVar !== 'object' || rangeVar === null) return;
    const rv = rangeVar as Obj;
    if (typeof rv.relname === 'string') this.addWriteRef(rv.schemaname as string | undefined, rv.relname);
  }

  addWriteRef(schema: string | undefined, name: string): void {
    const key = refKey(schema, name);
    if (!this.writes.has(key)) this.writes.set(key, Object.freeze({ schema, name }));
  }

  /** A qualified name as DROP gives it: a list of String nodes, [schema,] name. */
  addWriteNames(items: unknown): void {
    const ref = qualifiedName(items);
    if (ref !== undefined) this.addWriteRef(ref.schema, ref.name);
  }

  /** Copies this statement's findings into the query-wide maps; writesAsReads for plain EXPLAIN. */
  mergeInto(
    reads: Map<string, RelationRef>,
    writes: Map<string, RelationRef>,
    functions: Map<string, RelationRef>,
    writesAsReads: boolean,
    operators: Map<string, RelationRef>,
  ): void {
    for (const [key, ref] of this.operators) if (!operators.has(key)) operators.set(key, ref);
    const ctes = this.cteNames;
    for (const rv of this.pendingReads) {
      const name = rv.relname;
      if (typeof name !== 'string') continue;
      const schema = rv.schemaname as string | undefined;
      // Approximation: an unqualified name matching any CTE declared in this statement is the CTE.
      if (schema === undefined && ctes?.has(name)) continue;
      const key = refKey(schema, name);
      if (!reads.has(key)) reads.set(key, Object.freeze({ schema, name }));
    }
    for (const [key, ref] of this.reads) if (!reads.has(key)) reads.set(key, ref);
    const writeTarget = writesAsReads ? reads : writes;
    for (const [key, ref] of this.writes) if (!writeTarget.has(key)) writeTarget.set(key, ref);
    for (const [key, ref] of this.functions) if (!functions.has(key)) functions.set(key, ref);
  }
}

function freezeRefs(map: Map<string, RelationRef>): readonly RelationRef[] {
  return map.size === 0 ? EMPTY_ARRAY : Object.freeze([...map.values()]);
}

// ---------------------------------------------------------------------------------------------
// Digest

// Could the text still hold a literal or a comment? normalizeSync leaves constants in DDL,
// utility statements and CREATE ... AS queries, and keeps comments (which often carry per-request
// tags); the scanner pass below removes them. Plain DML digests skip it.
const MAYBE_LITERAL = /'|--|\/\*|\$[A-Za-z_$]|(?<![$\w])\d/;
const CONSTANT_TOKENS = new Set([260, 261, 262, 263, 264, 266]); // FCONST SCONST USCONST BCONST XCONST ICONST
const PARAM_TOKEN = 267;
const COMMENT_TOKENS = new Set([275, 276]); // SQL_COMMENT C_COMMENT

function collapse(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

function scrubDigest(text: string): string {
  if (!MAYBE_LITERAL.test(text)) return collapse(text);
  let tokens: { start: number; end: number; tokenType: number; text: string }[];
  try {
    tokens = scanSync(text).tokens;
  } catch {
    // Not even scannable (an unterminated quote): blank anything that looks like a value.
    return collapse(text.replace(/'(?:[^']|'')*'?/g, '?').replace(/(?<![$\w])\d[\w.]*/g, '?'));
  }
  let next = 1;
  for (const t of tokens) {
    if (t.tokenType === PARAM_TOKEN) next = Math.max(next, Number(t.text.slice(1)) + 1);
  }
  // Token offsets are UTF-8 byte offsets.
  const bytes = Buffer.from(text, 'utf8');
  let out = '';
  let at = 0;
  for (const t of tokens) {
    const constant = CONSTANT_TOKENS.has(t.tokenType);
    if (!constant && !COMMENT_TOKENS.has(t.tokenType)) continue;
    out += bytes.toString('utf8', at, t.start) + (constant ? '$' + next++ : ' ');
    at = t.end;
  }
  out += bytes.toString('utf8', at);
  return collapse(out);
}
