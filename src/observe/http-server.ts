// Owns the HTTP side of observability: /metrics (Prometheus text), /healthz (the process
// answers), /readyz (the upstream is reachable, and whatever extra checks are registered, such
// as a circuit breaker) and /status (JSON for humans and scripts).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { logger } from './logger.js';
import type { SluiceMetrics } from './metrics.js';

/** A readiness condition: undefined when fine, else why not (shown in /readyz's body). */
export type ReadinessCheck = () => string | undefined;

export interface HttpServerOptions {
  host: string;
  port: number;
  metrics: SluiceMetrics | undefined;
  upstream: { host: string; port: number };
  status(): unknown;
  /** How long a successful upstream probe is trusted before /readyz probes again. */
  probeCacheMs?: number;
}

/** `9187` → 127.0.0.1:9187; `HOST:PORT` as given (brackets around IPv6 removed). */
export function parseHttpAddress(value: string | number): { host: string; port: number } {
  const s = String(value);
  const i = s.lastIndexOf(':');
  if (i < 0) return { host: '127.0.0.1', port: Number(s) };
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)) };
}

const PROBE_TIMEOUT_MS = 1000;

export class ObserveHttpServer {
  private readonly server: Server;
  /** Extra readiness conditions (the coordinator adds the breaker's here). */
  readonly readinessChecks: ReadinessCheck[] = [];
  private lastProbeOkAt = 0;
  private probing: Promise<string | undefined> | undefined;

  constructor(private readonly options: HttpServerOptions) {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        logger.error({ err }, 'http handler failed');
        if (!res.headersSent) res.writeHead(500);
        res.end('internal error\n');
      });
    });
    this.server.on('error', (err) => logger.error({ err }, 'http listener error'));
  }

  listen(): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', reject);
        const address = this.server.address();
        const port = typeof address === 'object' && address ? address.port : this.options.port;
        resolve({ host: this.options.host, port });
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    switch (path) {
      case '/metrics': {
        const metrics = this.options.metrics;
        if (metrics === undefined) {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('metrics are off (metrics: false)\n');
          return;
        }
        const body = await metrics.scrape();
        res.writeHead(200, { 'content-type': metrics.contentType }).end(body);
        return;
      }
      case '/healthz':
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
        return;
      case '/readyz': {
        const problems: string[] = [];
        const upstream = await this.probeUpstream();
        if (upstream !== undefined) problems.push(upstream);
        for (const check of this.readinessChecks) {
          const problem = check();
          if (problem !== undefined) problems.push(problem);
        }
        if (problems.length === 0) res.writeHead(200, { 'content-type': 'text/plain' }).end('ready\n');
        else res.writeHead(503, { 'content-type': 'text/plain' }).end(`not ready: ${problems.join('; ')}\n`);
        return;
      }
      case '/status':
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(`${JSON.stringify(this.options.status(), null, 2)}\n`);
        return;
      default:
        res
          .writeHead(404, { 'content-type': 'text/plain' })
          .end('not found: try /metrics /healthz /readyz /status\n');
    }
  }

  /**
   * A TCP connect to the upstream, trusted for a short while when it succeeded, so a probe every
   * second costs one connect per probeCacheMs at most. (It proves the port answers, not that a
   * login works; the pools report login failures in their own metrics and logs.)
   */
  private probeUpstream(): Promise<string | undefined> {
    const cacheMs = this.options.probeCacheMs ?? 1000;
    if (Date.now() - this.lastProbeOkAt < cacheMs) return Promise.resolve(undefined);
    this.probing ??= new Promise<string | undefined>((resolve) => {
      const { host, port } = this.options.upstream;
      const socket = connect({ host, port });
      const done = (problem: string | undefined) => {
        socket.destroy();
        if (problem === undefined) this.lastProbeOkAt = Date.now();
        this.probing = undefined;
        resolve(problem);
      };
      socket.setTimeout(PROBE_TIMEOUT_MS, () =>
        done(`upstream ${host}:${port} did not answer within ${PROBE_TIMEOUT_MS} ms`),
      );
      socket.once('connect', () => done(undefined));
      socket.once('error', (err) => done(`upstream ${host}:${port} unreachable: ${err.message}`));
    });
    return this.probing;
  }
}
