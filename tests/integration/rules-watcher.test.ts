// Tests RulesWatcher on a real directory: an added, broken, fixed or removed file takes effect (or
// is refused, leaving the rules in force) within 3 s, without a restart. No database needed.
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { RulesError } from '../../src/rules/loader.js';
import type { RuleSet } from '../../src/rules/rule-set.js';
import { RulesWatcher } from '../../src/rules/watcher.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-rules-watch-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const ruleYaml = (...names: string[]) =>
  `rules:\n${names.map((n) => `  - name: ${n}\n    match: { kind: delete, has_where: false }\n    block: { message: "no" }\n`).join('')}`;

/** Resolves with the first value `next` produces within `ms`, else rejects. */
function within<T>(ms: number, register: (resolve: (v: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nothing within ${ms} ms`)), ms);
    register((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

let watcher: RulesWatcher | undefined;
afterEach(() => watcher?.close());

describe('RulesWatcher', () => {
  it('reloads an added, fixed and removed file, and keeps the rules in force when one breaks', async () => {
    const dir = mkdtempSync(join(root, 'd-'));
    writeFileSync(join(dir, '10-base.yaml'), ruleYaml('base'));
    let onReload: ((set: RuleSet) => void) | undefined;
    let onError: ((err: RulesError) => void) | undefined;
    watcher = new RulesWatcher(dir, {
      debounceMs: 100,
      onReload: (set) => onReload?.(set),
      onError: (err) => onError?.(err),
    });
    const names = (set: RuleSet) => set.rules.map((r) => r.name);
    expect(names(watcher.start())).toEqual(['base']);
    expect(watcher.current.files).toEqual([join(dir, '10-base.yaml')]);

    // Added.
    const t0 = performance.now();
    let reloaded = within<RuleSet>(3000, (r) => (onReload = r));
    writeFileSync(join(dir, '20-added.yaml'), ruleYaml('added-1', 'added-2'));
    expect(names(await reloaded)).toEqual(['base', 'added-1', 'added-2']);
    console.log(`rules reload after adding a file: ${(performance.now() - t0).toFixed(0)} ms`);
    expect(names(watcher.current)).toEqual(['base', 'added-1', 'added-2']);
    expect(watcher.stats).toMatchObject({ failures: 0, lastError: undefined });

    // Broken: refused with its position; the rules in force stay.
    const before = watcher.current;
    const failed = within<RulesError>(3000, (r) => (onError = r));
    writeFileSync(join(dir, '20-added.yaml'), `${ruleYaml('added-1')}    lgo: true\n`);
    const err = await failed;
    expect(err.problems).toEqual([
      `${join(dir, '20-added.yaml')}:5:5: rule "added-1": lgo: unknown key "lgo"`,
    ]);
    expect(watcher.current).toBe(before);
    expect(watcher.stats.failures).toBeGreaterThanOrEqual(1);
    expect(watcher.stats.lastError).toContain('unknown key "lgo"');

    // Fixed.
    reloaded = within<RuleSet>(3000, (r) => (onReload = r));
    writeFileSync(join(dir, '20-added.yaml'), ruleYaml('added-fixed'));
    expect(names(await reloaded)).toEqual(['base', 'added-fixed']);
    expect(watcher.stats.lastError).toBeUndefined();

    // Removed.
    reloaded = within<RuleSet>(3000, (r) => (onReload = r));
    unlinkSync(join(dir, '20-added.yaml'));
    expect(names(await reloaded)).toEqual(['base']);
    expect(names(watcher.current)).toEqual(['base']);
  });

  it('notices a change through its 1 s poll when no fs.watch event arrives', async () => {
    const dir = mkdtempSync(join(root, 'd-'));
    writeFileSync(join(dir, 'a.yaml'), ruleYaml('one'));
    let onReload: ((set: RuleSet) => void) | undefined;
    watcher = new RulesWatcher(dir, { debounceMs: 50, onReload: (set) => onReload?.(set) });
    watcher.start();
    // Stand in for a filesystem where fs.watch reports nothing (NFS, some container mounts).
    const w = watcher as unknown as { fsWatcher?: { close(): void }; watchDir(): void };
    w.fsWatcher?.close();
    w.watchDir = () => {};
    w.fsWatcher = { close() {} };
    const reloaded = within<RuleSet>(3000, (r) => (onReload = r));
    writeFileSync(join(dir, 'a.yaml'), ruleYaml('one', 'two'));
    expect((await reloaded).rules.map((r) => r.name)).toEqual(['one', 'two']);
  });

  it('refuses to start on a broken directory, with the position', () => {
    const dir = mkdtempSync(join(root, 'd-'));
    writeFileSync(join(dir, 'a.yaml'), 'rules:\n  - name: x\n    match: { kind: nope }\n    log: true\n');
    watcher = new RulesWatcher(dir);
    let error: unknown;
    try {
      watcher.start();
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(RulesError);
    expect((error as RulesError).problems[0]).toMatch(
      /:3:20: rule "x": match\.kind: expected one of select, /,
    );
    expect((error as RulesError).problems[0]?.startsWith(`${join(dir, 'a.yaml')}:`)).toBe(true);
  });
});
