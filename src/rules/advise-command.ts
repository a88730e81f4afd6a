// Owns what `sluice advise` prints: the workload (pg_stat_statements, or a file of statements) and
// the catalog of one database, read over a plain connection, turned into ranked index advice.
// Nothing is executed but catalog reads: the output is for a human to review and run.
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { loadQueryParser } from '../query/analysis.js';
import {
  type AdviseOptions,
  adviseIndexes,
  type IndexAdvice,
  loadTableInfo,
  splitStatements,
  type TableInfo,
  type WorkloadStatement,
} from './index-advisor.js';

export interface AdviseFlags {
  upstream: string;
  database?: string | undefined;
  queries?: string | undefined;
  limit?: number | undefined;
  minRows?: number | undefined;
}

export interface CommandOutput {
  text: string;
  code: number;
}

/** The workload from pg_stat_statements of the connected database, or undefined when not installed. */
async function statStatements(client: pg.Client): Promise<WorkloadStatement[] | undefined> {
  const installed = await client.query("select 1 from pg_extension where extname = 'pg_stat_statements'");
  if (installed.rowCount === 0) return undefined;
  const rows = await client.query(
    `select query, calls::float8 as calls, total_exec_time::float8 as total_ms
       from pg_stat_statements
      where dbid = (select oid from pg_database where datname = current_database())
      order by total_exec_time desc limit 500`,
  );
  return rows.rows.map((r) => ({
    sql: r.query as string,
    calls: Number(r.calls),
    totalMs: Number(r.total_ms),
  }));
}

/** Advice for `workload` from the catalog of the database `client` is connected to. */
export async function adviseFromCatalog(
  client: pg.Client,
  workload: readonly WorkloadStatement[],
  options: AdviseOptions = {},
): Promise<IndexAdvice[]> {
  const tables = new Map<string, Promise<TableInfo | undefined>>();
  const query = async (sql: string, params: unknown[]) => (await client.query(sql, params)).rows;
  const tableInfo = (schema: string | undefined, table: string) => {
    const key = `${schema ?? ''}.${table}`;
    let info = tables.get(key);
    if (info === undefined) {
      info = loadTableInfo(query, schema, table);
      tables.set(key, info);
    }
    return info;
  };
  return adviseIndexes(workload, tableInfo, options);
}

export async function advise(flags: AdviseFlags): Promise<CommandOutput> {
  await loadQueryParser();
  const url = new URL(flags.upstream);
  if (flags.database !== undefined) url.pathname = `/${encodeURIComponent(flags.database)}`;
  const client = new pg.Client({ connectionString: url.toString(), application_name: 'sluice advise' });
  await client.connect();
  try {
    let workload: WorkloadStatement[] | undefined;
    let source: string;
    if (flags.queries !== undefined) {
      workload = splitStatements(readFileSync(flags.queries, 'utf8')).map((sql) => ({
        sql,
        calls: 1,
        totalMs: undefined,
      }));
      source = `${workload.length} statements from ${flags.queries}`;
    } else {
      workload = await statStatements(client);
      if (workload === undefined) {
        return {
          text: 'pg_stat_statements is not installed in this database: pass --queries FILE (statements separated by ;)',
          code: 2,
        };
      }
      source = `${workload.length} statements from pg_stat_statements`;
    }
    const advice = await adviseFromCatalog(client, workload, { minRows: flags.minRows });
    const shown = advice.slice(0, flags.limit ?? 20);
    const lines = [`-- sluice advise: ${source}, database ${client.database}`];
    if (shown.length === 0) lines.push('-- no index to advise');
    for (const a of shown) {
      lines.push(
        '',
        `-- benefit ~${Math.round(a.benefit).toLocaleString('en-US')} rows not read ` +
          `(selectivity ${a.selectivity.toPrecision(2)} on ${a.schema}.${a.table})`,
        ...a.examples.map((e) => `--   ${e}`),
        a.statement,
      );
    }
    lines.push('', '-- advice only: Sluice never creates an index; review, then run these yourself.');
    return { text: lines.join('\n'), code: 0 };
  } finally {
    await client.end();
  }
}
