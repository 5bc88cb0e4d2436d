// A PKCS#12 (PFX) reader for service-principal certificates: the private key and the
// certificate that matches it. Node's crypto has no PKCS#12 parser, and a library for it
// (node-forge, @peculiar/*) weighs more than this file. What it reads (RFC 7292):
// - the MAC (HMAC with the PKCS#12 KDF, SHA-1 or SHA-2): a wrong password is said as such;
// - bags encrypted with PBES2 (PBKDF2 + AES-CBC or 3DES, OpenSSL 3's default) or with
//   pbeWithSHAAnd3-KeyTripleDES-CBC (the PKCS#12 KDF; what Key Vault and Windows export);
// - RC2-40 (OpenSSL 1.1's default, `-legacy`) is refused by name: Node's OpenSSL 3 has no RC2
//   outside the legacy provider.
// DER only (definite lengths), as every exporter named above writes; BER is refused by name.
import { createDecipheriv, createHash, createHmac, createPrivateKey, pbkdf2Sync, timingSafeEqual, X509Certificate, type KeyObject } from 'node:crypto';

export interface Pkcs12Contents {
  readonly key: KeyObject;
  readonly certificateDer: Buffer;
}

export class Pkcs12Error extends Error {
  override name = 'Pkcs12Error';
}

const OID = {
  data: '1.2.840.113549.1.7.1',
  encryptedData: '1.2.840.113549.1.7.6',
  keyBag: '1.2.840.113549.1.12.10.1.1',
  shroudedKeyBag: '1.2.840.113549.1.12.10.1.2',
  certBag: '1.2.840.113549.1.12.10.1.3',
  x509Certificate: '1.2.840.113549.1.9.22.1',
  pbes2: '1.2.840.113549.1.5.13',
  pbkdf2: '1.2.840.113549.1.5.12',
  pbeSha1TripleDes: '1.2.840.113549.1.12.1.3',
  pbeSha1Rc2_40: '1.2.840.113549.1.12.1.6',
  pbeSha1Rc2_128: '1.2.840.113549.1.12.1.5',
  pbeSha1Rc4_128: '1.2.840.113549.1.12.1.1',
  pbmac1: '1.2.840.113549.1.5.14',
} as const;

const HASHES: Record<string, string> = {
  '1.3.14.3.2.26': 'sha1', '2.16.840.1.101.3.4.2.1': 'sha256', '2.16.840.1.101.3.4.2.2': 'sha384', '2.16.840.1.101.3.4.2.3': 'sha512',
};
const PRFS: Record<string, string> = {
  '1.2.840.113549.2.7': 'sha1', '1.2.840.113549.2.9': 'sha256', '1.2.840.113549.2.10': 'sha384', '1.2.840.113549.2.11': 'sha512',
};
const CIPHERS: Record<string, { name: string; keyLength: number }> = {
  '2.16.840.1.101.3.4.1.2': { name: 'aes-128-cbc', keyLength: 16 },
  '2.16.840.1.101.3.4.1.22': { name: 'aes-192-cbc', keyLength: 24 },
  '2.16.840.1.101.3.4.1.42': { name: 'aes-256-cbc', keyLength: 32 },
  '1.2.840.113549.3.7': { name: 'des-ede3-cbc', keyLength: 24 },
};
const LEGACY: Record<string, string> = {
  [OID.pbeSha1Rc2_40]: 'pbeWithSHAAnd40BitRC2-CBC (RC2-40, OpenSSL 1.1\'s default and `openssl pkcs12 -legacy`)',
  [OID.pbeSha1Rc2_128]: 'pbeWithSHAAnd128BitRC2-CBC (RC2-128)',
  [OID.pbeSha1Rc4_128]: 'pbeWithSHAAnd128BitRC4 (RC4)',
};
const RE_EXPORT = 're-export it with AES (OpenSSL 3: `openssl pkcs12 -export`) or 3DES (`-certpbe PBE-SHA1-3DES -keypbe PBE-SHA1-3DES -macalg sha1`)';

// ---- DER ----

interface Tlv {
  readonly tag: number;
  readonly start: number;
  readonly end: number;
  readonly next: number;
}

