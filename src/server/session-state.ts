// Owns what a client's session looks like to PostgreSQL beyond its transaction: the settings it
// asked for at startup or with SET, and the statements that tie it to one server (pinning).
// In transaction mode a client gets whichever server is free, so Sluice replays these settings
// on that server before the client's own messages. Classification is by the statement's leading
// keywords: cheap, and conservative where it cannot tell (it pins rather than leak state).

import { parseSearchPath } from '../query/catalog.js';

/** What a statement does to session state, as far as pooling cares. */
export type SessionEffect =
  | { kind: 'set'; name: string; sql: string }
  | { kind: 'reset'; name: string }
  | { kind: 'reset-all' }
  | { kind: 'discard-all' }
  | { kind: 'deallocate-all' }
  | { kind: 'rollback' }
  | { kind: 'ddl' }
  | { kind: 'listen'; channel: string }
  | { kind: 'unlisten'; channel: string }
  | { kind: 'pin'; reason: string }
  | { kind: 'none' };

const NONE: SessionEffect = { kind: 'none' };
// Schema changes can change the result type of prepared statements.
const DDL: SessionEffect = { kind: 'ddl' };

// Startup parameters that are not settings.
const NOT_SETTINGS = new Set(['user', 'database', 'replication', 'options']);

/** Quotes a value as a SQL string literal. */
function literal(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/** Quotes a setting name unless it is a plain (possibly dotted) identifier. */
function settingName(name: string): string {
  return /^[a-z_][a-z0-9_$]*(\.[a-z_][a-z0-9_$]*)?$/.test(name) ? name : `"${name.replaceAll('"', '""')}"`;
}

// List settings whose SET takes each quoted literal as one element: `SET search_path TO 'a, b'`
// names one schema called "a, b". A startup value is list text (`a, b`), so it is replayed as a
// list of quoted identifiers instead.
const LIST_SETTINGS = new Set([
  'search_path',
  'temp_tablespaces',
  'session_preload_libraries',
  'local_preload_libraries',
]);

function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** `SET name TO 'value'` for a startup parameter. */
export function setStatement(name: string, value: string): string {
  if (LIST_SETTINGS.has(name.toLowerCase())) {
    const items = parseSearchPath(value);
    if (items !== null && items.length > 0) {
      return `SET ${settingName(name)} TO ${items.map(quoteIdentifier).join(', ')}`;
    }
  }
  return `SET ${settingName(name)} TO ${literal(value)}`;
}

/**
 * The settings a StartupMessage asks for, as (lower-case name → SET statement): every parameter
 * but user/database/replication, plus each `-c name=value` / `--name=value` in `options`.
 */
export function startupSettings(parameters: ReadonlyMap<string, string>): Map<string, string> {
  const settings = new Map<string, string>();
  for (const [name, value] of parameters) {
    if (NOT_SETTINGS.has(name)) continue;
    settings.set(name.toLowerCase(), setStatement(name, value));
  }
  const options = parameters.get('options');
  if (options) {
    for (const [name, value] of parseOptions(options))
      settings.set(name.toLowerCase(), setStatement(name, value));
  }
  return settings;
}

/** Splits libpq's `options` (backslash escapes spaces) into `-c name=value` pairs. */
export function parseOptions(options: string): [string, string][] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  for (let i = 0; i < options.length; i++) {
    const ch = options[i]!;
    if (ch === '\\' && i + 1 < options.length) {
      word += options[++i];
      inWord = true;
    } else if (ch === ' ' || ch === '\t' || ch === '\n') {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += ch;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  const pairs: [string, string][] = [];
  for (let i = 0; i < words.length; i++) {
    let w = words[i]!;
    if (w === '-c' && i + 1 < words.length) w = words[++i]!;
    else if (w.startsWith('-c')) w = w.slice(2);
    else if (w.startsWith('--')) w = w.slice(2);
    else continue;
    const eq = w.indexOf('=');
    if (eq <= 0) continue;
    pairs.push([w.slice(0, eq).replaceAll('-', '_'), w.slice(eq + 1)]);
  }
  return pairs;
}

/** Strips leading whitespace and SQL comments. */
function skipNoise(sql: string): string {
  let s = sql;
  for (;;) {
    const t = s.trimStart();
    if (t.startsWith('--')) {
      const nl = t.indexOf('\n');
      s = nl < 0 ? '' : t.slice(nl + 1);
    } else if (t.startsWith('/*')) {
      const close = t.indexOf('*/');
      s = close < 0 ? '' : t.slice(close + 2);
    } else {
      return t;
    }
  }
}

/** True when text after the first statement holds another statement (`; stmt`). */
function hasMoreStatements(sql: string): boolean {
  const semi = sql.indexOf(';');
  return semi >= 0 && skipNoise(sql.slice(semi + 1)).length > 0;
}

const SESSION_LOCK = /pg_(try_)?advisory_lock(_shared)?\s*\(/i;
const SET_CONFIG_SESSION = /set_config\s*\(\s*'((?:[^']|'')*)'\s*,\s*('(?:[^']|'')*')\s*,\s*false\s*\)/i;
const SET_STATEMENT_LATER = /;\s*(set|reset|discard)\s/i;

/**
 * Splits a query string into statements at semicolons outside quotes and comments; undefined
 * when it holds dollar quoting or escape strings, which this small scanner does not follow.
 */
export function splitStatements(sql: string): string[] | undefined {
  const parts: string[] = [];
  let start = 0;
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const ch = sql[i]!;
    if (ch === "'" || ch === '"') {
      if (ch === "'" && i > 0 && /[eE]/.test(sql[i - 1]!) && (i < 2 || !/[\w$]/.test(sql[i - 2]!)))
        return undefined;
      const close = sql.indexOf(ch, i + 1);
      if (close < 0) return undefined;
      i = close + 1;
    } else if (ch === '-' && sql[i + 1] === '-') {
      const nl = sql.indexOf('\n', i);
      i = nl < 0 ? n : nl + 1;
    } else if (ch === '/' && sql[i + 1] === '*') {
      const close = sql.indexOf('*/', i + 2);
      if (close < 0) return undefined;
      i = close + 2;
    } else if (
      ch === '$' &&
      /^\$[A-Za-z_]*\$/.test(sql.slice(i, i + 64)) &&
      (i === 0 || !/[\w$]/.test(sql[i - 1]!))
    ) {
      return undefined;
    } else if (ch === ';') {
      parts.push(sql.slice(start, i));
      start = ++i;
    } else {
      i++;
    }
  }
  parts.push(sql.slice(start));
  return parts.filter((p) => skipNoise(p).length > 0);
}

