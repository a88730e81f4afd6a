// Owns collecting the bytes of one cacheable response as they are forwarded to the client, up to
// the entry size cap: past the cap it lets go of everything at once, so a huge result streams
// through with no more memory held than an uncached one.

/** ReadyForQuery 'I': the last frame of every stored entry (replayed as is to the client). */
const READY_IDLE = Buffer.from([0x5a, 0, 0, 0, 5, 0x49]);

export class ResponseCapture {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private done = false;

  constructor(
    private readonly maxBytes: number,
    /** The whole response ending in ReadyForQuery 'I', or undefined when it must not be stored. */
    private readonly onDone: (entry: Buffer | undefined) => void,
  ) {}

  get active(): boolean {
    return !this.done;
  }

  /**
   * Bytes forwarded to the client. They are kept by reference until the end: socket chunks are
   * never reused by Node, and one copy at finish() is cheaper than one per chunk.
   */
  add(bytes: Buffer): void {
    if (this.done) return;
    this.bytes += bytes.length;
    if (this.bytes > this.maxBytes) {
      this.abort();
      return;
    }
    this.chunks.push(bytes);
  }

  /** Something in the response makes it unfit to replay (an error, a notification, COPY...). */
  abort(): void {
    if (this.done) return;
    this.done = true;
    this.chunks = [];
    this.onDone(undefined);
  }

  /** The response ended with ReadyForQuery carrying `status`; its bytes were the last added. */
  finish(status: number): void {
    if (this.done) return;
    this.done = true;
    const chunks = this.chunks;
    this.chunks = [];
    if (status !== 0x49) {
      this.onDone(undefined);
      return;
    }
    const entry = Buffer.concat(chunks, this.bytes);
    // The stored entry must end in exactly the ReadyForQuery a hit replays.
    const ok = entry.length >= READY_IDLE.length && entry.subarray(entry.length - 6).equals(READY_IDLE);
    this.onDone(ok ? entry : undefined);
  }
}
