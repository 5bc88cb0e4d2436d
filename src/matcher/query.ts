// A strict query-string parser: every key once (case-insensitively, as IMDS rejects
// duplicates and a proxy must not let `Client_ID` shadow `client_id`), values decoded once.
import { stringMemo } from '../runtime/string-memo.ts';

export type QueryError = 'query_malformed' | 'query_duplicate_parameter';

export const MAX_QUERY_PARAMETERS = 32;

/**
 * Keys lower-cased; values percent- and '+'-decoded. Empty `raw` gives an empty map. Splitting is
 * left to indexOf (native scans, faster here than a loop over the characters); each key and value
 * is sliced once. A key spelled exactly as IMDS defines it needs no decoding nor lower-casing;
 * any other key, and each value, is decoded only when it holds a '%' or '+'.
 */
export function parseQuery(raw: string): Map<string, string> | QueryError {
  const params = new Map<string, string>();
  if (raw.length === 0) return params;
  let start = 0;
  while (start <= raw.length) {
    let end = raw.indexOf('&', start);
    if (end === -1) end = raw.length;
    if (end > start) {
      const eq = raw.indexOf('=', start);
      const hasValue = eq !== -1 && eq < end;
      const keyEnd = hasValue ? eq : end;
      const text = raw.slice(start, keyEnd);
      const known = knownKey(text);
      const k = known ?? decode(text);
      const v = hasValue ? decode(raw.slice(eq + 1, end)) : '';
      if (k === undefined || v === undefined || k.length === 0) return 'query_malformed';
      const key = known ?? k.toLowerCase();
      if (params.has(key)) return 'query_duplicate_parameter';
      if (params.size === MAX_QUERY_PARAMETERS) return 'query_malformed';
      params.set(key, v);
    }
    start = end + 1;
  }
  return params;
}

/**
 * The keys IMDS defines, as these very strings: V8 keeps their hashes, so the map lookups that
 * follow do not hash a fresh copy. Anything else (another key, another case, an escape) takes
 * the general path, which gives the same key.
 */
function knownKey(key: string): string | undefined {
  switch (key) {
    case 'api-version': return 'api-version';
    case 'resource': return 'resource';
    case 'client_id': return 'client_id';
    case 'object_id': return 'object_id';
    case 'msi_res_id': return 'msi_res_id';
    case 'mi_res_id': return 'mi_res_id';
    case 'format': return 'format';
    case 'nonce': return 'nonce';
    default: return undefined;
  }
}

/**
 * Decoded values, as SDKs send the same few resources again and again. Bounded in count and
 * in the length of what it keeps; a pod sending many distinct values only empties it.
 */
const decodedOnce = stringMemo((text: string): string | undefined => {
  try {
    return decodeURIComponent(text.includes('+') ? text.replaceAll('+', ' ') : text);
  } catch {
    return undefined;
  }
});

function decode(text: string): string | undefined {
  if (text.indexOf('%') === -1 && text.indexOf('+') === -1) return text;
  return decodedOnce(text);
}

/** Serialises parsed parameters back, so what goes upstream is what was checked. */
export function formatQuery(params: Iterable<readonly [string, string]>): string {
  let out = '';
  for (const [k, v] of params) {
    out += (out.length === 0 ? '' : '&') + encodeURIComponent(k) + '=' + encodeURIComponent(v);
  }
  return out;
}