/**
 * Classifies a query string (a simple Query, possibly several statements, or a Parse): the
 * session effects of its statements, in order. A multi-statement Query runs as one implicit
 * transaction, so its effects commit (or not) together.
 */
export function classifyQuery(sql: string): SessionEffect[] {
  const parts = splitStatements(sql);
  if (!parts || parts.length <= 1) {
    const effect = classifyStatement(sql);
    return effect.kind === 'none' ? [] : [effect];
  }
  const effects: SessionEffect[] = [];
  for (const part of parts) {
    const effect = classifyStatement(part);
    if (effect.kind !== 'none') effects.push(effect);
  }
  return effects;
}

/**
 * Classifies one statement. Given text it cannot split, statements after the first are only
 * looked at for state changes, which pin.
 */
export function classifyStatement(sql: string): SessionEffect {
  const text = skipNoise(sql);
  const head = text.slice(0, 64).toLowerCase();
  const word = /^[a-z_]+/.exec(head)?.[0] ?? '';
  const multi = hasMoreStatements(text);
  if (multi && (SET_STATEMENT_LATER.test(text) || SESSION_LOCK.test(text))) {
    return { kind: 'pin', reason: 'session state changed inside a multi-statement query' };
  }
  switch (word) {
    case 'set':
      if (multi) return { kind: 'pin', reason: 'SET inside a multi-statement query' };
      return classifySet(text);
    case 'reset': {
      if (multi) return { kind: 'pin', reason: 'RESET inside a multi-statement query' };
      const m = /^reset\s+(.+?)\s*;?\s*$/is.exec(text);
      const target = m?.[1]?.trim().toLowerCase() ?? '';
      if (target === 'all') return { kind: 'reset-all' };
      if (target === 'session authorization' || target === 'role') return { kind: 'reset', name: target };
      return target ? { kind: 'reset', name: unquote(target) } : NONE;
    }
    case 'discard':
      if (/^discard\s+all\b/.test(head))
        return multi ? { kind: 'pin', reason: 'DISCARD ALL in a batch' } : { kind: 'discard-all' };
      return NONE;
    case 'prepare':
      return { kind: 'pin', reason: 'SQL PREPARE' };
    case 'deallocate':
      if (multi) return { kind: 'pin', reason: 'DEALLOCATE in a batch' };
      return /^deallocate\s+(prepare\s+)?all\b/.test(head)
        ? { kind: 'deallocate-all' }
        : { kind: 'pin', reason: 'DEALLOCATE' };
    case 'rollback':
    case 'abort':
      return /^rollback\s+(to|prepared)\b/.test(head) ? NONE : { kind: 'rollback' };
    case 'listen':
    case 'unlisten': {
      if (multi) return { kind: 'pin', reason: 'LISTEN in a batch' };
      const m = /^(un)?listen\s+("(?:[^"]|"")+"|[^\s;]+)\s*;?\s*$/is.exec(text);
      if (!m) return { kind: 'pin', reason: 'LISTEN that Sluice cannot read' };
      const raw = m[2]!;
      const channel = raw.startsWith('"') ? raw.slice(1, -1).replaceAll('""', '"') : raw.toLowerCase();
      return { kind: word === 'listen' ? 'listen' : 'unlisten', channel };
    }
    case 'load':
      return { kind: 'pin', reason: 'LOAD' };
    case 'declare':
      return /\bwith\s+hold\b/i.test(text) ? { kind: 'pin', reason: 'DECLARE ... WITH HOLD' } : NONE;
    case 'create':
      return /^create\s+(global\s+|local\s+)?(temp|temporary)\s/.test(head)
        ? { kind: 'pin', reason: 'temporary table' }
        : DDL;
    case 'alter':
    case 'drop':
    case 'comment':
      return DDL;
  }
  if (SESSION_LOCK.test(text)) return { kind: 'pin', reason: 'session advisory lock' };
  const setConfig = SET_CONFIG_SESSION.exec(text);
  if (setConfig) {
    if (multi) return { kind: 'pin', reason: 'set_config in a multi-statement query' };
    const name = setConfig[1]!.replaceAll("''", "'").toLowerCase();
    return { kind: 'set', name, sql: `SET ${settingName(name)} TO ${setConfig[2]}` };
  }
  return NONE;
}

