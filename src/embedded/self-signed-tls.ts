// Owns the self-signed certificate pair of the embedded default (`npm start` without an
// upstream): generated once next to the embedded data directory and reused on later starts.
import fs from 'node:fs/promises';
import path from 'node:path';

export interface CertificatePair {
  certFile: string;
  keyFile: string;
}

const CERT_NAME = 'sluice-tls.crt';
const KEY_NAME = 'sluice-tls.key';

/** Returns the pair in `dir`, creating it (key mode 0600) when either file is missing. */
export async function ensureSelfSignedPair(dir: string): Promise<CertificatePair> {
  const certFile = path.join(dir, CERT_NAME);
  const keyFile = path.join(dir, KEY_NAME);
  const present = await Promise.all(
    [certFile, keyFile].map((f) =>
      fs.access(f).then(
        () => true,
        () => false,
      ),
    ),
  );
  if (present.every(Boolean)) return { certFile, keyFile };
  // Default mode: the embedded server (another uid under root) must still enter the directory.
  await fs.mkdir(dir, { recursive: true });
  // Loaded only when a pair is made, so other commands (`sluice rules`) do not pay for it.
  const { default: selfsigned } = await import('selfsigned');
  const now = new Date();
  const pems = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], {
    keySize: 2048,
    algorithm: 'sha256',
    notBeforeDate: now,
    notAfterDate: new Date(now.getTime() + 10 * 365 * 24 * 3600 * 1000),
    extensions: [
      { name: 'basicConstraints', cA: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, keyCertSign: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: 'localhost' },
          { type: 7, ip: '127.0.0.1' },
          { type: 7, ip: '::1' },
        ],
      },
    ],
  });
  // Key first and exclusive-create-free: a crash between the two writes regenerates both next time.
  await fs.writeFile(keyFile, pems.private, { mode: 0o600 });
  await fs.writeFile(certFile, pems.cert, { mode: 0o644 });
  return { certFile, keyFile };
}
