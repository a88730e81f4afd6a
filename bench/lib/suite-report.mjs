// Owns the suite's report directory: results.json (every figure), summary.md (per scenario a table
// of throughput, ratios to direct and to PgBouncer, p50/p95/p99) and the SVG charts next to them.

import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { NOISE_NOTE, RESULTS_DIR, ratio, table } from './report.mjs';
import { barChart, percentileChart } from './svg.mjs';

const ORDER = ['direct', 'sluice', 'sluice-cache', 'pgbouncer'];
const COLORS = { direct: '#4e79a7', sluice: '#f28e2b', 'sluice-cache': '#59a14f', pgbouncer: '#e15759' };

const ms = (us) => (us == null ? '—' : (us / 1000).toFixed(us >= 100_000 ? 0 : us >= 10_000 ? 1 : 3));
const big = (v) => (v == null ? '—' : v >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(1));
const x = (v) => (v == null ? '—' : `${v.toFixed(2)}×`);
const slug = (s) =>
  s
    .replace(/[^a-z0-9]+/gi, '-')
    .replace(/^-|-$/g, '')
    .toLowerCase();

/** Writes the directory; resolves its path. `outDir` overrides bench/results/<stamp>. */
export async function writeSuiteReport(report, stampText, outDir) {
  const dir = outDir ?? path.join(RESULTS_DIR, stampText);
  await mkdir(dir, { recursive: true });
  const charts = [];
  for (const s of report.scenarios) {
    s.charts = [];
    const rows = s.rows.filter((r) => Object.keys(r.cells ?? {}).length > 0);
    if (rows.length === 0) continue;
    const targets = ORDER.filter((t) => rows.some((r) => r.cells[t]));
    const labelOf = (t) => report.targets[t]?.label ?? t;
    const units = [...new Set(rows.map((r) => r.unit))];
    // One throughput chart per unit (a scenario may mix tps with rows/s).
    for (const unit of units) {
      const these = rows.filter((r) => r.unit === unit);
      const file = `${s.id}-throughput${units.length > 1 ? `-${slug(unit)}` : ''}.svg`;
      await writeFile(
        path.join(dir, file),
        barChart({
          title: `${s.title}: throughput (${unit})`,
          unit,
          groups: these.map((r) => r.short ?? r.label),
          series: targets.map((t) => ({
            name: labelOf(t),
            color: COLORS[t],
            values: these.map((r) => (r.cells[t]?.error ? null : (r.cells[t]?.throughput ?? null))),
          })),
        }),
      );
      s.charts.push(file);
    }
    for (const r of rows) {
      const series = targets
        .filter((t) => r.cells[t]?.latency)
        .map((t) => ({ name: labelOf(t), color: COLORS[t], curve: r.cells[t].latency.curve }));
      if (series.length === 0) continue;
      const file = `${s.id}-${slug(r.id)}-latency.svg`;
      await writeFile(
        path.join(dir, file),
        percentileChart({ title: `${s.title}: ${r.short ?? r.label} — ${r.latencyOf ?? 'latency'}`, series }),
      );
      s.charts.push(file);
    }
    charts.push(...s.charts);
  }
  report.charts = charts;
  await writeFile(path.join(dir, 'results.json'), `${compactJson(report)}\n`);
  await writeFile(path.join(dir, 'summary.md'), renderSummary(report));
  return dir;
}

/** One line per workload (a scenario's detail rows left out): throughput per target and ×direct. */
function overview(report, inRun, labelOf) {
  const body = [];
  for (const s of report.scenarios) {
    for (const r of s.rows ?? []) {
      if (r.detail) continue;
      const base = r.cells?.direct?.error ? null : r.cells?.direct?.throughput;
      body.push([
        `${s.title ?? s.id}: ${r.short ?? r.label}`,
        r.unit,
        ...inRun.map((t) => {
          const c = r.cells?.[t];
          if (r.notRun?.[t]) return 'not run';
          if (!c) return '—';
          if (c.error) return 'error';
          return t === 'direct'
            ? big(c.throughput)
            : `${big(c.throughput)} (${x(ratio(c.throughput, base))})`;
        }),
      ]);
    }
  }
  if (body.length === 0) return [];
  return [
    '## Overview',
    '',
    'Throughput per target, and in brackets its ratio to direct PostgreSQL in the same row; details, latency ' +
      "and ratios to PgBouncer in each scenario's section.",
    '',
    table(['workload', 'unit', ...inRun.map(labelOf)], body),
    '',
  ];
}

/** Indented JSON with arrays of numbers (percentile curves) on one line each. */
function compactJson(value) {
  return JSON.stringify(value, null, 1).replace(/\[[\d\s.,eE+-]*\]/g, (m) => m.replace(/\s+/g, ''));
}

