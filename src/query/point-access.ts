// Owns recognizing statements that touch only the rows where one column equals given values
// (`WHERE symbol = 'BTC'`, `INSERT ... VALUES ('BTC', ...)`), from the raw parse tree. The result
// cache uses it to invalidate per value instead of per table; what it cannot prove, it leaves out.

/** A value a column is compared with: a literal, or the statement's $n parameter. */
export type PointValue = { readonly param: number } | { readonly literal: string; readonly integer: boolean };

export interface PointAccess {
  readonly table: { readonly schema: string | undefined; readonly name: string };
  /**
   * Column -> the values it equals. SELECT/UPDATE/DELETE: one value per `column = value` term of
   * a top-level AND. INSERT ... VALUES: one value per row (every row names the column).
   */
  readonly columns: ReadonlyMap<string, readonly PointValue[]>;
  /** Columns an UPDATE, or an INSERT's ON CONFLICT DO UPDATE, assigns. */
  readonly assigned: readonly string[];
  /** INSERT only: 'none', 'nothing', or the inferred conflict columns of DO UPDATE; 'other' otherwise. */
  readonly conflict: 'none' | 'nothing' | 'other' | readonly string[];
}

type Obj = Record<string, unknown>;

function obj(value: unknown): Obj | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Obj) : undefined;
}

function str(node: unknown): string | undefined {
  const s = obj(obj(node)?.String)?.sval;
  return typeof s === 'string' ? s : undefined;
}

/** A literal or $n, or undefined for anything else (casts, expressions, NULL, floats...). */
function pointValue(node: unknown): PointValue | undefined {
  const n = obj(node);
  if (!n) return undefined;
  const param = obj(n.ParamRef);
  if (param) return typeof param.number === 'number' ? { param: param.number } : undefined;
  const c = obj(n.A_Const);
  if (!c || c.isnull === true) return undefined;
  const ival = obj(c.ival);
  // libpg-query leaves zero out of the JSON: {"ival":{}} is 0.
  if (ival) return { literal: String(typeof ival.ival === 'number' ? ival.ival : 0), integer: true };
  const sval = obj(c.sval);
  if (sval) return { literal: typeof sval.sval === 'string' ? sval.sval : '', integer: false };
  return undefined;
}

/** The column a ColumnRef names, when it is `col` or `qualifier.col` (one table in scope). */
function columnName(node: unknown): string | undefined {
  const fields = obj(obj(node)?.ColumnRef)?.fields;
  if (!Array.isArray(fields) || fields.length === 0 || fields.length > 2) return undefined;
  return str(fields[fields.length - 1]);
}

/** `column = value` terms of a top-level AND (or of a lone comparison). */
function equalities(where: unknown): Map<string, PointValue[]> {
  const out = new Map<string, PointValue[]>();
  const w = obj(where);
  if (!w) return out;
  const bool = obj(w.BoolExpr);
  const terms = bool ? (bool.boolop === 'AND_EXPR' && Array.isArray(bool.args) ? bool.args : []) : [w];
  for (const term of terms) {
    const expr = obj(obj(term)?.A_Expr);
    if (expr?.kind !== 'AEXPR_OP' || !Array.isArray(expr.name) || expr.name.length !== 1) continue;
    if (str(expr.name[0]) !== '=') continue;
    let column = columnName(expr.lexpr);
    let value = pointValue(expr.rexpr);
    if (column === undefined || value === undefined) {
      column = columnName(expr.rexpr);
      value = pointValue(expr.lexpr);
    }
    if (column === undefined || value === undefined) continue;
    const values = out.get(column) ?? [];
    values.push(value);
    out.set(column, values);
  }
  return out;
}

function relation(node: unknown): PointAccess['table'] | undefined {
  const rv = obj(node);
  if (!rv || typeof rv.relname !== 'string' || rv.inh === false) return undefined;
  return { schema: typeof rv.schemaname === 'string' ? rv.schemaname : undefined, name: rv.relname };
}

