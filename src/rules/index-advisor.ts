// Owns index advice (`sluice advise`): from a workload (statements with their call counts and time)
// and the catalog (pg_class.reltuples, pg_index, pg_stats), the CREATE INDEX CONCURRENTLY
// statements worth considering, ranked by estimated benefit. Advice only: nothing here executes DDL.
import { parseSync } from 'libpg-query';

export interface WorkloadStatement {
  sql: string;
  calls: number;
  /** Total execution time in ms, when the source knows it (pg_stat_statements). */
  totalMs: number | undefined;
}

/** A column a statement filters or sorts on, with the table as written (alias resolved). */
export interface ColumnUse {
  schema: string | undefined;
  table: string;
  column: string;
  how: 'equality' | 'range' | 'sort';
}

type Obj = Record<string, unknown>;

const EQUALITY_OPS = new Set(['=']);
const RANGE_OPS = new Set(['<', '<=', '>', '>=']);

/**
 * The columns a statement filters (column op value, BETWEEN, IN (...), LIKE 'prefix%') and sorts
 * on, per top-level SELECT / UPDATE / DELETE. An unqualified column in a statement over several
 * tables is left unresolved (table ''), to be placed by the catalog.
 */
export function columnUses(sql: string): ColumnUse[][] {
  let tree: { stmts?: Array<{ stmt?: Obj }> };
  try {
    tree = parseSync(sql) as typeof tree;
  } catch {
    return [];
  }
  const out: ColumnUse[][] = [];
  for (const { stmt } of tree.stmts ?? []) {
    if (stmt === undefined) continue;
    const node = (stmt.SelectStmt ?? stmt.UpdateStmt ?? stmt.DeleteStmt) as Obj | undefined;
    if (node === undefined) continue;
    const tables = new Map<string, { schema: string | undefined; table: string }>();
    const relations: Obj[] = [];
    if (node.relation) relations.push({ RangeVar: node.relation });
    for (const from of [...((node.fromClause as Obj[]) ?? []), ...((node.usingClause as Obj[]) ?? [])]) {
      collectRangeVars(from, relations);
    }
    for (const r of relations) {
      const rv = r.RangeVar as Obj;
      const ref = { schema: rv.schemaname as string | undefined, table: rv.relname as string };
      const alias = (rv.alias as Obj | undefined)?.aliasname as string | undefined;
      tables.set(alias ?? ref.table, ref);
    }
    if (tables.size === 0) continue;
    const only = tables.size === 1 ? [...tables.values()][0] : undefined;
    const resolve = (
      fields: Obj[],
    ): { schema: string | undefined; table: string; column: string } | undefined => {
      const names = fields.map((f) => (f.String as Obj | undefined)?.sval as string | undefined);
      if (names.some((n) => n === undefined)) return undefined;
      if (names.length === 1) return { schema: only?.schema, table: only?.table ?? '', column: names[0]! };
      const owner = tables.get(names[names.length - 2]!);
      return owner ? { ...owner, column: names[names.length - 1]! } : undefined;
    };
    const uses: ColumnUse[] = [];
    collectFilters(node.whereClause, resolve, uses);
    for (const s of (node.sortClause as Obj[] | undefined) ?? []) {
      const ref = ((s.SortBy as Obj | undefined)?.node as Obj | undefined)?.ColumnRef as Obj | undefined;
      const col = ref ? resolve(ref.fields as Obj[]) : undefined;
      if (col) uses.push({ ...col, how: 'sort' });
    }
    if (uses.length > 0) out.push(uses);
  }
  return out;
}

function collectRangeVars(node: Obj, out: Obj[]): void {
  if ('RangeVar' in node) out.push(node);
  const join = node.JoinExpr as Obj | undefined;
  if (join) {
    collectRangeVars(join.larg as Obj, out);
    collectRangeVars(join.rarg as Obj, out);
  }
}

type Resolver = (fields: Obj[]) => { schema: string | undefined; table: string; column: string } | undefined;