export function renderSummary(report) {
  const out = [];
  const o = report.options;
  const labelOf = (t) => report.targets[t]?.label ?? t;
  const inRun = ORDER.filter((t) => report.targets[t]?.available);
  out.push(`# Sluice bench, ${report.startedAt}`, '');
  out.push(
    `${o.quick ? '**Quick run** (`--quick`): short cells, fewer rows — a smoke check, not a measurement. ' : ''}` +
      `Wall time ${report.wallSeconds} s; ${o.duration} s per measured cell; bot-mix write ratio ${o.writeRatio}. ` +
      `Targets: ${inRun.map(labelOf).join(', ')} (proxies in ${o.poolMode} mode, pool ${o.poolSize}), ` +
      `in front of ${report.postgres}. Sluice at ${report.machine.gitCommit}.`,
    '',
  );
  out.push(
    `> ${NOISE_NOTE} These machines have ${report.machine.nproc} cores shared by PostgreSQL, the proxy, the load ` +
      'generator and whatever else runs there (load average in Machine below).',
    '',
  );
  out.push(
    'Throughput is per target, with its ratio to direct PostgreSQL (×direct) and to PgBouncer (×PgBouncer) in ' +
      'the same row. Latency percentiles come from an HDR histogram of every operation (pgbench rows: its ' +
      'per-transaction log, `-l`; the Node-driven rows: each operation timed by the driver).',
    '',
  );
  out.push(...overview(report, inRun, labelOf));
  for (const s of report.scenarios) {
    out.push(`## ${s.title ?? s.id}`, '');
    if (s.description) out.push(s.description, '');
    if (s.error) {
      out.push(`**Failed:** ${s.error}`, '');
      continue;
    }
    const header = [
      'workload',
      'target',
      'throughput',
      '×direct',
      '×PgBouncer',
      'p50 ms',
      'p95 ms',
      'p99 ms',
      'errors',
    ];
    const body = [];
    for (const r of s.rows) {
      for (const t of ORDER) {
        if (r.notRun?.[t]) {
          body.push([r.label, labelOf(t), r.notRun[t], '', '', '', '', '', '']);
          continue;
        }
        const c = r.cells?.[t];
        if (!c) continue;
        if (c.error) {
          body.push([r.label, labelOf(t), 'error (see notes)', '', '', '', '', '', String(c.errors ?? '')]);
          continue;
        }
        const base = r.cells.direct?.error ? null : r.cells.direct?.throughput;
        const bouncer = r.cells.pgbouncer?.error ? null : r.cells.pgbouncer?.throughput;
        body.push([
          r.label,
          labelOf(t),
          `${big(c.throughput)} ${r.unit}`,
          t === 'direct' ? '1.00×' : x(ratio(c.throughput, base)),
          t === 'pgbouncer' ? '1.00×' : x(ratio(c.throughput, bouncer)),
          ms(c.latency?.p50),
          ms(c.latency?.p95),
          ms(c.latency?.p99),
          String(c.errors ?? 0),
        ]);
      }
    }
    if (body.length > 0) out.push(table(header, body), '');
    for (const extra of s.tables ?? []) {
      out.push(`**${extra.title}**`, '');
      if (extra.text) out.push(extra.text, '');
      out.push(table(extra.header, extra.rows), '');
    }
    for (const chart of s.charts ?? []) out.push(`![${chart}](${chart})`);
    if ((s.charts ?? []).length > 0) out.push('');
    const notes = [...(s.notes ?? [])];
    for (const r of s.rows)
      for (const [t, c] of Object.entries(r.cells ?? {}))
        if (c?.error) notes.push(`${r.label}, ${labelOf(t)}: ${c.error}`);
    if (notes.length > 0) out.push(...notes.map((n) => `- ${n}`), '');
    out.push(`_${s.id}: ${s.seconds} s_`, '');
  }
  const m = report.machine;
  out.push('## Machine', '');
  out.push(
    `- ${m.nproc} CPUs (${m.cpu}), ${m.memoryGiB} GiB RAM, ${m.os}`,
    `- load average (1/5/15 min) at start ${m.loadAverageAtStart.join(' / ')}, at end ${m.loadAverageAtEnd?.join(' / ') ?? '—'}`,
    `- Node ${m.node}; PostgreSQL ${m.postgres} (max_connections ${m.postgresMaxConnections ?? '?'}); ${m.pgbench}; ${m.pgbouncer ?? 'PgBouncer not installed'}`,
    `- Sluice ${m.sluice} at ${m.gitCommit}${m.srcDirty ? ' (src/ has uncommitted changes)' : ''}`,
    '',
  );
  out.push('## Targets', '');
  for (const t of ORDER) {
    const tt = report.targets[t];
    if (!tt) continue;
    if (!tt.available) out.push(`- ${tt.label}: not in this run (${String(tt.reason).split('\n')[0]})`);
    else if (t === 'pgbouncer') out.push(`- ${tt.label}: ${tt.command}`);
    else if (tt.command) out.push(`- ${tt.label}: \`${tt.command.replace(/\S*\/(dist\/cli\.js)/, '$1')}\``);
    else out.push(`- ${tt.label}: ${report.postgres}`);
  }
  for (const p of report.profiles ?? []) out.push(`- CPU profile of Sluice: \`${p}\``);
  out.push('');
  return `${out.join('\n')}\n`;
}
