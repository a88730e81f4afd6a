// Owns the seeder's default sizes, apart from the seeder so the CLI can show them without loading it.

export const SEED_DEFAULTS = {
  bots: 3,
  symbols: 500,
  days: 7,
  seed: 1,
  tickMinutes: 60,
  ticksPerMinute: 5,
} as const;
