// Docker cannot run on the development machines: this checks the ops packaging structurally —
// docker-compose.yml, the Prometheus config, Grafana provisioning and the dashboard JSON.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const ROOT = resolve(import.meta.dirname, '../..');
const readYaml = (path: string): unknown => parse(readFileSync(join(ROOT, path), 'utf8'));

/** Every metric Sluice exports (issue 7); the dashboard may use nothing else. */
const EXPORTED_METRICS = new Set([
  'sluice_query_duration_seconds',
  'sluice_pool_wait_seconds',
  'sluice_client_connections',
  'sluice_server_connections',
  'sluice_pinned_clients',
  'sluice_prepared_statement_cache_hits_total',
  'sluice_prepared_statement_cache_misses_total',
  'sluice_cache_hits_total',
  'sluice_cache_misses_total',
  'sluice_cache_bytes',
  'sluice_cache_evictions_total',
  'sluice_cache_invalidations_total',
  'sluice_breaker_state',
  'sluice_rule_matches_total',
  'sluice_bytes_received_total',
  'sluice_bytes_sent_total',
  'sluice_errors_total',
]);
const HISTOGRAMS = new Set(['sluice_query_duration_seconds', 'sluice_pool_wait_seconds']);

interface Service {
  image?: string;
  build?: { context: string; dockerfile?: string };
  command?: string[];
  ports?: string[];
  volumes?: string[];
  depends_on?: string[] | Record<string, unknown>;
  environment?: Record<string, string>;
}
interface Compose {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

const compose = readYaml('docker-compose.yml') as Compose;
const services = compose.services;
const SLUICES = ['sluice-a', 'sluice-b'];

/** The value after `--flag` in a service's command. */
function flag(service: Service, name: string): string | undefined {
  const command = service.command ?? [];
  const i = command.indexOf(name);
  return i >= 0 ? command[i + 1] : undefined;
}

/** "host:container[/proto]" → the container port. */
const containerPort = (mapping: string): number => Number(mapping.split('/')[0]!.split(':').at(-1));

/** The metric names an expression refers to, histogram series folded onto their family. */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\bsluice_[a-z0-9_]+/g)].map(([name]) => {
    const family = name.replace(/_(bucket|sum|count)$/, '');
    return HISTOGRAMS.has(family) ? family : name;
  });
}

describe('docker-compose.yml', () => {
  it('has TimescaleDB, Redis, two Sluice instances, Prometheus and Grafana', () => {
    expect(Object.keys(services).sort()).toEqual(
      ['grafana', 'prometheus', 'redis', 'sluice-a', 'sluice-b', 'timescaledb'].sort(),
    );
    expect(services.timescaledb?.image).toMatch(/^timescale\/timescaledb/);
    expect(services.redis?.image).toMatch(/^redis/);
    expect(services.prometheus?.image).toMatch(/^prom\/prometheus/);
    expect(services.grafana?.image).toMatch(/^grafana\/grafana/);
  });

  it('builds both Sluice instances from the repo Dockerfile, on the same upstream and the same Redis', () => {
    const redisUrls = new Set<string | undefined>();
    for (const name of SLUICES) {
      const s = services[name]!;
      expect(existsSync(join(ROOT, s.build!.context, s.build!.dockerfile ?? 'Dockerfile'))).toBe(true);
      expect(s.command?.[0]).toBe('serve');
      const upstream = new URL(flag(s, '--upstream')!);
      expect(services[upstream.hostname]?.image).toMatch(/timescaledb/);
      const redis = new URL(flag(s, '--redis')!);
      expect(redis.protocol).toBe('redis:');
      expect(services[redis.hostname]?.image).toMatch(/^redis/);
      redisUrls.add(flag(s, '--redis'));
      expect(s.command).toContain('--cache');
      // Listening on all interfaces inside the container, or the published ports reach nothing.
      expect(flag(s, '--listen')).toMatch(/^0\.0\.0\.0:\d+$/);
      expect(flag(s, '--http')).toMatch(/^0\.0\.0\.0:\d+$/);
    }
    expect(redisUrls.size).toBe(1);
  });

  it('publishes only ports the services listen on, each host port once', () => {
    const hostPorts: string[] = [];
    for (const [name, s] of Object.entries(services)) {
      for (const mapping of s.ports ?? []) {
        hostPorts.push(mapping.split(':')[0]!);
        if (SLUICES.includes(name)) {
          const listening = [flag(s, '--listen'), flag(s, '--http')].map((hp) =>
            Number(hp?.split(':').at(-1)),
          );
          expect(listening).toContain(containerPort(mapping));
        }
      }
    }
    expect(new Set(hostPorts).size).toBe(hostPorts.length);
  });

  it('mounts only paths that exist in the repo and named volumes it declares', () => {
    for (const s of Object.values(services)) {
      for (const volume of s.volumes ?? []) {
        const source = volume.split(':')[0]!;
        if (source.startsWith('.')) expect(existsSync(join(ROOT, source)), source).toBe(true);
        else expect(compose.volumes ?? {}, source).toHaveProperty(source);
      }
    }
  });

  it('depends only on services it defines', () => {
    for (const s of Object.values(services)) {
      const deps = Array.isArray(s.depends_on) ? s.depends_on : Object.keys(s.depends_on ?? {});
      for (const dep of deps) expect(services, dep).toHaveProperty(dep);
    }
  });
});

