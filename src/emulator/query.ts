export type QueryParseResult =
  | { ok: true; params: Map<string, string> }
  | { ok: false; reason: 'duplicate'; name: string }
  | { ok: false; reason: 'malformed' };

function decodeComponent(s: string): string | undefined {
  try {
    return decodeURIComponent(s.replaceAll('+', ' '));
  } catch {
    return undefined;
  }
}

/**
 * Parses a raw query string the way IMDS judges it: a repeated parameter name is an error
 * rather than "first wins" or "last wins", because that ambiguity was a real proxy bypass.
 */
export function parseQuery(rawQuery: string): QueryParseResult {
  const params = new Map<string, string>();
  if (rawQuery === '') return { ok: true, params };
  for (const piece of rawQuery.split('&')) {
    if (piece === '') continue;
    const eq = piece.indexOf('=');
    const name = decodeComponent(eq === -1 ? piece : piece.slice(0, eq));
    const value = decodeComponent(eq === -1 ? '' : piece.slice(eq + 1));
    if (name === undefined || value === undefined) return { ok: false, reason: 'malformed' };
    if (params.has(name)) return { ok: false, reason: 'duplicate', name };
    params.set(name, value);
  }
  return { ok: true, params };
}

/** Splits a request target into path and raw query, without decoding the path. */
export function splitTarget(target: string): { path: string; rawQuery: string } {
  const q = target.indexOf('?');
  if (q === -1) return { path: target, rawQuery: '' };
  return { path: target.slice(0, q), rawQuery: target.slice(q + 1) };
}