function tlv(buf: Buffer, pos: number, limit = buf.length): Tlv {
  if (pos + 2 > limit) throw new Pkcs12Error('truncated DER');
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) throw new Pkcs12Error('DER tags above 30 are not used by PKCS#12');
  let len = buf[pos + 1]!;
  let start = pos + 2;
  if (len === 0x80) throw new Pkcs12Error('BER indefinite lengths are not supported; ' + RE_EXPORT);
  if (len > 0x80) {
    const n = len & 0x7f;
    if (n > 4 || start + n > limit) throw new Pkcs12Error('bad DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[start + i]!;
    start += n;
  }
  const end = start + len;
  if (end > limit) throw new Pkcs12Error('truncated DER');
  return { tag, start, end, next: end };
}

function children(buf: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let pos = parent.start; pos < parent.end;) {
    const c = tlv(buf, pos, parent.end);
    out.push(c);
    pos = c.next;
  }
  return out;
}

function expect(buf: Buffer, t: Tlv | undefined, tag: number, what: string): Tlv {
  if (t === undefined || t.tag !== tag) throw new Pkcs12Error(`${what}: unexpected structure`);
  return t;
}

function seq(buf: Buffer, t: Tlv | undefined, what: string): Tlv[] {
  return children(buf, expect(buf, t, 0x30, what));
}

function oid(buf: Buffer, t: Tlv | undefined): string {
  const o = expect(buf, t, 0x06, 'OID');
  const bytes = buf.subarray(o.start, o.end);
  const parts: number[] = [];
  let v = 0;
  for (const b of bytes) {
    v = v * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      if (parts.length === 0) parts.push(v < 80 ? Math.floor(v / 40) : 2, v < 80 ? v % 40 : v - 80);
      else parts.push(v);
      v = 0;
    }
  }
  return parts.join('.');
}

function int(buf: Buffer, t: Tlv | undefined): number {
  const i = expect(buf, t, 0x02, 'INTEGER');
  if (i.end - i.start > 4) throw new Pkcs12Error('INTEGER too large');
  let v = 0;
  for (let p = i.start; p < i.end; p++) v = v * 256 + buf[p]!;
  return v;
}

/** An OCTET STRING's bytes; a constructed one (BER-style, from some exporters) is joined. */
function octets(buf: Buffer, t: Tlv | undefined, tag = 0x04): Buffer {
  if (t === undefined) throw new Pkcs12Error('missing OCTET STRING');
  if (t.tag === tag) return buf.subarray(t.start, t.end);
  if (t.tag === (tag | 0x20)) return Buffer.concat(children(buf, t).map((c) => octets(buf, c, 0x04)));
  throw new Pkcs12Error('OCTET STRING: unexpected structure');
}

/** [0] EXPLICIT content. */
function explicit0(buf: Buffer, t: Tlv | undefined, what: string): Tlv {
  const wrapper = expect(buf, t, 0xa0, what);
  return tlv(buf, wrapper.start, wrapper.end);
}

// ---- key derivation and decryption ----

function bmpPassword(password: string): Buffer {
  const out = Buffer.alloc((password.length + 1) * 2);
  for (let i = 0; i < password.length; i++) out.writeUInt16BE(password.charCodeAt(i), i * 2);
  return out;
}

/** RFC 7292 appendix B.2: id 1 key, 2 IV, 3 MAC key. */
function pkcs12Kdf(hash: string, password: string, salt: Buffer, iterations: number, id: number, n: number): Buffer {
  const u = createHash(hash).digest().length;
  const v = hash === 'sha384' || hash === 'sha512' ? 128 : 64;
  const fill = (src: Buffer): Buffer => {
    if (src.length === 0) return Buffer.alloc(0);
    const out = Buffer.alloc(v * Math.ceil(src.length / v));
    for (let i = 0; i < out.length; i++) out[i] = src[i % src.length]!;
    return out;
  };
  const D = Buffer.alloc(v, id);
  const I = Buffer.concat([fill(salt), fill(bmpPassword(password))]);
  const out: Buffer[] = [];
  for (let got = 0; got < n; got += u) {
    let A = createHash(hash).update(D).update(I).digest();
    for (let r = 1; r < iterations; r++) A = createHash(hash).update(A).digest();
    out.push(A);
    const B = Buffer.alloc(v);
    for (let i = 0; i < v; i++) B[i] = A[i % u]!;
    for (let j = 0; j < I.length; j += v) {
      let carry = 1;
      for (let k = v - 1; k >= 0; k--) {
        const sum = I[j + k]! + B[k]! + carry;
        I[j + k] = sum & 0xff;
        carry = sum >> 8;
      }
    }
  }
  return Buffer.concat(out).subarray(0, n);
}

