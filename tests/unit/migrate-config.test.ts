// migrate_on_start: absent unless given (startSluice then decides by whether the upstream is the
// embedded server), and read as a boolean from the environment.
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/load.js';

describe('migrate_on_start', () => {
  it('is absent by default and a boolean from SLUICE_MIGRATE_ON_START', () => {
    expect(loadConfig({ env: {} }).migrate_on_start).toBeUndefined();
    expect(loadConfig({ env: { SLUICE_MIGRATE_ON_START: 'false' } }).migrate_on_start).toBe(false);
    expect(loadConfig({ env: { SLUICE_MIGRATE_ON_START: '1' } }).migrate_on_start).toBe(true);
    expect(() => loadConfig({ env: { SLUICE_MIGRATE_ON_START: 'sometimes' } })).toThrow(ConfigError);
  });
});
