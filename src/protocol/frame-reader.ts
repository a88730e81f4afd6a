// Owns splitting a byte stream of typed messages (type byte + int32 length + body) into frames
// without copying: it reads each header in place and only holds bytes back when a header, or a
// frame whose body the caller must inspect, straddles two chunks.
// https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS

/** One flag per message type byte: 1 = the handler needs the whole frame in one buffer. */
export type InspectTable = Uint8Array;

export function inspectTable(types: string): InspectTable {
  const table = new Uint8Array(256);
  for (let i = 0; i < types.length; i++) table[types.charCodeAt(i)] = 1;
  return table;
}

export interface FrameHandler {
  /**
   * Called once per frame, at its header. `buf[start]` is the type byte; the frame ends at
   * `end`, which lies beyond `buf.length` when an uninspected frame continues in later chunks.
   * Inspected frames are always whole: `end <= buf.length`.
   */
  onFrame(type: number, buf: Buffer, start: number, end: number): void;
  /**
   * Called once per chunk after its frames: bytes `[0, forwardable)` of `buf` are complete or
   * pass-through bytes; anything after is held back until the next chunk completes it.
   */
  onChunkEnd(buf: Buffer, forwardable: number): void;
  /** A header announced a length under 4 or over the maximum; nothing after `start` is valid. */
  onBadLength(buf: Buffer, start: number, length: number): void;
}

const HEADER_BYTES = 5;
/** Never pushed to: `held` is replaced by a new array whenever bytes are held back. */
const NOTHING_HELD: Buffer[] = [];

export class FrameReader {
  /** Bytes of an uninspected frame still to pass through, carried over from earlier chunks. */
  private skipBytes = 0;
  /** Bytes held back (an incomplete header or inspected frame) and how many are needed. */
  private held: Buffer[] = NOTHING_HELD;
  private heldBytes = 0;
  private heldNeed = 0;
  private broken = false;

  constructor(
    private inspected: InspectTable,
    private readonly maxMessageBytes: number,
  ) {}

  /** Changes which frames must arrive whole, from the next frame on (also within this chunk). */
  setInspectTable(table: InspectTable): void {
    this.inspected = table;
  }

  /** True when bytes are held back, so a caller can tell a clean message boundary. */
  get isMidFrame(): boolean {
    return this.skipBytes > 0 || this.heldBytes > 0;
  }

  read(chunk: Buffer, handler: FrameHandler): void {
    if (this.broken) return;
    let buf = chunk;
    if (this.heldBytes > 0) {
      this.held.push(chunk);
      this.heldBytes += chunk.length;
      if (this.heldBytes < this.heldNeed) return;
      // Copy only now, once the held frame (or header) is complete.
      buf = Buffer.concat(this.held, this.heldBytes);
      this.held = NOTHING_HELD;
      this.heldBytes = 0;
      this.heldNeed = 0;
    }
    const len = buf.length;
    let pos = 0;
    if (this.skipBytes > 0) {
      if (this.skipBytes >= len) {
        this.skipBytes -= len;
        handler.onChunkEnd(buf, len);
        return;
      }
      pos = this.skipBytes;
      this.skipBytes = 0;
    }
    while (pos < len) {
      if (len - pos < HEADER_BYTES) {
        this.holdFrom(buf, pos, HEADER_BYTES);
        handler.onChunkEnd(buf, pos);
        return;
      }
      const type = buf[pos]!;
      const length = buf.readInt32BE(pos + 1);
      if (length < 4 || length > this.maxMessageBytes) {
        this.broken = true;
        handler.onChunkEnd(buf, pos);
        handler.onBadLength(buf, pos, length);
        return;
      }
      const end = pos + 1 + length;
      if (end > len) {
        if (this.inspected[type] === 1) {
          this.holdFrom(buf, pos, end - pos);
          handler.onChunkEnd(buf, pos);
          return;
        }
        handler.onFrame(type, buf, pos, end);
        this.skipBytes = end - len;
        handler.onChunkEnd(buf, len);
        return;
      }
      handler.onFrame(type, buf, pos, end);
      pos = end;
    }
    handler.onChunkEnd(buf, len);
  }

  private holdFrom(buf: Buffer, pos: number, need: number): void {
    this.held = [buf.subarray(pos)];
    this.heldBytes = buf.length - pos;
    this.heldNeed = need;
  }
}
