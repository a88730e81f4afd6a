// Owns serve_stale: while the upstream's breaker is open, a read whose cache rule allows it is
// answered from an expired entry, preceded by a NoticeResponse saying it is stale and why.
import type { ReadPlan, ResultCache } from '../cache/result-cache.js';
import { createNoticeResponse } from '../protocol/backend-messages.js';
import { SqlState } from '../protocol/sqlstate.js';

/**
 * The stale reply (NOTICE + cached response) or undefined. `cannotConnectNow` must be the pool's
 * word that a server is out of reach right now: stale answers never stand in for a reachable
 * upstream.
 */
export function staleAnswer(
  cache: ResultCache,
  plan: ReadPlan,
  cannotConnectNow: boolean,
): Buffer | undefined {
  if (!plan.serveStale || !cannotConnectNow) return undefined;
  const found = cache.lookupStale(plan);
  if (found === undefined) return undefined;
  const notice = createNoticeResponse({
    severity: 'WARNING',
    code: SqlState.Warning,
    message: 'stale answer: served from the Sluice cache because the upstream is unreachable',
    detail: `the cached result expired ${Math.round(found.expiredMs / 1000)} s ago; the upstream's circuit breaker is open`,
    hint: 'fresh answers resume once Sluice reaches the upstream again',
  });
  return Buffer.concat([notice, found.value]);
}
