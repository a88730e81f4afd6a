import { describe, expect, it } from 'vitest';
import { OutboundFrames } from '../../src/pool/outbound-frames.js';

function frame(type: string, body: string): Buffer {
  const b = Buffer.from(body);
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(4 + b.length, 1);
  return Buffer.concat([head, b]);
}

describe('OutboundFrames', () => {
  const q = frame('Q', 'select 1\0');
  const d = frame('d', 'x'.repeat(150));

  it('is at a boundary after whole messages, one or many per write', () => {
    const out = new OutboundFrames();
    expect(out.midMessage).toBe(false);
    out.advance(q);
    expect(out.midMessage).toBe(false);
    out.advance(Buffer.concat([q, d, q]));
    expect(out.midMessage).toBe(false);
  });

  it('is mid-message after part of a body, until the rest is written', () => {
    const out = new OutboundFrames();
    out.advance(Buffer.concat([q, d.subarray(0, 98)]));
    expect(out.midMessage).toBe(true);
    out.advance(d.subarray(98, 120));
    expect(out.midMessage).toBe(true);
    out.advance(Buffer.concat([d.subarray(120), q]));
    expect(out.midMessage).toBe(false);
  });

  it('follows a header split between writes', () => {
    const out = new OutboundFrames();
    const stream = Buffer.concat([q, d, q]);
    for (const cut of [1, 3, q.length + 2, q.length + 4]) {
      out.advance(stream.subarray(0, cut));
      expect(out.midMessage).toBe(true);
      out.advance(stream.subarray(cut));
      expect(out.midMessage).toBe(false);
    }
  });

  it('agrees with a byte-at-a-time walk on random splits of a stream', () => {
    const stream = Buffer.concat([q, d, frame('S', ''), d, q, frame('X', '')]);
    const boundaries = new Set<number>([0]);
    for (let pos = 0; pos < stream.length; pos += 1 + stream.readInt32BE(pos + 1)) boundaries.add(pos);
    boundaries.add(stream.length);
    let seed = 7;
    for (let round = 0; round < 200; round++) {
      const out = new OutboundFrames();
      let at = 0;
      while (at < stream.length) {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        const next = Math.min(stream.length, at + 1 + (seed % 40));
        out.advance(stream.subarray(at, next));
        at = next;
        expect(out.midMessage).toBe(!boundaries.has(at));
      }
    }
  });
});
