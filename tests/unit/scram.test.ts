// Tests SCRAM-SHA-256 against the RFC 7677 vector, both ends against each other, and garbage input.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  formatScramVerifier,
  makeScramVerifier,
  parseScramVerifier,
  ScramClientSession,
  ScramError,
  type ScramFinalResult,
  ScramServerSession,
  type ScramVerifier,
  saslprep,
} from '../../src/protocol/scram.js';

// RFC 7677 section 3.
const RFC = {
  user: 'user',
  password: 'pencil',
  clientNonce: 'rOprNGfwEbeRWgbNEkqO',
  serverNonce: '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0',
  salt: 'W22ZaJ0SNY7soEsUEjb6gQ==',
  clientFirst: 'n,,n=user,r=rOprNGfwEbeRWgbNEkqO',
  serverFirst: 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
  clientFinal:
    'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
  serverFinal: 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
} as const;

const rfcVerifier = makeScramVerifier(RFC.password, Buffer.from(RFC.salt, 'base64'), 4096);
/** The RFC ClientKey, recovered by a server session (ClientProof XOR ClientSignature). */
const rfcClientKey = (() => {
  const server = new ScramServerSession(rfcVerifier, RFC.serverNonce);
  server.handleClientFirst(RFC.clientFirst);
  server.handleClientFinal(RFC.clientFinal);
  return server.clientKey!;
})();
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest();

/** Runs a full exchange and reports what the server decided. */
function exchange(client: ScramClientSession, server: ScramServerSession): ScramFinalResult {
  const serverFirst = server.handleClientFirst(client.clientFirst());
  return server.handleClientFinal(client.handleServerFirst(serverFirst));
}

/** Asserts `fn` either returns or throws a ScramError — never a TypeError or anything else. */
function returnsOrThrowsScramError<T>(fn: () => T): T | ScramError {
  try {
    return fn();
  } catch (err) {
    if (!(err instanceof ScramError)) throw err;
    return err;
  }
}

describe('RFC 7677 test vector', () => {
  it('the client produces the RFC client-first and client-final and accepts the server-final', () => {
    const client = new ScramClientSession(RFC.password, RFC.clientNonce, RFC.user);
    expect(client.clientFirst()).toBe(RFC.clientFirst);
    expect(client.handleServerFirst(RFC.serverFirst)).toBe(RFC.clientFinal);
    expect(() => client.verifyServerFinal(RFC.serverFinal)).not.toThrow();
  });

  it('the server, with a verifier made from the RFC salt, produces the RFC server messages', () => {
    const server = new ScramServerSession(rfcVerifier, RFC.serverNonce);
    expect(server.handleClientFirst(RFC.clientFirst)).toBe(RFC.serverFirst);
    expect(server.handleClientFinal(RFC.clientFinal)).toEqual({ ok: true, serverFinal: RFC.serverFinal });
  });

  it('the server recovers a ClientKey whose hash is the StoredKey', () => {
    const server = new ScramServerSession(rfcVerifier, RFC.serverNonce);
    expect(server.clientKey).toBeUndefined();
    server.handleClientFirst(RFC.clientFirst);
    server.handleClientFinal(RFC.clientFinal);
    const clientKey = server.clientKey;
    expect(clientKey).toBeInstanceOf(Buffer);
    expect(sha256(clientKey!).equals(rfcVerifier.storedKey)).toBe(true);
  });

  it('a client built from the recovered ClientKey and ServerKey reproduces the RFC exchange', () => {
    const server = new ScramServerSession(rfcVerifier, RFC.serverNonce);
    server.handleClientFirst(RFC.clientFirst);
    server.handleClientFinal(RFC.clientFinal);
    const client = ScramClientSession.fromKeys(
      server.clientKey!,
      rfcVerifier.serverKey,
      RFC.clientNonce,
      RFC.user,
    );
    expect(client.clientFirst()).toBe(RFC.clientFirst);
    expect(client.handleServerFirst(RFC.serverFirst)).toBe(RFC.clientFinal);
    expect(() => client.verifyServerFinal(RFC.serverFinal)).not.toThrow();
  });

  it('the server rejects the RFC client-final when its own nonce differs', () => {
    const server = new ScramServerSession(rfcVerifier, 'someOtherServerNonce');
    server.handleClientFirst(RFC.clientFirst);
    expect(server.handleClientFinal(RFC.clientFinal)).toEqual({ ok: false });
    expect(server.clientKey).toBeUndefined();
  });

  it('the server rejects the RFC client-final against another password', () => {
    const verifier = makeScramVerifier('pencil2', Buffer.from(RFC.salt, 'base64'), 4096);
    const server = new ScramServerSession(verifier, RFC.serverNonce);
    server.handleClientFirst(RFC.clientFirst);
    expect(server.handleClientFinal(RFC.clientFinal)).toEqual({ ok: false });
  });
});

