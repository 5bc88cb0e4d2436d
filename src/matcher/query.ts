// A strict query-string parser: every key once (case-insensitively, as IMDS rejects
// duplicates and a proxy must not let `Client_ID` shadow `client_id`), values decoded once.

export type QueryError = 'query_malformed' | 'query_duplicate_parameter';

export const MAX_QUERY_PARAMETERS = 32;

/** What a key or value holds besides plain lower-case text: percent or '+' encoding, or letters to lower-case. */
const ENCODED = 1;
const CASED = 2;

/**
 * Keys lower-cased; values percent- and '+'-decoded. Empty `raw` gives an empty map. One pass
 * over `raw`: each key and value is sliced once, decoded only when it holds a '%' or '+', and a
 * key lower-cased only when it holds an upper-case or non-ASCII letter.
 */
export function parseQuery(raw: string): Map<string, string> | QueryError {
  const params = new Map<string, string>();
  let start = 0;
  let eq = -1;
  let keyFlags = 0;
  let valueEncoded = false;
  for (let i = 0; i <= raw.length; i++) {
    const c = i === raw.length ? 0x26 : raw.charCodeAt(i);
    if (c === 0x26 /* & */) {
      if (i > start) {
        const refused = add(params, raw, start, eq, i, keyFlags, valueEncoded);
        if (refused !== undefined) return refused;
      }
      start = i + 1;
      eq = -1;
      keyFlags = 0;
      valueEncoded = false;
    } else if (eq !== -1) {
      if (c === 0x25 /* % */ || c === 0x2b /* + */) valueEncoded = true;
    } else if (c === 0x3d /* = */) {
      eq = i;
    } else if (c === 0x25 || c === 0x2b) {
      keyFlags |= ENCODED;
    } else if ((c >= 0x41 && c <= 0x5a) || c >= 0x80) {
      keyFlags |= CASED;
    }
  }
  return params;
}

function add(params: Map<string, string>, raw: string, start: number, eq: number, end: number, keyFlags: number, valueEncoded: boolean): QueryError | undefined {
  const rawKey = raw.slice(start, eq === -1 ? end : eq);
  const k = (keyFlags & ENCODED) !== 0 ? decode(rawKey) : rawKey;
  const v = eq === -1 ? '' : valueEncoded ? decode(raw.slice(eq + 1, end)) : raw.slice(eq + 1, end);
  if (k === undefined || v === undefined || k.length === 0) return 'query_malformed';
  const key = keyFlags !== 0 ? k.toLowerCase() : k;
  if (params.has(key)) return 'query_duplicate_parameter';
  if (params.size === MAX_QUERY_PARAMETERS) return 'query_malformed';
  params.set(key, v);
  return undefined;
}

/**
 * Decoded values, as SDKs send the same few resources again and again. Bounded in count and
 * in the length of what it keeps; a pod sending many distinct values only empties it.
 */
const decoded = new Map<string, string | undefined>();
const MAX_DECODED = 256;
const MAX_DECODED_LENGTH = 256;

function decode(text: string): string | undefined {
  const known = decoded.get(text);
  if (known !== undefined || decoded.has(text)) return known;
  let out: string | undefined;
  try {
    out = decodeURIComponent(text.includes('+') ? text.replaceAll('+', ' ') : text);
  } catch {
    out = undefined;
  }
  if (text.length <= MAX_DECODED_LENGTH) {
    if (decoded.size >= MAX_DECODED) decoded.clear();
    decoded.set(text, out);
  }
  return out;
}

/** Serialises parsed parameters back, so what goes upstream is what was checked. */
export function formatQuery(params: Iterable<readonly [string, string]>): string {
  let out = '';
  for (const [k, v] of params) {
    out += (out.length === 0 ? '' : '&') + encodeURIComponent(k) + '=' + encodeURIComponent(v);
  }
  return out;
}