function targetNames(list: unknown): string[] | undefined {
  if (!Array.isArray(list)) return [];
  const names: string[] = [];
  for (const item of list) {
    const name = obj(obj(item)?.ResTarget)?.name;
    if (typeof name !== 'string') return undefined;
    names.push(name);
  }
  return names;
}

function countRangeVars(value: unknown): number {
  if (typeof value !== 'object' || value === null) return 0;
  if (Array.isArray(value)) {
    let n = 0;
    for (const item of value) n += countRangeVars(item);
    return n;
  }
  let n = 0;
  for (const key in value as Obj) {
    const child = (value as Obj)[key];
    if (key === 'RangeVar') n++;
    n += countRangeVars(child);
  }
  return n;
}

/** The point access of one raw statement node ({SelectStmt: ...} etc.), if it has one. */
export function pointAccessOf(node: unknown): PointAccess | undefined {
  const n = obj(node);
  if (!n) return undefined;
  const select = obj(n.SelectStmt);
  if (select) {
    // One plain table, no WITH, no set operation: the WHERE is about that table's rows.
    if (select.withClause || (select.op !== undefined && select.op !== 'SETOP_NONE')) return undefined;
    const from = select.fromClause;
    if (!Array.isArray(from) || from.length !== 1) return undefined;
    const table = relation(obj(from[0])?.RangeVar);
    // A subquery reading the same table (price > (select avg(price) from prices)) reads other rows.
    if (!table || countRangeVars(select) !== 1) return undefined;
    return { table, columns: equalities(select.whereClause), assigned: [], conflict: 'none' };
  }
  const update = obj(n.UpdateStmt);
  if (update) {
    const table = relation(update.relation);
    const assigned = targetNames(update.targetList);
    if (!table || !assigned || update.withClause) return undefined;
    return { table, columns: equalities(update.whereClause), assigned, conflict: 'none' };
  }
  const del = obj(n.DeleteStmt);
  if (del) {
    const table = relation(del.relation);
    if (!table || del.withClause) return undefined;
    return { table, columns: equalities(del.whereClause), assigned: [], conflict: 'none' };
  }
  const insert = obj(n.InsertStmt);
  if (insert) return insertAccess(insert);
  return undefined;
}

function insertAccess(insert: Obj): PointAccess | undefined {
  const table = relation(insert.relation);
  const cols = targetNames(insert.cols);
  if (!table || !cols || cols.length === 0 || insert.withClause) return undefined;
  const rows = obj(obj(insert.selectStmt)?.SelectStmt)?.valuesLists;
  if (!Array.isArray(rows)) return undefined;
  const columns = new Map<string, PointValue[]>();
  cols.forEach((column, i) => {
    const values: PointValue[] = [];
    for (const row of rows) {
      const items = obj(obj(row)?.List)?.items;
      const value = Array.isArray(items) && items.length === cols.length ? pointValue(items[i]) : undefined;
      if (value === undefined) return;
      values.push(value);
    }
    columns.set(column, values);
  });
  let conflict: PointAccess['conflict'] = 'none';
  let assigned: string[] = [];
  const onConflict = obj(insert.onConflictClause);
  if (onConflict) {
    if (onConflict.action === 'ONCONFLICT_NOTHING') {
      conflict = 'nothing';
    } else {
      const infer = obj(onConflict.infer);
      const elems = infer?.indexElems;
      const names = Array.isArray(elems) ? elems.map((e) => obj(obj(e)?.IndexElem)?.name) : [];
      const set = targetNames(onConflict.targetList);
      if (!infer || infer.conname !== undefined || infer.whereClause !== undefined || !set) return undefined;
      if (names.length === 0 || names.some((x) => typeof x !== 'string')) return undefined;
      conflict = names as string[];
      assigned = set;
    }
  }
  return { table, columns, assigned, conflict };
}
