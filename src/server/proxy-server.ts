// Owns the listening socket and the set of live clients: accepting, logging clients in, the
// per-client BackendKeyData used by CancelRequest, the max_client_conn limit, and graceful
// shutdown (stop accepting, let transactions finish up to a deadline, then 57P01).
import { randomInt, timingSafeEqual } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { ADMIN_DATABASE, type AdminConsole } from '../admin/admin-console.js';
import type { ResultCache } from '../cache/result-cache.js';
import { logger } from '../observe/logger.js';
import type { SluiceMetrics } from '../observe/metrics.js';
import type { PoolManager } from '../pool/pool-manager.js';
import { UpstreamRejectedError } from '../pool/server-connection.js';
import {
  createBackendKeyData,
  createErrorResponse,
  createParameterStatus,
  READY_FOR_QUERY,
} from '../protocol/backend-messages.js';
import { ProxyError } from '../protocol/proxy-error.js';
import { SqlState } from '../protocol/sqlstate.js';
import type { RuleEngine } from '../rules/rule-engine.js';
import { ClientLimits } from './client-limits.js';
import { type AuthMethod, ClientGone, runLogin } from './client-login.js';
import { ClientSession, type PoolMode, type SessionHooks } from './client-session.js';
import { IdleSweeper } from './client-timeouts.js';
import type { ClientTls } from './client-tls.js';
import { NO_SETTINGS, SessionSettings, startupSettings } from './session-state.js';

export interface ProxyServerOptions {
  host: string;
  port: number;
  auth: AuthMethod;
  poolMode: PoolMode;
  maxClientConnections: number;
  maxMessageBytes: number;
  loginTimeoutMs: number;
  passwordOf(user: string): string | undefined;
  pools: PoolManager;
  cache?: ResultCache | undefined;
  rules?: RuleEngine | undefined;
  metrics?: SluiceMetrics | undefined;
  /** Answers logins to database "sluice" (admins) and refuses everyone else there. */
  admin?: AdminConsole | undefined;
  /** Issue 9 hardening; each absent or 0 means off. */
  tls?: ClientTls | undefined;
  maxUserClientConnections?: number | undefined;
  maxDbClientConnections?: number | undefined;
  clientIdleTimeoutMs?: number | undefined;
  idleTransactionTimeoutMs?: number | undefined;
  /** SO_KEEPALIVE on client sockets with this idle time (0: the OS default); absent: none. */
  keepAliveMs?: number | undefined;
}

/** Logged at debug only; one function for every socket rather than a closure each. */
function onLoginSocketError(err: Error): void {
  logger.debug({ err: err.message }, 'client socket error during login');
}

/** The ParameterStatus set a pool's clients are told when their startup changes none of it. */
interface SharedWelcome {
  parameters: ReadonlyMap<string, string>;
  /** Its ParameterStatus messages, encoded once. */
  bytes: Buffer;
}

/** The server's spelling of a reported parameter (e.g. DateStyle for datestyle). */
function reportedName(serverParameters: ReadonlyMap<string, string>, key: string): string | undefined {
  const lower = key.toLowerCase();
  for (const name of serverParameters.keys()) if (name.toLowerCase() === lower) return name;
  return undefined;
}

function sameEncoding(a: string, b: string): boolean {
  const norm = (s: string) => s.replace(/[-_]/g, '').toLowerCase();
  return norm(a) === norm(b);
}

/**
 * The client's startup settings worth replaying: all but a client_encoding that already is
 * the server's, which every driver sends and which would otherwise mark every client distinct.
 */
function clientStartupSettings(
  parameters: ReadonlyMap<string, string>,
  serverParameters: ReadonlyMap<string, string>,
): ReadonlyMap<string, string> {
  const settings = startupSettings(parameters);
  const encoding = parameters.get('client_encoding');
  const serverEncoding = serverParameters.get('client_encoding');
  if (encoding !== undefined && serverEncoding !== undefined && sameEncoding(encoding, serverEncoding)) {
    settings.delete('client_encoding');
  }
  return settings.size === 0 ? NO_SETTINGS : settings;
}

