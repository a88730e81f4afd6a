// Owns the fuzzer's randomness: a seeded PRNG (so a failing run can be replayed with --seed) and
// the mutators that turn a seed session (a list of frames) into hostile bytes.

/** mulberry32: small, fast, good enough for choosing mutations; deterministic per seed. */
export function makeRng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    pick: (arr) => arr[Math.floor(next() * arr.length)],
    chance: (p) => next() < p,
    bytes(n) {
      const out = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) out[i] = Math.floor(next() * 256);
      return out;
    },
  };
}

// Lengths that sit on the decoders' edges: under the 4-byte minimum, around frame sizes, the
// 8192-byte auth cap, the 10000-byte startup cap, and huge or negative values.
const INTERESTING_INTS = [
  -1,
  -2147483648,
  0,
  1,
  3,
  4,
  5,
  7,
  8,
  9,
  16,
  255,
  256,
  8191,
  8192,
  8193,
  9999,
  10000,
  10001,
  65535,
  65536,
  1 << 20,
  1 << 30,
  (1 << 30) + 1,
  0x7fffffff,
];
const INTERESTING_BYTES = [0, 1, 0x7f, 0x80, 0xff, 0x45, 0x51, 0x50, 0x58, 0x70];
// Frontend type bytes plus a few that are not.
const TYPE_BYTES = [
  0x42, 0x43, 0x64, 0x63, 0x66, 0x44, 0x45, 0x48, 0x46, 0x50, 0x70, 0x51, 0x53, 0x58, 0x00, 0x7a, 0xff,
];

/** A well-framed message of a random (possibly unknown) type with a random body. */
export function randomFrame(rng) {
  const body = rng.bytes(rng.chance(0.8) ? rng.int(16) : rng.int(300));
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = rng.chance(0.8) ? rng.pick(TYPE_BYTES) : rng.int(256);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

/** Frame-level mutations: drop, duplicate, swap, insert random frames, splice in other sessions. */
export function mutateFrames(rng, frames, donors) {
  const out = frames.slice();
  const n = rng.int(3);
  for (let i = 0; i < n; i++) {
    const at = rng.int(out.length + 1);
    switch (rng.int(5)) {
      case 0:
        if (out.length > 1) out.splice(rng.int(out.length), 1);
        break;
      case 1:
        if (out.length > 0) out.splice(at, 0, out[rng.int(out.length)]);
        break;
      case 2: {
        if (out.length < 2) break;
        const a = rng.int(out.length);
        const b = rng.int(out.length);
        [out[a], out[b]] = [out[b], out[a]];
        break;
      }
      case 3:
        out.splice(at, 0, randomFrame(rng));
        break;
      default: {
        const donor = rng.pick(donors);
        const from = rng.int(donor.length);
        out.splice(at, 0, ...donor.slice(from, from + 1 + rng.int(3)));
      }
    }
  }
  return out;
}

/** Byte-level mutations of the whole stream: flips, interesting values, length fields, cuts. */
export function mutateBytes(rng, input) {
  let buf = Buffer.from(input);
  const n = 1 + rng.int(4);
  for (let i = 0; i < n && buf.length > 0; i++) {
    const pos = rng.int(buf.length);
    switch (rng.int(8)) {
      case 0:
        buf[pos] ^= 1 << rng.int(8);
        break;
      case 1:
        buf[pos] = rng.pick(INTERESTING_BYTES);
        break;
      case 2:
        buf[pos] = rng.int(256);
        break;
      case 3:
        // Overwrites what is probably a length (any 4 bytes: the mutator does not know the layout).
        if (pos + 4 <= buf.length) buf.writeInt32BE(rng.pick(INTERESTING_INTS) | 0, pos);
        break;
      case 4:
        buf = buf.subarray(0, pos);
        break;
      case 5:
        buf = Buffer.concat([buf.subarray(0, pos), rng.bytes(1 + rng.int(8)), buf.subarray(pos)]);
        break;
      case 6:
        buf = Buffer.concat([
          buf.subarray(0, pos),
          buf.subarray(Math.min(buf.length, pos + 1 + rng.int(16))),
        ]);
        break;
      default: {
        // Repeats a slice: long runs of the same frames, or a header inside a body.
        const len = Math.min(buf.length - pos, 1 + rng.int(64));
        buf = Buffer.concat([buf.subarray(0, pos), buf.subarray(pos, pos + len), buf.subarray(pos)]);
      }
    }
  }
  return buf;
}

/** Splits bytes into chunks at random points, so frames straddle reads. */
export function randomChunks(rng, buf) {
  if (buf.length === 0 || rng.chance(0.4)) return [buf];
  const chunks = [];
  let pos = 0;
  while (pos < buf.length) {
    const size = rng.chance(0.3) ? 1 + rng.int(3) : 1 + rng.int(buf.length);
    chunks.push(buf.subarray(pos, pos + size));
    pos += size;
  }
  return chunks;
}
