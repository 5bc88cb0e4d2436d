// The metadata routes that exist, and the only ones this daemon answers. Anything else is
// refused here, before any lookup or upstream work.

export type RouteName =
  | 'token' | 'instance' | 'attested' | 'identity_info' | 'scheduledevents' | 'loadbalancer' | 'versions';

export interface Route {
  readonly name: RouteName;
  readonly methods: readonly string[];
  /** Whether IMDS insists on api-version for it (versions lists them, so it does not). */
  readonly needsApiVersion: boolean;
  /**
   * The query keys IMDS defines for a proxied route; only these go upstream, so safety never
   * rests on how IMDS parses a key it does not expect. The token route rebuilds its own query.
   */
  readonly queryKeys: readonly string[];
}

const GET = ['GET'] as const;

export const ROUTES: Readonly<Record<RouteName, Route>> = {
  token: { name: 'token', methods: GET, needsApiVersion: true, queryKeys: [] },
  instance: { name: 'instance', methods: GET, needsApiVersion: true, queryKeys: ['api-version', 'format'] },
  attested: { name: 'attested', methods: GET, needsApiVersion: true, queryKeys: ['api-version', 'nonce'] },
  identity_info: { name: 'identity_info', methods: GET, needsApiVersion: true, queryKeys: ['api-version'] },
  scheduledevents: { name: 'scheduledevents', methods: ['GET', 'POST'], needsApiVersion: true, queryKeys: ['api-version'] },
  loadbalancer: { name: 'loadbalancer', methods: GET, needsApiVersion: true, queryKeys: ['api-version', 'format'] },
  versions: { name: 'versions', methods: GET, needsApiVersion: false, queryKeys: [] },
};

/** The checked parameters a proxied route forwards, in the order the pod sent them. */
export function forwardedQuery(route: Route, params: ReadonlyMap<string, string>): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const [key, value] of params) if (route.queryKeys.includes(key)) out.push([key, value]);
  return out;
}

const INSTANCE_PREFIX = '/instance/';

/**
 * Instance sub-paths name data (`/instance/compute/tagsList/0/name`): every segment is letters,
 * digits, `-` or `_`. Anything else (`..;`, `.`, `:`, an empty segment) is refused, not relayed.
 */
export function isInstanceSubPath(rest: string): boolean {
  if (!rest.startsWith(INSTANCE_PREFIX)) return true;
  let segment = 0;
  for (let i = INSTANCE_PREFIX.length; i <= rest.length; i++) {
    const c = rest.charCodeAt(i);
    if (Number.isNaN(c)) return true; // a trailing slash is fine, as for every route
    if (c === 0x2f /* / */) {
      if (segment === 0) return false;
      segment = 0;
      continue;
    }
    const ok = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2d || c === 0x5f;
    if (!ok) return false;
    segment++;
  }
  return true;
}

/** Exact paths after the `/metadata` segment; `/instance` also takes sub-paths. */
const EXACT: ReadonlyMap<string, Route> = new Map([
  ['/identity/oauth2/token', ROUTES.token],
  ['/identity/oauth2/token/', ROUTES.token],
  ['/instance', ROUTES.instance],
  ['/attested/document', ROUTES.attested],
  ['/identity/info', ROUTES.identity_info],
  ['/scheduledevents', ROUTES.scheduledevents],
  ['/loadbalancer', ROUTES.loadbalancer],
  ['/versions', ROUTES.versions],
]);

export function routeFor(rest: string): Route | undefined {
  const exact = EXACT.get(rest);
  if (exact !== undefined) return exact;
  if (rest.startsWith('/instance/')) return ROUTES.instance;
  return undefined;
}

/**
 * NMI answered 400 to paths like /metadata/identity/oauth2/token/x or /metadata/Identity/OAuth2/Token,
 * so SDKs with a mangled path fail loudly instead of reaching IMDS some other way.
 */
export function isNearMissTokenPath(rest: string): boolean {
  const lower = rest.toLowerCase();
  if (!lower.startsWith('/identity')) return false;
  const oauth = lower.indexOf('oauth2', 9);
  return oauth !== -1 && lower.indexOf('token', oauth + 6) !== -1;
}
