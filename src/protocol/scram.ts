// Owns SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it: verifiers, and both ends of the exchange.
// https://www.postgresql.org/docs/current/sasl-authentication.html
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

/** SHA-256 output size; every key, signature and proof in SCRAM-SHA-256 has this length. */
const KEY_LENGTH = 32;
/** PostgreSQL's SCRAM_DEFAULT_SALT_LEN and SCRAM_SHA_256_DEFAULT_ITERATIONS. */
const DEFAULT_SALT_LENGTH = 16;
const DEFAULT_ITERATIONS = 4096;
/** PostgreSQL stores the count in an int, and node's PBKDF2 refuses anything larger too. */
const MAX_ITERATIONS = 0x7fffffff;
/** RFC 5802 section 5.1 suggests enough randomness; 18 bytes is 24 base64 characters, as libpq sends. */
const NONCE_BYTES = 18;
const SCHEME = 'SCRAM-SHA-256';

/**
 * A malformed or out-of-order SCRAM message. Callers answer it with 08P01 (protocol violation);
 * a well-formed exchange with a wrong password is not an error but `{ ok: false }`.
 */
export class ScramError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScramError';
  }
}

/** What PostgreSQL keeps in pg_authid.rolpassword for a SCRAM-SHA-256 role. */
export type ScramVerifier = { iterations: number; salt: Buffer; storedKey: Buffer; serverKey: Buffer };

export type ScramFinalResult = { ok: true; serverFinal: string } | { ok: false };

/**
 * Channel binding over TLS (RFC 5929 tls-server-end-point): present when the server offered
 * SCRAM-SHA-256-PLUS; `selected` when the client chose it.
 */
export interface ScramChannelBinding {
  endPoint: Buffer;
  selected: boolean;
}

const CHANNEL_BINDING_TYPE = 'tls-server-end-point';

// ---------------------------------------------------------------------------------------------
// Primitives

function hmac(key: Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.allocUnsafe(a.length);
  for (let i = 0; i < a.length; i++) out[i] = (a[i] ?? 0) ^ (b[i] ?? 0);
  return out;
}

/**
 * Canonical, padded base64 only. Buffer.from(s, 'base64') skips junk, accepts base64url and
 * ignores stray trailing bits, so the only sure test is that re-encoding gives back the input.
 */
function decodeBase64(s: string): Buffer | undefined {
  const bytes = Buffer.from(s, 'base64');
  return bytes.toString('base64') === s ? bytes : undefined;
}

/** RFC 5802 `printable`: ASCII 0x21–0x7E except ','. */
const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]+$/;

function makeNonce(given: string | Buffer | undefined): string {
  if (given === undefined) return randomBytes(NONCE_BYTES).toString('base64');
  if (typeof given !== 'string') return given.toString('base64');
  // A bad explicit nonce is the caller's bug, not the peer's, hence not a ScramError.
  if (!PRINTABLE.test(given)) throw new RangeError('SCRAM nonce must be printable ASCII without commas');
  return given;
}

function parseIterations(s: string): number | undefined {
  if (!/^[1-9][0-9]{0,9}$/.test(s)) return undefined;
  const n = Number(s);
  return n <= MAX_ITERATIONS ? n : undefined;
}

// ---------------------------------------------------------------------------------------------
// SASLprep

