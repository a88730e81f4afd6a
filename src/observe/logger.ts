// Owns the process-wide pino logger: one instance, level from SLUICE_LOG_LEVEL, secrets redacted.
import { pino } from 'pino';

export const logger = pino({
  name: 'sluice',
  level: process.env.SLUICE_LOG_LEVEL ?? 'info',
  redact: { paths: ['password', '*.password', 'upstream.password'], censor: '[redacted]' },
});

export type Logger = typeof logger;
