// Owns what the result cache learns from one database's catalog: how a name resolves under a
// search_path, which stored relations a read depends on and a write changes, and function volatility.

/** A relation or function name as written in a statement (identifiers already case-folded). */
export interface RelationRef {
  readonly schema: string | undefined;
  readonly name: string;
}

export type Volatility = 'immutable' | 'stable' | 'volatile';

/** Anything that runs one SQL statement: a pg.Client or pg.Pool satisfies it. */
export interface CatalogQuery {
  query(sql: string, params?: unknown[]): Promise<{ rows: unknown[] }>;
}

export type RelationKind =
  | 'table'
  | 'partitioned table'
  | 'view'
  | 'materialized view'
  | 'foreign table'
  | 'sequence';

export interface RelationInfo {
  /** "schema.name", the key every other method takes. */
  readonly key: string;
  readonly schema: string;
  readonly name: string;
  readonly kind: RelationKind;
  /** See DatabaseCatalog.isSystem. */
  readonly system: boolean;
  /**
   * Row-level security is enabled: which rows a read returns depends on policies, and policies
   * may read session settings (current_setting) that are not part of a cache key.
   */
  readonly rowSecurity: boolean;
}

const KINDS: Readonly<Record<string, RelationKind>> = {
  r: 'table',
  p: 'partitioned table',
  v: 'view',
  m: 'materialized view',
  f: 'foreign table',
  S: 'sequence',
};

/** A primary-key column the result cache versions per value, and how its values compare. */
export interface PointColumn {
  readonly name: string;
  readonly family: 'integer' | 'text';
}

const POINT_TYPES: Readonly<Record<string, PointColumn['family']>> = {
  int2: 'integer',
  int4: 'integer',
  int8: 'integer',
  text: 'text',
  varchar: 'text',
};

const VOLATILITY: Readonly<Record<string, Volatility>> = { i: 'immutable', s: 'stable', v: 'volatile' };
const RANK: Readonly<Record<Volatility, number>> = { immutable: 0, stable: 1, volatile: 2 };

function worse(a: Volatility, b: Volatility): Volatility {
  return RANK[b] > RANK[a] ? b : a;
}

/** PostgreSQL's identifiers are at most NAMEDATALEN - 1 bytes; longer ones are truncated. */
const MAX_IDENTIFIER_BYTES = 63;
/** Distinct search_path texts parsed and kept; a session rarely has more than a handful. */
const MAX_PARSED_PATHS = 256;