function unquote(name: string): string {
  return name.startsWith('"') && name.endsWith('"') ? name.slice(1, -1).replaceAll('""', '"') : name;
}

function classifySet(text: string): SessionEffect {
  const sql = text.replace(/[\s;]+$/, '');
  const rest = sql.replace(/^set\s+/i, '');
  const lower = rest.toLowerCase();
  if (/^local\s/.test(lower)) return NONE;
  if (/^transaction\s/.test(lower)) return NONE;
  const body =
    /^session\s/.test(lower) && !/^session\s+(authorization|characteristics)\b/.test(lower)
      ? rest.slice(8).trimStart()
      : rest;
  const b = body.toLowerCase();
  if (/^session\s+authorization\b/.test(b)) return { kind: 'pin', reason: 'SET SESSION AUTHORIZATION' };
  if (/^session\s+characteristics\b/.test(b)) return { kind: 'set', name: 'session characteristics', sql };
  if (/^time\s+zone\b/.test(b)) return { kind: 'set', name: 'timezone', sql };
  if (/^role\b/.test(b)) return { kind: 'set', name: 'role', sql };
  if (/^names\b/.test(b)) return { kind: 'set', name: 'client_encoding', sql };
  const m = /^("(?:[^"]|"")+"|[a-z_][a-z0-9_$]*(?:\.[a-z_][a-z0-9_$]*)?)\s*(=|\bto\b)/i.exec(body);
  if (!m) return { kind: 'pin', reason: 'SET that Sluice cannot read' };
  return { kind: 'set', name: unquote(m[1]!.toLowerCase()), sql };
}

