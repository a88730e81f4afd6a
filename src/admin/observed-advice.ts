// Owns index advice from what Sluice itself has seen: the digests it timed (calls, time spent)
// grouped by database, read against each database's catalog on a short-lived upstream connection.
import pg from 'pg';
import type { DigestStats } from '../observe/digest-stats.js';
import { poolLabel } from '../observe/metrics.js';
import type { PoolStats } from '../pool/pool.js';
import type { UpstreamEndpoint } from '../pool/pool-manager.js';
import { loadQueryParser } from '../query/analysis.js';
import { adviseFromCatalog } from '../rules/advise-command.js';
import type { IndexAdvice, WorkloadStatement } from '../rules/index-advisor.js';

/** At most this many digests per database are read (the heaviest by time spent). */
const WORKLOAD_DIGESTS = 500;

export async function adviseFromDigests(
  digests: DigestStats | undefined,
  pools: readonly PoolStats[],
  upstream: UpstreamEndpoint,
  onlyDatabase: string | undefined,
): Promise<Map<string, IndexAdvice[]>> {
  const result = new Map<string, IndexAdvice[]>();
  if (digests === undefined) return result;
  await loadQueryParser();
  const databaseOf = new Map(pools.map((p) => [poolLabel(p.database, p.user), p.database]));
  const workloads = new Map<string, WorkloadStatement[]>();
  for (const entry of digests.top()) {
    const database = databaseOf.get(entry.pool);
    if (database === undefined || (onlyDatabase !== undefined && database !== onlyDatabase)) continue;
    const workload = workloads.get(database) ?? [];
    if (workload.length >= WORKLOAD_DIGESTS) continue;
    workload.push({
      sql: entry.digest,
      calls: entry.calls + entry.cacheHits,
      totalMs: entry.totalSeconds * 1000,
    });
    workloads.set(database, workload);
  }
  for (const [database, workload] of workloads) {
    const client = new pg.Client({
      host: upstream.host,
      port: upstream.port,
      user: upstream.user,
      password: upstream.password,
      database,
      application_name: 'sluice advice',
    });
    client.on('error', () => {});
    await client.connect();
    try {
      result.set(database, await adviseFromCatalog(client, workload));
    } finally {
      await client.end();
    }
  }
  return result;
}
