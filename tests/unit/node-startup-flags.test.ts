// Every way Sluice is launched gives node the startup-only V8 flags (see src/node-startup-flags.ts).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { NODE_STARTUP_FLAGS } from '../../src/node-startup-flags.js';

const ROOT = path.join(import.meta.dirname, '..', '..');
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

describe('node startup flags', () => {
  it('are in the shebang of the sluice command', () => {
    const shebang = read('src/cli.ts').split('\n')[0]!;
    expect(shebang.startsWith('#!/usr/bin/env -S node ')).toBe(true);
    for (const flag of NODE_STARTUP_FLAGS) expect(shebang.split(' ')).toContain(flag);
  });

  it('are given by npm start', () => {
    const start = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts.start!;
    const words = start.split(/\s+/);
    for (const flag of NODE_STARTUP_FLAGS) expect(words.indexOf(flag)).toBeGreaterThan(words.indexOf('node'));
    for (const flag of NODE_STARTUP_FLAGS)
      expect(words.indexOf(flag)).toBeLessThan(words.indexOf('dist/cli.js'));
  });

  it('are in the Dockerfile entrypoint', () => {
    const entry = /^ENTRYPOINT (\[.*\])$/m.exec(read('Dockerfile'));
    expect(entry).not.toBeNull();
    const argv = JSON.parse(entry![1]!) as string[];
    expect(argv[0]).toBe('node');
    for (const flag of NODE_STARTUP_FLAGS) expect(argv.slice(1, argv.indexOf('dist/cli.js'))).toContain(flag);
  });
});