/** A server whose settings are not known to match any client's: the next client replays its own. */
export const UNKNOWN_SETTINGS = '\0unknown';

function simpleQuery(text: string): Buffer {
  const body = Buffer.byteLength(text) + 1;
  const frame = Buffer.allocUnsafe(5 + body);
  frame[0] = 0x51; // 'Q'
  frame.writeInt32BE(4 + body, 1);
  frame.write(text, 5);
  frame[4 + body] = 0;
  return frame;
}

// Settings that cannot change what a query returns: clients differing only in these share cache
// entries (bots typically differ in application_name alone).
const OUTPUT_NEUTRAL = new Set([
  'application_name',
  'statement_timeout',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
  'idle_session_timeout',
  'transaction_timeout',
  'work_mem',
  'maintenance_work_mem',
  'log_statement',
  'log_min_duration_statement',
  'tcp_keepalives_idle',
  'tcp_keepalives_interval',
  'tcp_keepalives_count',
]);

/** The value of a `SET search_path TO ...` statement, with string-literal quoting removed. */
function searchPathOf(sql: string): string | undefined {
  const m = /^set\s+(?:session\s+)?search_path\s*(?:=|\bto\b)\s*(.*?)\s*;?\s*$/is.exec(sql);
  if (!m || /^default$/i.test(m[1]!)) return undefined;
  // As SHOW prints it: a string literal names one schema, case and all ("Mixed", not mixed).
  return m[1]!.replace(
    /'((?:[^']|'')*)'/g,
    (_, inner: string) => `"${inner.replaceAll("''", "'").replaceAll('"', '""')}"`,
  );
}

/**
 * One client's settings: those from its StartupMessage (its session defaults, which RESET
 * returns to) and those it SET since. Changes wait until the statement that made them is known
 * to have committed (ReadyForQuery 'I' with no error on the way).
 */
/**
 * No settings: shared by every client that has none (most), so an idle client carries no Map of
 * its own. Never written to: SessionSettings replaces it before its first set.
 */
export const NO_SETTINGS: ReadonlyMap<string, string> = new Map<string, string>();

const NO_EFFECTS: SessionEffect[] = [];

export class SessionSettings {
  private sets = NO_SETTINGS as Map<string, string>;
  /** Shared and empty until the first note: most clients never SET anything. */
  private pending: SessionEffect[] = NO_EFFECTS;
  private failed = false;
  signature = '';
  /** The settings that shape query output: part of every result-cache key. */
  cacheSignature = '';
  /** search_path as the client set it, or undefined when it runs the server's default. */
  searchPath: string | undefined;
  private replay: Buffer | undefined;

  constructor(private readonly startup: ReadonlyMap<string, string>) {
    this.recompute();
  }

  /** SQL that puts a server into exactly this client's settings. */
  get replaySql(): string {
    return ['RESET ALL', ...this.startup.values(), ...this.sets.values()].join('; ');
  }

  /** replaySql as a simple Query message, built once per change. */
  get replayQuery(): Buffer {
    this.replay ??= simpleQuery(this.replaySql);
    return this.replay;
  }

  note(effect: SessionEffect): void {
    if (this.pending === NO_EFFECTS) this.pending = [];
    this.pending.push(effect);
  }

  get hasPending(): boolean {
    return this.pending.length > 0;
  }

  /** An error or ROLLBACK: what is pending did not happen. */
  noteFailure(): void {
    if (this.pending.length > 0) this.failed = true;
  }

