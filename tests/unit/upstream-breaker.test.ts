// Tests which connection errors count against the upstream's circuit breaker.
import { describe, expect, it } from 'vitest';
import { InternalQueryError, UpstreamRejectedError } from '../../src/pool/server-connection.js';
import { isUpstreamAnswer } from '../../src/pool/upstream-breaker.js';
import { ProxyError } from '../../src/protocol/proxy-error.js';
import { SqlState } from '../../src/protocol/sqlstate.js';

const rejected = (code: string) => new UpstreamRejectedError(Buffer.alloc(0), { C: code, M: 'no' });

describe('isUpstreamAnswer', () => {
  it('treats answers from a reachable upstream as no failure', () => {
    for (const code of ['28P01', '3D000', '53300', '23505'])
      expect(isUpstreamAnswer(rejected(code))).toBe(true);
    expect(isUpstreamAnswer(new InternalQueryError({ C: '23505', M: 'duplicate key' }))).toBe(true);
  });

  it('counts silence, dropped sockets, timeouts and "cannot connect now" against the upstream', () => {
    expect(isUpstreamAnswer(new ProxyError(SqlState.ConnectionFailure, 'timeout connecting'))).toBe(false);
    expect(isUpstreamAnswer(new Error('upstream sent invalid message length 3'))).toBe(false);
    for (const code of ['57P01', '57P03']) expect(isUpstreamAnswer(rejected(code))).toBe(false);
  });
});
