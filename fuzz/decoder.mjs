// Owns the in-process half of the fuzzer: mutated frames straight into the decoders (FrameReader,
// frontend-messages, statement-frames, SCRAM) and mutated logins into runLogin over loopback
// sockets. A decoder that throws, or a login that fails with anything but a ProxyError or
// ClientGone, is a finding.
import { connect, createServer } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { authSeeds, startupSeeds, streamSeeds } from './corpus.mjs';
import { makeRng, mutateBytes, mutateFrames, randomChunks } from './mutate.mjs';

const DIST = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'dist');
const load = (rel) => import(pathToFileURL(path.join(DIST, rel)).href);

const { FrameReader, inspectTable } = await load('protocol/frame-reader.js');
const fm = await load('protocol/frontend-messages.js');
const sf = await load('protocol/statement-frames.js');
const { ScramServerSession, ScramError, makeScramVerifier } = await load('protocol/scram.js');
const { runLogin, ClientGone } = await load('server/client-login.js');
const { ProxyError } = await load('protocol/proxy-error.js');

const INSPECTED = inspectTable('PBDCQpFfdcHSX');
const MAX_MESSAGE_BYTES = 1 << 20;

/** Feeds one byte stream through a FrameReader in random chunks and decodes every whole frame. */
function readStream(rng, bytes) {
  const reader = new FrameReader(INSPECTED, MAX_MESSAGE_BYTES);
  let frames = 0;
  let forwarded = 0;
  let bad = false;
  const handler = {
    onFrame(type, buf, start, end) {
      frames++;
      if (buf[start] !== type) throw new Error(`onFrame type ${type} but buf[start] is ${buf[start]}`);
      if (INSPECTED[type] === 1 && end > buf.length) throw new Error('inspected frame not whole');
      if (end > buf.length) return;
      decodeFrame(type, buf, start, end);
    },
    onChunkEnd(_buf, forwardable) {
      forwarded += forwardable;
    },
    onBadLength() {
      bad = true;
    },
  };
  for (const chunk of randomChunks(rng, bytes)) reader.read(chunk, handler);
  // Without a bad length, every byte is either forwarded or held back as an incomplete frame.
  if (!bad && forwarded > bytes.length) throw new Error(`forwarded ${forwarded} of ${bytes.length} bytes`);
  if (!bad && !reader.isMidFrame && forwarded !== bytes.length) {
    throw new Error(`at a frame boundary but forwarded ${forwarded} of ${bytes.length} bytes`);
  }
  return frames;
}

function decodeFrame(type, buf, start, end) {
  switch (type) {
    case 0x50: {
      sf.peekParseName(buf, start, end);
      sf.serverStatementName(buf, start, end);
      const q = sf.parseQueryStart(buf, start, end);
      if (q >= 0) sf.parseQueryEnd(buf, q, end);
      if (q >= 0) sf.renameParse(buf, start, end, 'sluice_x');
      break;
    }
    case 0x42: {
      const b = sf.peekBindStatement(buf, start, end);
      if (b) sf.renameBind(buf, start, end, b.nameStart, b.nameEnd, 'sluice_x');
      break;
    }
    case 0x44:
    case 0x43:
      sf.peekTarget(buf, start, end);
      break;
    case 0x70:
      fm.decodePasswordMessage(buf, start, end);
      fm.decodeSASLInitialResponse(buf, start, end);
      fm.decodeSASLResponse(buf, start, end);
      break;
  }
}

const SCRAM_VERIFIER = makeScramVerifier('fuzz-password');

function scramStrings(rng) {
  const first = `n,,n=*,r=${rng.bytes(9).toString('base64')}`;
  return [Buffer.from(first), Buffer.from(`c=biws,r=x,p=${rng.bytes(32).toString('base64')}`)];
}

