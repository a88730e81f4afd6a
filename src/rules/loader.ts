// Owns reading rules files: YAML with positions, validation against the schema, the checks zod
// cannot make (regexes compile, built-in rewrites exist, names unique across files), and turning
// every problem into "file:line:column: what is wrong". A file with any problem refuses the load.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { type Document, isMap, isScalar, LineCounter, parseDocument } from 'yaml';
import type { z } from 'zod';
import { BUILTIN_REWRITE_NAMES } from './rewrites.js';
import { compileRuleRegex, RuleSet } from './rule-set.js';
import { type Rule, type RulesFileData, type RuleTest, rulesFileSchema } from './schema.js';

const KNOWN_BUILTIN_REWRITES: readonly string[] = BUILTIN_REWRITE_NAMES;

export class RulesError extends Error {
  /** Each "file:line:column: what is wrong". */
  readonly problems: string[];
  constructor(problems: string[]) {
    super(problems.join('\n'));
    this.name = 'RulesError';
    this.problems = problems;
  }
}

const RULES_FILE = /\.ya?ml$/;

interface ParsedFile {
  rules: Rule[];
  tests: RuleTest[];
  problems: string[];
}

/** The `*.yaml` / `*.yml` files of `dir`, in name order (code-unit order, not the locale's). */
export function listRulesFiles(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    throw new RulesError([`${dir}: cannot read directory: ${(err as Error).message}`]);
  }
  return names
    .filter((n) => RULES_FILE.test(n) && !n.startsWith('.')) // editors' hidden swap and lock files
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map((n) => join(dir, n))
    .filter((f) => {
      try {
        return statSync(f).isFile();
      } catch {
        return false; // removed between readdir and stat: the watcher reloads again
      }
    });
}

export function loadRulesDir(dir: string): RuleSet {
  const files = listRulesFiles(dir);
  const problems: string[] = [];
  const rules: Rule[] = [];
  const tests: RuleTest[] = [];
  const firstByName = new Map<string, Rule>();
  for (const file of files) {
    const parsed = parseRulesFile(file);
    problems.push(...parsed.problems);
    for (const rule of parsed.rules) {
      const first = firstByName.get(rule.name);
      // Within one file parseRulesFile has already reported it.
      if (first !== undefined && first.file !== rule.file) {
        problems.push(`${at(rule)}: duplicate rule name "${rule.name}" (first defined at ${at(first)})`);
      } else if (first === undefined) {
        firstByName.set(rule.name, rule);
      }
    }
    rules.push(...parsed.rules);
    tests.push(...parsed.tests);
  }
  if (problems.length > 0) throw new RulesError(problems);
  return new RuleSet(rules, tests, files);
}

export function loadRulesFile(file: string): { rules: Rule[]; tests: RuleTest[] } {
  const parsed = parseRulesFile(file);
  if (parsed.problems.length > 0) throw new RulesError(parsed.problems);
  return { rules: parsed.rules, tests: parsed.tests };
}

function at(p: { file: string; line: number; column: number }): string {
  return `${p.file}:${p.line}:${p.column}`;
}

type Doc = Document.Parsed;
type Range = [number, number, number?];

function parseRulesFile(file: string): ParsedFile {
  const failed = (problems: string[]): ParsedFile => ({ rules: [], tests: [], problems });
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    return failed([`${file}: cannot read: ${(err as Error).message}`]);
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  const position = (offset: number): string => {
    const p = lineCounter.linePos(offset);
    return `${file}:${p.line}:${p.col}`;
  };
  if (doc.errors.length > 0) {
    return failed(doc.errors.map((e) => `${position(e.pos[0])}: ${e.message.split('\n')[0]}`));
  }
  if (doc.contents === null) return { rules: [], tests: [], problems: [] }; // empty or comments only
  if (!isMap(doc.contents)) {
    return failed([
      `${position(nodeRange(doc.contents)?.[0] ?? 0)}: expected a mapping with rules: and tests:`,
    ]);
  }

  const result = rulesFileSchema.safeParse(doc.toJS());
  if (!result.success) {
    return failed(result.error.issues.flatMap((issue) => describeIssue(issue, doc, position)));
  }
  const data: RulesFileData = result.data;
  const problems: string[] = [];
  const startOf = (path: (string | number)[]): { file: string; line: number; column: number } => {
    const p = lineCounter.linePos(nodeRange(doc.getIn(path, true))?.[0] ?? 0);
    return { file, line: p.line, column: p.col };
  };

  const rules: Rule[] = [];
  const seen = new Map<string, Rule>();
  (data.rules ?? []).forEach((raw, i) => {
    const rule: Rule = { name: raw.name, ...startOf(['rules', i]), match: raw.match };
    if (raw.block) rule.block = raw.block;
    if (raw.cache) rule.cache = raw.cache;
    if (raw.rewrite) {
      rule.rewrite =
        raw.rewrite.builtin !== undefined
          ? { builtin: raw.rewrite.builtin }
          : { template: raw.rewrite.template! };
    }
    if (raw.timeout !== undefined) rule.timeout = raw.timeout;
    if (raw.limit !== undefined) rule.limit = raw.limit;
    if (raw.max_concurrency) rule.max_concurrency = raw.max_concurrency;
    if (raw.route) rule.route = raw.route;
    if (raw.log !== undefined) rule.log = raw.log;

    const label = `rule "${rule.name}"`;
    if (raw.match.regex !== undefined) {
      try {
        compileRuleRegex(raw.match.regex);
      } catch (err) {
        const where = position(valueStart(doc, ['rules', i, 'match', 'regex']));
        problems.push(`${where}: ${label}: match.regex: ${(err as Error).message}`);
      }
    }
    if (raw.rewrite?.builtin !== undefined && !KNOWN_BUILTIN_REWRITES.includes(raw.rewrite.builtin)) {
      const where = position(valueStart(doc, ['rules', i, 'rewrite', 'builtin']));
      problems.push(
        `${where}: ${label}: rewrite.builtin: unknown built-in rewrite "${raw.rewrite.builtin}" (known: ${KNOWN_BUILTIN_REWRITES.join(', ')})`,
      );
    }
    const first = seen.get(rule.name);
    if (first !== undefined) {
      problems.push(`${at(rule)}: duplicate rule name "${rule.name}" (first defined at ${at(first)})`);
    } else {
      seen.set(rule.name, rule);
    }
    rules.push(rule);
  });

  const tests: RuleTest[] = (data.tests ?? []).map((raw, i) => ({
    query: raw.query,
    expect: raw.expect,
    ...startOf(['tests', i]),
  }));
  return problems.length > 0 ? failed(problems) : { rules, tests, problems };
}