function decrypt(buf: Buffer, algorithm: Tlv, data: Buffer, password: string): Buffer {
  const [algOid, params] = seq(buf, algorithm, 'encryption algorithm');
  const alg = oid(buf, algOid);
  try {
    if (alg === OID.pbeSha1TripleDes) {
      const [salt, iter] = seq(buf, params, 'PBE parameters');
      const s = octets(buf, salt);
      const n = int(buf, iter);
      const key = pkcs12Kdf('sha1', password, s, n, 1, 24);
      const iv = pkcs12Kdf('sha1', password, s, n, 2, 8);
      return decipher('des-ede3-cbc', key, iv, data);
    }
    if (alg === OID.pbes2) {
      const [kdf, scheme] = seq(buf, params, 'PBES2 parameters');
      const [kdfOid, kdfParams] = seq(buf, kdf, 'PBES2 key derivation');
      if (oid(buf, kdfOid) !== OID.pbkdf2) throw new Pkcs12Error('PBES2 with a key derivation other than PBKDF2 is not supported');
      const p = seq(buf, kdfParams, 'PBKDF2 parameters');
      const salt = octets(buf, p[0]);
      const iterations = int(buf, p[1]);
      let prf = 'sha1';
      for (const extra of p.slice(2)) if (extra.tag === 0x30) prf = PRFS[oid(buf, children(buf, extra)[0])] ?? '';
      if (prf === '') throw new Pkcs12Error('PBKDF2 with an unknown PRF');
      const [cipherOid, ivT] = seq(buf, scheme, 'PBES2 encryption scheme');
      const cipher = CIPHERS[oid(buf, cipherOid)];
      if (cipher === undefined) throw new Pkcs12Error(`PBES2 with cipher ${oid(buf, cipherOid)} is not supported; ${RE_EXPORT}`);
      const key = pbkdf2Sync(Buffer.from(password, 'utf8'), salt, iterations, cipher.keyLength, prf);
      return decipher(cipher.name, key, octets(buf, ivT), data);
    }
  } catch (err) {
    if (err instanceof Pkcs12Error) throw err;
    throw new Pkcs12Error('a bag could not be decrypted: wrong password or damaged file');
  }
  const legacy = LEGACY[alg];
  if (legacy !== undefined) throw new Pkcs12Error(`the PKCS#12 file is encrypted with ${legacy}, which Node's crypto cannot decrypt; ${RE_EXPORT}`);
  throw new Pkcs12Error(`the PKCS#12 file is encrypted with ${alg}, which is not supported; ${RE_EXPORT}`);
}

function decipher(name: string, key: Buffer, iv: Buffer, data: Buffer): Buffer {
  const d = createDecipheriv(name, key, iv);
  return Buffer.concat([d.update(data), d.final()]);
}

// ---- the file ----

function checkMac(buf: Buffer, macData: Tlv, content: Buffer, password: string): void {
  const [digestInfo, saltT, iterT] = seq(buf, macData, 'MacData');
  const [algId, digestT] = seq(buf, digestInfo, 'MAC DigestInfo');
  const algOid = oid(buf, seq(buf, algId, 'MAC algorithm')[0]);
  if (algOid === OID.pbmac1) throw new Pkcs12Error(`the PKCS#12 MAC is PBMAC1, which is not supported; ${RE_EXPORT}`);
  const hash = HASHES[algOid];
  if (hash === undefined) throw new Pkcs12Error(`the PKCS#12 MAC uses ${algOid}, which is not supported`);
  const iterations = iterT === undefined ? 1 : int(buf, iterT);
  const key = pkcs12Kdf(hash, password, octets(buf, saltT), iterations, 3, createHash(hash).digest().length);
  const want = octets(buf, digestT);
  const got = createHmac(hash, key).update(content).digest();
  if (want.length !== got.length || !timingSafeEqual(want, got)) throw new Pkcs12Error('the PKCS#12 MAC does not verify: wrong password (the Secret\'s "password" key) or damaged file');
}