/** C.1.2 non-ASCII spaces, mapped to U+0020. */
const NON_ASCII_SPACE: readonly number[] = [
  0x00a0, 0x00a0, 0x1680, 0x1680, 0x2000, 0x200b, 0x202f, 0x202f, 0x205f, 0x205f, 0x3000, 0x3000,
];
/** B.1 commonly mapped to nothing. */
const MAPPED_TO_NOTHING: readonly number[] = [
  0x00ad, 0x00ad, 0x034f, 0x034f, 0x1806, 0x1806, 0x180b, 0x180d, 0x200b, 0x200d, 0x2060, 0x2060, 0xfe00,
  0xfe0f, 0xfeff, 0xfeff,
];
/** C.1.2, C.2.1, C.2.2, C.3–C.9 merged, as in PostgreSQL's src/common/saslprep.c. */
const PROHIBITED: readonly number[] = [
  0x0000, 0x001f, 0x007f, 0x00a0, 0x0340, 0x0341, 0x06dd, 0x06dd, 0x070f, 0x070f, 0x1680, 0x1680, 0x180e,
  0x180e, 0x2000, 0x200f, 0x2028, 0x202f, 0x205f, 0x2063, 0x206a, 0x206f, 0x2ff0, 0x2ffb, 0x3000, 0x3000,
  0xd800, 0xf8ff, 0xfdd0, 0xfdef, 0xfeff, 0xfeff, 0xfff9, 0xffff, 0x1d173, 0x1d17a, 0xe0001, 0xe0001, 0xe0020,
  0xe007f, 0xf0000, 0x10ffff,
];
/** D.1 characters with bidirectional property R or AL (Unicode 3.2). */
const RAND_AL_CAT: readonly number[] = [
  0x05be, 0x05be, 0x05c0, 0x05c0, 0x05c3, 0x05c3, 0x05d0, 0x05ea, 0x05f0, 0x05f4, 0x061b, 0x061b, 0x061f,
  0x061f, 0x0621, 0x063a, 0x0640, 0x064a, 0x066d, 0x066f, 0x0671, 0x06d5, 0x06dd, 0x06dd, 0x06e5, 0x06e6,
  0x06fa, 0x06fe, 0x0700, 0x070d, 0x0710, 0x0710, 0x0712, 0x072c, 0x0780, 0x07a5, 0x07b1, 0x07b1, 0x200f,
  0x200f, 0xfb1d, 0xfb1d, 0xfb1f, 0xfb28, 0xfb2a, 0xfb36, 0xfb38, 0xfb3c, 0xfb3e, 0xfb3e, 0xfb40, 0xfb41,
  0xfb43, 0xfb44, 0xfb46, 0xfbb1, 0xfbd3, 0xfd3d, 0xfd50, 0xfd8f, 0xfd92, 0xfdc7, 0xfdf0, 0xfdfc, 0xfe70,
  0xfe74, 0xfe76, 0xfefc,
];
// Approximations, to avoid carrying PostgreSQL's ~750 ranges of Unicode 3.2 tables: A.1
// (unassigned) becomes today's unassigned, and D.2 (bidi L) becomes letters and spacing marks
// outside the right-to-left scripts. Only exotic passwords can tell the difference.
const UNASSIGNED = /\p{Cn}/u;
const L_CAT = /[\p{L}\p{Mc}]/u;
const RTL_SCRIPT = /[\p{Script=Hebrew}\p{Script=Arabic}\p{Script=Syriac}\p{Script=Thaana}\p{Script=Nko}]/u;
// The noncharacters U+nFFFE and U+nFFFF of every plane (C.4).
const isPlaneNonCharacter = (c: number): boolean => (c & 0xfffe) === 0xfffe;

function inTable(c: number, table: readonly number[]): boolean {
  for (let i = 0; i < table.length; i += 2) {
    if (c >= (table[i] ?? 0) && c <= (table[i + 1] ?? -1)) return true;
  }
  return false;
}

const isRandAL = (c: number): boolean => inTable(c, RAND_AL_CAT);
const isL = (c: number): boolean => {
  const ch = String.fromCodePoint(c);
  return L_CAT.test(ch) && !RTL_SCRIPT.test(ch) && !isRandAL(c);
};

/**
 * SASLprep (RFC 4013) as PostgreSQL's pg_saslprep does it, returning the raw password whenever
 * PostgreSQL would (pure ASCII, or prohibited output), because both ends must derive the same key.
 * Like PostgreSQL, the prohibition and bidi checks look at the mapped string before NFKC.
 */
