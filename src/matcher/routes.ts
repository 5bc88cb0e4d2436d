// The metadata routes that exist, and the only ones this daemon answers. Anything else is
// refused here, before any lookup or upstream work.

export type RouteName =
  | 'token' | 'instance' | 'attested' | 'identity_info' | 'scheduledevents' | 'loadbalancer' | 'versions';

export interface Route {
  readonly name: RouteName;
  readonly methods: readonly string[];
  /** Whether IMDS insists on api-version for it (versions lists them, so it does not). */
  readonly needsApiVersion: boolean;
}

const GET = ['GET'] as const;

export const ROUTES: Readonly<Record<RouteName, Route>> = {
  token: { name: 'token', methods: GET, needsApiVersion: true },
  instance: { name: 'instance', methods: GET, needsApiVersion: true },
  attested: { name: 'attested', methods: GET, needsApiVersion: true },
  identity_info: { name: 'identity_info', methods: GET, needsApiVersion: true },
  scheduledevents: { name: 'scheduledevents', methods: ['GET', 'POST'], needsApiVersion: true },
  loadbalancer: { name: 'loadbalancer', methods: GET, needsApiVersion: true },
  versions: { name: 'versions', methods: GET, needsApiVersion: false },
};

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
