// Owns keeping a rules directory's RuleSet current: loads it at start, then reloads on fs.watch
// events and on a once-a-second scan of names, mtimes and sizes (fs.watch misses events on some
// filesystems and stops when the directory is replaced). A load that fails leaves the rules in
// force unchanged and is counted.
import { type FSWatcher, statSync, watch } from 'node:fs';
import { listRulesFiles, loadRulesDir, RulesError } from './loader.js';
import { RuleSet } from './rule-set.js';

export interface RulesWatcherOptions {
  /** Quiet time after the last change before reloading (editors write a file in several steps). */
  debounceMs?: number;
  onReload?: (set: RuleSet) => void;
  onError?: (err: RulesError) => void;
}

export interface RulesWatcherStats {
  /** Successful loads after the first. */
  reloads: number;
  /** Refused loads. */
  failures: number;
  /** The refused load's problems while the directory is broken; undefined once a load succeeds. */
  lastError: string | undefined;
}

const POLL_MS = 1000;

export class RulesWatcher {
  readonly stats: RulesWatcherStats = { reloads: 0, failures: 0, lastError: undefined };
  private set: RuleSet = RuleSet.empty;
  private readonly debounceMs: number;
  private fsWatcher: FSWatcher | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  /** The directory as last loaded (or refused): a scan that differs triggers a reload. */
  private snapshot = '';
  private closed = false;

  constructor(
    readonly dir: string,
    private readonly opts: RulesWatcherOptions = {},
  ) {
    this.debounceMs = opts.debounceMs ?? 300;
  }

  get current(): RuleSet {
    return this.set;
  }

  /** Loads synchronously (throws RulesError when the directory is broken), then watches. */
  start(): RuleSet {
    this.snapshot = this.scan();
    this.set = loadRulesDir(this.dir);
    this.watchDir();
    this.pollTimer = setInterval(() => this.poll(), POLL_MS);
    this.pollTimer.unref();
    return this.set;
  }

  close(): void {
    this.closed = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.pollTimer = undefined;
    this.debounceTimer = undefined;
    this.fsWatcher?.close();
    this.fsWatcher = undefined;
  }

  /** Loads now; true when the new set took effect. */
  reload(): boolean {
    // Scanned before loading: a change made during the load shows up in the next poll.
    this.snapshot = this.scan();
    try {
      this.set = loadRulesDir(this.dir);
    } catch (err) {
      const error = err instanceof RulesError ? err : new RulesError([`${this.dir}: ${String(err)}`]);
      this.stats.failures++;
      this.stats.lastError = error.message;
      this.opts.onError?.(error);
      return false;
    }
    this.stats.reloads++;
    this.stats.lastError = undefined;
    this.opts.onReload?.(this.set);
    return true;
  }

  private watchDir(): void {
    try {
      const w = watch(this.dir, { persistent: false }, () => this.schedule());
      // The directory was removed or replaced: drop this watcher; the poll restarts one.
      w.on('error', () => {
        w.close();
        if (this.fsWatcher === w) this.fsWatcher = undefined;
      });
      this.fsWatcher = w;
    } catch {
      this.fsWatcher = undefined; // missing directory: polling alone until it comes back
    }
  }

  private schedule(): void {
    if (this.closed) return;
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = undefined;
      if (!this.closed) this.reload();
    }, this.debounceMs);
    this.debounceTimer.unref();
  }

  private poll(): void {
    if (this.closed) return;
    if (this.fsWatcher === undefined) this.watchDir();
    if (this.debounceTimer === undefined && this.scan() !== this.snapshot) this.schedule();
  }

  /** Names, sizes and mtimes of the rules files, as one comparable string. */
  private scan(): string {
    let files: string[];
    try {
      files = listRulesFiles(this.dir);
    } catch (err) {
      return `unreadable: ${(err as Error).message}`;
    }
    let out = '';
    for (const f of files) {
      try {
        const s = statSync(f);
        out += `${f}\0${s.size}\0${s.mtimeMs}\n`;
      } catch {
        out += `${f}\0gone\n`;
      }
    }
    return out;
  }
}
