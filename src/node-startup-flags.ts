// Owns the V8 flags Sluice wants from node's own command line: the ones V8 reads only when it
// starts, so `setFlagsFromString` (v8-memory-flags.ts) would be too late. Kept free of side
// effects so launchers (the bench, tests) can import the list without changing their own V8.

/**
 * TurboFan's background compile threads allocate their work from glibc arenas of their own,
 * which keep about 10 MB resident for good once a login storm has made the login path hot
 * (measured with 10 000 idle clients: 11.6 MB in thread arenas, 0.9 MB with this flag).
 * Compiling on the main thread costs a few milliseconds per hot function, once; the CPU per
 * transaction measured the same with and without (bench in the session note of issue 9).
 *
 * Where it is given: the shebang of dist/cli.js (the `sluice` command), `npm start`, the
 * Dockerfile, and the bench's launches. `node dist/cli.js` without it still works.
 */
export const NODE_STARTUP_FLAGS: readonly string[] = ['--no-concurrent-recompilation'];