export function readPkcs12(pfx: Buffer, password: string): Pkcs12Contents {
  const top = seq(pfx, tlv(pfx, 0), 'PFX');
  if (int(pfx, top[0]) !== 3) throw new Pkcs12Error('not a PKCS#12 v3 file');
  const [typeT, contentT] = seq(pfx, top[1], 'PFX authSafe');
  if (oid(pfx, typeT) !== OID.data) throw new Pkcs12Error('PKCS#12 files signed with public keys are not supported');
  const authSafe = octets(pfx, explicit0(pfx, contentT, 'authSafe content'));
  if (top[2] !== undefined) checkMac(pfx, top[2], authSafe, password);
  const keys: KeyObject[] = [];
  const certs: Buffer[] = [];
  for (const info of seq(authSafe, tlv(authSafe, 0), 'AuthenticatedSafe')) {
    const [t, c] = seq(authSafe, info, 'ContentInfo');
    const type = oid(authSafe, t);
    let safe: Buffer;
    if (type === OID.data) safe = octets(authSafe, explicit0(authSafe, c, 'data'));
    else if (type === OID.encryptedData) {
      const [, eci] = seq(authSafe, explicit0(authSafe, c, 'encryptedData'), 'EncryptedData');
      const [, alg, encrypted] = seq(authSafe, eci, 'EncryptedContentInfo');
      safe = decrypt(authSafe, alg!, octets(authSafe, encrypted, 0x80), password);
    } else throw new Pkcs12Error(`PKCS#12 content of type ${type} is not supported`);
    readBags(safe, password, keys, certs);
  }
  if (keys.length === 0) throw new Pkcs12Error('the PKCS#12 file holds no private key');
  for (const key of keys) {
    for (const der of certs) {
      if (new X509Certificate(der).checkPrivateKey(key)) {
        if (key.asymmetricKeyType !== 'rsa') throw new Pkcs12Error(`the private key is ${key.asymmetricKeyType ?? 'unknown'}; Entra ID's client assertions here are RS256, which needs RSA`);
        return { key, certificateDer: der };
      }
    }
  }
  throw new Pkcs12Error('the PKCS#12 file holds no certificate for its private key');
}

function readBags(safe: Buffer, password: string, keys: KeyObject[], certs: Buffer[]): void {
  for (const bag of seq(safe, tlv(safe, 0), 'SafeContents')) {
    const [idT, valueT] = seq(safe, bag, 'SafeBag');
    const id = oid(safe, idT);
    const value = explicit0(safe, valueT, 'bag value');
    try {
      if (id === OID.keyBag) keys.push(createPrivateKey({ key: safe.subarray(value.start - headerLength(safe, value), value.end), format: 'der', type: 'pkcs8' }));
      else if (id === OID.shroudedKeyBag) {
        const [alg, data] = seq(safe, value, 'EncryptedPrivateKeyInfo');
        keys.push(createPrivateKey({ key: decrypt(safe, alg!, octets(safe, data), password), format: 'der', type: 'pkcs8' }));
      } else if (id === OID.certBag) {
        const [typeT, certT] = seq(safe, value, 'CertBag');
        if (oid(safe, typeT) === OID.x509Certificate) certs.push(Buffer.from(octets(safe, explicit0(safe, certT, 'certificate'))));
      }
    } catch (err) {
      if (err instanceof Pkcs12Error) throw err;
      throw new Pkcs12Error(`a ${id === OID.certBag ? 'certificate' : 'key'} in the PKCS#12 file could not be read: ${(err as Error).message}`);
    }
  }
}

/** Bytes of tag and length before a TLV's content. */
function headerLength(buf: Buffer, t: Tlv): number {
  const len = t.end - t.start;
  return 2 + (len < 0x80 ? 0 : len < 0x100 ? 1 : len < 0x10000 ? 2 : len < 0x1000000 ? 3 : 4);
}
