// A certificate credential's client assertion (RFC 7523 as Entra takes it): RS256 over the
// header {alg, typ, x5t, x5t#S256} and the claims {aud: the token endpoint, iss = sub = the
// client id, jti, nbf, iat, exp}, ten minutes of validity. Made per fetch, never kept or logged.
import { createHash, randomUUID, sign, type KeyObject } from 'node:crypto';

const ASSERTION_LIFETIME_S = 600;

export function clientAssertion(o: { key: KeyObject; certificateDer: Buffer; clientID: string; audience: string; nowMs: number }): string {
  const now = Math.floor(o.nowMs / 1000);
  const header = {
    alg: 'RS256', typ: 'JWT',
    x5t: createHash('sha1').update(o.certificateDer).digest('base64url'),
    'x5t#S256': createHash('sha256').update(o.certificateDer).digest('base64url'),
  };
  const claims = { aud: o.audience, iss: o.clientID, sub: o.clientID, jti: randomUUID(), nbf: now, iat: now, exp: now + ASSERTION_LIFETIME_S };
  const input = `${b64(header)}.${b64(claims)}`;
  return `${input}.${sign('sha256', Buffer.from(input), o.key).toString('base64url')}`;
}

function b64(v: unknown): string {
  return Buffer.from(JSON.stringify(v), 'utf8').toString('base64url');
}
