// Owns the fault-injection relay integration tests put between a client and Sluice or between
// Sluice and PostgreSQL: a TCP relay that forwards faithfully until told to delay, drop (stop
// forwarding, as a partition would), truncate (cut a message and close), reset (cut a message and
// send RST) or blackhole (accept new connections and never answer).
import { connect, createServer, type Server, type Socket } from 'node:net';

export type FaultKind = 'delay' | 'drop' | 'truncate' | 'reset' | 'blackhole';

/** Which way the fault applies: 'up' is towards the target, 'down' back towards the connector. */
export type Direction = 'up' | 'down' | 'both';

export interface FaultOptions {
  direction?: Direction;
  /** delay: milliseconds each chunk waits. Default 200. */
  delayMs?: number;
  /** truncate/reset: bytes of the next chunk still forwarded before the cut. Default 3. */
  keepBytes?: number;
}

interface Pair {
  client: Socket;
  target: Socket | undefined;
  /** Closes seen while dropping: replayed when the fault clears, as a healed partition would. */
  pendingClose: Set<Socket>;
  /** freezeOpen(): this pair forwards nothing any more, while new connections pass. */
  frozen?: boolean;
}

export class FaultRelay {
  private fault: { kind: FaultKind; options: Required<FaultOptions> } | undefined;
  private readonly pairs = new Set<Pair>();
  private readonly held = new Set<Socket>();
  /** Bytes forwarded upstream and downstream, for tests that wait for traffic. */
  bytesUp = 0;
  bytesDown = 0;
  /** Connections accepted since start. */
  accepted = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}

  static async start(target: { host: string; port: number }): Promise<FaultRelay> {
    let relay: FaultRelay | undefined;
    const server = createServer((socket) => relay?.accept(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    relay = new FaultRelay(server, port, target);
    return relay;
  }

  readonly host = '127.0.0.1';

  get connections(): number {
    return this.pairs.size;
  }

  /** Applies a fault from now on; truncate and reset cut the next chunk in `direction`. */
  set(kind: FaultKind, options: FaultOptions = {}): void {
    this.fault = {
      kind,
      options: {
        direction: options.direction ?? 'both',
        delayMs: options.delayMs ?? 200,
        keepBytes: options.keepBytes ?? 3,
      },
    };
  }

  /** Back to faithful forwarding: dropped connections see the closes they missed. */
  clear(): void {
    this.fault = undefined;
    for (const socket of this.held) socket.destroy();
    this.held.clear();
    for (const pair of this.pairs) {
      for (const closed of pair.pendingClose) {
        const other = closed === pair.client ? pair.target : pair.client;
        other?.destroy();
      }
      pair.pendingClose.clear();
      // Bytes were dropped, not delayed: the stream cannot resume, as TCP would after a partition.
      if (pair.frozen) {
        pair.client.destroy();
        pair.target?.destroy();
      }
    }
  }

  /**
   * Blackholes the connections open now and only them (a frozen server, a lost NAT entry): their
   * bytes are dropped both ways until clear(); connections made later are forwarded faithfully.
   * With `fromPort`, only the connection whose connector uses that local port.
   */
  freezeOpen(fromPort?: number): void {
    for (const pair of this.pairs) {
      if (fromPort === undefined || pair.client.remotePort === fromPort) pair.frozen = true;
    }
  }

  /** Resets every open connection, as a restarted middlebox would. */
  resetAll(): void {
    for (const pair of this.pairs) {
      pair.client.resetAndDestroy();
      pair.target?.resetAndDestroy();
    }
  }

  async stop(): Promise<void> {
    this.clear();
    this.resetAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private applies(direction: 'up' | 'down'): (Required<FaultOptions> & { kind: FaultKind }) | undefined {
    const f = this.fault;
    if (!f || (f.options.direction !== 'both' && f.options.direction !== direction)) return undefined;
    return { kind: f.kind, ...f.options };
  }

  private accept(client: Socket): void {
    this.accepted++;
    client.on('error', () => {});
    if (this.fault?.kind === 'blackhole') {
      // Accepted, never connected onwards, never answered.
      this.held.add(client);
      client.on('close', () => this.held.delete(client));
      return;
    }
    const pair: Pair = { client, target: undefined, pendingClose: new Set() };
    this.pairs.add(pair);
    client.pause();
    const target = connect(this.target);
    pair.target = target;
    target.on('error', () => {});
    target.once('connect', () => client.resume());
    this.pipe(pair, client, target, 'up');
    this.pipe(pair, target, client, 'down');
  }

  private pipe(pair: Pair, from: Socket, to: Socket, direction: 'up' | 'down'): void {
    from.on('data', (chunk: Buffer) => {
      if (pair.frozen) return;
      const fault = this.applies(direction);
      if (!fault) return this.forward(to, chunk, direction);
      switch (fault.kind) {
        case 'delay':
          from.pause();
          setTimeout(() => {
            this.forward(to, chunk, direction);
            from.resume();
          }, fault.delayMs);
          return;
        case 'drop':
        case 'blackhole':
          return;
        case 'truncate':
          this.forward(to, chunk.subarray(0, fault.keepBytes), direction);
          this.fault = undefined;
          to.end();
          from.destroy();
          return;
        case 'reset':
          this.forward(to, chunk.subarray(0, fault.keepBytes), direction);
          this.fault = undefined;
          // Let the kept bytes leave before the RST.
          setImmediate(() => {
            to.resetAndDestroy();
            from.resetAndDestroy();
          });
          return;
      }
    });
    from.on('close', () => {
      this.pairs.delete(pair);
      if (this.applies(direction)?.kind === 'drop') {
        this.pairs.add(pair);
        pair.pendingClose.add(from);
        return;
      }
      to.destroy();
    });
  }

  private forward(to: Socket, chunk: Buffer, direction: 'up' | 'down'): void {
    if (to.destroyed) return;
    if (direction === 'up') this.bytesUp += chunk.length;
    else this.bytesDown += chunk.length;
    to.write(chunk);
  }
}