describe('verifiers', () => {
  it('formats as PostgreSQL stores it and parses back', () => {
    const v = makeScramVerifier('secret');
    const text = formatScramVerifier(v);
    expect(text).toMatch(/^SCRAM-SHA-256\$4096:[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$/);
    const parsed = parseScramVerifier(text);
    expect(parsed).toBeDefined();
    expect(parsed!.iterations).toBe(4096);
    expect(parsed!.salt.equals(v.salt)).toBe(true);
    expect(parsed!.storedKey.equals(v.storedKey)).toBe(true);
    expect(parsed!.serverKey.equals(v.serverKey)).toBe(true);
    expect(formatScramVerifier(parsed!)).toBe(text);
  });

  it('uses a 16-byte random salt by default', () => {
    const a = makeScramVerifier('secret');
    const b = makeScramVerifier('secret');
    expect(a.salt.length).toBe(16);
    expect(a.salt.equals(b.salt)).toBe(false);
    expect(a.storedKey.equals(b.storedKey)).toBe(false);
  });

  it('a parsed verifier authenticates a client with the right password', () => {
    const parsed = parseScramVerifier(formatScramVerifier(makeScramVerifier('secret', undefined, 1024)))!;
    expect(exchange(new ScramClientSession('secret'), new ScramServerSession(parsed)).ok).toBe(true);
  });

  it('rejects everything that is not a well-formed SCRAM-SHA-256 secret', () => {
    const good = formatScramVerifier(rfcVerifier);
    const [, iterSalt, keys] = good.split('$') as [string, string, string];
    const [storedKey, serverKey] = keys.split(':') as [string, string];
    const salt = iterSalt.split(':')[1]!;
    const bad = [
      '',
      'secret',
      'md5' + '0'.repeat(32),
      good.replace('SCRAM-SHA-256', 'SCRAM-SHA-1'),
      good + '$',
      good + ':x',
      `SCRAM-SHA-256$0:${salt}$${keys}`,
      `SCRAM-SHA-256$-1:${salt}$${keys}`,
      `SCRAM-SHA-256$4096x:${salt}$${keys}`,
      `SCRAM-SHA-256$99999999999:${salt}$${keys}`,
      `SCRAM-SHA-256$4096:$${keys}`,
      `SCRAM-SHA-256$4096:not*base64$${keys}`,
      `SCRAM-SHA-256$4096:${salt}$${storedKey}`,
      `SCRAM-SHA-256$4096:${salt}$${storedKey.slice(4)}:${serverKey}`,
      `SCRAM-SHA-256$4096:${salt}$${storedKey}:${serverKey}AAAA`,
    ];
    for (const s of bad) expect(parseScramVerifier(s), s).toBeUndefined();
    expect(parseScramVerifier(good)).toBeDefined();
  });

  it('refuses iteration counts PostgreSQL could not store', () => {
    expect(() => makeScramVerifier('x', undefined, 0)).toThrow(RangeError);
    expect(() => makeScramVerifier('x', undefined, 1.5)).toThrow(RangeError);
    expect(() => makeScramVerifier('x', undefined, 2 ** 31)).toThrow(RangeError);
  });
});

describe('client against server', () => {
  const verifier = makeScramVerifier('correct horse', undefined, 1024);

  it('authenticates with the right password and PostgreSQL-style n=*', () => {
    const client = new ScramClientSession('correct horse');
    const server = new ScramServerSession(verifier);
    const first = client.clientFirst();
    expect(first).toMatch(/^n,,n=\*,r=[A-Za-z0-9+/]{24}$/);
    const serverFirst = server.handleClientFirst(first);
    expect(serverFirst).toMatch(/^r=[A-Za-z0-9+/]{48},s=[A-Za-z0-9+/=]+,i=1024$/);
    const result = server.handleClientFinal(client.handleServerFirst(serverFirst));
    expect(result.ok).toBe(true);
    if (result.ok) expect(() => client.verifyServerFinal(result.serverFinal)).not.toThrow();
  });

  it('fails with a wrong password', () => {
    const result = exchange(new ScramClientSession('wrong horse'), new ScramServerSession(verifier));
    expect(result).toEqual({ ok: false });
  });

  it('the client rejects a server that does not know the verifier', () => {
    // An impostor can copy the salt and iterations, but not ServerKey.
    const impostor: ScramVerifier = { ...verifier, serverKey: Buffer.alloc(32, 7) };
    const client = new ScramClientSession('correct horse');
    const server = new ScramServerSession(impostor);
    const result = server.handleClientFinal(
      client.handleServerFirst(server.handleClientFirst(client.clientFirst())),
    );
    expect(result.ok).toBe(true);
    if (result.ok) expect(() => client.verifyServerFinal(result.serverFinal)).toThrow(/signature mismatch/);
  });

  it('passes a client login through to a second server sharing the verifier', () => {
    const front = new ScramServerSession(verifier);
    expect(exchange(new ScramClientSession('correct horse'), front).ok).toBe(true);
    const upstream = ScramClientSession.fromKeys(front.clientKey!, verifier.serverKey);
    const back = new ScramServerSession(verifier);
    const result = exchange(upstream, back);
    expect(result.ok).toBe(true);
    if (result.ok) expect(() => upstream.verifyServerFinal(result.serverFinal)).not.toThrow();
  });

  it('escapes = and , in the user name it sends', () => {
    const client = new ScramClientSession('x', 'nonce', 'a=b,c');
    expect(client.clientFirst()).toBe('n,,n=a=3Db=2Cc,r=nonce');
  });

  it('base64-encodes a Buffer nonce and refuses an unprintable string nonce', () => {
    const client = new ScramClientSession('x', Buffer.alloc(18, 0xff));
    expect(client.clientFirst()).toBe('n,,n=*,r=' + Buffer.alloc(18, 0xff).toString('base64'));
    expect(() => new ScramClientSession('x', 'has,comma')).toThrow(RangeError);
    expect(() => new ScramServerSession(verifier, '')).toThrow(RangeError);
  });

  it('accepts the y,, header when its c= attribute matches', () => {
    const server = new ScramServerSession(rfcVerifier, RFC.serverNonce);
    server.handleClientFirst('y,,n=user,r=rOprNGfwEbeRWgbNEkqO');
    // The proof is bound to the header, so the RFC proof no longer matches: a clean failure.
    const final = RFC.clientFinal.replace('c=biws', 'c=eSws');
    expect(server.handleClientFinal(final)).toEqual({ ok: false });
  });

  it('accepts a passwordful round trip with a non-ASCII password', () => {
    const v = makeScramVerifier('pässwörd\u2168', undefined, 512);
    expect(exchange(new ScramClientSession('pässwördIX'), new ScramServerSession(v)).ok).toBe(true);
  });
});

describe('server rejects malformed client messages with ScramError', () => {
  const server = () => new ScramServerSession(rfcVerifier, RFC.serverNonce);
  const afterFirst = () => {
    const s = server();
    s.handleClientFirst(RFC.clientFirst);
    return s;
  };

  it.each([
    ['channel binding', 'p=tls-server-end-point,,n=,r=abc', /channel binding/],
    ['authorization identity', 'n,a=bob,n=,r=abc', /authorization identity/],
    ['unknown gs2 flag', 'x,,n=,r=abc', /GS2 header/],
    ['empty message', '', /GS2 header/],
    ['mandatory extension', 'n,,m=ext,n=,r=abc', /extension/],
    ['missing nonce', 'n,,n=', /r= attribute/],
    ['nonce before user', 'n,,r=abc,n=', /n= attribute/],
    ['empty nonce', 'n,,n=,r=', /nonce/],
    ['nonce with a control character', 'n,,n=,r=ab\u0001c', /nonce/],
    ['nonce with a space', 'n,,n=,r=ab c', /nonce/],
    ['attribute without =', 'n,,n=,r=abc,x', /malformed attribute/],
  ])('client-first-message: %s', (_name, message, error) => {
    expect(() => server().handleClientFirst(message)).toThrow(ScramError);
    expect(() => server().handleClientFirst(message)).toThrow(error);
  });

  it('accepts n=* and optional extensions after the nonce in client-first-message', () => {
    expect(server().handleClientFirst('n,,n=*,r=abc')).toMatch(/^r=abc%hvY/);
    expect(server().handleClientFirst('n,,n=,r=abc,x=ext')).toMatch(/^r=abc%hvY/);
  });

  const proof = 'p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=';
  const nonce = 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0';
  it.each([
    ['channel binding data that is not the gs2 header', `c=eSws,${nonce},${proof}`, /channel-binding/],
    [
      'channel binding data for p=',
      `c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,${nonce},${proof}`,
      /channel-binding/,
    ],
    ['no c= attribute', `${nonce},${proof}`, /c= attribute/],
    ['no r= attribute', `c=biws,${proof}`, /r= attribute/],
    ['no proof', `c=biws,${nonce}`, /proof/],
    ['garbage after the proof', `${RFC.clientFinal},x=1`, /proof/],
    ['two proofs', `c=biws,${nonce},${proof},${proof}`, /proof/],
    ['proof not base64', `c=biws,${nonce},p=****`, /proof/],
    ['proof of the wrong length', `c=biws,${nonce},p=AAAA`, /proof/],
    ['unpadded proof', RFC.clientFinal.slice(0, -1), /proof/],
    ['empty message', '', /malformed attribute/],
  ])('client-final-message: %s', (_name, message, error) => {
    expect(() => afterFirst().handleClientFinal(message)).toThrow(ScramError);
    expect(() => afterFirst().handleClientFinal(message)).toThrow(error);
  });

  it('refuses messages out of order and a second attempt on the same session', () => {
    expect(() => server().handleClientFinal(RFC.clientFinal)).toThrow(ScramError);
    const s = afterFirst();
    expect(() => s.handleClientFirst(RFC.clientFirst)).toThrow(ScramError);
    expect(s.handleClientFinal(RFC.clientFinal).ok).toBe(true);
    expect(() => s.handleClientFinal(RFC.clientFinal)).toThrow(ScramError);
    const failed = server();
    expect(() => failed.handleClientFirst('garbage')).toThrow(ScramError);
    expect(() => failed.handleClientFirst(RFC.clientFirst)).toThrow(ScramError);
  });
});

describe('client rejects malformed server messages with ScramError', () => {
  const client = () => {
    const c = new ScramClientSession(RFC.password, RFC.clientNonce, RFC.user);
    c.clientFirst();
    return c;
  };
  const salt = `s=${RFC.salt}`;
  const r = `r=${RFC.clientNonce}${RFC.serverNonce}`;

  it.each([
    ['a nonce that does not start with ours', `r=xyz${RFC.serverNonce},${salt},i=4096`, /nonce/],
    ['a nonce with nothing added', `r=${RFC.clientNonce},${salt},i=4096`, /nonce/],
    ['a nonce with a space', `${r} x,${salt},i=4096`, /nonce/],
    ['salt that is not base64', `${r},s=*salt*,i=4096`, /salt/],
    ['empty salt', `${r},s=,i=4096`, /salt/],
    ['zero iterations', `${r},${salt},i=0`, /iteration/],
    ['negative iterations', `${r},${salt},i=-1`, /iteration/],
    ['fractional iterations', `${r},${salt},i=1.5`, /iteration/],
    ['iterations with a suffix', `${r},${salt},i=4096x`, /iteration/],
    ['iterations over int32', `${r},${salt},i=2147483648`, /iteration/],
    ['missing iterations', `${r},${salt}`, /i= attribute/],
    ['attributes out of order', `${salt},${r},i=4096`, /r= attribute/],
    ['mandatory extension', `m=ext,${r},${salt},i=4096`, /extension/],
    ['an error instead', 'e=other-error', /r= attribute/],
    ['empty message', '', /malformed attribute/],
  ])('server-first-message: %s', (_name, message, error) => {
    expect(() => client().handleServerFirst(message)).toThrow(ScramError);
    expect(() => client().handleServerFirst(message)).toThrow(error);
  });

  const afterFinal = () => {
    const c = client();
    c.handleServerFirst(RFC.serverFirst);
    return c;
  };

  it.each([
    ['a server error', 'e=invalid-proof', /SCRAM server error: invalid-proof/],
    ['a wrong signature', 'v=' + Buffer.alloc(32).toString('base64'), /signature mismatch/],
    ['a short signature', 'v=AAAA', /invalid server signature/],
    ['a signature that is not base64', 'v=***', /invalid server signature/],
    ['no v= attribute', 'x=1', /v= attribute/],
    ['empty message', '', /malformed attribute/],
  ])('server-final-message: %s', (_name, message, error) => {
    expect(() => afterFinal().verifyServerFinal(message)).toThrow(ScramError);
    expect(() => afterFinal().verifyServerFinal(message)).toThrow(error);
  });

  it('refuses messages out of order', () => {
    const fresh = new ScramClientSession('x');
    expect(() => fresh.handleServerFirst(RFC.serverFirst)).toThrow(ScramError);
    expect(() => fresh.verifyServerFinal(RFC.serverFinal)).toThrow(ScramError);
    const c = afterFinal();
    expect(() => c.clientFirst()).toThrow(ScramError);
    c.verifyServerFinal(RFC.serverFinal);
    expect(() => c.verifyServerFinal(RFC.serverFinal)).toThrow(ScramError);
  });
});

describe('saslprep', () => {
  it.each([
    ['leaves ASCII alone, control characters included', 'pass\u0007word', 'pass\u0007word'],
    ['maps non-ASCII spaces to a space', 'a\u00a0b\u3000c', 'a b c'],
    ['removes characters mapped to nothing', 'I\u00adX', 'IX'],
    ['normalizes with NFKC', '\u2168\ufb01\u00aa', 'IXfia'],
    ['keeps a right-to-left string', '\u05d0\u05d1', '\u05d0\u05d1'],
    ['returns the raw password when a character is prohibited', '\u2168\ue000', '\u2168\ue000'],
    ['returns the raw password when a character is unassigned', '\u2168\u0378', '\u2168\u0378'],
    [
      'returns the raw password when right-to-left is mixed with left-to-right',
      '\u05d0\u00adx',
      '\u05d0\u00adx',
    ],
    [
      'returns the raw password when right-to-left does not end right-to-left',
      '\u0627\u00ad1',
      '\u0627\u00ad1',
    ],
    ['returns the raw password when nothing is left after mapping', '\u00ad', '\u00ad'],
    ['returns the raw password for a lone surrogate', '\u2168\ud800', '\u2168\ud800'],
  ])('%s', (_name, input, expected) => {
    expect(saslprep(input)).toBe(expected);
  });
});

/** mulberry32: a seeded generator, so a failing fuzz case can be reproduced. */
function prng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ALPHABET = ['n', 'y', 'p', 'r', 's', 'i', 'c', 'v', 'e', 'm', 'a', '=', ',', ',', '=', '*', '+', '/'];
const EXTRA = [
  '0',
  '9',
  'A',
  'z',
  ' ',
  '\u0000',
  '\u0001',
  '\u00ff',
  '\u00ad',
  '\u05d0',
  '\ud800',
  '\u{1f600}',
];

function garbage(rand: () => number, maxLength = 40): string {
  const pool = [...ALPHABET, ...EXTRA];
  const length = Math.floor(rand() * maxLength);
  let s = '';
  for (let i = 0; i < length; i++) s += pool[Math.floor(rand() * pool.length)];
  return s;
}

/** One random edit: replace, insert or delete a character, or truncate. Never a no-op. */
function mutate(rand: () => number, s: string): string {
  const pool = [...ALPHABET, ...EXTRA];
  for (;;) {
    const at = Math.floor(rand() * (s.length + 1));
    const ch = pool[Math.floor(rand() * pool.length)] ?? 'x';
    const op = Math.floor(rand() * 4);
    const out =
      op === 0
        ? s.slice(0, at) + ch + s.slice(at + 1)
        : op === 1
          ? s.slice(0, at) + ch + s.slice(at)
          : op === 2
            ? s.slice(0, at) + s.slice(at + 1)
            : s.slice(0, at);
    if (out !== s) return out;
  }
}

describe('garbage input never escapes as anything but ScramError', () => {
  const ROUNDS = 3000;
  // fromKeys clients skip PBKDF2, so a mutated i=2000000000 costs nothing.
  const clientKey = Buffer.alloc(32, 1);
  const serverKey = Buffer.alloc(32, 2);

  it('server handleClientFirst', () => {
    const rand = prng(1);
    for (let i = 0; i < ROUNDS; i++) {
      const input = i % 2 ? garbage(rand) : 'n,,' + garbage(rand);
      const out = returnsOrThrowsScramError(() =>
        new ScramServerSession(rfcVerifier).handleClientFirst(input),
      );
      if (typeof out === 'string') expect(out).toMatch(/^r=[\x21-\x2b\x2d-\x7e]+,s=.+,i=4096$/);
    }
  });

  it('server handleClientFinal: random and mutated messages never authenticate', () => {
    const rand = prng(2);
    for (let i = 0; i < ROUNDS; i++) {
      const input = i % 2 ? garbage(rand, 120) : mutate(rand, RFC.clientFinal);
      const server = new ScramServerSession(rfcVerifier, RFC.serverNonce);
      server.handleClientFirst(RFC.clientFirst);
      const out = returnsOrThrowsScramError(() => server.handleClientFinal(input));
      if (!(out instanceof ScramError)) expect(out, input).toEqual({ ok: false });
      expect(server.clientKey).toBeUndefined();
    }
  });

  it('client handleServerFirst', () => {
    const rand = prng(3);
    for (let i = 0; i < ROUNDS; i++) {
      const input = i % 2 ? garbage(rand, 120) : mutate(rand, RFC.serverFirst);
      const client = ScramClientSession.fromKeys(clientKey, serverKey, RFC.clientNonce, RFC.user);
      client.clientFirst();
      const out = returnsOrThrowsScramError(() => client.handleServerFirst(input));
      if (typeof out === 'string') expect(out).toMatch(/^c=biws,r=rOprNGfwEbeRWgbNEkqO[^,]+,p=[^,]+$/);
    }
  });

  it('client handleServerFirst with a password client on random input', () => {
    const rand = prng(4);
    for (let i = 0; i < ROUNDS; i++) {
      const client = new ScramClientSession('pencil');
      client.clientFirst();
      expect(returnsOrThrowsScramError(() => client.handleServerFirst(garbage(rand, 80)))).toBeInstanceOf(
        ScramError,
      );
    }
  });

  it('client verifyServerFinal: random and mutated messages always throw', () => {
    const rand = prng(5);
    for (let i = 0; i < ROUNDS; i++) {
      const input = i % 2 ? garbage(rand, 60) : mutate(rand, RFC.serverFinal);
      const client = ScramClientSession.fromKeys(
        rfcClientKey,
        rfcVerifier.serverKey,
        RFC.clientNonce,
        RFC.user,
      );
      client.clientFirst();
      client.handleServerFirst(RFC.serverFirst);
      expect(
        returnsOrThrowsScramError(() => client.verifyServerFinal(input)),
        input,
      ).toBeInstanceOf(ScramError);
    }
  });
});
