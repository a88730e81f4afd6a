// Owns the V8 flags the `sluice` command sets for itself before anything else loads, to keep its
// resident memory small with many idle clients (measured in bench/many-clients.mjs; SECURITY.md).
import { setFlagsFromString } from 'node:v8';

/**
 * libpg-query is WebAssembly: V8's optimizing tier (TurboFan) compiles its hot functions into
 * about 25-55 MB of machine code kept for the life of the process, where the baseline tier
 * (Liftoff) costs a few MB, compiled per function on first call. Parses and digests are cached by
 * text, so the slower tier (about 1.3x per uncached parse, measured) is paid on new texts only.
 * The young generation may not grow past its initial 1 MB semi-spaces: a login storm otherwise
 * leaves it at 2 x 16 MB for good, while the proxy's garbage is short-lived per message.
 * The old generation may grow by 30 % of what a full collection left alive, not the 1.1-4x V8
 * picks from its measured GC speed: a burst of 10 000 logins promotes their short-lived login
 * state, and at V8's factor the heap kept 47 MB (RSS 105 MB) until its memory reducer ran, seconds
 * later or, on a loaded machine, not within 20 s; at 30 % 37 MB (RSS 94 MB). Pass-through
 * allocates so little that it made no difference (2 full collections per 100 000 transactions
 * either way); with the cache storing every miss, full collections went from 3 to 6 per 100 000,
 * under 1 us of pause per transaction.
 * A flag given to node itself (`node --no-liftoff-only dist/cli.js serve`, or in NODE_OPTIONS)
 * wins: this one is then left alone.
 */
export const V8_MEMORY_FLAGS = [
  '--liftoff-only',
  '--wasm-lazy-compilation',
  '--semi-space-growth-factor=1',
  '--heap-growing-percent=30',
];

const given = `${process.execArgv.join(' ')} ${process.env.NODE_OPTIONS ?? ''}`.replaceAll('_', '-');
for (const flag of V8_MEMORY_FLAGS) {
  const name = flag.slice(2).split('=')[0]!;
  if (!given.includes(`--${name}`) && !given.includes(`--no-${name}`)) setFlagsFromString(flag);
}
