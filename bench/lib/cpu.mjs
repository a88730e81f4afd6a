// Owns CPU accounting from /proc (Linux): the user + system CPU time a process, or PostgreSQL's
// whole process tree, has used, so a report can say how many µs of CPU each side spends per
// transaction. Ticks are clock ticks (getconf CLK_TCK, usually 100 per second).

import { readFile } from 'node:fs/promises';
import { run } from './processes.mjs';

let ticksPerSecond;

/** Clock ticks per second (`getconf CLK_TCK`), 100 when getconf is missing. */
export async function clockTicks() {
  if (ticksPerSecond === undefined) {
    const r = await run('getconf', ['CLK_TCK']);
    const n = Number(r.stdout.trim());
    ticksPerSecond = r.code === 0 && n > 0 ? n : 100;
  }
  return ticksPerSecond;
}

/** utime, stime, cutime, cstime of one process (ticks), or undefined when it is gone. */
async function statTimes(pid) {
  let text;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: fields after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state): utime is field 14 → rest[11].
  const [utime, stime, cutime, cstime] = rest.slice(11, 15).map(Number);
  return { utime, stime, cutime, cstime };
}

/** CPU ticks (user + system, all threads) one process has used so far; undefined when gone. */
export async function processTicks(pid) {
  const t = await statTimes(pid);
  return t === undefined ? undefined : t.utime + t.stime;
}

/** { user, system } CPU ticks (all threads) one process has used so far; undefined when gone. */
export async function processTimes(pid) {
  const t = await statTimes(pid);
  return t === undefined ? undefined : { user: t.utime, system: t.stime };
}

/**
 * CPU ticks of a server's process tree: the parent's own time, its exited-and-reaped children's
 * (cutime + cstime: PostgreSQL reaps its backends), and its live children's. Undefined when the
 * parent is gone or /proc has no children list.
 */
export async function treeTicks(pid) {
  const t = await statTimes(pid);
  if (t === undefined) return undefined;
  let children;
  try {
    children = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8'))
      .trim()
      .split(/\s+/)
      .filter(Boolean);
  } catch {
    return undefined;
  }
  let total = t.utime + t.stime + t.cutime + t.cstime;
  for (const child of children) {
    const c = await statTimes(child);
    // A child that exited between the listing and now is in cutime/cstime at the next reading.
    if (c !== undefined) total += c.utime + c.stime;
  }
  return total;
}

/**
 * Scheduler statistics of a process's main thread (for Node and PgBouncer, the event loop):
 * nanoseconds spent running and waiting on a run queue for a CPU, from
 * /proc/<pid>/task/<pid>/schedstat; undefined when unavailable (no CONFIG_SCHEDSTATS/SCHED_INFO).
 */
export async function mainThreadSched(pid) {
  try {
    const [runNs, waitNs] = (await readFile(`/proc/${pid}/task/${pid}/schedstat`, 'utf8'))
      .trim()
      .split(' ')
      .map(Number);
    return Number.isFinite(runNs) && Number.isFinite(waitNs) ? { runNs, waitNs } : undefined;
  } catch {
    return undefined;
  }
}
