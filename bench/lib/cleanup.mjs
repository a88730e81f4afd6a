// Owns teardown: everything a benchmark starts registers here, and it all stops — by PID, newest
// first — on success, on error, on Ctrl-C and on SIGTERM/SIGHUP.

/** @type {{ name: string, stop: () => Promise<void> }[]} */
const tasks = [];
/** PIDs of children we spawned ourselves; signalled synchronously the moment a signal arrives. */
const pids = new Set();
/** @type {Promise<void> | undefined} */
let running;
let installed = false;
let signalled = false;

const TASK_TIMEOUT_MS = 30_000;

/** Registers a child PID so that a signal or an unexpected exit can still reach it. */
export function trackPid(pid) {
  if (pid) pids.add(pid);
}

export function untrackPid(pid) {
  pids.delete(pid);
}

/** Registers an async teardown step; steps run last-registered first. Returns a remover. */
export function onCleanup(name, stop) {
  const task = { name, stop };
  tasks.push(task);
  return () => {
    const i = tasks.indexOf(task);
    if (i >= 0) tasks.splice(i, 1);
  };
}

/** Runs every registered step once, each bounded by a timeout; concurrent callers share one run. */
export function runCleanup() {
  running ??= (async () => {
    while (tasks.length > 0) {
      const task = tasks.pop();
      let timer;
      try {
        await Promise.race([
          task.stop(),
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`timed out after ${TASK_TIMEOUT_MS} ms`)),
              TASK_TIMEOUT_MS,
            );
          }),
        ]);
      } catch (err) {
        console.error(`cleanup: ${task.name}: ${err?.message ?? err}`);
      } finally {
        clearTimeout(timer);
      }
    }
    // Anything a step failed to stop gets a last SIGKILL.
    killTracked('SIGKILL');
  })();
  return running;
}

function killTracked(signal) {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      pids.delete(pid); // already gone
    }
  }
}

/** Installs the signal and exit handlers once. */
export function installSignalHandlers() {
  if (installed) return;
  installed = true;
  const codes = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };
  for (const [sig, code] of Object.entries(codes)) {
    process.on(sig, () => {
      if (signalled) {
        // Second signal: stop waiting for graceful shutdowns.
        console.error(`\n${sig} again: killing children and exiting`);
        killTracked('SIGKILL');
        process.exit(code);
      }
      signalled = true;
      console.error(`\n${sig}: stopping everything this benchmark started…`);
      // Synchronously first, so the children hear about it even if something else exits the process.
      killTracked('SIGTERM');
      runCleanup().finally(() => process.exit(code));
    });
  }
  process.on('exit', () => killTracked('SIGKILL'));
}

export function wasSignalled() {
  return signalled;
}