/** Filters in the top-level AND of a WHERE (an OR or NOT makes a single-column index a gamble). */
function collectFilters(where: unknown, resolve: Resolver, out: ColumnUse[]): void {
  if (where === undefined || where === null) return;
  const node = where as Obj;
  const bool = node.BoolExpr as Obj | undefined;
  if (bool !== undefined) {
    if (bool.boolop === 'AND_EXPR') for (const arg of bool.args as Obj[]) collectFilters(arg, resolve, out);
    return;
  }
  const expr = node.A_Expr as Obj | undefined;
  if (expr === undefined) return;
  const op = ((expr.name as Obj[] | undefined)?.[0]?.String as Obj | undefined)?.sval as string | undefined;
  const kind = expr.kind as string;
  const left = expr.lexpr as Obj | undefined;
  const right = expr.rexpr as Obj | undefined;
  // column op value, or value op column (mirrored).
  const leftCol = left?.ColumnRef as Obj | undefined;
  const rightCol = right?.ColumnRef as Obj | undefined;
  const col = leftCol && !rightCol ? leftCol : rightCol && !leftCol ? rightCol : undefined;
  if (col === undefined) return;
  const other = col === leftCol ? right : left;
  if (other !== undefined && !isValue(other)) return;
  const target = resolve(col.fields as Obj[]);
  if (target === undefined) return;
  let how: ColumnUse['how'] | undefined;
  if (kind === 'AEXPR_OP' && op !== undefined && EQUALITY_OPS.has(op)) how = 'equality';
  else if (kind === 'AEXPR_OP' && op !== undefined && RANGE_OPS.has(op)) how = 'range';
  else if (kind === 'AEXPR_IN' && op === '=') how = 'equality';
  else if (kind === 'AEXPR_BETWEEN') how = 'range';
  else if (kind === 'AEXPR_LIKE' && op === '~~' && isPrefixPattern(other)) how = 'range';
  if (how !== undefined) out.push({ ...target, how });
}

/** A constant, a parameter, a cast of one, a list of them, or an expression free of columns. */
function isValue(node: Obj): boolean {
  return !JSON.stringify(node).includes('"ColumnRef"') && !JSON.stringify(node).includes('"SubLink"');
}

function isPrefixPattern(node: Obj | undefined): boolean {
  const sval = ((node?.A_Const as Obj | undefined)?.sval as Obj | undefined)?.sval;
  return typeof sval === 'string' && sval.length > 0 && !/^[%_]/.test(sval);
}

// ---------------------------------------------------------------------------------------------
// Catalog

export interface ColumnStats {
  /** pg_stats.n_distinct: > 0 a count, < 0 minus a fraction of the rows. */
  nDistinct: number | undefined;
  mostCommonFreqs: number[];
  nullFrac: number;
}

export interface TableInfo {
  schema: string;
  table: string;
  reltuples: number;
  columns: Set<string>;
  /** Columns that already lead an index (its first key column). */
  leadingIndexed: Set<string>;
  stats: Map<string, ColumnStats>;
}

/** Runs one SQL statement with parameters; the advisor's only way to the database. */
export type CatalogQuery = (sql: string, params: unknown[]) => Promise<Array<Record<string, unknown>>>;

