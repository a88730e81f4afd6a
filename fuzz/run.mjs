#!/usr/bin/env node
// Owns `npm run fuzz`: splits a frame budget between the in-process decoder fuzz (in a worker
// thread, so it does not stall the sockets) and the live fuzz against Sluice child processes,
// then prints the figures and exits non-zero on any crash, finding or canary failure.
//
//   node fuzz/run.mjs [--frames N] [--live-share 0..1] [--seed N] [--upstream URL] [--json]
//
// Without --upstream it starts an embedded PostgreSQL (needs `npm run build` first).
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

const HERE = path.dirname(new URL(import.meta.url).pathname);

if (!isMainThread) {
  const { fuzzDecoders } = await import('./decoder.mjs');
  parentPort.postMessage(await fuzzDecoders(workerData));
} else {
  await main();
}

function parseArgs(argv) {
  const opts = {
    frames: 10_000_000,
    liveShare: 0.1,
    seed: Date.now() % 2 ** 31,
    json: false,
    concurrency: 24,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--frames') opts.frames = Number(value().replaceAll('_', ''));
    else if (a === '--live-share') opts.liveShare = Number(value());
    else if (a === '--seed') opts.seed = Number(value());
    else if (a === '--upstream') opts.upstream = value();
    else if (a === '--database') opts.database = value();
    else if (a === '--concurrency') opts.concurrency = Number(value());
    else if (a === '--json') opts.json = true;
    else throw new Error(`unknown option ${a}`);
  }
  if (!(opts.frames > 0) || !(opts.liveShare >= 0 && opts.liveShare <= 1))
    throw new Error('bad --frames/--live-share');
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const say = (line) => {
    if (!opts.json) process.stdout.write(`${line}\n`);
    else process.stderr.write(`${line}\n`);
  };
  process.env.SLUICE_LOG_LEVEL ??= 'error';
  let upstream = opts.upstream;
  let embedded;
  if (!upstream) {
    const { startEmbeddedPostgres } = await import(
      pathToFileURL(path.join(HERE, '..', 'dist', 'embedded', 'embedded-postgres.js')).href
    );
    embedded = await startEmbeddedPostgres({ fast: true });
    upstream = embedded.url;
    say(`embedded PostgreSQL on port ${embedded.port}`);
  }
  const interrupted = async () => {
    const { runningSluices } = await import('./live.mjs');
    for (const s of runningSluices) await s.stop();
    await embedded?.stop();
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  const liveFrames = Math.round(opts.frames * opts.liveShare);
  const decoderFrames = opts.frames - liveFrames;
  say(`seed ${opts.seed}: ${decoderFrames} in-process frames, ${liveFrames} live frames`);
  const started = Date.now();
  try {
    const decoder = new Promise((resolve, reject) => {
      const w = new Worker(new URL(import.meta.url), {
        workerData: {
          frames: decoderFrames,
          logins: Math.min(5000, Math.ceil(decoderFrames / 2000)),
          seed: opts.seed,
        },
      });
      w.once('message', resolve);
      w.once('error', reject);
    });
    const { fuzzLive } = await import('./live.mjs');
    const live =
      liveFrames > 0
        ? await fuzzLive({
            upstream,
            database: opts.database ?? 'sluice_fuzz',
            frames: liveFrames,
            seed: opts.seed,
            concurrency: opts.concurrency,
            onProgress: say,
          })
        : undefined;
    const inProcess = await decoder;
    const seconds = (Date.now() - started) / 1000;
    const report = {
      seed: opts.seed,
      seconds,
      frames: inProcess.frames + (live?.frames ?? 0),
      inProcess: { frames: inProcess.frames, findings: inProcess.findings },
      live: live && {
        frames: live.frames,
        sessions: live.sessions,
        rejected: live.rejected,
        seconds: live.seconds,
        framesPerSecond: live.framesPerSecond,
        crashes: live.crashes,
        maxRssMB: Math.round(live.maxRssBytes / 1048576),
        rssMB: live.rss.map((s) => ({
          t: s.t,
          frames: s.frames,
          rss: s.rss.map((r) => Math.round(r / 1048576)),
        })),
        canary: live.canary,
        findings: live.findings,
        warnings: live.warnings,
      },
    };
    const failed =
      inProcess.findings.length > 0 ||
      (live &&
        (live.crashes.length > 0 ||
          live.findings.length > 0 ||
          live.canary.failures > 0 ||
          live.canary.dirty > 0));
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(report)}\n`);
    } else {
      say(
        `done in ${seconds.toFixed(0)} s: ${report.frames} frames (${inProcess.frames} in-process, ${live?.frames ?? 0} live ` +
          `at ${live?.framesPerSecond ?? 0} frames/s, ${live?.sessions ?? 0} sessions, ${live?.rejected ?? 0} closed by Sluice); crashes ${live?.crashes.length ?? 0}; max RSS ${report.live?.maxRssMB ?? 0} MB; ` +
          `canary ${live?.canary.queries ?? 0} ok, ${live?.canary.failures ?? 0} failed, ${live?.canary.dirty ?? 0} dirty`,
      );
      for (const e of live?.canary.errors ?? []) say(`canary: ${e}`);
      for (const w of live?.warnings ?? []) say(`warning (not failing the run): ${JSON.stringify(w)}`);
      for (const f of [...inProcess.findings, ...(live?.findings ?? []), ...(live?.crashes ?? [])]) {
        say(JSON.stringify(f));
      }
    }
    process.exitCode = failed ? 1 : 0;
  } finally {
    await embedded?.stop();
  }
}
