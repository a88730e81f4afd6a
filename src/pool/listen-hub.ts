// Owns LISTEN/NOTIFY under transaction pooling for one (database, user): a single dedicated
// server connection LISTENs on the union of the channels clients listen on, and every
// NotificationResponse it receives is fanned out to the clients listening on that channel.
// Clients then need no server of their own between transactions.
import { serialize } from 'pg-protocol';
import { logger } from '../observe/logger.js';
import { BackendType } from '../protocol/backend-messages.js';
import { type FrameHandler, FrameReader, inspectTable } from '../protocol/frame-reader.js';
import { ServerConnection, type ServerOwner, type UpstreamTarget } from './server-connection.js';

export interface NotificationListener {
  /** A whole NotificationResponse frame (a copy the listener may keep). */
  deliverNotification(frame: Buffer): void;
  /**
   * The hub's server connection was lost: notifications sent meanwhile are gone, as they would
   * be for a client whose own connection died. The listener is forgotten on every channel.
   */
  listenerLost(err: Error): void;
}

const NOTIFY_INSPECT = inspectTable('A');

function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export class ListenHub implements ServerOwner, FrameHandler {
  private readonly channels = new Map<string, Set<NotificationListener>>();
  private server: ServerConnection | undefined;
  private connecting: Promise<ServerConnection> | undefined;
  private readonly replies: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private readonly reader: FrameReader;
  private failure: Error | undefined;

  constructor(private readonly target: UpstreamTarget) {
    this.reader = new FrameReader(NOTIFY_INSPECT, target.maxMessageBytes);
  }

  /** Resolves once the hub's server is listening on `channel`. */
  async listen(channel: string, listener: NotificationListener): Promise<void> {
    let set = this.channels.get(channel);
    const first = !set;
    if (!set) {
      set = new Set();
      this.channels.set(channel, set);
    }
    set.add(listener);
    if (first) await this.run(`LISTEN ${quoteIdentifier(channel)}`);
    else await this.ready();
  }

  unlisten(channel: string, listener: NotificationListener): void {
    const set = this.channels.get(channel);
    if (!set?.delete(listener) || set.size > 0) return;
    this.channels.delete(channel);
    this.run(`UNLISTEN ${quoteIdentifier(channel)}`).catch(() => {});
  }

  unlistenAll(listener: NotificationListener): void {
    for (const channel of [...this.channels.keys()]) this.unlisten(channel, listener);
  }

  close(): void {
    this.channels.clear();
    this.server?.close();
    this.server = undefined;
  }

  private async ready(): Promise<ServerConnection> {
    if (this.server && !this.server.closed) return this.server;
    this.connecting ??= ServerConnection.connect(this.target).then(
      (server) => {
        this.connecting = undefined;
        this.server = server;
        server.attach(this);
        // After a reconnect, listen again on everything clients still listen on.
        for (const channel of this.channels.keys())
          this.send(server, `LISTEN ${quoteIdentifier(channel)}`).catch(() => {});
        return server;
      },
      (err: Error) => {
        this.connecting = undefined;
        throw err;
      },
    );
    return this.connecting;
  }

  private async run(sql: string): Promise<void> {
    const server = await this.ready();
    await this.send(server, sql);
  }

  private send(server: ServerConnection, sql: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.replies.push({ resolve, reject });
      server.write(serialize.query(sql));
    });
  }

  // ---- the hub's server (ServerOwner) -------------------------------------------------------

  writeToClient(chunk: Buffer): boolean {
    this.reader.read(chunk, this);
    return true;
  }

  onReadyForQuery(): boolean {
    const reply = this.replies.shift();
    const failure = this.failure;
    this.failure = undefined;
    if (failure) reply?.reject(failure);
    else reply?.resolve();
    return false;
  }

  onServerReleasable(): void {}
  onCopyInResponse(): void {}
  onParseOrCloseComplete(): boolean {
    return false;
  }

  onParameterDescription(): boolean {
    return false;
  }

  onStatementDescription(): void {}

  onServerError(_fatal: boolean, fields: Readonly<Record<string, string>>): undefined {
    this.failure = new Error(`LISTEN hub query failed: ${fields.M ?? 'unknown error'}`);
    return undefined;
  }

  onServerParameterStatus(): void {}

  onServerLost(_server: ServerConnection, err: Error | undefined): void {
    logger.warn(
      { database: this.target.database, err: err?.message },
      'LISTEN hub lost its server; reconnecting',
    );
    this.server = undefined;
    const lost = err ?? new Error('LISTEN hub lost its server');
    for (const reply of this.replies.splice(0)) reply.reject(lost);
    // A listener that carried on would never learn what it missed: it goes as a client of a
    // dying server would, and listens again (on a fresh hub server) when it reconnects.
    const listeners = new Set<NotificationListener>();
    for (const set of this.channels.values()) for (const listener of set) listeners.add(listener);
    this.channels.clear();
    for (const listener of listeners) listener.listenerLost(lost);
  }

  // ---- NotificationResponse frames (FrameHandler) ---------------------------------------------

  onFrame(type: number, buf: Buffer, start: number, end: number): void {
    if (type !== BackendType.NotificationResponse) return;
    const channelEnd = buf.indexOf(0, start + 9);
    if (channelEnd < 0 || channelEnd >= end) return;
    const channel = buf.toString('utf8', start + 9, channelEnd);
    const listeners = this.channels.get(channel);
    if (!listeners) return;
    const frame = Buffer.from(buf.subarray(start, end));
    for (const listener of listeners) listener.deliverNotification(frame);
  }

  onChunkEnd(): void {}

  onBadLength(): void {
    this.server?.close();
  }
}