  /**
   * At ReadyForQuery 'I': applies what committed and returns the signature of what the server
   * that ran it now runs (UNKNOWN_SETTINGS when a RESET took it back to server defaults).
   */
  commit(): { serverSignature: string; forgetStatements: boolean } {
    const effects = this.pending;
    const failed = this.failed;
    this.pending = NO_EFFECTS;
    this.failed = false;
    if (failed) return { serverSignature: this.signature, forgetStatements: false };
    let serverDiverged = false;
    let forgetStatements = false;
    for (const effect of effects) {
      switch (effect.kind) {
        case 'set':
          if (this.sets === NO_SETTINGS) this.sets = new Map();
          this.sets.delete(effect.name);
          this.sets.set(effect.name, effect.sql);
          break;
        case 'reset':
          this.sets.delete(effect.name);
          if (this.startup.has(effect.name)) serverDiverged = true;
          break;
        case 'discard-all':
          forgetStatements = true;
          this.sets.clear();
          if (this.startup.size > 0) serverDiverged = true;
          break;
        case 'reset-all':
          this.sets.clear();
          if (this.startup.size > 0) serverDiverged = true;
          break;
        case 'deallocate-all':
          forgetStatements = true;
          break;
      }
    }
    this.recompute();
    return { serverSignature: serverDiverged ? UNKNOWN_SETTINGS : this.signature, forgetStatements };
  }

  private recompute(): void {
    this.signature = [...this.startup.values(), ...this.sets.values()].join('; ');
    const shaping: string[] = [];
    for (const [name, sql] of this.startup)
      if (!OUTPUT_NEUTRAL.has(name) && !this.sets.has(name)) shaping.push(sql);
    for (const [name, sql] of this.sets) if (!OUTPUT_NEUTRAL.has(name)) shaping.push(sql);
    this.cacheSignature = shaping.join('; ');
    const pathSql = this.sets.get('search_path') ?? this.startup.get('search_path');
    this.searchPath = pathSql === undefined ? undefined : searchPathOf(pathSql);
    this.replay = undefined;
  }
}

const SPACE = new Uint8Array(256);
for (const c of [0x20, 0x09, 0x0a, 0x0d, 0x0c]) SPACE[c] = 1;
// First letters of statements that can change session state (lower-cased).
const STATEFUL_FIRST = new Uint8Array(256);
for (const c of 'srdplcau-/') STATEFUL_FIRST[c.charCodeAt(0)] = 1;

/**
 * Cheap byte-level pre-check on query text in a frame, so the common INSERT/UPDATE/SELECT is not
 * decoded: false means classifyStatement would surely answer 'none'.
 */
export function mayAffectSession(buf: Buffer, start: number, end: number): boolean {
  let pos = start;
  while (pos < end && SPACE[buf[pos]!] === 1) pos++;
  if (pos >= end) return false;
  const first = buf[pos]! | 0x20;
  if (
    STATEFUL_FIRST[first] === 1 &&
    !(first === 0x73 && (buf[pos + 1]! | 0x20) === 0x65 && (buf[pos + 2]! | 0x20) === 0x6c)
  ) {
    // Anything but SELECT starting with s/r/d/p/l/c/a, or a comment: look closer.
    return true;
  }
  const text = buf.subarray(pos, end);
  return (
    hasInnerSemicolon(text) ||
    text.indexOf('advisory') >= 0 ||
    text.indexOf('ADVISORY') >= 0 ||
    text.indexOf('set_config') >= 0 ||
    text.indexOf('SET_CONFIG') >= 0
  );
}

/** A semicolon followed by more text: several statements (a trailing `;` alone is common). */
function hasInnerSemicolon(text: Buffer): boolean {
  let at = text.indexOf(0x3b);
  while (at >= 0) {
    for (let i = at + 1; i < text.length; i++) if (SPACE[text[i]!] !== 1) return true;
    at = -1;
  }
  return false;
}