export function saslprep(password: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the ASCII range is the point of the test.
  if (/^[\x00-\x7f]*$/.test(password)) return password;
  const mapped: number[] = [];
  for (const ch of password) {
    const c = ch.codePointAt(0) ?? 0;
    if (inTable(c, NON_ASCII_SPACE)) mapped.push(0x20);
    else if (!inTable(c, MAPPED_TO_NOTHING)) mapped.push(c);
  }
  if (mapped.length === 0) return password;
  for (const c of mapped) {
    if (inTable(c, PROHIBITED) || isPlaneNonCharacter(c) || UNASSIGNED.test(String.fromCodePoint(c))) {
      return password;
    }
  }
  if (mapped.some(isRandAL)) {
    const first = mapped[0] ?? 0;
    const last = mapped[mapped.length - 1] ?? 0;
    if (mapped.some(isL) || !isRandAL(first) || !isRandAL(last)) return password;
  }
  // Joined one by one: spreading a very long password into fromCodePoint would overflow the stack.
  return mapped
    .map((c) => String.fromCodePoint(c))
    .join('')
    .normalize('NFKC');
}

// ---------------------------------------------------------------------------------------------
// Verifiers

function saltedPassword(password: string, salt: Buffer, iterations: number): Buffer {
  return pbkdf2Sync(Buffer.from(saslprep(password), 'utf8'), salt, iterations, KEY_LENGTH, 'sha256');
}

function keysFromSaltedPassword(salted: Buffer): { clientKey: Buffer; serverKey: Buffer } {
  return { clientKey: hmac(salted, 'Client Key'), serverKey: hmac(salted, 'Server Key') };
}

/**
 * Derives a verifier the way CREATE ROLE … PASSWORD does under password_encryption = scram-sha-256.
 * https://www.postgresql.org/docs/current/auth-password.html
 */
export function makeScramVerifier(
  password: string,
  salt: Buffer = randomBytes(DEFAULT_SALT_LENGTH),
  iterations: number = DEFAULT_ITERATIONS,
): ScramVerifier {
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) {
    throw new RangeError(`SCRAM iteration count out of range: ${iterations}`);
  }
  const { clientKey, serverKey } = keysFromSaltedPassword(saltedPassword(password, salt, iterations));
  return { iterations, salt: Buffer.from(salt), storedKey: sha256(clientKey), serverKey };
}

/**
 * Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (pg_authid.rolpassword);
 * undefined for anything else, including MD5 hashes and plaintext.
 * https://www.postgresql.org/docs/current/catalog-pg-authid.html
 */
export function parseScramVerifier(s: string): ScramVerifier | undefined {
  const m = /^SCRAM-SHA-256\$([^:$]+):([^:$]+)\$([^:$]+):([^:$]+)$/.exec(s);
  if (!m) return undefined;
  const iterations = parseIterations(m[1] ?? '');
  const salt = decodeBase64(m[2] ?? '');
  const storedKey = decodeBase64(m[3] ?? '');
  const serverKey = decodeBase64(m[4] ?? '');
  if (iterations === undefined || !salt || salt.length === 0) return undefined;
  if (storedKey?.length !== KEY_LENGTH || serverKey?.length !== KEY_LENGTH) return undefined;
  return { iterations, salt, storedKey, serverKey };
}

/** The text form PostgreSQL stores and parseScramVerifier reads back. */
export function formatScramVerifier(v: ScramVerifier): string {
  const b64 = (b: Buffer) => b.toString('base64');
  return `${SCHEME}$${v.iterations}:${b64(v.salt)}$${b64(v.storedKey)}:${b64(v.serverKey)}`;
}

// ---------------------------------------------------------------------------------------------
// Message parsing

type Attribute = { name: string; value: string };

/** Splits `a=x,b=y` into attributes; values never contain ',' (RFC 5802 section 5.1). */
function parseAttributes(text: string, what: string): Attribute[] {
  const attributes: Attribute[] = [];
  for (const part of text.split(',')) {
    const m = /^([A-Za-z])=(.*)$/s.exec(part);
    if (!m) throw new ScramError(`malformed attribute in SCRAM ${what}`);
    attributes.push({ name: m[1] ?? '', value: m[2] ?? '' });
  }
  return attributes;
}

function requireAttribute(attributes: Attribute[], index: number, name: string, what: string): string {
  const attribute = attributes[index];
  if (attribute?.name !== name) throw new ScramError(`SCRAM ${what} lacks the ${name}= attribute`);
  return attribute.value;
}

type SessionState = 'initial' | 'first-done' | 'done';

// ---------------------------------------------------------------------------------------------
// Server side: Sluice authenticating a client.