export class ProxyServer {
  private readonly server: Server;
  private readonly sessions = new Map<number, ClientSession>();
  /** Sockets accepted but not yet logged in, so shutdown can close them too. */
  private readonly pending = new Set<Socket>();
  private clientCount = 0;
  /** Clients past the max_client_conn check; those still logging in do not count against it. */
  private admitted = 0;
  private draining = false;
  private readonly limits: ClientLimits;
  private readonly sweeper: IdleSweeper;
  /** One per server parameter set (one per pool): shared, read-only, by every client it fits. */
  private readonly sharedWelcomes = new WeakMap<ReadonlyMap<string, string>, SharedWelcome>();
  private readonly sessionHooks: SessionHooks = {
    onSessionClosed: (s) => this.sessions.delete(s.processId),
  };

  constructor(private readonly options: ProxyServerOptions) {
    this.limits = new ClientLimits({
      perUser: options.maxUserClientConnections ?? 0,
      perDatabase: options.maxDbClientConnections ?? 0,
    });
    this.sweeper = new IdleSweeper(() => this.sessions.values(), {
      idleMs: options.clientIdleTimeoutMs ?? 0,
      idleInTransactionMs: options.idleTransactionTimeoutMs ?? 0,
    });
    this.server = createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.server.on('error', (err) => logger.error({ err }, 'listener error'));
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

  get clients(): number {
    return this.clientCount;
  }

  /** The logged-in clients, for admin views and tests. */
  sessionList(): ClientSession[] {
    return [...this.sessions.values()];
  }

  private accept(socket: Socket): void {
    socket.setNoDelay(true);
    if (this.options.keepAliveMs !== undefined) socket.setKeepAlive(true, this.options.keepAliveMs);
    this.clientCount++;
    this.pending.add(socket);
    socket.on('error', onLoginSocketError);
    // Destroying the accepted socket also ends a TLS socket layered on it.
    this.login(socket).finally(() => this.pending.delete(socket));
  }

  private async login(raw: Socket): Promise<void> {
    const { options } = this;
    // Becomes the TLSSocket once the client asked for TLS; errors and the session use it.
    let socket = raw;
    // Set once the client counts against the limits. One listener per client (not once(), whose
    // wrapper costs more) that keeps only these two names alive after login.
    let admittedAs: { user: string; database: string } | undefined;
    raw.on('close', () => {
      this.clientCount--;
      if (admittedAs !== undefined) {
        this.admitted--;
        this.limits.release(admittedAs.user, admittedAs.database);
        admittedAs = undefined;
      }
    });
    try {
      const result = await runLogin(socket, {
        auth: options.auth,
        passwordOf: options.passwordOf,
        timeoutMs: options.loginTimeoutMs,
        tls: options.tls,
        onSecure: (secure) => {
          socket = secure;
        },
      });
      if (result.kind === 'cancel') {
        this.cancel(result.processId, result.secretKey);
        socket.destroy();
        return;
      }
      if (this.draining) {
        throw new ProxyError(SqlState.CannotConnectNow, 'the proxy is shutting down', { severity: 'FATAL' });
      }
      if (result.database === ADMIN_DATABASE && options.admin !== undefined) {
        options.admin.accept(socket, result.user, result.leftover);
        return;
      }
      if (this.admitted >= options.maxClientConnections) {
        throw new ProxyError(SqlState.TooManyConnections, 'sorry, too many clients already', {
          severity: 'FATAL',
          detail: `max_client_conn is ${options.maxClientConnections}`,
        });
      }
      this.limits.admit(result.user, result.database);
      this.admitted++;
      admittedAs = { user: result.user, database: result.database };
      const replication = result.parameters.get('replication');
      if (replication !== undefined && !/^(false|off|no|0)$/i.test(replication)) {
        throw new ProxyError(
          SqlState.FeatureNotSupported,
          'replication connections are not supported by Sluice',
          {
            severity: 'FATAL',
            hint: 'connect replication clients straight to PostgreSQL',
          },
        );
      }
      const pool = options.pools.get(result.database, result.user);
      const serverParameters = await pool.parametersForLogin();
      if (socket.destroyed) return;
      const startup = clientStartupSettings(result.parameters, serverParameters);
      const settings = new SessionSettings(startup);
      await pool.validateSettings(settings.signature, settings.replaySql);
      if (socket.destroyed) return;

      const processId = this.newProcessId();
      const secretKey = randomInt(-0x80000000, 0x7fffffff);
      // What the server connections run with, with the client's own startup settings on top:
      // Sluice applies those on whichever server the client gets.
      let reported: Map<string, string> | undefined;
      for (const [key, value] of result.parameters) {
        const name = reportedName(serverParameters, key);
        if (name !== undefined && startup.has(key.toLowerCase()) && serverParameters.get(name) !== value) {
          reported ??= new Map(serverParameters);
          reported.set(name, value);
        }
      }
      const keyData = createBackendKeyData(processId, secretKey);
      if (reported === undefined) {
        const shared = this.sharedWelcome(serverParameters);
        socket.write(Buffer.concat([shared.bytes, keyData, READY_FOR_QUERY.I]));
      } else {
        const welcome: Buffer[] = [];
        for (const [name, value] of reported) welcome.push(createParameterStatus(name, value));
        welcome.push(keyData, READY_FOR_QUERY.I);
        socket.write(Buffer.concat(welcome));
      }

      const session = new ClientSession(socket, {
        pool,
        mode: options.poolMode,
        processId,
        secretKey,
        parameters: reported ?? this.sharedWelcome(serverParameters).parameters,
        maxMessageBytes: options.maxMessageBytes,
        hooks: this.sessionHooks,
        settings,
        cache: options.cache,
        rules: options.rules,
        metrics: options.metrics,
      });
      this.sessions.set(processId, session);
      // The session has its own 'error' listener from here on (under TLS the raw socket keeps it).
      if (socket === raw) raw.off('error', onLoginSocketError);
      session.start(result.leftover);
    } catch (err) {
      this.refuse(socket, err);
    }
  }

  private sharedWelcome(serverParameters: ReadonlyMap<string, string>): SharedWelcome {
    let shared = this.sharedWelcomes.get(serverParameters);
    if (shared === undefined) {
      const parameters = new Map(serverParameters);
      const bytes = Buffer.concat([...parameters].map(([name, value]) => createParameterStatus(name, value)));
      shared = { parameters, bytes };
      this.sharedWelcomes.set(serverParameters, shared);
    }
    return shared;
  }

  private refuse(socket: Socket, err: unknown): void {
    if (err instanceof ClientGone || socket.destroyed) return;
    this.options.metrics?.noteError(
      err instanceof ProxyError ? err.code : err instanceof UpstreamRejectedError ? err.sqlState : undefined,
    );
    let reply: Buffer;
    if (err instanceof UpstreamRejectedError) {
      reply = err.errorResponse;
    } else if (err instanceof ProxyError) {
      // Any error before ReadyForQuery ends the connection: say so (a pool's 57P03 is an ERROR).
      reply = createErrorResponse({ ...err.toErrorFields(), severity: 'FATAL' });
    } else {
      logger.error({ err }, 'internal error during login');
      reply = createErrorResponse({
        severity: 'FATAL',
        code: SqlState.InternalError,
        message: 'internal error in Sluice',
      });
    }
    socket.end(reply);
    socket.destroySoon();
  }

  private newProcessId(): number {
    for (;;) {
      const id = randomInt(1, 0x7fffffff);
      if (!this.sessions.has(id)) return id;
    }
  }

  /** Forwards a CancelRequest to whatever server connection that client uses right now. */
  private cancel(processId: number, secretKey: number): void {
    const session = this.sessions.get(processId);
    if (!session) return;
    const given = Buffer.alloc(4);
    given.writeInt32BE(secretKey);
    const expected = Buffer.alloc(4);
    expected.writeInt32BE(session.secretKey);
    if (!timingSafeEqual(given, expected)) return;
    session.server?.sendCancel();
  }

  /** Stops accepting, lets running transactions finish until the deadline, then closes the rest. */
  async shutdown(deadlineMs: number): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    this.sweeper.stop();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.pending) socket.destroy();
    for (const session of [...this.sessions.values()]) session.requestShutdown();
    const until = Date.now() + deadlineMs;
    while (this.sessions.size > 0 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const session of [...this.sessions.values()]) session.forceShutdown();
    this.options.pools.close();
    await closed;
  }
}