function nodeRange(node: unknown): Range | undefined {
  return (node as { range?: Range } | null | undefined)?.range ?? undefined;
}

/** Start of the value at `path`, or of its key when the value has no range of its own. */
function valueStart(doc: Doc, path: (string | number)[]): number {
  return nodeRange(doc.getIn(path, true))?.[0] ?? keyNode(doc, path)?.range?.[0] ?? 0;
}

/** The key scalar of the pair at `path`, so an unknown key points at the key that was typed. */
function keyNode(doc: Doc, path: readonly PropertyKey[]): { range?: Range } | undefined {
  const parent = path.length === 1 ? doc.contents : doc.getIn(path.slice(0, -1) as unknown[], true);
  if (!isMap(parent)) return undefined;
  const last = path[path.length - 1];
  for (const item of parent.items) {
    if (isScalar(item.key) && item.key.value === last) return item.key as { range?: Range };
  }
  return undefined;
}

function describeIssue(issue: z.core.$ZodIssue, doc: Doc, position: (offset: number) => string): string[] {
  const path = issue.path as (string | number)[];
  const prefix = rulePrefix(doc, path);
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((k) => {
      const key = keyNode(doc, [...path, k]);
      return `${position(key?.range?.[0] ?? locate(doc, path))}: ${prefix}${label([...path, k])}unknown key "${k}"`;
    });
  }
  return [`${position(locate(doc, path))}: ${prefix}${label(path)}${simplify(issue.message)}`];
}

/** Offset of the deepest node on `path` that exists: a missing key points at its parent mapping. */
function locate(doc: Doc, path: (string | number)[]): number {
  for (let depth = path.length; depth >= 0; depth--) {
    const sub = path.slice(0, depth);
    const range = depth === 0 ? nodeRange(doc.contents) : nodeRange(doc.getIn(sub, true));
    if (range) return range[0];
  }
  return 0;
}

/** `rule "name": ` for an issue inside a rule (`rules[i]: ` while it has no name), `tests[i]: `. */
function rulePrefix(doc: Doc, path: (string | number)[]): string {
  if (typeof path[1] !== 'number') return '';
  if (path[0] === 'tests') return `tests[${path[1]}]: `;
  if (path[0] !== 'rules') return '';
  const name = doc.getIn(['rules', path[1], 'name']);
  return typeof name === 'string' && name !== '' ? `rule "${name}": ` : `rules[${path[1]}]: `;
}

/** The key path inside a rule or test (`match.has_where: `), or the top-level path. */
function label(path: (string | number)[]): string {
  const inner =
    (path[0] === 'rules' || path[0] === 'tests') && typeof path[1] === 'number' ? path.slice(2) : path;
  if (inner.length === 0) return '';
  return `${inner
    .map((p) => (typeof p === 'number' ? `[${p}]` : p))
    .join('.')
    .replaceAll('.[', '[')}: `;
}

/** zod's "Invalid input: expected boolean, received string" -> "expected boolean, received string". */
function simplify(message: string): string {
  return message
    .replace(/^Invalid (input|option): /, '')
    .replace(/^expected (\w+), received undefined$/, 'missing (expected $1)');
}