describe('deploy/prometheus.yml', () => {
  it('scrapes both Sluice instances on their --http port', () => {
    const config = readYaml('deploy/prometheus.yml') as {
      scrape_configs: { job_name: string; static_configs: { targets: string[] }[] }[];
    };
    const targets = config.scrape_configs.flatMap((c) => c.static_configs.flatMap((s) => s.targets));
    const expected = SLUICES.map((name) => `${name}:${flag(services[name]!, '--http')!.split(':').at(-1)}`);
    expect(targets.sort()).toEqual(expected.sort());
    // The file Prometheus is told to read is the one mounted from the repo.
    const prometheus = services.prometheus!;
    const mount = prometheus.volumes?.find((v) => v.startsWith('./deploy/prometheus.yml:'));
    expect(mount).toBeDefined();
    expect(prometheus.command).toContain(`--config.file=${mount!.split(':')[1]}`);
  });
});

describe('Grafana provisioning and the dashboard', () => {
  const grafana = services.grafana!;
  const mountOf = (source: string) => grafana.volumes?.find((v) => v.startsWith(`${source}:`))?.split(':')[1];
  const dashboard = JSON.parse(readFileSync(join(ROOT, 'deploy/grafana/dashboards/sluice.json'), 'utf8')) as {
    uid: string;
    title: string;
    panels: {
      title: string;
      datasource?: { type: string; uid: string };
      targets?: { expr?: string; datasource?: { uid: string } }[];
    }[];
  };
  const datasources = (
    readYaml('deploy/grafana/provisioning/datasources/prometheus.yml') as {
      datasources: { uid: string; type: string; url: string }[];
    }
  ).datasources;

  it('provisions a Prometheus datasource that points at the compose Prometheus', () => {
    expect(mountOf('./deploy/grafana/provisioning')).toBe('/etc/grafana/provisioning');
    const [ds] = datasources;
    expect(ds?.type).toBe('prometheus');
    const url = new URL(ds!.url);
    expect(services).toHaveProperty(url.hostname);
    expect(services[url.hostname]!.ports?.map(containerPort)).toContain(Number(url.port));
  });

  it('loads dashboards from where the dashboard directory is mounted', () => {
    const providers = (
      readYaml('deploy/grafana/provisioning/dashboards/sluice.yml') as {
        providers: { options: { path: string } }[];
      }
    ).providers;
    expect(providers.map((p) => p.options.path)).toContain(mountOf('./deploy/grafana/dashboards'));
  });

  it('gives every panel the provisioned datasource and at least one query', () => {
    const uids = new Set(datasources.map((d) => d.uid));
    expect(dashboard.panels.length).toBeGreaterThan(0);
    for (const panel of dashboard.panels) {
      expect(uids.has(panel.datasource?.uid ?? ''), panel.title).toBe(true);
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      for (const target of panel.targets ?? []) {
        expect(target.expr, panel.title).toMatch(/\S/);
        if (target.datasource) expect(uids.has(target.datasource.uid), panel.title).toBe(true);
      }
    }
  });

  it('refers only to metrics Sluice exports, and covers latency, saturation, cache, breakers, errors', () => {
    const used = new Set<string>();
    for (const panel of dashboard.panels) {
      for (const target of panel.targets ?? []) {
        for (const name of metricNames(target.expr ?? '')) {
          expect(EXPORTED_METRICS.has(name), `${panel.title}: ${name}`).toBe(true);
          used.add(name);
        }
      }
    }
    for (const name of [
      'sluice_query_duration_seconds',
      'sluice_pool_wait_seconds',
      'sluice_client_connections',
      'sluice_server_connections',
      'sluice_cache_hits_total',
      'sluice_cache_misses_total',
      'sluice_breaker_state',
      'sluice_errors_total',
    ]) {
      expect(used.has(name), name).toBe(true);
    }
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr ?? ''));
    expect(
      exprs.some((e) =>
        /histogram_quantile\(.*by \([^)]*digest[^)]*\).*sluice_query_duration_seconds_bucket/.test(e),
      ),
    ).toBe(true);
    expect(exprs.some((e) => /sluice_errors_total/.test(e) && /by \(class\)/.test(e))).toBe(true);
  });

  it('folds histogram series onto their family when checking names', () => {
    expect(metricNames('rate(sluice_pool_wait_seconds_bucket[1m]) + sluice_nope_total')).toEqual([
      'sluice_pool_wait_seconds',
      'sluice_nope_total',
    ]);
  });
});