// Everything comes from this one statement, so all of it shares one snapshot (no relation in
// pg_inherits that pg_class did not return) and loading is one round trip, on a client or a pool.
// The first row carries `facts`: a json object of arrays of arrays, sent as text so no client-side
// type parser is involved. Then one row per user view with the oids pg_depend says it reads and
// the text of its stored query tree; rows, because json-escaping 1.4 MB of trees (300 views) took
// 57 ms where plain text took 9. `oid IN (subquery)` rather than EXISTS runs as one hashed subplan
// instead of a probe per relation (30 -> 16 ms for the relations part with 3,500 relations).
//
// Why the query tree: pg_depend omits pinned objects, so a view over pg_class has no row there,
// and neither has a call of now() or random(). TREE_REFS finds them in the tree; PostgreSQL's own
// regex engine took 250 ms for 300 views where V8 takes a few.
const CATALOG_SQL = `
WITH rel AS (
  SELECT c.oid, n.nspname, c.relname, c.relkind, c.relrowsecurity
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND n.nspname !~ '^pg_(toast_)?temp_'
)
SELECT NULL::text AS view, NULL::text AS depends, NULL::text AS tree, json_build_object(
  'relations', (SELECT coalesce(json_agg(json_build_array(
      r.oid, r.nspname, r.relname, r.relkind, r.relrowsecurity,
      r.oid < 16384 OR r.nspname IN ('pg_catalog', 'information_schema', 'pg_toast') OR r.oid IN (
        SELECT d.objid FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'),
      r.oid IN (
        SELECT t.tgrelid FROM pg_trigger t
        WHERE NOT t.tgisinternal AND t.tgenabled <> 'D'
          AND NOT (t.tgname = 'sluice_write_notify' AND t.tgfoid IN (
            SELECT p.oid FROM pg_proc p WHERE p.proname = 'sluice_notify_write'))
          AND t.tgfoid NOT IN (
          SELECT d.objid FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
          WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_extension'::regclass
            AND d.deptype = 'e' AND e.extname = 'timescaledb'))
      OR r.oid IN (SELECT w.ev_class FROM pg_rewrite w WHERE w.ev_type <> '1')
    )), '[]') FROM rel r),
  'inherits', (SELECT coalesce(json_agg(json_build_array(i.inhrelid, i.inhparent)), '[]')
    FROM pg_inherits i),
  'cascades', (SELECT coalesce(json_agg(json_build_array(k.confrelid, k.conrelid)), '[]')
    FROM pg_constraint k
    WHERE k.contype = 'f' AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd'))),
  'functions', (SELECT coalesce(json_agg(json_build_array(p.oid, n.nspname, p.proname, p.provolatile)), '[]')
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace),
  'mutableOperators', (SELECT coalesce(json_agg(json_build_array(o.oid, p.provolatile)), '[]')
    FROM pg_operator o JOIN pg_proc p ON p.oid = o.oprcode WHERE p.provolatile <> 'i'),
  'pointColumns', (SELECT coalesce(json_agg(json_build_array(k.conrelid, a.attname, t.typname,
      coalesce(co.collisdeterministic, true))), '[]')
    FROM pg_constraint k
    JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    WHERE k.contype = 'p' AND cardinality(k.conkey) = 1),
  'userOperators', (SELECT coalesce(json_agg(json_build_array(o.oprname, p.provolatile)), '[]')
    FROM pg_operator o JOIN pg_proc p ON p.oid = o.oprcode
    WHERE o.oprnamespace <> 'pg_catalog'::regnamespace),
  'schemas', (SELECT coalesce(json_agg(json_build_array(n.nspname,
      CASE WHEN a.public_usage THEN NULL ELSE ARRAY(
        SELECT o.rolname FROM pg_roles o WHERE has_schema_privilege(o.oid, n.oid, 'USAGE')) END
    )), '[]')
    FROM pg_namespace n
    CROSS JOIN LATERAL (SELECT EXISTS (
      SELECT 1 FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) x
      WHERE x.grantee = 0 AND x.privilege_type = 'USAGE') AS public_usage) a
    WHERE n.nspname !~ '^pg_(toast_)?temp_'),
  'roles', (SELECT coalesce(json_agg(o.rolname), '[]') FROM pg_roles o),
  'searchPathSettings', (SELECT coalesce(json_agg(json_build_array(r.rolname, s.setdatabase <> 0,
      substr(c, length('search_path=') + 1))), '[]')
    FROM pg_db_role_setting s
    LEFT JOIN pg_roles r ON r.oid = s.setrole
    CROSS JOIN LATERAL unnest(s.setconfig) c
    WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
      AND c LIKE 'search\\_path=%'),
  'serverSearchPath', (SELECT CASE WHEN source IN ('database', 'user', 'database user', 'session')
      THEN boot_val ELSE reset_val END FROM pg_settings WHERE name = 'search_path')
)::text AS facts
UNION ALL
SELECT w.ev_class::text, array_to_json(ARRAY(
    SELECT d.refobjid FROM pg_depend d JOIN pg_class c ON c.oid = d.refobjid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid
      AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'n'
      -- Composite types (a field of a row-typed column) hold no rows.
      AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  ))::text, w.ev_action::text, NULL
FROM pg_rewrite w JOIN rel r ON r.oid = w.ev_class
WHERE r.relkind = 'v' AND w.rulename = '_RETURN' AND r.nspname NOT IN ('pg_catalog', 'information_schema')
`;

