// Owns knowing whether the bytes written to a server so far end at a message boundary. Client
// bytes are forwarded as they arrive, so a server can hold the first part of a client's message;
// handed to another client in that state, PostgreSQL would read that client's bytes as the rest
// of the message (the fuzzer saw a canary's query swallowed that way). The pool never reuses a
// server this reports mid-message, whatever the client's own bookkeeping says.

const HEADER_BYTES = 5;

export class OutboundFrames {
  /** Body bytes of the current message not yet written. */
  private owed = 0;
  /** The first bytes of a header split between writes (Sluice's readers never split one). */
  private head: Buffer | undefined;

  get midMessage(): boolean {
    return this.owed > 0 || this.head !== undefined;
  }

  /** Walks the headers in `chunk`, a continuation of everything written before it. */
  advance(chunk: Buffer): void {
    let buf = chunk;
    if (this.head !== undefined) {
      buf = Buffer.concat([this.head, chunk]);
      this.head = undefined;
    }
    const len = buf.length;
    let pos = this.owed;
    while (pos < len) {
      if (len - pos < HEADER_BYTES) {
        this.head = Buffer.from(buf.subarray(pos));
        this.owed = 0;
        return;
      }
      pos += 1 + buf.readInt32BE(pos + 1);
    }
    this.owed = pos - len;
  }
}
