// Tests FrameReader on a realistic backend stream split at every offset, byte by byte and into three
// chunks: frames found, inspected frames whole, forwarded bytes identical to the input; bad lengths.
import { describe, expect, it } from 'vitest';
import { type FrameHandler, FrameReader, inspectTable } from '../../src/protocol/frame-reader.js';

/** A typed frame: type byte, int32 length (counting itself), body. */
function frame(type: string, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body) : body;
  const out = Buffer.alloc(5 + b.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + b.length, 1);
  b.copy(out, 5);
  return out;
}

const cstr = (s: string): string => `${s}\0`;

/** A DataRow with `columns` text columns of `width` bytes each. */
function dataRow(columns: number, width: number): Buffer {
  const body = Buffer.alloc(2 + columns * (4 + width));
  body.writeInt16BE(columns, 0);
  let pos = 2;
  for (let c = 0; c < columns; c++) {
    body.writeInt32BE(width, pos);
    pos += 4;
    for (let i = 0; i < width; i++) body[pos + i] = 0x61 + ((c + i) % 26);
    pos += width;
  }
  return frame('D', body);
}

function errorResponse(code: string, message: string): Buffer {
  return frame('E', `S${cstr('ERROR')}V${cstr('ERROR')}C${cstr(code)}M${cstr(message)}\0`);
}

/** What a backend sends after a login and two queries, one failing. */
const FRAMES: Buffer[] = [
  frame('S', cstr('server_version') + cstr('17.2')),
  frame('S', cstr('application_name') + cstr('x'.repeat(700))), // an inspected frame that straddles often
  frame('K', Buffer.from([0, 0, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef])),
  frame('Z', 'I'), // 6 bytes
  frame('1'), // ParseComplete: an empty body, 5 bytes
  frame('2'),
  dataRow(3, 1200), // a few KB, not inspected
  dataRow(1, 0),
  frame('C', cstr('SELECT 2')),
  frame('Z', 'T'),
  errorResponse('42P01', 'relation "nope" does not exist'),
  frame('Z', 'E'),
  frame('N', `S${cstr('NOTICE')}M${cstr('hello')}\0`),
  frame('C', cstr('ROLLBACK')),
  frame('Z', 'I'),
];
const STREAM = Buffer.concat(FRAMES);
const INSPECTED_TYPES = 'ZSE';
const INSPECT = inspectTable(INSPECTED_TYPES);
const MAX = 64 * 1024;

const EXPECTED = FRAMES.map((f) => ({ type: f[0]!, length: f.length }));
/** Offsets in STREAM where one frame ends and the next begins (0 and STREAM.length included). */
const BOUNDARIES = new Set<number>([0]);
{
  let at = 0;
  for (const f of FRAMES) {
    at += f.length;
    BOUNDARIES.add(at);
  }
}

interface Outcome {
  frames: { type: number; length: number }[];
  forwarded: Buffer;
  badLengths: { type: number; length: number; forwardedBefore: number }[];
  callsAfterBad: number;
}

/**
 * Feeds `chunks` to a fresh FrameReader through a handler that behaves like a forwarding proxy: on
 * each onChunkEnd it forwards `buf.subarray(lastPos, forwardable)`, with lastPos 0 for each buffer.
 * Checks per call that inspected frames are whole and match the original bytes, that uninspected
 * frames match as far as they are present, and that isMidFrame tracks frame boundaries.
 */
