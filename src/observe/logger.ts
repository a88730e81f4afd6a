// Owns the process-wide pino logger: one instance, level from SLUICE_LOG_LEVEL, secrets and
// statement parameter values redacted by default (log fields carry digests, never values).
import { pino } from 'pino';

/**
 * Fields never written as given: passwords (also inside URLs' objects), and the values a client
 * bound to a statement, which may hold anything from e-mail addresses to tokens.
 */
export const REDACTED_PATHS = [
  'password',
  '*.password',
  'upstream.password',
  'users[*].password',
  'params',
  '*.params',
  'parameters',
  '*.parameters',
  'values',
  '*.values',
];

export const logger = pino({
  name: 'sluice',
  level: process.env.SLUICE_LOG_LEVEL ?? 'info',
  redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
});

export type Logger = typeof logger;
