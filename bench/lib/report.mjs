// Owns benchmark reports: machine facts, ratios, and writing bench/results/<scenario>-<time>.json
// and .md (the Markdown also goes to stdout).

import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from './postgres.mjs';
import { run } from './processes.mjs';

export const RESULTS_DIR = path.join(REPO_ROOT, 'bench/results');

export const NOISE_NOTE =
  'The machines these run on are shared and noisy: absolute tps swing by up to 2× between runs. ' +
  'Only ratios taken in the same run, row by row, are meaningful; repeat a run before trusting a small difference.';

/** Facts about where a run happened; the caller adds server versions. */
export async function machineFacts() {
  const git = await run('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD']);
  const dirty = await run('git', ['-C', REPO_ROOT, 'status', '--porcelain', '--', 'src']);
  let sluiceVersion = 'unknown';
  try {
    sluiceVersion = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')).version;
  } catch {}
  return {
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model?.trim() ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    sluice: sluiceVersion,
    gitCommit: git.code === 0 ? git.stdout.trim() : 'no commit',
    srcDirty: dirty.code === 0 ? dirty.stdout.trim() !== '' : null,
    loadAverageAtStart: os.loadavg().map((l) => Math.round(l * 100) / 100),
  };
}

export const ratio = (a, b) => (a != null && b != null && b > 0 ? a / b : null);

export const fmt = {
  tps: (v) => (v == null ? '—' : Math.round(v).toLocaleString('en-US')),
  ratio: (v) => (v == null ? '—' : v.toFixed(2)),
  ms: (v) => (v == null ? '—' : v.toFixed(3)),
  us: (v) => (v == null ? '—' : `${v >= 0 ? '+' : '−'}${Math.abs(Math.round(v))} µs`),
};

/** Filename-safe ISO time: 2025-01-31T12-34-56Z. */
export function stamp(date = new Date()) {
  return date
    .toISOString()
    .replace(/\.\d+Z$/, 'Z')
    .replaceAll(':', '-');
}

/** Writes `<name>.json` and `<name>.md` under bench/results; resolves both paths. */
export async function writeReport(name, json, markdown) {
  await mkdir(RESULTS_DIR, { recursive: true });
  const jsonPath = path.join(RESULTS_DIR, `${name}.json`);
  const mdPath = path.join(RESULTS_DIR, `${name}.md`);
  await writeFile(jsonPath, `${JSON.stringify(json, null, 2)}\n`);
  await writeFile(mdPath, markdown.endsWith('\n') ? markdown : `${markdown}\n`);
  return { jsonPath, mdPath };
}

/** A Markdown table from a header row and body rows. */
export function table(header, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}
