// Owns decoding the frontend messages the proxy must read: the untyped startup packets
// (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) and the 'p' auth replies.
// Decoders return a ProtocolViolation description instead of throwing on malformed input.
// https://www.postgresql.org/docs/current/protocol-message-formats.html

export const FrontendType = {
  Bind: 0x42, // 'B'
  Close: 0x43, // 'C'
  CopyData: 0x64, // 'd'
  CopyDone: 0x63, // 'c'
  CopyFail: 0x66, // 'f'
  Describe: 0x44, // 'D'
  Execute: 0x45, // 'E'
  Flush: 0x48, // 'H'
  FunctionCall: 0x46, // 'F'
  Parse: 0x50, // 'P'
  PasswordMessage: 0x70, // 'p' (also SASLInitialResponse, SASLResponse)
  Query: 0x51, // 'Q'
  Sync: 0x53, // 'S'
  Terminate: 0x58, // 'X'
} as const;

export const StartupCode = {
  Protocol3: 196608, // 3 << 16
  SSLRequest: 80877103,
  GSSENCRequest: 80877104,
  CancelRequest: 80877102,
} as const;

/** StartupMessage, SSLRequest and friends are capped by PostgreSQL at 10000 bytes. */
export const MAX_STARTUP_PACKET_BYTES = 10_000;

export type StartupPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; processId: number; secretKey: number }
  | {
      kind: 'startup';
      majorVersion: number;
      minorVersion: number;
      parameters: Map<string, string>;
      /** `_pq_.` protocol options, which we do not implement and must report back. */
      protocolOptions: string[];
    }
  | { kind: 'invalid'; reason: string };

/** Decodes a whole startup-phase packet: `packet` starts with its int32 length. */
export function decodeStartupPacket(packet: Buffer): StartupPacket {
  if (packet.length < 8) return { kind: 'invalid', reason: 'invalid length of startup packet' };
  const code = packet.readInt32BE(4);
  if (code === StartupCode.SSLRequest) return { kind: 'ssl' };
  if (code === StartupCode.GSSENCRequest) return { kind: 'gssenc' };
  if (code === StartupCode.CancelRequest) {
    if (packet.length !== 16) return { kind: 'invalid', reason: 'invalid length of cancel request' };
    return { kind: 'cancel', processId: packet.readInt32BE(8), secretKey: packet.readInt32BE(12) };
  }
  const majorVersion = code >>> 16;
  const minorVersion = code & 0xffff;
  const parameters = new Map<string, string>();
  const protocolOptions: string[] = [];
  let pos = 8;
  while (pos < packet.length) {
    if (packet[pos] === 0) {
      if (pos !== packet.length - 1) return { kind: 'invalid', reason: 'invalid startup packet layout' };
      return { kind: 'startup', majorVersion, minorVersion, parameters, protocolOptions };
    }
    const nameEnd = packet.indexOf(0, pos);
    if (nameEnd < 0) break;
    const valueEnd = packet.indexOf(0, nameEnd + 1);
    if (valueEnd < 0) break;
    const name = packet.toString('utf8', pos, nameEnd);
    const value = packet.toString('utf8', nameEnd + 1, valueEnd);
    if (name.startsWith('_pq_.')) protocolOptions.push(name);
    else parameters.set(name, value);
    pos = valueEnd + 1;
  }
  return { kind: 'invalid', reason: 'invalid startup packet layout: expected terminator as last byte' };
}

/** Body of a PasswordMessage: a NUL-terminated string. */
export function decodePasswordMessage(buf: Buffer, start: number, end: number): string | undefined {
  const nul = buf.indexOf(0, start + 5);
  if (nul !== end - 1) return undefined;
  return buf.toString('utf8', start + 5, nul);
}

/** SASLInitialResponse: mechanism name, int32 length (-1 = none), data. */
export function decodeSASLInitialResponse(
  buf: Buffer,
  start: number,
  end: number,
): { mechanism: string; data: Buffer } | undefined {
  const nul = buf.indexOf(0, start + 5);
  if (nul < 0 || nul + 5 > end) return undefined;
  const mechanism = buf.toString('utf8', start + 5, nul);
  const dataLength = buf.readInt32BE(nul + 1);
  const dataStart = nul + 5;
  if (dataLength === -1) return dataStart === end ? { mechanism, data: Buffer.alloc(0) } : undefined;
  if (dataLength < 0 || dataStart + dataLength !== end) return undefined;
  return { mechanism, data: buf.subarray(dataStart, end) };
}

/** SASLResponse: the rest of the message is the mechanism data. */
export function decodeSASLResponse(buf: Buffer, start: number, end: number): Buffer {
  return buf.subarray(start + 5, end);
}
