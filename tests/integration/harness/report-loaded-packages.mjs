// Preloaded (`node --import`) into a `sluice serve` under test: on SIGUSR2 it writes the npm
// packages the process has loaded through require (CommonJS, which every package asserted on is)
// to the file named by LOADED_PACKAGES_REPORT (atomically).
import { renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

process.on('SIGUSR2', () => {
  const names = new Set();
  for (const file of Object.keys(require.cache)) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file);
    if (m) names.add(m[1]);
  }
  // Written aside, then renamed: the test reads the file as soon as it exists.
  const report = process.env.LOADED_PACKAGES_REPORT;
  writeFileSync(`${report}.tmp`, JSON.stringify([...names]));
  renameSync(`${report}.tmp`, report);
});
