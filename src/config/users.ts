// Owns the table of users clients may log in as: from the config's `users` list and from a
// PgBouncer-style userlist file (`"name" "password"` per line, `;` or `#` comments).
import { readFileSync } from 'node:fs';
import { ConfigError } from './load.js';
import type { UserEntry } from './schema.js';

/** user name → password as stored: plaintext, md5 hash or SCRAM-SHA-256 verifier. */
export type UserTable = Map<string, string>;

export function loadUsers(users: readonly UserEntry[], usersFile: string | undefined): UserTable {
  const table: UserTable = new Map();
  if (usersFile) {
    for (const entry of parseUserlist(readUserlist(usersFile), usersFile))
      table.set(entry.name, entry.password);
  }
  for (const u of users) table.set(u.name, u.password);
  return table;
}

function readUserlist(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([`${file}: cannot read users file: ${(err as Error).message}`]);
  }
}

/** Parses `"name" "password"` lines; a doubled quote inside a field stands for one quote. */
export function parseUserlist(text: string, file: string): UserEntry[] {
  const entries: UserEntry[] = [];
  const problems: string[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith(';') || trimmed.startsWith('#')) continue;
    const fields: string[] = [];
    let pos = line.indexOf('"');
    let bad = pos < 0;
    while (!bad && pos >= 0 && fields.length < 2) {
      let value = '';
      let j = pos + 1;
      for (;;) {
        if (j >= line.length) {
          bad = true;
          break;
        }
        if (line[j] === '"') {
          if (line[j + 1] === '"') {
            value += '"';
            j += 2;
            continue;
          }
          break;
        }
        value += line[j];
        j++;
      }
      if (bad) break;
      fields.push(value);
      pos = line.indexOf('"', j + 1);
    }
    if (bad || fields.length !== 2 || fields[0] === '') {
      const col = line.length - line.trimStart().length + 1;
      problems.push(`${file}:${i + 1}:${col}: expected "user" "password"`);
      continue;
    }
    entries.push({ name: fields[0]!, password: fields[1]! });
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return entries;
}
