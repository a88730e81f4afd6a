// Owns the format of a rules file (rules/*.yaml): the zod schema that validates one, and the types
// of a validated rule and rule test as the rest of the proxy sees them.
import { z } from 'zod';
import type { StatementKind } from '../query/analysis.js';

/** Every statement kind the analysis reports, so a misspelt `kind:` is refused at load. */
export const STATEMENT_KINDS = [
  'select',
  'insert',
  'update',
  'delete',
  'merge',
  'truncate',
  'copy_from',
  'copy_to',
  'ddl',
  'transaction',
  'set',
  'show',
  'listen',
  'notify',
  'explain',
  'call',
  'do',
  'utility',
  'multi',
  'unknown',
] as const satisfies readonly StatementKind[];

// Fails to compile when analysis.ts gains a kind this list lacks.
type MissingKinds = Exclude<StatementKind, (typeof STATEMENT_KINDS)[number]>;
const allKindsListed: [MissingKinds] extends [never] ? true : MissingKinds = true;
void allKindsListed;

export interface RuleMatch {
  /** Exact match against the analysis digest (normalized text, constants as $n). */
  digest?: string;
  /** JavaScript regex against the digest; `/source/flags` (flags i, m, s, u) or a bare source. */
  regex?: string;
  kind?: string | string[];
  /** Globs (`*`, `?`) over "schema.name", or over the bare name in any schema when without a dot. */
  tables?: string[];
  user?: string | string[];
  database?: string | string[];
  application_name?: string | string[];
  has_where?: boolean;
  has_limit?: boolean;
  /** Function names (same glob rules as tables), matched case-insensitively. */
  functions?: string[];
}

export interface Rule {
  name: string;
  /** Where the rule starts. */
  file: string;
  line: number;
  column: number;
  match: RuleMatch;
  block?: { message: string };
  cache?: { ttl: number; stale_while_revalidate?: number; serve_stale?: boolean; allow_stable?: boolean };
  rewrite?: { builtin: string } | { template: string };
  /** Seconds. */
  timeout?: number;
  /** Rows. */
  limit?: number;
  max_concurrency?: { limit: number; queue?: boolean };
  route?: 'primary' | 'replica';
  log?: boolean;
}

export type RuleExpectation = 'blocked' | 'allowed' | 'cached' | { rewritten: string };

export interface RuleTest {
  query: string;
  expect: RuleExpectation;
  file: string;
  line: number;
  column: number;
}

/** Action keys, in the order `sluice rules explain` should list them. */
export const ACTION_KEYS = [
  'block',
  'cache',
  'rewrite',
  'timeout',
  'limit',
  'max_concurrency',
  'route',
  'log',
] as const;

const oneOrMany = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)], {
  error: 'expected a string or a non-empty list of strings',
});
const names = z.array(z.string().min(1), { error: 'expected a list of strings' }).min(1);

const matchSchema = z.strictObject({
  digest: z.string().min(1).optional(),
  regex: z.string().min(1).optional(),
  kind: z
    .union([z.enum(STATEMENT_KINDS), z.array(z.enum(STATEMENT_KINDS)).min(1)], {
      error: (issue) =>
        // A union hides which branch was meant; a scalar or list of unknown kinds gets the list.
        typeof issue.input === 'string' || Array.isArray(issue.input)
          ? `expected one of ${STATEMENT_KINDS.join(', ')}`
          : 'expected a statement kind or a list of them',
    })
    .optional(),
  tables: names.optional(),
  user: oneOrMany.optional(),
  database: oneOrMany.optional(),
  application_name: oneOrMany.optional(),
  has_where: z.boolean().optional(),
  has_limit: z.boolean().optional(),
  functions: names.optional(),
});

const seconds = z.number().positive();

const ruleSchema = z
  .strictObject({
    name: z.string().min(1),
    match: matchSchema,
    block: z.strictObject({ message: z.string().min(1) }).optional(),
    cache: z
      .strictObject({
        ttl: seconds,
        stale_while_revalidate: z.number().nonnegative().optional(),
        serve_stale: z.boolean().optional(),
        allow_stable: z.boolean().optional(),
      })
      .optional(),
    // One object with both keys optional (not a union of two) so an unknown key or a wrong type is
    // reported at the key, and "both" / "neither" get a message of their own.
    rewrite: z
      .strictObject({ builtin: z.string().min(1).optional(), template: z.string().min(1).optional() })
      .refine((r) => (r.builtin === undefined) !== (r.template === undefined), {
        error: 'rewrite needs exactly one of builtin or template',
      })
      .optional(),
    timeout: seconds.optional(),
    limit: z.number().int().positive().optional(),
    max_concurrency: z
      .strictObject({ limit: z.number().int().positive(), queue: z.boolean().optional() })
      .optional(),
    route: z.enum(['primary', 'replica']).optional(),
    log: z.boolean().optional(),
  })
  .refine((r) => ACTION_KEYS.some((k) => r[k] !== undefined), {
    error: `a rule needs at least one action (${ACTION_KEYS.join(', ')})`,
  });

const testSchema = z.strictObject({
  query: z.string().min(1),
  expect: z.union([z.enum(['blocked', 'allowed', 'cached']), z.strictObject({ rewritten: z.string() })], {
    error: 'expected blocked, allowed, cached or { rewritten: "<sql>" }',
  }),
});

/** A whole rules file as YAML gives it, before positions are attached. */
export const rulesFileSchema = z.strictObject({
  rules: z.array(ruleSchema).optional(),
  tests: z.array(testSchema).optional(),
});

export type RulesFileInput = z.input<typeof rulesFileSchema>;
export type RulesFileData = z.output<typeof rulesFileSchema>;
