import type { EmulatedIdentity } from './types.ts';

/** Claims carried inside a fake access token, so tests can tell whose token it was. */
export interface FakeTokenClaims {
  client_id: string;
  oid: string;
  mi_res_id: string;
  aud: string;
  iat: number;
  exp: number;
  n: number;
}

export const TOKEN_LIFETIME_SECONDS = 86399;

export function mintFakeToken(claims: FakeTokenClaims): string {
  return `fake.${Buffer.from(JSON.stringify(claims), 'utf8').toString('base64url')}.sig`;
}

/** Reads back the claims of a token minted by the emulator; undefined for anything else. */
export function decodeFakeToken(token: string): FakeTokenClaims | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== 'fake' || parts[2] !== 'sig' || parts[1] === undefined) return undefined;
  try {
    return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as FakeTokenClaims;
  } catch {
    return undefined;
  }
}

/**
 * The token answer with every value a string and the key order of real IMDS: SDKs parse it
 * as strings, and byte-level comparisons in tests stay stable.
 */
export function tokenResponseBody(
  identity: EmulatedIdentity,
  resource: string,
  nowMs: number,
  counter: number,
): Record<string, string> {
  const nowSec = Math.floor(nowMs / 1000);
  const expiresOn = nowSec + TOKEN_LIFETIME_SECONDS;
  const accessToken = mintFakeToken({
    client_id: identity.clientID,
    oid: identity.objectID,
    mi_res_id: identity.resourceID,
    aud: resource,
    iat: nowSec,
    exp: expiresOn,
    n: counter,
  });
  return {
    access_token: accessToken,
    client_id: identity.clientID,
    expires_in: String(TOKEN_LIFETIME_SECONDS),
    expires_on: String(expiresOn),
    ext_expires_in: String(TOKEN_LIFETIME_SECONDS),
    // Real IMDS reports not_before one full day before expires_on.
    not_before: String(expiresOn - 86400),
    resource,
    token_type: 'Bearer',
  };
}
