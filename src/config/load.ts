// Owns assembling the configuration from defaults, a YAML file, SLUICE_* variables and CLI flags
// (in rising precedence), and turning validation failures into messages that name the key and,
// for the file, its line and column.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Document } from 'yaml';
import type { z } from 'zod';
import { booleanKeys, type ConfigInput, configSchema, numericKeys, type SluiceConfig } from './schema.js';

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
  }
}

interface Source {
  values: Record<string, unknown>;
  describe(path: readonly PropertyKey[]): string;
}

/** yaml, loaded only when a configuration file is given (loadConfig is synchronous). */
function loadYaml(): typeof import('yaml') {
  return createRequire(import.meta.url)('yaml') as typeof import('yaml');
}

function fileSource(file: string): Source {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([`${file}: cannot read: ${(err as Error).message}`]);
  }
  const yaml = loadYaml();
  const lineCounter = new yaml.LineCounter();
  const doc = yaml.parseDocument(text, { lineCounter, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => {
        const at = lineCounter.linePos(e.pos[0]);
        return `${file}:${at.line}:${at.col}: ${e.message.split('\n')[0]}`;
      }),
    );
  }
  const values = doc.contents === null ? {} : doc.toJS();
  if (!yaml.isMap(doc.contents) && doc.contents !== null) {
    throw new ConfigError([`${file}:1:1: expected a mapping of configuration keys`]);
  }
  return {
    values: values as Record<string, unknown>,
    describe(path) {
      // Point at the deepest node that exists: a missing key points at its parent mapping.
      for (let depth = path.length; depth >= 0; depth--) {
        const node = doc.getIn(path.slice(0, depth) as unknown[], true) as {
          range?: [number, number];
        } | null;
        const pair = depth > 0 ? findKeyNode(doc, path.slice(0, depth)) : undefined;
        const offset = pair?.range?.[0] ?? node?.range?.[0];
        if (offset !== undefined) {
          const at = lineCounter.linePos(offset);
          return `${file}:${at.line}:${at.col}`;
        }
      }
      return file;
    },
  };
}

/** The key scalar of the pair at `path`, so errors point at the key ops typed, not its value. */
function findKeyNode(
  doc: Document.Parsed,
  path: readonly PropertyKey[],
): { range?: [number, number] } | undefined {
  const parent = doc.getIn(path.slice(0, -1) as unknown[], true) ?? (path.length === 1 ? doc.contents : null);
  if (!loadYaml().isMap(parent)) return undefined;
  const last = path[path.length - 1];
  for (const item of parent.items) {
    const key = item.key as { value?: unknown; range?: [number, number] } | null;
    if (key && key.value === last) return key as { range?: [number, number] };
  }
  return undefined;
}

function envSource(env: NodeJS.ProcessEnv): Source {
  const values: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith('SLUICE_') || raw === undefined) continue;
    const key = name.slice('SLUICE_'.length).toLowerCase();
    // Logging and test-only variables share the prefix but are not configuration keys.
    if (key === 'log_level_override') continue;
    if (key.startsWith('embedded_')) {
      const sub = key.slice('embedded_'.length);
      const embedded = (values.embedded ?? {}) as Record<string, unknown>;
      if (sub === 'port' && (raw.trim() === '' || Number.isNaN(Number(raw)))) {
        problems.push(`${name}: expected a number, got "${raw}"`);
      }
      embedded[sub] = sub === 'port' ? Number(raw) : raw;
      values.embedded = embedded;
      continue;
    }
    if (booleanKeys.has(key)) {
      const v = raw.trim().toLowerCase();
      if (!['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'].includes(v)) {
        problems.push(`${name}: expected true or false, got "${raw}"`);
      }
      values[key] = ['true', '1', 'yes', 'on'].includes(v);
    } else if (numericKeys.has(key)) {
      const n = Number(raw);
      if (raw.trim() === '' || Number.isNaN(n)) problems.push(`${name}: expected a number, got "${raw}"`);
      values[key] = n;
    } else {
      values[key] = raw;
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return {
    values,
    describe(path) {
      return `SLUICE_${path.map(String).join('_').toUpperCase()}`;
    },
  };
}

function flagSource(flags: Record<string, unknown>): Source {
  return {
    values: flags,
    describe(path) {
      return `--${String(path[0]).replaceAll('_', '-')}`;
    },
  };
}

export interface LoadOptions {
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
  /** Already-typed values from command-line flags, keyed like the config file. */
  flags?: Record<string, unknown>;
}

export function loadConfig(options: LoadOptions = {}): SluiceConfig {
  const sources: Source[] = [];
  if (options.file) sources.push(fileSource(options.file));
  sources.push(envSource(options.env ?? process.env));
  if (options.flags) sources.push(flagSource(stripUndefined(options.flags)));

  const merged: Record<string, unknown> = {};
  const origin = new Map<string, Source>();
  for (const source of sources) {
    for (const [key, value] of Object.entries(source.values)) {
      if (key === 'embedded' && typeof value === 'object' && value !== null) {
        // Merged key by key from several sources: remember the source of each sub-key.
        merged.embedded = { ...(merged.embedded as object | undefined), ...(value as object) };
        for (const sub of Object.keys(value)) origin.set(`embedded.${sub}`, source);
      } else {
        merged[key] = value;
      }
      origin.set(key, source);
    }
  }
  const result = configSchema.safeParse(merged as ConfigInput);
  if (result.success) return result.data;
  throw new ConfigError(result.error.issues.flatMap((issue) => describeIssue(issue, origin, options.file)));
}

function describeIssue(
  issue: z.core.$ZodIssue,
  origin: Map<string, Source>,
  file: string | undefined,
): string[] {
  if (issue.code === 'unrecognized_keys') {
    // One line per unknown key, pointing at the key itself: the usual cause is a typo.
    return issue.keys.map((k) => locate([...issue.path, k], origin, file, `unknown key "${k}"`));
  }
  return [locate(issue.path, origin, file, issue.message)];
}

function locate(
  path: readonly PropertyKey[],
  origin: Map<string, Source>,
  file: string | undefined,
  message: string,
): string {
  const issue = { path, message };
  const key = issue.path.map(String).join('.');
  const top = String(issue.path[0] ?? '');
  const source =
    (top === 'embedded' ? origin.get(`embedded.${String(issue.path[1])}`) : undefined) ?? origin.get(top);
  const where = source ? source.describe(issue.path) : (file ?? 'configuration');
  const label = key === '' ? '' : `${key}: `;
  return `${where}: ${label}${issue.message}`;
}

function stripUndefined(values: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(values)) if (v !== undefined) out[k] = v;
  return out;
}