/** The catalog facts of one table as written (`schema.table` or a name on the search_path). */
export async function loadTableInfo(
  query: CatalogQuery,
  schema: string | undefined,
  table: string,
): Promise<TableInfo | undefined> {
  const name = schema === undefined ? quoteIdent(table) : `${quoteIdent(schema)}.${quoteIdent(table)}`;
  const rel = await query(
    `select c.oid::int8 as oid, n.nspname, c.relname, c.reltuples::float8 as reltuples
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.oid = to_regclass($1) and c.relkind in ('r', 'p', 'm')`,
    [name],
  );
  const row = rel[0];
  if (row === undefined) return undefined;
  const oid = row.oid as string;
  const columns = await query(
    'select attname from pg_attribute where attrelid = $1::oid and attnum > 0 and not attisdropped',
    [oid],
  );
  const leading = await query(
    `select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
      where i.indrelid = $1::oid and i.indisvalid`,
    [oid],
  );
  const stats = await query(
    `select attname, n_distinct::float8 as n_distinct, null_frac::float8 as null_frac,
            most_common_freqs::float8[] as mcf
       from pg_stats where schemaname = $1 and tablename = $2`,
    [row.nspname, row.relname],
  );
  // Partitions of a partitioned table (a hypertable's chunks are children too) hold the rows.
  let reltuples = Number(row.reltuples);
  if (reltuples <= 0) {
    const children = await query(
      `select coalesce(sum(c.reltuples) filter (where c.reltuples > 0), 0)::float8 as n
         from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhparent = $1::oid`,
      [oid],
    );
    reltuples = Number(children[0]?.n ?? 0);
  }
  return {
    schema: row.nspname as string,
    table: row.relname as string,
    reltuples,
    columns: new Set(columns.map((c) => c.attname as string)),
    leadingIndexed: new Set(leading.map((c) => c.attname as string)),
    stats: new Map(
      stats.map((s) => [
        s.attname as string,
        {
          nDistinct: s.n_distinct === null ? undefined : Number(s.n_distinct),
          mostCommonFreqs: ((s.mcf as number[] | null) ?? []).map(Number),
          nullFrac: Number(s.null_frac ?? 0),
        },
      ]),
    ),
  };
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

// ---------------------------------------------------------------------------------------------
// Advice

export interface IndexAdvice {
  statement: string;
  schema: string;
  table: string;
  columns: string[];
  /** Estimated rows not read per run, summed over the workload (weighted by calls). */
  benefit: number;
  /** Fraction of the table one run still reads with the index. */
  selectivity: number;
  /** Workload digests (or texts) that would use it. */
  examples: string[];
}

// PostgreSQL's own defaults when nothing better is known (selfuncs.h).
const DEFAULT_EQ_SEL = 0.005;
const DEFAULT_INEQ_SEL = 1 / 3;
const DEFAULT_RANGE_INEQ_SEL = 0.005;

/** Fraction of rows `column = value` keeps, from pg_stats (the average over its values). */
export function equalitySelectivity(stats: ColumnStats | undefined, reltuples: number): number {
  if (stats === undefined || stats.nDistinct === undefined || stats.nDistinct === 0) return DEFAULT_EQ_SEL;
  const distinct = stats.nDistinct > 0 ? stats.nDistinct : -stats.nDistinct * Math.max(reltuples, 1);
  // A common value keeps its own share of the rows: the expected share over the workload's values
  // is sum(freq^2) for the common ones plus the rest spread evenly over the other values.
  const mcf = stats.mostCommonFreqs;
  const common = mcf.reduce((a, f) => a + f, 0);
  const others = Math.max(distinct - mcf.length, 1);
  const rest = Math.max(1 - common - stats.nullFrac, 0);
  return mcf.reduce((a, f) => a + f * f, 0) + (rest * rest) / others;
}

export interface AdviseOptions {
  /** Tables with fewer rows are left alone (a sequential scan is cheap). */
  minRows?: number;
  /**
   * An index keeping more than this fraction of rows is not worth it. 0.5 lets a one-sided range
   * (`ts > $1`, PostgreSQL's default guess 1/3 without the value) through: on time-series tables
   * that is the filter indexes exist for.
   */
  maxSelectivity?: number;
}

/**
 * Proposes indexes for `workload` over the tables `tableInfo` can describe, best first. For each
 * statement and table: its equality columns (most selective first), then one range or sort column,
 * unless the first of them already leads an index.
 */
export async function adviseIndexes(
  workload: readonly WorkloadStatement[],
  tableInfo: (schema: string | undefined, table: string) => Promise<TableInfo | undefined>,
  options: AdviseOptions = {},
): Promise<IndexAdvice[]> {
  const minRows = options.minRows ?? 1000;
  const maxSelectivity = options.maxSelectivity ?? 0.5;
  const byKey = new Map<string, IndexAdvice>();
  for (const statement of workload) {
    for (const uses of columnUses(statement.sql)) {
      const perTable = new Map<string, { info: TableInfo; uses: ColumnUse[] }>();
      for (const use of uses) {
        const info = await placeColumn(use, uses, tableInfo);
        if (info === undefined || !info.columns.has(use.column)) continue;
        const key = `${info.schema}.${info.table}`;
        let entry = perTable.get(key);
        if (entry === undefined) {
          entry = { info, uses: [] };
          perTable.set(key, entry);
        }
        entry.uses.push(use);
      }
      for (const { info, uses: tableUses } of perTable.values()) {
        if (info.reltuples < minRows) continue;
        const advice = candidate(info, tableUses);
        if (advice === undefined || advice.selectivity > maxSelectivity) continue;
        if (info.leadingIndexed.has(advice.columns[0]!)) continue;
        const benefit = info.reltuples * (1 - advice.selectivity) * Math.max(statement.calls, 1);
        const key = `${info.schema}.${info.table}(${advice.columns.join(',')})`;
        const known = byKey.get(key);
        const example = statement.sql.replace(/\s+/g, ' ').trim().slice(0, 160);
        if (known) {
          known.benefit += benefit;
          if (known.examples.length < 3 && !known.examples.includes(example)) known.examples.push(example);
        } else {
          byKey.set(key, { ...advice, benefit, examples: [example] });
        }
      }
    }
  }
  return [...byKey.values()].sort((a, b) => b.benefit - a.benefit);
}

async function placeColumn(
  use: ColumnUse,
  all: readonly ColumnUse[],
  tableInfo: (schema: string | undefined, table: string) => Promise<TableInfo | undefined>,
): Promise<TableInfo | undefined> {
  if (use.table !== '') return tableInfo(use.schema, use.table);
  // Unqualified over several tables: the one table that has the column, if exactly one.
  const owners: TableInfo[] = [];
  const seen = new Set<string>();
  for (const other of all) {
    if (other.table === '' || seen.has(`${other.schema}.${other.table}`)) continue;
    seen.add(`${other.schema}.${other.table}`);
    const info = await tableInfo(other.schema, other.table);
    if (info?.columns.has(use.column)) owners.push(info);
  }
  return owners.length === 1 ? owners[0] : undefined;
}

function candidate(
  info: TableInfo,
  uses: readonly ColumnUse[],
): Omit<IndexAdvice, 'benefit' | 'examples'> | undefined {
  const equality = [...new Set(uses.filter((u) => u.how === 'equality').map((u) => u.column))]
    .map((column) => ({ column, sel: equalitySelectivity(info.stats.get(column), info.reltuples) }))
    .sort((a, b) => a.sel - b.sel);
  const columns = equality.map((e) => e.column);
  let selectivity = equality.reduce((a, e) => a * e.sel, 1);
  const ranges = uses.filter((u) => u.how === 'range' && !columns.includes(u.column));
  const range = ranges[0];
  if (range !== undefined) {
    columns.push(range.column);
    // Two bounds on one column (BETWEEN, >= and <) are PostgreSQL's "range" default.
    const bounds = ranges.filter((r) => r.column === range.column).length;
    selectivity *= bounds > 1 ? DEFAULT_RANGE_INEQ_SEL : DEFAULT_INEQ_SEL;
  } else if (columns.length > 0) {
    const sort = uses.find((u) => u.how === 'sort' && !columns.includes(u.column));
    if (sort !== undefined) columns.push(sort.column);
  }
  if (columns.length === 0) return undefined;
  const cols = columns.slice(0, 3);
  const name = `${info.table}_${cols.join('_')}_idx`.slice(0, 63);
  return {
    statement: `CREATE INDEX CONCURRENTLY IF NOT EXISTS ${quoteIdent(name)} ON ${quoteIdent(info.schema)}.${quoteIdent(info.table)} (${cols.map(quoteIdent).join(', ')});`,
    schema: info.schema,
    table: info.table,
    columns: cols,
    selectivity,
  };
}

/** Splits a file of statements separated by `;` (as PostgreSQL's parser reads it). */
export function splitStatements(text: string): string[] {
  let tree: { stmts?: Array<{ stmt_location?: number; stmt_len?: number }> };
  try {
    tree = parseSync(text) as typeof tree;
  } catch {
    return text
      .split(/;\s*\n/)
      .map((s) => s.trim())
      .filter((s) => s.length > 0);
  }
  const bytes = Buffer.from(text, 'utf8');
  return (tree.stmts ?? [])
    .map((s) => {
      const start = s.stmt_location ?? 0;
      const end = s.stmt_len === undefined || s.stmt_len === 0 ? bytes.length : start + s.stmt_len;
      return bytes.toString('utf8', start, end).trim();
    })
    .filter((s) => s.length > 0);
}