function run(chunks: readonly Buffer[], options: { original?: Buffer; max?: number } = {}): Outcome {
  const original = options.original ?? STREAM;
  const reader = new FrameReader(INSPECT, options.max ?? MAX);
  const out: Outcome = { frames: [], forwarded: Buffer.alloc(0), badLengths: [], callsAfterBad: 0 };
  const runs: Buffer[] = [];
  let forwardedBytes = 0;
  /** Where in `original` the current frame starts, computed from the frames seen so far. */
  let frameOffset = 0;
  let chunkEnds = 0;
  const handler: FrameHandler = {
    onFrame(type, buf, start, end) {
      if (out.badLengths.length > 0) out.callsAfterBad++;
      check(buf[start] === type, 'onFrame: buf[start] is not the type byte');
      check(end >= start + 5, `onFrame: end ${end} before the header's end`);
      const length = end - start;
      out.frames.push({ type, length });
      const expected = original.subarray(frameOffset, frameOffset + length);
      if (INSPECT[type] === 1) {
        check(end <= buf.length, `inspected frame ${String.fromCharCode(type)} not whole`);
        // Copy now: the handler may only rely on the bytes during the call.
        const copy = Buffer.from(buf.subarray(start, end));
        check(
          copy.equals(expected),
          `inspected frame ${String.fromCharCode(type)} differs from the original`,
        );
      } else {
        const present = buf.subarray(start, Math.min(end, buf.length));
        check(present.equals(expected.subarray(0, present.length)), 'uninspected frame prefix differs');
      }
      frameOffset += length;
    },
    onChunkEnd(buf, forwardable) {
      if (out.badLengths.length > 0) out.callsAfterBad++;
      chunkEnds++;
      check(forwardable >= 0 && forwardable <= buf.length, `forwardable ${forwardable} out of range`);
      const lastPos = 0;
      // Kept by reference, as socket.write would: the reader must never change a handed-out buffer.
      runs.push(buf.subarray(lastPos, forwardable));
      forwardedBytes += forwardable - lastPos;
    },
    onBadLength(buf, start, length) {
      if (out.badLengths.length > 0) out.callsAfterBad++;
      check(buf.readInt32BE(start + 1) === length, 'onBadLength: length differs from the header');
      out.badLengths.push({ type: buf[start]!, length, forwardedBefore: forwardedBytes });
    },
  };
  let fed = 0;
  for (const chunk of chunks) {
    const before = chunkEnds;
    reader.read(chunk, handler);
    check(chunkEnds - before <= 1, 'onChunkEnd called more than once for one chunk');
    fed += chunk.length;
    if (out.badLengths.length === 0 && original === STREAM) {
      check(reader.isMidFrame === !BOUNDARIES.has(fed), `isMidFrame wrong after ${fed} bytes`);
    }
  }
  out.forwarded = Buffer.concat(runs);
  return out;
}

/** Plain check for the inner loops: expect() per frame makes the every-offset sweeps too slow. */
function check(condition: boolean, message: string): void {
  if (!condition) throw new Error(message);
}

function splitAt(buf: Buffer, ...offsets: number[]): Buffer[] {
  const chunks: Buffer[] = [];
  let prev = 0;
  for (const o of offsets) {
    chunks.push(buf.subarray(prev, o));
    prev = o;
  }
  chunks.push(buf.subarray(prev));
  return chunks;
}