/**
 * One SCRAM-SHA-256 exchange with a client, against a stored verifier. PostgreSQL semantics: the
 * user name comes from the StartupMessage, so the one in client-first-message is ignored, and
 * channel binding (tls-server-end-point) is checked when the session was given one.
 * https://www.postgresql.org/docs/current/sasl-authentication.html#SASL-SCRAM-SHA-256
 */
export class ScramServerSession {
  readonly #verifier: ScramVerifier;
  readonly #serverNonce: string;
  #state: SessionState = 'initial';
  #gs2Header = '';
  #clientFirstBare = '';
  #serverFirst = '';
  #nonce = '';
  #clientKey: Buffer | undefined;
  readonly #binding: ScramChannelBinding | undefined;

  /**
   * @param serverNonce our half of the nonce: a string is used verbatim (it must be printable, as
   *   in the RFC test vectors); a Buffer is taken as random bytes and base64-encoded; by default
   *   18 random bytes.
   */
  constructor(verifier: ScramVerifier, serverNonce?: string | Buffer, binding?: ScramChannelBinding) {
    if (verifier.storedKey.length !== KEY_LENGTH || verifier.serverKey.length !== KEY_LENGTH) {
      throw new RangeError('SCRAM-SHA-256 keys must be 32 bytes');
    }
    this.#verifier = verifier;
    this.#serverNonce = makeNonce(serverNonce);
    this.#binding = binding;
  }

  /**
   * ClientKey recovered from the client's proof after a successful exchange: with the verifier's
   * ServerKey it lets Sluice answer an upstream SCRAM challenge without the plaintext password.
   */
  get clientKey(): Buffer | undefined {
    return this.#clientKey;
  }

  /**
   * Reads client-first-message (the SASLInitialResponse data, gs2 header included) and returns
   * server-first-message for AuthenticationSASLContinue.
   * https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SASLINITIALRESPONSE
   */
  handleClientFirst(message: string): string {
    if (this.#state !== 'initial') throw new ScramError('unexpected SCRAM client-first-message');
    this.#state = 'done'; // until it succeeds; a failed exchange cannot be resumed.
    const gs2Header = this.#readGs2Header(message);
    const bare = message.slice(gs2Header.length);
    if (bare.startsWith('m=')) throw new ScramError('client requires an unsupported SCRAM extension');
    const attributes = parseAttributes(bare, 'client-first-message');
    // The user name is only validated as an attribute: PostgreSQL takes it from the StartupMessage.
    requireAttribute(attributes, 0, 'n', 'client-first-message');
    const clientNonce = requireAttribute(attributes, 1, 'r', 'client-first-message');
    if (!PRINTABLE.test(clientNonce)) throw new ScramError('invalid nonce in SCRAM client-first-message');
    // Optional extensions may follow; none are supported, so they are ignored, as PostgreSQL does.

    this.#gs2Header = gs2Header;
    this.#clientFirstBare = bare;
    this.#nonce = clientNonce + this.#serverNonce;
    const { salt, iterations } = this.#verifier;
    this.#serverFirst = `r=${this.#nonce},s=${salt.toString('base64')},i=${iterations}`;
    this.#state = 'first-done';
    return this.#serverFirst;
  }

  /** The GS2 header (flag, empty authzid) as PostgreSQL's read_client_first_message judges it. */
  #readGs2Header(message: string): string {
    const binding = this.#binding;
    if (message.startsWith('p=')) {
      const comma = message.indexOf(',');
      if (!binding) {
        throw new ScramError('SCRAM channel binding was requested, but only SCRAM-SHA-256 is offered');
      }
      if (!binding.selected) {
        throw new ScramError('client selected SCRAM-SHA-256 but sent channel-binding data');
      }
      if (comma < 0 || message.slice(2, comma) !== CHANNEL_BINDING_TYPE) {
        throw new ScramError('unsupported SCRAM channel-binding type');
      }
      if (message[comma + 1] !== ',') {
        if (message[comma + 1] === 'a') throw new ScramError('SCRAM authorization identity is not supported');
        throw new ScramError('malformed GS2 header in SCRAM client-first-message');
      }
      return message.slice(0, comma + 2);
    }
    const gs2Header = message.slice(0, 3);
    if (gs2Header !== 'n,,' && gs2Header !== 'y,,') {
      if (/^[ny],a=/.test(message)) throw new ScramError('SCRAM authorization identity is not supported');
      throw new ScramError('malformed GS2 header in SCRAM client-first-message');
    }
    if (binding?.selected) {
      throw new ScramError('client selected SCRAM-SHA-256-PLUS but sent no channel-binding data');
    }
    // 'y': "I could bind but think you cannot". Over TLS we offered -PLUS, so that is a downgrade.
    if (gs2Header === 'y,,' && binding) {
      throw new ScramError(
        'channel binding negotiation error: the client thinks the server does not support channel binding, but it does',
      );
    }
    return gs2Header;
  }

