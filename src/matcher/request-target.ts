// The hot-path matcher: from the raw request target to a route, without regexes and without
// allocating beyond the two slices the later steps need. Non-canonical targets are refused,
// never normalised: path tricks were real bypasses in metadata proxies.
import type { Reason } from '../decision/reasons.ts';
import { isInstanceSubPath, isNearMissTokenPath, routeFor, ROUTES, type Route } from './routes.ts';

export interface MatchedTarget {
  readonly route: Route;
  /** Canonical upstream path: `/metadata` in lower case plus the rest as received. */
  readonly path: string;
  readonly rawQuery: string;
}

const METADATA = '/metadata';
/** The path nearly every request has, as SDKs write it: canonical, routed to the token route, and kept as it is. */
const TOKEN_PATH = '/metadata/identity/oauth2/token';

export function matchTarget(target: string, blockInstanceMetadata: boolean): MatchedTarget | Reason {
  // Absolute-form (`http://…`) and asterisk-form targets do not start with '/'.
  if (target.charCodeAt(0) !== 0x2f) return 'target_not_canonical';
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  const rawQuery = q === -1 ? '' : target.slice(q + 1);
  // One comparison instead of the checks below, which give this same answer for this path.
  if (path === TOKEN_PATH) return isPlainQuery(rawQuery) ? { route: ROUTES.token, path: TOKEN_PATH, rawQuery } : 'target_not_canonical';
  if (!isCanonicalPath(path) || !isPlainQuery(rawQuery)) return 'target_not_canonical';
  if (path.length < METADATA.length || (path.length > METADATA.length && path.charCodeAt(METADATA.length) !== 0x2f)) return 'route_unknown';
  const prefix = metadataPrefix(path);
  if (prefix === 'none') return 'route_unknown';
  const rest = path.slice(METADATA.length);
  const route = routeFor(rest);
  if (route === undefined) return isNearMissTokenPath(rest) ? 'token_path_malformed' : 'route_unknown';
  if (route.name === 'instance' && blockInstanceMetadata) return 'instance_metadata_blocked';
  if (route.name === 'instance' && !isInstanceSubPath(rest)) return 'instance_path_invalid';
  return { route, path: prefix === 'exact' ? path : METADATA + rest, rawQuery };
}

/** Whether `path` starts with `/metadata` as written (nearly always), in another case, or not at all; compared without copies. */
function metadataPrefix(path: string): 'exact' | 'cased' | 'none' {
  let exact = true;
  for (let i = 1; i < METADATA.length; i++) {
    const c = path.charCodeAt(i);
    const want = METADATA.charCodeAt(i);
    if (c === want) continue;
    if ((c | 0x20) !== want) return 'none';
    exact = false;
  }
  return exact ? 'exact' : 'cased';
}

/** No empty, `.` or `..` segments, no percent-encoding, backslash or fragment anywhere in the path. */
export function isCanonicalPath(path: string): boolean {
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === 0x25 /* % */ || c === 0x5c /* \ */ || c === 0x23 /* # */ || c <= 0x20 || c >= 0x7f) return false;
    if (c === 0x2f /* / */) {
      const next = path.charCodeAt(i + 1); // NaN at the end: a trailing slash is fine
      if (next === 0x2f) return false;
      if (next === 0x2e /* . */) {
        const after = path.charCodeAt(i + 2);
        if (Number.isNaN(after) || after === 0x2f) return false;
        if (after === 0x2e) {
          const third = path.charCodeAt(i + 3);
          if (Number.isNaN(third) || third === 0x2f) return false;
        }
      }
    }
  }
  return true;
}

/** Printable ASCII only: raw spaces, controls or bytes past 0x7e are not something an SDK sends. */
function isPlainQuery(query: string): boolean {
  // One native scan (irregexp) instead of a loop in JavaScript: the same set, printable ASCII but '#'.
  return !NOT_PLAIN.test(query);
}

const NOT_PLAIN = /[^\x21\x22\x24-\x7e]/;
