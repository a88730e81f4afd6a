// Owns reading a V8 `.cpuprofile` (what `node --cpu-prof` writes) into a short summary for a
// report: where the process spent its non-idle time, by function and by source file.

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { REPO_ROOT } from './postgres.mjs';

/**
 * Self time per function (name + file + line) and per file, from the samples and their time
 * deltas. "(idle)" is left out of the percentages; "(garbage collector)" and "(program)" (V8 and
 * native work not attributed to JS) stay in. Resolves { busyMs, idleMs, functions, files }, each
 * list [{ name, selfMs, share }] sorted by self time, the first `top` entries.
 */
export async function summariseProfile(file, { top = 15 } = {}) {
  const profile = JSON.parse(await readFile(file, 'utf8'));
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map();
  const { samples = [], timeDeltas = [] } = profile;
  // timeDeltas[i] is the time before sample i; the time a sample stands for is the next delta.
  for (let i = 0; i < samples.length; i++) {
    const dt = timeDeltas[i + 1] ?? 0;
    if (dt > 0) selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + dt);
  }
  const fns = new Map();
  const files = new Map();
  let idleUs = 0;
  let busyUs = 0;
  for (const [id, us] of selfUs) {
    const cf = byId.get(id)?.callFrame ?? {};
    const fname = cf.functionName || '(anonymous)';
    if (fname === '(idle)') {
      idleUs += us;
      continue;
    }
    busyUs += us;
    const where = shortUrl(cf.url);
    const fnKey = where ? `${fname} ${where}:${(cf.lineNumber ?? 0) + 1}` : fname;
    fns.set(fnKey, (fns.get(fnKey) ?? 0) + us);
    const fileKey = where || fname;
    files.set(fileKey, (files.get(fileKey) ?? 0) + us);
  }
  const list = (m) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, selfMs: Math.round(us / 1000), share: busyUs > 0 ? us / busyUs : 0 }));
  return {
    busyMs: Math.round(busyUs / 1000),
    idleMs: Math.round(idleUs / 1000),
    functions: list(fns),
    files: list(files),
  };
}

function shortUrl(url) {
  if (!url) return '';
  let u = url.replace(/^file:\/\//, '');
  const root = REPO_ROOT.endsWith(path.sep) ? REPO_ROOT : `${REPO_ROOT}${path.sep}`;
  if (u.startsWith(root)) u = u.slice(root.length);
  return u.replace(/^.*\/node_modules\//, 'node_modules/');
}