  /**
   * Reads client-final-message (the SASLResponse data) and checks it: `{ ok: false }` for a wrong
   * password or nonce, ScramError for anything malformed. On success serverFinal goes in
   * AuthenticationSASLFinal.
   * https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SASLRESPONSE
   */
  handleClientFinal(message: string): ScramFinalResult {
    if (this.#state !== 'first-done') throw new ScramError('unexpected SCRAM client-final-message');
    this.#state = 'done';
    const attributes = parseAttributes(message, 'client-final-message');
    const binding = requireAttribute(attributes, 0, 'c', 'client-final-message');
    const cbindInput = this.#binding?.selected
      ? Buffer.concat([Buffer.from(this.#gs2Header), this.#binding.endPoint])
      : Buffer.from(this.#gs2Header);
    if (binding !== cbindInput.toString('base64')) {
      throw new ScramError('unexpected channel-binding attribute in SCRAM client-final-message');
    }
    const nonce = requireAttribute(attributes, 1, 'r', 'client-final-message');
    const proofAttribute = attributes[attributes.length - 1];
    if (attributes.length < 3 || proofAttribute?.name !== 'p') {
      throw new ScramError('SCRAM client-final-message does not end with the proof');
    }
    if (attributes.slice(2, -1).some((a) => a.name === 'p')) {
      throw new ScramError('garbage after the proof in SCRAM client-final-message');
    }
    const proof = decodeBase64(proofAttribute.value);
    if (proof?.length !== KEY_LENGTH) throw new ScramError('malformed proof in SCRAM client-final-message');
    if (nonce !== this.#nonce) return { ok: false };

    const withoutProof = message.slice(0, message.length - proofAttribute.value.length - ',p='.length);
    const authMessage = `${this.#clientFirstBare},${this.#serverFirst},${withoutProof}`;
    const { storedKey, serverKey } = this.#verifier;
    const clientKey = xor(proof, hmac(storedKey, authMessage));
    if (!timingSafeEqual(sha256(clientKey), storedKey)) return { ok: false };
    this.#clientKey = clientKey;
    return { ok: true, serverFinal: `v=${hmac(serverKey, authMessage).toString('base64')}` };
  }
}

// ---------------------------------------------------------------------------------------------
// Client side: Sluice authenticating to an upstream PostgreSQL.

/** RFC 5802 saslname: ',' and '=' escaped. */
function saslname(user: string): string {
  return user.replaceAll('=', '=3D').replaceAll(',', '=2C');
}

/**
 * One SCRAM-SHA-256 exchange with an upstream server, without channel binding (gs2 header `n,,`).
 * https://www.postgresql.org/docs/current/sasl-authentication.html#SASL-SCRAM-SHA-256
 */
export class ScramClientSession {
  readonly #password: string;
  readonly #clientNonce: string;
  readonly #clientFirstBare: string;
  #keys: { clientKey: Buffer; serverKey: Buffer } | undefined;
  #state: SessionState | 'final-sent' = 'initial';
  #expectedServerSignature: Buffer | undefined;

  /**
   * @param clientNonce a string is used verbatim (printable, as in the RFC test vectors); a Buffer
   *   is taken as random bytes and base64-encoded; by default 18 random bytes.
   * @param user sent in client-first-message; PostgreSQL ignores it, so the default is '*'
   *   (the RFC vectors need 'user').
   */
  constructor(password: string, clientNonce?: string | Buffer, user = '*') {
    this.#password = password;
    this.#clientNonce = makeNonce(clientNonce);
    this.#clientFirstBare = `n=${saslname(user)},r=${this.#clientNonce}`;
  }

  /**
   * A session that proves knowledge of ClientKey instead of the password (the upstream verifier
   * must then share salt and iterations with the one the keys came from); ServerKey authenticates
   * the server. This is how a pooler passes a client's SCRAM login through.
   */
  static fromKeys(
    clientKey: Buffer,
    serverKey: Buffer,
    clientNonce?: string | Buffer,
    user?: string,
  ): ScramClientSession {
    if (clientKey.length !== KEY_LENGTH || serverKey.length !== KEY_LENGTH) {
      throw new RangeError('SCRAM-SHA-256 keys must be 32 bytes');
    }
    const session = new ScramClientSession('', clientNonce, user);
    session.#keys = { clientKey: Buffer.from(clientKey), serverKey: Buffer.from(serverKey) };
    return session;
  }

  /**
   * client-first-message, gs2 header included, for SASLInitialResponse.
   * https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SASLINITIALRESPONSE
   */
  clientFirst(): string {
    if (this.#state !== 'initial') throw new ScramError('SCRAM client-first-message was already sent');
    this.#state = 'first-done';
    return `n,,${this.#clientFirstBare}`;
  }

  /**
   * Reads server-first-message (AuthenticationSASLContinue) and returns client-final-message for
   * SASLResponse. Derives the salted password here, which costs `i` PBKDF2 rounds of CPU.
   * https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONSASLCONTINUE
   */
  handleServerFirst(message: string): string {
    if (this.#state !== 'first-done') throw new ScramError('unexpected SCRAM server-first-message');
    this.#state = 'done';
    if (message.startsWith('m=')) throw new ScramError('server requires an unsupported SCRAM extension');
    const attributes = parseAttributes(message, 'server-first-message');
    const nonce = requireAttribute(attributes, 0, 'r', 'server-first-message');
    const saltText = requireAttribute(attributes, 1, 's', 'server-first-message');
    const iterationsText = requireAttribute(attributes, 2, 'i', 'server-first-message');
    // Extensions after i= are allowed by RFC 5802 and ignored.
    if (!PRINTABLE.test(nonce) || !nonce.startsWith(this.#clientNonce) || nonce === this.#clientNonce) {
      throw new ScramError('SCRAM server nonce does not extend the client nonce');
    }
    const salt = decodeBase64(saltText);
    if (!salt || salt.length === 0) throw new ScramError('invalid salt in SCRAM server-first-message');
    const iterations = parseIterations(iterationsText);
    if (iterations === undefined) {
      throw new ScramError('invalid iteration count in SCRAM server-first-message');
    }

    const { clientKey, serverKey } =
      this.#keys ?? keysFromSaltedPassword(saltedPassword(this.#password, salt, iterations));
    const withoutProof = `c=${Buffer.from('n,,').toString('base64')},r=${nonce}`;
    const authMessage = `${this.#clientFirstBare},${message},${withoutProof}`;
    const proof = xor(clientKey, hmac(sha256(clientKey), authMessage));
    this.#expectedServerSignature = hmac(serverKey, authMessage);
    this.#state = 'final-sent';
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /**
   * Checks server-final-message (AuthenticationSASLFinal); throws ScramError on `e=` or when the
   * server cannot prove it knows the verifier, which must then fail the connection.
   * https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONSASLFINAL
   */
  verifyServerFinal(message: string): void {
    const expected = this.#expectedServerSignature;
    if (this.#state !== 'final-sent' || !expected) {
      throw new ScramError('unexpected SCRAM server-final-message');
    }
    this.#state = 'done';
    const attributes = parseAttributes(message, 'server-final-message');
    const first = attributes[0];
    if (first?.name === 'e') throw new ScramError(`SCRAM server error: ${first.value}`);
    const signature = decodeBase64(requireAttribute(attributes, 0, 'v', 'server-final-message'));
    if (signature?.length !== KEY_LENGTH) {
      throw new ScramError('invalid server signature in SCRAM server-final-message');
    }
    if (!timingSafeEqual(signature, expected)) throw new ScramError('SCRAM server signature mismatch');
  }
}