/** The SCRAM server's message parsers: only ScramError may come out. */
function fuzzScram(rng) {
  const [first, final] = scramStrings(rng);
  const session = new ScramServerSession(SCRAM_VERIFIER);
  const call = (fn) => {
    try {
      fn();
      return true;
    } catch (err) {
      if (!(err instanceof ScramError)) throw err;
      return false;
    }
  };
  const mFirst = rng.chance(0.8) ? mutateBytes(rng, first) : first;
  if (!call(() => session.handleClientFirst(mFirst.toString('utf8')))) return;
  const mFinal = mutateBytes(rng, final);
  call(() => session.handleClientFinal(mFinal.toString('utf8')));
}

/** Runs `count` logins through runLogin on loopback sockets, mutated startup and auth bytes. */
async function fuzzLogins(rng, count, stats) {
  let started = 0;
  let settled = 0;
  const server = createServer((socket) => {
    socket.on('error', () => {});
    started++;
    const auth = rng.pick(['trust', 'md5', 'scram-sha-256']);
    runLogin(socket, { auth, passwordOf: () => 'fuzz-password', timeoutMs: 2000 })
      .then(
        () => {},
        (err) => {
          if (!(err instanceof ProxyError || err instanceof ClientGone)) {
            stats.findings.push({
              where: 'runLogin',
              error: String(err?.stack ?? err),
              input: socket.fuzzInput,
            });
          }
        },
      )
      .finally(() => {
        settled++;
        socket.destroy();
      });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  const startups = startupSeeds('fuzz', 'fuzz');
  const auths = authSeeds();
  try {
    for (let i = 0; i < count; i++) {
      const frames = [...rng.pick(startups), ...(rng.chance(0.7) ? rng.pick(auths) : [])];
      const bytes = rng.chance(0.9) ? mutateBytes(rng, Buffer.concat(frames)) : Buffer.concat(frames);
      stats.frames += frames.length;
      await new Promise((resolve) => {
        const socket = connect(port, '127.0.0.1');
        socket.on('error', () => {});
        socket.on('data', () => {});
        // Long enough for the login to answer or refuse what it got; then we hang up mid-login.
        const timer = setTimeout(() => socket.destroy(), 30);
        socket.once('connect', () => {
          for (const chunk of randomChunks(rng, bytes)) socket.write(chunk);
        });
        socket.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    const deadline = Date.now() + 5000;
    while (settled < started && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (settled < started) {
      stats.findings.push({
        where: 'runLogin',
        error: `${started - settled} logins never settled`,
        input: '',
      });
    }
  } finally {
    server.close();
  }
}

/**
 * Runs the in-process fuzz for `frames` frames (and `logins` loopback logins). Returns
 * { frames, findings: [{ where, error, input }] }.
 */
export async function fuzzDecoders({ frames, logins, seed }) {
  const rng = makeRng(seed);
  const stats = { frames: 0, findings: [] };
  const streams = streamSeeds();
  const startups = startupSeeds('fuzz', 'fuzz');
  const auths = authSeeds();
  const donors = [...streams, ...auths];
  while (stats.frames < frames) {
    const kind = rng.int(10);
    let input;
    try {
      if (kind < 6) {
        const seedFrames = mutateFrames(rng, rng.pick(kind < 5 ? streams : auths), donors);
        input = rng.chance(0.8) ? mutateBytes(rng, Buffer.concat(seedFrames)) : Buffer.concat(seedFrames);
        stats.frames += readStream(rng, input);
      } else if (kind < 9) {
        const packet = rng.pick(startups)[rng.chance(0.5) ? 0 : 1] ?? rng.pick(startups)[0];
        input = mutateBytes(rng, packet);
        const result = fm.decodeStartupPacket(input);
        if (!['ssl', 'gssenc', 'cancel', 'startup', 'invalid'].includes(result.kind)) {
          throw new Error(`decodeStartupPacket returned kind ${result.kind}`);
        }
        stats.frames++;
      } else {
        fuzzScram(rng);
        stats.frames += 2;
      }
    } catch (err) {
      stats.findings.push({
        where: 'decoder',
        error: String(err.stack ?? err),
        input: input?.toString('hex'),
      });
      if (stats.findings.length > 20) break;
    }
  }
  if (logins > 0) await fuzzLogins(rng, logins, stats);
  return stats;
}