// What a view's stored query tree (pg_node_tree text) names: relation oids (RangeTblEntry and
// RTEPermissionInfo print `:relid N`), function oids (FuncExpr, OpExpr and its kin, Aggref,
// WindowFunc, hashed ScalarArrayOpExpr, in_range support), operator oids (mapped to their
// functions), and nodes that call something without naming it: SQLValueFunction (CURRENT_DATE,
// LOCALTIME...) and CoerceViaIO (casts through text, e.g. timestamptz::text, which read DateStyle
// and TimeZone) count as stable, NextValueExpr as volatile. Constants print as bytes, never as
// text, so a string literal cannot fake a match; an alias could, which only errs towards caution.
const TREE_REFS =
  /:(relid|funcid|opfuncid|aggfnoid|winfnoid|hashfuncid|negfuncid|startInRangeFunc|endInRangeFunc|opno) (\d+)|\{(SQLVALUEFUNCTION|COERCEVIAIO|NEXTVALUEEXPR) /g;

const NODE_VOLATILITY: Readonly<Record<string, Volatility>> = {
  SQLVALUEFUNCTION: 'stable',
  COERCEVIAIO: 'stable',
  NEXTVALUEEXPR: 'volatile',
};

interface CatalogRow {
  view: string | null;
  depends: string | null;
  tree: string | null;
  facts: string | null;
}

interface Facts {
  /** oid, schema, name, relkind, row security, system, own opaque writes */
  relations: [string, string, string, string, boolean, boolean, boolean][];
  /** child oid, parent oid */
  inherits: [string, string][];
  /** referenced oid, referencing oid */
  cascades: [string, string][];
  /** oid, schema, name, provolatile */
  functions: [string, string, string, string][];
  /** oid, provolatile of its function, for operators whose function is not immutable */
  mutableOperators: [string, string][];
  /** table oid, column, type name, deterministic collation: single-column primary keys */
  pointColumns: [string, string, string, boolean][];
  /** name, provolatile of the operator's function: operators outside pg_catalog */
  userOperators: [string, string][];
  /** name, roles with USAGE or null when PUBLIC has it */
  schemas: [string, string[] | null][];
  roles: string[];
  /** role (null: every role), whether for this database only, the search_path it sets */
  searchPathSettings: [string | null, boolean, string][];
  /** search_path as the server's configuration sets it (ALTER ROLE/DATABASE settings apart) */
  serverSearchPath: string;
}

interface Relation extends RelationInfo {
  /** User triggers or non-SELECT rewrite rules on this relation itself. */
  readonly ownOpaqueWrites: boolean;
}

/** Who may use a schema: everyone (PUBLIC has USAGE), or these roles. */
type SchemaAccess = true | ReadonlySet<string>;

function entry<V>(map: Map<string, V>, key: string, create: () => V): V {
  let value = map.get(key);
  if (value === undefined) {
    value = create();
    map.set(key, value);
  }
  return value;
}

function push(map: Map<string, string[]>, key: string, value: string): void {
  entry(map, key, () => []).push(value);
}

/**
 * One database's catalog as of loadedAt. Immutable: reload (DatabaseCatalog.load) after DDL, or
 * when resolve() answers undefined for a name the statement used.
 */
export class DatabaseCatalog {
  private readonly readMemo = new Map<string, readonly string[]>();
  private readonly writeMemo = new Map<string, readonly string[]>();
  private readonly readVolatilityMemo = new Map<string, Volatility>();
  private readonly opaqueMemo = new Map<string, boolean>();
  private readonly paths = new Map<string, readonly string[] | null>();

  private constructor(
    /** Date.now() when the catalog statement was sent: DDL after this may be missing. */
    readonly loadedAt: number,
    private readonly relations: ReadonlyMap<string, Relation>,
    private readonly bySchema: ReadonlyMap<string, ReadonlyMap<string, Relation>>,
    private readonly parents: ReadonlyMap<string, readonly string[]>,
    private readonly children: ReadonlyMap<string, readonly string[]>,
    /** Referenced relation -> relations whose rows a write to it cascades into (FK actions). */
    private readonly cascades: ReadonlyMap<string, readonly string[]>,
    /** View -> relations its own definition names (views not expanded). */
    private readonly viewRefs: ReadonlyMap<string, readonly string[]>,
    /** View -> worst volatility its own definition calls; undefined entry: calls nothing. */
    private readonly viewVolatility: ReadonlyMap<string, Volatility>,
    private readonly functions: ReadonlyMap<string, ReadonlyMap<string, Volatility>>,
    private readonly schemas: ReadonlyMap<string, SchemaAccess>,
    private readonly roles: ReadonlySet<string>,
    /** Operator name -> worst volatility over operators defined outside pg_catalog. */
    private readonly userOperators: ReadonlyMap<string, Volatility>,
    private readonly pointColumns: ReadonlyMap<string, PointColumn>,
    private readonly searchPathSettings: readonly [string | null, boolean, string][],
    private readonly serverSearchPath: string,
  ) {}

  /**
   * The search_path a session of `user` starts with in this database when it sets none, as
   * PostgreSQL picks it: ALTER ROLE ... IN DATABASE, then ALTER ROLE, then ALTER DATABASE, then
   * the server's configuration.
   */
  defaultSearchPath(user: string): string {
    let best: string | undefined;
    let rank = 0;
    for (const [role, inDatabase, value] of this.searchPathSettings) {
      const r = role === user ? (inDatabase ? 4 : 3) : role === null && inDatabase ? 2 : 0;
      if (r > rank) {
        rank = r;
        best = value;
      }
    }
    return best ?? this.serverSearchPath;
  }

  /**
   * The column whose values the result cache may version one by one for `key`: its single-column
   * primary key, when that is an integer or a deterministic text type, and `key` is a plain table
   * with no inheritance or partitioning on either side (writes through a parent or a child would
   * reach its rows under another name).
   */
  pointColumn(key: string): PointColumn | undefined {
    const column = this.pointColumns.get(key);
    if (column === undefined || this.relations.get(key)?.kind !== 'table') return undefined;
    if (this.parents.has(key) || this.children.has(key)) return undefined;
    return column;
  }

  static async load(db: CatalogQuery): Promise<DatabaseCatalog> {
    const loadedAt = Date.now();
    const { rows } = (await db.query(CATALOG_SQL)) as { rows: CatalogRow[] };
    const facts = JSON.parse(rows.find((row) => row.facts !== null)!.facts!) as Facts;

    // "schema.name" is ambiguous when names contain dots ("a.b"."c" vs "a"."b.c"). Such keys are
    // left out, so those names resolve to undefined and are never cached, rather than sharing
    // versions. Oids arrive as json strings (PostgreSQL renders oid that way) and stay strings.
    const byOid = new Map<string, string>();
    const seen = new Set<string>();
    const ambiguous = new Set<string>();
    for (const [oid, schema, name] of facts.relations) {
      const key = `${schema}.${name}`;
      if (seen.has(key)) ambiguous.add(key);
      seen.add(key);
      byOid.set(oid, key);
    }
    const relations = new Map<string, Relation>();
    const bySchema = new Map<string, Map<string, Relation>>();
    for (const [, schema, name, relkind, rowSecurity, system, opaque] of facts.relations) {
      const key = `${schema}.${name}`;
      if (ambiguous.has(key)) continue;
      const rel: Relation = {
        key,
        schema,
        name,
        kind: KINDS[relkind]!,
        system,
        rowSecurity,
        ownOpaqueWrites: opaque,
      };
      relations.set(key, rel);
      entry(bySchema, schema, () => new Map<string, Relation>()).set(name, rel);
    }
    const known = (oid: string): string | undefined => {
      const key = byOid.get(oid);
      return key !== undefined && relations.has(key) ? key : undefined;
    };

    // pg_inherits also links partitioned indexes and other sessions' temp tables: not held, skipped.
    const parents = new Map<string, string[]>();
    const children = new Map<string, string[]>();
    for (const [child, parent] of facts.inherits) {
      const c = known(child);
      const p = known(parent);
      if (c === undefined || p === undefined) continue;
      push(parents, c, p);
      push(children, p, c);
    }

    const cascades = new Map<string, string[]>();
    for (const [referenced, referencing] of facts.cascades) {
      const from = known(referenced);
      const to = known(referencing);
      if (from !== undefined && to !== undefined) push(cascades, from, to);
    }

    // Overloads share a name: keep the worst. Function oids only matter when not immutable.
    const functions = new Map<string, Map<string, Volatility>>();
    const mutableFunctions = new Map<string, Volatility>();
    for (const [oid, schema, name, code] of facts.functions) {
      const volatility = VOLATILITY[code]!;
      const names = entry(functions, schema, () => new Map<string, Volatility>());
      const other = names.get(name);
      names.set(name, other === undefined ? volatility : worse(other, volatility));
      if (volatility !== 'immutable') mutableFunctions.set(oid, volatility);
    }
    const mutableOperators = new Map<string, Volatility>();
    for (const [oid, code] of facts.mutableOperators) {
      mutableOperators.set(oid, VOLATILITY[code]!);
    }
    const pointColumns = new Map<string, PointColumn>();
    for (const [oid, column, type, deterministic] of facts.pointColumns) {
      const key = known(oid);
      const family = POINT_TYPES[type];
      // Only keys whose text form is canonical: integers, and text compared byte for byte.
      if (key === undefined || family === undefined || (family === 'text' && !deterministic)) continue;
      pointColumns.set(key, { name: column, family });
    }
    const userOperators = new Map<string, Volatility>();
    for (const [name, code] of facts.userOperators) {
      const volatility = VOLATILITY[code]!;
      const other = userOperators.get(name);
      userOperators.set(name, other === undefined ? volatility : worse(other, volatility));
    }
    const viewRefs = new Map<string, string[]>();
    const viewVolatility = new Map<string, Volatility>();
    for (const { view: oid, depends, tree } of rows) {
      if (oid === null) continue;
      const view = known(oid);
      if (view === undefined) continue;
      const refs = new Set(JSON.parse(depends!) as string[]);
      let volatility: Volatility = 'immutable';
      for (const [, field, id, node] of tree!.matchAll(TREE_REFS)) {
        let found: Volatility | undefined;
        if (node !== undefined) found = NODE_VOLATILITY[node];
        else if (field === 'opno') found = mutableOperators.get(id!);
        else if (field !== 'relid') found = mutableFunctions.get(id!);
        // Subquery and join entries print `:relid 0`.
        else if (id !== '0') refs.add(id!);
        if (found !== undefined) volatility = worse(volatility, found);
      }
      refs.delete(oid);
      // An oid not held (or an ambiguous key) stays in as a key the catalog holds nothing under:
      // isSystem answers true for it, so readers of the view are not cached, where dropping it
      // would leave them uninvalidated.
      viewRefs.set(
        view,
        [...refs].map((ref) => byOid.get(ref) ?? `oid ${ref}`),
      );
      if (volatility !== 'immutable') viewVolatility.set(view, volatility);
    }

    const schemas = new Map<string, SchemaAccess>();
    for (const [name, users] of facts.schemas) {
      schemas.set(name, users === null ? true : new Set(users));
    }

    return new DatabaseCatalog(
      loadedAt,
      relations,
      bySchema,
      parents,
      children,
      cascades,
      viewRefs,
      viewVolatility,
      functions,
      schemas,
      new Set(facts.roles),
      userOperators,
      pointColumns,
      facts.searchPathSettings,
      facts.serverSearchPath,
    );
  }

  /**
   * Worst volatility over the operators named `name` defined outside pg_catalog (any schema),
   * or undefined when only built-in ones exist. Built-in operators are not judged here: none is
   * volatile, and the stable ones (timestamptz = date, text || anynonarray...) depend only on
   * settings that are part of every cache key (TimeZone, DateStyle...), never on the clock.
   */
  userOperatorVolatility(name: string): Volatility | undefined {
    return this.userOperators.get(name);
  }

  /**
   * Resolves a relation name as PostgreSQL would for a session running `searchPath` (the setting's
   * text as SHOW prints it, e.g. '"$user", public') as `user`. Like PostgreSQL it skips schemas
   * that do not exist or that `user` lacks USAGE on. pg_catalog comes first unless listed; the
   * session's temporary schema is ignored, so a temporary table that shadows a permanent one is
   * not seen: sessions with temporary tables must not use the cache.
   * Returns "schema.name", or undefined when there is no such relation, the setting does not
   * parse, or `user` is unknown and a schema it may not use comes first (reload, do not cache).
   */
  resolve(ref: RelationRef, searchPath: string, user: string): string | undefined {
    if (ref.schema !== undefined) {
      if (isTempSchema(ref.schema)) return undefined;
      return this.bySchema.get(ref.schema)?.get(ref.name)?.key;
    }
    const path = this.parsePath(searchPath);
    if (path === null) return undefined;
    if (!path.includes('pg_catalog')) {
      const rel = this.bySchema.get('pg_catalog')?.get(ref.name);
      if (rel !== undefined) return rel.key;
    }
    for (const entry of path) {
      const schema = entry === '$user' ? user : entry;
      if (isTempSchema(schema)) continue;
      const access = this.schemas.get(schema);
      if (access === undefined) continue;
      if (access !== true && !access.has(user)) {
        if (!this.roles.has(user)) return undefined;
        continue;
      }
      const rel = this.bySchema.get(schema)?.get(ref.name);
      if (rel !== undefined) return rel.key;
    }
    return undefined;
  }

  /**
   * Relations whose writes can change what reading `key` returns. A table, partitioned table,
   * inheritance parent (or hypertable), materialized view, foreign table or sequence: itself
   * (writes to partitions and children are mapped up by writeKeys). A view: every such relation it
   * reads, through nested views. May name system relations (a view over pg_class): check isSystem
   * on each. Unknown keys answer themselves.
   */
  readKeys(key: string): readonly string[] {
    let keys = this.readMemo.get(key);
    if (keys === undefined) {
      const out = new Set<string>();
      this.collectReads(key, out, new Set());
      keys = Object.freeze([...out]);
      this.readMemo.set(key, keys);
    }
    return keys;
  }

  private collectReads(key: string, out: Set<string>, seen: Set<string>): void {
    const refs = this.viewRefs.get(key);
    // Not a view, or a system view whose definition is not loaded: a leaf.
    if (refs === undefined) {
      out.add(key);
      return;
    }
    // CREATE OR REPLACE VIEW can close a cycle (PostgreSQL fails such queries at run time).
    if (seen.has(key)) return;
    seen.add(key);
    for (const ref of refs) this.collectReads(ref, out, seen);
  }

  /**
   * Keys whose readers a write to `key` must invalidate: itself; its ancestors in pg_inherits
   * (partition -> partitioned table -> ..., chunk -> hypertable); its descendants, since a write
   * through a parent reaches its partitions and children; the relations foreign keys with ON
   * DELETE/UPDATE CASCADE, SET NULL or SET DEFAULT change in turn; and for a view, the relations
   * it reads (a superset of where an auto-updatable view's writes land). Writes that user
   * triggers or rules make are not followed: see hasOpaqueWrites.
   */
  writeKeys(key: string): readonly string[] {
    let keys = this.writeMemo.get(key);
    if (keys === undefined) {
      const out = new Set<string>();
      this.collectWrites(key, out, new Set());
      keys = Object.freeze([...out]);
      this.writeMemo.set(key, keys);
    }
    return keys;
  }

  private collectWrites(key: string, out: Set<string>, expanded: Set<string>): void {
    if (expanded.has(key)) return;
    expanded.add(key);
    // Up the tree and down it, but not up then down: a write to one partition leaves its
    // siblings' readers alone.
    const group = [key, ...this.closure(key, this.parents), ...this.closure(key, this.children)];
    for (const member of group) {
      out.add(member);
      for (const target of this.cascades.get(member) ?? []) this.collectWrites(target, out, expanded);
      if (this.viewRefs.has(member)) {
        for (const base of this.readKeys(member)) this.collectWrites(base, out, expanded);
      }
    }
  }

  private closure(key: string, edges: ReadonlyMap<string, readonly string[]>): string[] {
    const out: string[] = [];
    const stack = [...(edges.get(key) ?? [])];
    const seen = new Set<string>();
    while (stack.length > 0) {
      const next = stack.pop()!;
      if (seen.has(next)) continue;
      seen.add(next);
      out.push(next);
      stack.push(...(edges.get(next) ?? []));
    }
    return out;
  }

  /**
   * True when writing `key` may change relations writeKeys cannot name: a relation the write
   * reaches has user triggers (TimescaleDB's own and migration 0008's write-notify trigger are
   * ignored: they block, log or notify, they do not write user data) or INSERT/UPDATE/DELETE rewrite rules, such as a view's INSTEAD OF trigger or an
   * audit trigger. Invalidate the whole database on such writes. Unknown keys answer true.
   */
  hasOpaqueWrites(key: string): boolean {
    let opaque = this.opaqueMemo.get(key);
    if (opaque === undefined) {
      opaque =
        !this.relations.has(key) || this.writeKeys(key).some((k) => this.relations.get(k)?.ownOpaqueWrites);
      this.opaqueMemo.set(key, opaque);
    }
    return opaque;
  }

  /**
   * How reading `key` behaves, in volatility terms. A view: the worst volatility of what its
   * definition calls, through nested views (a view over now() is stable). A sequence or a foreign
   * table: volatile, since its contents change without writes through this database. Other
   * relations: immutable (they change only by writes). Unknown keys: volatile.
   */
  readVolatility(key: string): Volatility {
    let volatility = this.readVolatilityMemo.get(key);
    if (volatility === undefined) {
      volatility = this.computeReadVolatility(key, new Set());
      this.readVolatilityMemo.set(key, volatility);
    }
    return volatility;
  }

  private computeReadVolatility(key: string, seen: Set<string>): Volatility {
    const rel = this.relations.get(key);
    if (rel === undefined) return 'volatile';
    if (rel.kind === 'sequence' || rel.kind === 'foreign table') return 'volatile';
    const refs = this.viewRefs.get(key);
    if (refs === undefined || seen.has(key)) return 'immutable';
    seen.add(key);
    let volatility = this.viewVolatility.get(key) ?? 'immutable';
    for (const ref of refs) volatility = worse(volatility, this.computeReadVolatility(ref, seen));
    return volatility;
  }

  /**
   * Worst volatility over every overload of a function name. Qualified: in that schema.
   * Unqualified: across pg_catalog and every existing schema the search_path lists (USAGE not
   * checked: more schemas can only make the answer worse, never wrongly better). Undefined when
   * no such function exists there.
   */
  volatility(fn: RelationRef, searchPath: string, user: string): Volatility | undefined {
    if (fn.schema !== undefined) return this.functions.get(fn.schema)?.get(fn.name);
    const path = this.parsePath(searchPath);
    if (path === null) return undefined;
    let volatility = this.functions.get('pg_catalog')?.get(fn.name);
    for (const entry of path) {
      const found = this.functions.get(entry === '$user' ? user : entry)?.get(fn.name);
      if (found !== undefined) volatility = volatility === undefined ? found : worse(volatility, found);
    }
    return volatility;
  }

  /**
   * True for relations whose contents change without writes through Sluice, so reading them is
   * never cached: system catalogs and views (oid below FirstNormalObjectId, or in pg_catalog,
   * information_schema or pg_toast), and relations an extension owns (TimescaleDB's
   * _timescaledb_catalog tables and timescaledb_information views change through its functions
   * and background jobs). Unknown keys answer true.
   */
  isSystem(key: string): boolean {
    return this.relations.get(key)?.system ?? true;
  }

  /** What the catalog holds about `key`, or undefined when it holds nothing. */
  relation(key: string): RelationInfo | undefined {
    return this.relations.get(key);
  }

  /** Schema names in search_path order, '$user' kept as is; null when PostgreSQL would reject it. */
  private parsePath(searchPath: string): readonly string[] | null {
    let path = this.paths.get(searchPath);
    if (path === undefined) {
      path = parseSearchPath(searchPath);
      if (this.paths.size >= MAX_PARSED_PATHS) this.paths.clear();
      this.paths.set(searchPath, path);
    }
    return path;
  }
}

function isTempSchema(schema: string): boolean {
  return schema === 'pg_temp' || /^pg_(toast_)?temp_\d+$/.test(schema);
}

function isSpace(ch: string | undefined): boolean {
  return ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' || ch === '\f' || ch === '\v';
}

/**
 * Splits a search_path setting the way PostgreSQL's SplitIdentifierString does: comma-separated,
 * double-quoted names kept exactly ("" is a quote), others ASCII-lowercased, each truncated to 63
 * bytes. Returns null on a syntax error.
 */
export function parseSearchPath(text: string): string[] | null {
  const names: string[] = [];
  let i = 0;
  while (isSpace(text[i])) i++;
  if (i === text.length) return names;
  for (;;) {
    let name: string;
    if (text[i] === '"') {
      name = '';
      let from = i + 1;
      for (;;) {
        const quote = text.indexOf('"', from);
        if (quote < 0) return null;
        name += text.slice(from, quote);
        if (text[quote + 1] !== '"') {
          i = quote + 1;
          break;
        }
        name += '"';
        from = quote + 2;
      }
    } else {
      const start = i;
      while (i < text.length && text[i] !== ',' && !isSpace(text[i])) i++;
      if (i === start) return null;
      name = text.slice(start, i).replace(/[A-Z]+/g, (s) => s.toLowerCase());
    }
    names.push(truncateIdentifier(name));
    while (isSpace(text[i])) i++;
    if (i === text.length) return names;
    if (text[i] !== ',') return null;
    i++;
    while (isSpace(text[i])) i++;
  }
}

function truncateIdentifier(name: string): string {
  if (Buffer.byteLength(name) <= MAX_IDENTIFIER_BYTES) return name;
  let out = '';
  let bytes = 0;
  for (const ch of name) {
    bytes += Buffer.byteLength(ch);
    if (bytes > MAX_IDENTIFIER_BYTES) break;
    out += ch;
  }
  return out;
}
