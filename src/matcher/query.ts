// A strict query-string parser: every key once (case-insensitively, as IMDS rejects
// duplicates and a proxy must not let `Client_ID` shadow `client_id`), values decoded once.

export type QueryError = 'query_malformed' | 'query_duplicate_parameter';

export const MAX_QUERY_PARAMETERS = 32;

/** Keys lower-cased; values percent- and '+'-decoded. Empty `raw` gives an empty map. */
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
      const k = decode(raw.slice(start, hasValue ? eq : end));
      const v = hasValue ? decode(raw.slice(eq + 1, end)) : '';
      if (k === undefined || v === undefined || k.length === 0) return 'query_malformed';
      const key = k.toLowerCase();
      if (params.has(key)) return 'query_duplicate_parameter';
      if (params.size === MAX_QUERY_PARAMETERS) return 'query_malformed';
      params.set(key, v);
    }
    start = end + 1;
  }
  return params;
}

function decode(text: string): string | undefined {
  if (text.indexOf('%') === -1 && text.indexOf('+') === -1) return text;
  try {
    return decodeURIComponent(text.replaceAll('+', ' '));
  } catch {
    return undefined;
  }
}

/** Serialises parsed parameters back, so what goes upstream is what was checked. */
export function formatQuery(params: Iterable<readonly [string, string]>): string {
  let out = '';
  for (const [k, v] of params) {
    out += (out.length === 0 ? '' : '&') + encodeURIComponent(k) + '=' + encodeURIComponent(v);
  }
  return out;
}