/** Copies each chunk into its own allocation, as sockets deliver them. */
function detached(chunks: Buffer[]): Buffer[] {
  return chunks.map((c) => Buffer.from(c));
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Asserts a clean parse; `where` names the split so a failure says which one. */
function expectClean(out: Outcome, where = 'one chunk'): void {
  const framesOk =
    out.frames.length === EXPECTED.length &&
    out.frames.every((f, i) => f.type === EXPECTED[i]!.type && f.length === EXPECTED[i]!.length);
  if (framesOk && out.badLengths.length === 0 && out.forwarded.equals(STREAM)) return;
  expect({ where, frames: out.frames, badLengths: out.badLengths }).toEqual({
    where,
    frames: EXPECTED,
    badLengths: [],
  });
  expect(out.forwarded.length, where).toBe(STREAM.length);
  expect(out.forwarded.equals(STREAM), where).toBe(true);
}

describe('inspectTable', () => {
  it('flags exactly the listed type bytes', () => {
    const table = inspectTable('ZSE');
    expect(table.length).toBe(256);
    const flagged = [...table.keys()].filter((i) => table[i] === 1).map((i) => String.fromCharCode(i));
    expect(flagged.sort()).toEqual(['E', 'S', 'Z']);
  });

  it('flags nothing for an empty list', () => {
    expect(inspectTable('').every((v) => v === 0)).toBe(true);
  });
});

describe('FrameReader on a backend stream', () => {
  it('finds every frame and forwards the whole stream when it arrives in one chunk', () => {
    expect(STREAM.length).toBeGreaterThan(4000);
    expectClean(run([STREAM]));
  });

  it('gives the same frames and forwards identical bytes when split into two chunks at every offset', () => {
    for (let i = 0; i <= STREAM.length; i++) expectClean(run(detached(splitAt(STREAM, i))), `split at ${i}`);
  });

  it('also works when both chunks are views of one shared buffer', () => {
    for (let i = 0; i <= STREAM.length; i += 7) expectClean(run(splitAt(STREAM, i)), `split at ${i}`);
  });

  it('gives the same frames and bytes when fed byte by byte', () => {
    const chunks: Buffer[] = [];
    for (let i = 0; i < STREAM.length; i++) chunks.push(Buffer.from(STREAM.subarray(i, i + 1)));
    expectClean(run(chunks));
  });

  it('gives the same frames and bytes for three chunks at sampled offset pairs', () => {
    const pairs: [number, number][] = [];
    // Every pair of offsets around frame boundaries (headers split two ways)…
    const near: number[] = [];
    for (const b of BOUNDARIES)
      for (let d = -2; d <= 6; d++) if (b + d >= 0 && b + d <= STREAM.length) near.push(b + d);
    for (const a of near) for (const b of near) if (a <= b) pairs.push([a, b]);
    // …plus random pairs anywhere.
    const rand = mulberry32(0x5eed);
    for (let k = 0; k < 3000; k++) {
      const a = Math.floor(rand() * (STREAM.length + 1));
      const b = Math.floor(rand() * (STREAM.length + 1));
      pairs.push(a <= b ? [a, b] : [b, a]);
    }
    for (const [a, b] of pairs) expectClean(run(detached(splitAt(STREAM, a, b))), `split at ${a}, ${b}`);
  });

  it('gives the same frames and bytes for random chunk sizes, including empty chunks', () => {
    const rand = mulberry32(42);
    for (let round = 0; round < 300; round++) {
      const offsets: number[] = [];
      let at = 0;
      while (at < STREAM.length) {
        at = Math.min(STREAM.length, at + Math.floor(rand() * rand() * 900));
        offsets.push(at);
      }
      expectClean(run(detached(splitAt(STREAM, ...offsets))), `split at ${offsets.join(',')}`);
    }
  });

  it('reports an uninspected frame once, at its header, with an end beyond the chunk', () => {
    const row = dataRow(2, 500);
    const seen: [number, number, number][] = [];
    const reader = new FrameReader(INSPECT, MAX);
    const handler: FrameHandler = {
      onFrame: (type, buf, start, end) => seen.push([type, end - start, end - buf.length]),
      onChunkEnd: () => {},
      onBadLength: () => expect.fail('no bad length expected'),
    };
    reader.read(row.subarray(0, 100), handler);
    expect(reader.isMidFrame).toBe(true);
    reader.read(row.subarray(100, 600), handler);
    expect(reader.isMidFrame).toBe(true);
    reader.read(row.subarray(600), handler);
    expect(reader.isMidFrame).toBe(false);
    expect(seen).toEqual([[0x44, row.length, row.length - 100]]);
  });

  it('holds an inspected frame back until it is whole and forwards nothing of it before', () => {
    const z = frame('Z', 'T');
    const reader = new FrameReader(INSPECT, MAX);
    const events: string[] = [];
    const handler: FrameHandler = {
      onFrame: (type, buf, start, end) =>
        events.push(`frame ${String.fromCharCode(type)} ${buf.subarray(start, end).toString('latin1')}`),
      onChunkEnd: (_buf, forwardable) => events.push(`forward ${forwardable}`),
      onBadLength: () => expect.fail('no bad length expected'),
    };
    reader.read(z.subarray(0, 3), handler);
    expect(reader.isMidFrame).toBe(true);
    reader.read(z.subarray(3, 5), handler);
    expect(reader.isMidFrame).toBe(true);
    reader.read(z.subarray(5), handler);
    expect(reader.isMidFrame).toBe(false);
    expect(events).toEqual([
      'forward 0',
      // The header completed but the frame did not: held again, nothing forwardable.
      'forward 0',
      `frame Z ${z.toString('latin1')}`,
      'forward 6',
    ]);
  });

  it('is not mid-frame at a boundary and mid-frame inside a header', () => {
    const reader = new FrameReader(INSPECT, MAX);
    const handler: FrameHandler = { onFrame: () => {}, onChunkEnd: () => {}, onBadLength: () => {} };
    expect(reader.isMidFrame).toBe(false);
    const c = frame('C', cstr('SELECT 1'));
    reader.read(c.subarray(0, 1), handler);
    expect(reader.isMidFrame).toBe(true);
    reader.read(c.subarray(1), handler);
    expect(reader.isMidFrame).toBe(false);
    reader.read(Buffer.alloc(0), handler);
    expect(reader.isMidFrame).toBe(false);
  });

  it('forwards nothing and reports nothing for an empty chunk', () => {
    const out = run([Buffer.alloc(0)], { original: Buffer.alloc(0) });
    expect(out.frames).toEqual([]);
    expect(out.forwarded.length).toBe(0);
  });
});

describe('FrameReader on invalid lengths', () => {
  // Frames before the bad header: one inspected, one large uninspected, one inspected.
  const before = [frame('S', cstr('TimeZone') + cstr('UTC')), dataRow(2, 900), frame('Z', 'I')];
  const prefix = Buffer.concat(before);
  const after = Buffer.concat([frame('C', cstr('SELECT 1')), frame('Z', 'I')]);
  const max = 8192;

  function badHeader(type: string, length: number): Buffer {
    const h = Buffer.alloc(5);
    h[0] = type.charCodeAt(0);
    h.writeInt32BE(length, 1);
    return h;
  }

  const cases: [string, string, number][] = [
    ['length 3', 'D', 3],
    ['length 0', 'D', 0],
    ['length -1', 'C', -1],
    ['the most negative length', 'D', -(2 ** 31)],
    ['one over maxMessageBytes', 'D', max + 1],
    ['a huge length on an inspected type', 'E', 0x7fffffff],
    ['length 3 on an inspected type', 'Z', 3],
  ];

  for (const [name, type, length] of cases) {
    it(`reports ${name} once, after forwarding the frames before it, at every split`, () => {
      const stream = Buffer.concat([prefix, badHeader(type, length), after]);
      const expectedFrames = before.map((f) => ({ type: f[0]!, length: f.length }));
      for (let i = 0; i <= stream.length; i++) {
        const out = run(detached(splitAt(stream, i)), { original: stream, max });
        expect(out.badLengths).toEqual([
          { type: type.charCodeAt(0), length, forwardedBefore: prefix.length },
        ]);
        expect(out.frames).toEqual(expectedFrames);
        expect(out.forwarded.equals(prefix)).toBe(true);
        expect(out.callsAfterBad).toBe(0);
      }
    });
  }

  it('reports a bad header split byte by byte', () => {
    const stream = Buffer.concat([prefix, badHeader('D', 2), after]);
    const chunks: Buffer[] = [];
    for (let i = 0; i < stream.length; i++) chunks.push(Buffer.from(stream.subarray(i, i + 1)));
    const out = run(chunks, { original: stream, max });
    expect(out.badLengths).toEqual([{ type: 0x44, length: 2, forwardedBefore: prefix.length }]);
    expect(out.forwarded.equals(prefix)).toBe(true);
    expect(out.callsAfterBad).toBe(0);
  });

  it('reports a bad header split over three chunks inside its length bytes', () => {
    const stream = Buffer.concat([prefix, badHeader('D', max + 1), after]);
    for (let a = prefix.length; a <= prefix.length + 5; a++) {
      for (let b = a; b <= prefix.length + 5; b++) {
        const out = run(detached(splitAt(stream, a, b)), { original: stream, max });
        expect(out.badLengths).toEqual([{ type: 0x44, length: max + 1, forwardedBefore: prefix.length }]);
        expect(out.forwarded.equals(prefix)).toBe(true);
        expect(out.callsAfterBad).toBe(0);
      }
    }
  });

  it('accepts length 4 (an empty body) and exactly maxMessageBytes', () => {
    const body = Buffer.alloc(max - 4, 0x78);
    const stream = Buffer.concat([frame('1'), frame('D', body), frame('Z', 'I')]);
    for (const at of [0, 3, 5, 6, 100, stream.length - 1]) {
      const out = run(detached(splitAt(stream, at)), { original: stream, max });
      expect(out.badLengths).toEqual([]);
      expect(out.frames).toEqual([
        { type: 0x31, length: 5 },
        { type: 0x44, length: max + 1 },
        { type: 0x5a, length: 6 },
      ]);
      expect(out.forwarded.equals(stream)).toBe(true);
    }
  });

  it('stays silent on every later chunk once a bad length was seen', () => {
    const reader = new FrameReader(INSPECT, max);
    let calls = 0;
    const handler: FrameHandler = {
      onFrame: () => calls++,
      onChunkEnd: () => calls++,
      onBadLength: () => calls++,
    };
    reader.read(badHeader('Q', 1), handler);
    expect(calls).toBe(2); // onChunkEnd(buf, 0) then onBadLength
    reader.read(STREAM, handler);
    reader.read(frame('Z', 'I'), handler);
    expect(calls).toBe(2);
  });
});
