// A fake Kubernetes API server on 127.0.0.1 that speaks what the informers use: lists (with
// resourceVersion, limit/continue, field selectors), streaming watches (JSON lines, headers
// flushed at once, bookmarks, 410 as an ERROR event after compaction), bearer-token auth;
// and the faults a real one shows: 5xx answers, stalls, dropped watches, restarts, a server
// that hangs altogether. Core/v1 Event writes (create, merge-patch) are kept apart for tests to read.
import { createPublicKey, generateKeyPairSync, randomBytes, randomUUID, sign, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { FieldSelectorError, parseSelectors } from './field-selector.ts';
import type { FieldSelector } from './field-selector.ts';
import { RESOURCES, resolvePath } from './resources.ts';
import type { ResourceInfo, ResourceName, ResourcePath } from './resources.ts';
import { ObjectStore, StoreError } from './store.ts';
import type { Obj, StoreEvent } from './store.ts';
import { selfSignedCert } from './tls-cert.ts';
import type { SelfSignedCert } from './tls-cert.ts';

export type { Obj } from './store.ts';
export type { ResourceName } from './resources.ts';

export interface FakeApiServerOptions {
  /** Serve HTTPS with a fresh self-signed certificate (needs the openssl CLI) instead of HTTP + insecure-skip-tls-verify. */
  tls?: boolean;
  /** Bookmarks to every watch that allows them, this often (0, the default: only on sendBookmarks()). */
  bookmarkIntervalMs?: number;
  /**
   * Answer lists with resourceVersion=0 in one page whatever their `limit`, as kube-apiserver
   * before 1.33 does when it serves them from its watch cache (default false: always paged).
   */
  watchCacheIgnoresLimit?: boolean;
}

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly watch: boolean;
  readonly resource?: string;
  readonly userAgent?: string;
}

export interface FaultMatch {
  /** Only requests for this resource (plural); all when omitted. */
  resource?: ResourceName | 'events';
  /** Only watches (true) or only lists and gets (false); both when omitted. */
  watch?: boolean;
}

interface FaultRule extends FaultMatch {
  action: 'error' | 'stall';
  status: number;
  remaining: number;
}

interface Watcher {
  readonly res: ServerResponse;
  readonly resource: ResourceInfo;
  readonly namespace: string | undefined;
  readonly selector: FieldSelector;
  readonly bookmarks: boolean;
  timer?: NodeJS.Timeout;
}

const MAX_RECORDED = 10_000;
const EVENTS_PATH = /^\/api\/v1\/namespaces\/([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/events(?:\/([a-z0-9][-a-z0-9.]*))?$/;
const MAX_SNAPSHOTS = 1_000;
const TOKEN_REQUEST_PATH = /^\/api\/v1\/namespaces\/([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/serviceaccounts\/([a-z0-9][-a-z0-9.]*)\/token$/;

/** A TokenRequest the fake API server answered, as it was asked (for tests to check the daemon's). */
export interface RecordedTokenRequest {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly spec: Obj;
  readonly status: number;
}

function status(code: number, reason: string, message: string): Obj {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

const REASONS: Record<number, string> = {
  400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 405: 'MethodNotAllowed',
  410: 'Expired', 429: 'TooManyRequests', 500: 'InternalError', 503: 'ServiceUnavailable', 504: 'Timeout',
};

export class FakeApiServer {
  readonly store = new ObjectStore();
  readonly requests: RecordedRequest[] = [];
  readonly token = randomBytes(16).toString('hex');
  readonly #tls: SelfSignedCert | undefined;
  readonly #bookmarkIntervalMs: number;
  readonly #watchCacheIgnoresLimit: boolean;
  readonly #dir = mkdtempSync(join(tmpdir(), 'fake-apiserver-'));
  readonly #sockets = new Set<Socket>();
  readonly #watchers = new Set<Watcher>();
  readonly #stalled = new Set<ServerResponse>();
  readonly #snapshots = new Map<string, { rv: number; items: Obj[] }>();
  readonly #brokenItems = new Map<string, unknown[]>();
  #faults: FaultRule[] = [];
  /** Events written by clients, by namespace/name; not part of the watched store. */
  readonly events = new Map<string, Obj>();
  /** TokenRequests, answered or refused. */
  readonly tokenRequests: RecordedTokenRequest[] = [];
  /** The service-account issuer (a cluster's OIDC issuer URL) and its signing key, whose JWKS a fake Entra trusts. */
  issuer = 'https://oidc.fake-cluster.example/7f0c7c5e';
  readonly #signingKey: KeyObject;
  readonly keyId = randomBytes(8).toString('hex');
  #hung = false;
  /** Changes made while hung, delivered to the open watches when the server answers again. */
  #held: StoreEvent[] = [];
  #server: Server | undefined;
  #bookmarkTimer: NodeJS.Timeout | undefined;
  #port = 0;

  private constructor(opts: FakeApiServerOptions) {
    if (opts.tls === true) {
      this.#tls = selfSignedCert();
      if (this.#tls === undefined) throw new Error('tls requested but the openssl CLI is not available');
    }
    this.#signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    this.#bookmarkIntervalMs = opts.bookmarkIntervalMs ?? 0;
    this.#watchCacheIgnoresLimit = opts.watchCacheIgnoresLimit ?? false;
    this.store.onEvent((event) => {
      if (this.#hung) {
        this.#held.push(event);
        return;
      }
      for (const w of this.#watchers) if (w.resource === event.resource) this.#deliver(w, event);
    });
  }

  static async start(opts: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    const server = new FakeApiServer(opts);
    await server.restart();
    return server;
  }

  get port(): number {
    return this.#port;
  }

  get url(): string {
    return `${this.#tls ? 'https' : 'http'}://127.0.0.1:${this.#port}`;
  }

  get running(): boolean {
    return this.#server !== undefined;
  }

  /** Writes (again) and returns the path of a kubeconfig for this server. */
  kubeconfig(): string {
    const cluster: Obj = { server: this.url };
    if (this.#tls) cluster['certificate-authority-data'] = Buffer.from(this.#tls.cert).toString('base64');
    else cluster['insecure-skip-tls-verify'] = true;
    const file = join(this.#dir, 'kubeconfig.yaml');
    writeFileSync(file, stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'fake', cluster }],
      users: [{ name: 'fake', user: { token: this.token } }],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake' } }],
      'current-context': 'fake',
    }));
    return file;
  }

  // ---- objects ----

  create(resource: ResourceName, obj: Obj): Obj {
    return this.store.create(resource, obj);
  }
  update(resource: ResourceName, obj: Obj): Obj {
    return this.store.update(resource, obj);
  }
  modify(resource: ResourceName, namespace: string, name: string, change: (obj: Obj) => void): Obj {
    return this.store.modify(resource, namespace, name, change);
  }
  delete(resource: ResourceName, namespace: string, name: string): Obj | undefined {
    return this.store.delete(resource, namespace, name);
  }
  /** Drops the event history: watches resuming from an older resourceVersion get 410 Gone. */
  compact(): void {
    this.store.compact();
    this.#snapshots.clear();
  }
  /** An item served in every list of `resource` though it is not a valid stored object. */
  addBrokenListItem(resource: ResourceName, item: unknown): void {
    const list = this.#brokenItems.get(resource) ?? [];
    list.push(item);
    this.#brokenItems.set(resource, list);
  }

  /** The issuer's JWKS, as served at {issuer}/openid/v1/jwks. */
  jwks(): { keys: Obj[] } {
    return { keys: [{ ...createPublicKey(this.#signingKey).export({ format: 'jwk' }), kid: this.keyId, use: 'sig', alg: 'RS256' }] };
  }

  // ---- faults ----

  /** The next `count` matching requests are answered with `status` (default 500) and a Status body. */
  failNext(count: number, opts: FaultMatch & { status?: number } = {}): void {
    this.#faults.push({ ...opts, action: 'error', status: opts.status ?? 500, remaining: count });
  }

  /** Matching requests are accepted and never answered, until unstall() (default: every request). */
  stall(opts: FaultMatch & { count?: number } = {}): void {
    this.#faults.push({ ...opts, action: 'stall', status: 0, remaining: opts.count ?? Infinity });
  }

  /** New requests are served again; those already stalled stay unanswered until the client gives up. */
  unstall(): void {
    this.#faults = this.#faults.filter((f) => f.action !== 'stall');
  }

  /**
   * The server stops answering anything while its connections stay open: new requests stall,
   * and open watches get neither events nor bookmarks, until unhang().
   */
  hang(): void {
    this.#hung = true;
    this.stall();
  }

  /** Serves again; open watches get what changed meanwhile, as a real server's watch cache catches up. */
  unhang(): void {
    this.#hung = false;
    this.unstall();
    const held = this.#held;
    this.#held = [];
    for (const event of held) for (const w of this.#watchers) if (w.resource === event.resource) this.#deliver(w, event);
  }

  stalledCount(): number {
    return this.#stalled.size;
  }

  /** Ends open watches cleanly (as the server does at its timeout); returns how many. */
  dropWatches(resource?: ResourceName): number {
    let n = 0;
    for (const w of [...this.#watchers]) {
      if (resource !== undefined && w.resource.plural !== resource) continue;
      this.#endWatch(w);
      n++;
    }
    return n;
  }

  watchCount(resource?: ResourceName): number {
    let n = 0;
    for (const w of this.#watchers) if (resource === undefined || w.resource.plural === resource) n++;
    return n;
  }

  /** A BOOKMARK at the current resourceVersion to every watch that allows them; returns how many. */
  sendBookmarks(): number {
    let n = 0;
    if (this.#hung) return 0;
    for (const w of this.#watchers) {
      if (!w.bookmarks) continue;
      this.#write(w, { type: 'BOOKMARK', object: { kind: w.resource.kind, apiVersion: w.resource.apiVersion, metadata: { resourceVersion: String(this.store.resourceVersion) } } });
      n++;
    }
    return n;
  }

  /** Writes one raw line (malformed JSON, odd events) to the watches of `resource`. */
  sendRaw(resource: ResourceName, line: string): number {
    let n = 0;
    for (const w of this.#watchers) {
      if (w.resource.plural !== resource) continue;
      w.res.write(`${line}\n`);
      n++;
    }
    return n;
  }

  sendEvent(resource: ResourceName, event: unknown): number {
    return this.sendRaw(resource, JSON.stringify(event));
  }

  // ---- lifecycle ----

  /** The API server goes away: the listener closes and every connection is cut. */
  async stop(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    this.#server = undefined;
    clearInterval(this.#bookmarkTimer);
    this.#bookmarkTimer = undefined;
    for (const w of this.#watchers) clearTimeout(w.timer);
    this.#watchers.clear();
    this.#stalled.clear();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
    await closed;
  }

  /** Starts listening (again), on the same port as before. */
  async restart(): Promise<void> {
    if (this.#server !== undefined) return;
    const handler = (req: IncomingMessage, res: ServerResponse): void => this.#handle(req, res);
    const server: Server = this.#tls ? createHttpsServer({ cert: this.#tls.cert, key: this.#tls.key }, handler) : createHttpServer(handler);
    server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
    server.on('secureConnection', (s: Socket) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port: this.#port, host: '127.0.0.1' }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#port = (server.address() as { port: number }).port;
    this.#server = server;
    if (this.#bookmarkIntervalMs > 0) this.#bookmarkTimer = setInterval(() => this.sendBookmarks(), this.#bookmarkIntervalMs);
  }

  async close(): Promise<void> {
    await this.stop();
    rmSync(this.#dir, { recursive: true, force: true });
  }

  // ---- protocol ----

  #handle(req: IncomingMessage, res: ServerResponse): void {
    try {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      const query = Object.fromEntries(url.searchParams);
      const watch = query.watch === 'true' || query.watch === '1';
      const rp = resolvePath(url.pathname);
      const ev = EVENTS_PATH.exec(url.pathname);
      const resource = rp?.resource.plural ?? (ev === null ? undefined : 'events');
      this.#record({
        method: req.method ?? '', path: url.pathname, query, watch,
        ...(resource ? { resource } : {}), ...(req.headers['user-agent'] !== undefined ? { userAgent: req.headers['user-agent'] } : {}),
      });
      if (req.headers.authorization !== `Bearer ${this.token}`) return this.#fail(res, 401, 'Unauthorized');
      const fault = this.#takeFault(resource, watch);
      if (fault?.action === 'stall') {
        this.#stalled.add(res);
        res.on('close', () => this.#stalled.delete(res));
        return;
      }
      if (fault?.action === 'error') return this.#fail(res, fault.status, `injected fault ${fault.status}`);
      if (ev !== null) {
        void this.#eventWrite(req, res, ev[1]!, ev[3]);
        return;
      }
      const tr = TOKEN_REQUEST_PATH.exec(url.pathname);
      if (tr !== null) {
        if (req.method !== 'POST') return this.#fail(res, 405, `${req.method} is not supported on serviceaccounts/token`);
        void this.#tokenRequest(req, res, tr[1]!, tr[3]!);
        return;
      }
      if (url.pathname === '/version') return this.#json(res, 200, { major: '1', minor: '31', gitVersion: 'v1.31.0-fake' });
      if (rp === undefined) return this.#fail(res, 404, `the server could not find the requested resource (${url.pathname})`);
      if (req.method === 'PATCH' && rp.name !== undefined) return void this.#patch(req, res, rp);
      if (req.method !== 'GET') return this.#fail(res, 405, `${req.method} is not supported by the fake API server`);
      if (watch) return this.#watch(res, rp, query);
      if (rp.name !== undefined) return this.#get(res, rp);
      return this.#list(res, rp, query);
    } catch (err) {
      if (err instanceof FieldSelectorError) return this.#fail(res, 400, err.message);
      if (err instanceof StoreError) return this.#fail(res, err.code, err.message);
      if (!res.headersSent) this.#fail(res, 500, (err as Error).message);
      else res.destroy();
    }
  }

  /** Runs once before the next PATCH is applied (a concurrent writer, for conflict tests). */
  beforeNextPatch: (() => void) | undefined;

  /** RFC 6902 JSON patch: test, replace, add, remove; a failed test is 422, as the API server answers. */
  async #patch(req: IncomingMessage, res: ServerResponse, rp: ResourcePath): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    try {
      if (req.headers['content-type'] !== 'application/json-patch+json') return this.#fail(res, 415, `unsupported patch type ${String(req.headers['content-type'])}`);
      const hook = this.beforeNextPatch;
      this.beforeNextPatch = undefined;
      hook?.();
      const ops = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Array<{ op: string; path: string; value?: unknown }>;
      const resource = rp.resource.plural as ResourceName;
      const obj = this.store.get(resource, rp.namespace ?? 'default', rp.name!);
      if (obj === undefined) return this.#fail(res, 404, `${rp.resource.plural} "${rp.name}" not found`);
      for (const op of ops) {
        const keys = op.path.split('/').slice(1).map((k) => k.replaceAll('~1', '/').replaceAll('~0', '~'));
        const last = keys.pop()!;
        let parent: Obj = obj;
        for (const k of keys) {
          if (typeof parent[k] !== 'object' || parent[k] === null) {
            if (op.op === 'add') parent[k] = {};
            else return this.#fail(res, 422, `path ${op.path} does not exist`);
          }
          parent = parent[k] as Obj;
        }
        if (op.op === 'test') {
          if (JSON.stringify(parent[last]) !== JSON.stringify(op.value)) return this.#fail(res, 422, `the server rejected our request due to an error in our request: testing value ${op.path} failed`);
        } else if (op.op === 'replace' || op.op === 'add') {
          if (op.op === 'replace' && !(last in parent)) return this.#fail(res, 422, `replace: missing value at ${op.path}`);
          parent[last] = op.value;
        } else if (op.op === 'remove') {
          delete parent[last];
        } else {
          return this.#fail(res, 422, `unsupported op ${op.op}`);
        }
      }
      this.#json(res, 200, this.store.update(resource, obj));
    } catch (err) {
      if (err instanceof StoreError) return this.#fail(res, err.code, err.message);
      this.#fail(res, 400, (err as Error).message);
    }
  }

  /**
   * TokenRequest as kube-apiserver answers it: 422 for expirationSeconds under 600 or no
   * audience, 404 for a service account or bound pod that does not exist, 409 when the pod's
   * uid differs, 400 when the pod runs as another service account; 201 with an RS256 JWT.
   */
  async #tokenRequest(req: IncomingMessage, res: ServerResponse, namespace: string, name: string): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    let spec: Obj = {};
    const answer = (code: number, message: string): void => {
      this.tokenRequests.push({ namespace, serviceAccount: name, spec, status: code });
      this.#fail(res, code, message);
    };
    try {
      spec = ((JSON.parse(Buffer.concat(chunks).toString('utf8')) as Obj).spec ?? {}) as Obj;
    } catch {
      return answer(400, 'body is not JSON');
    }
    const account = this.store.get('serviceaccounts', namespace, name);
    if (account === undefined) return answer(404, `serviceaccounts "${name}" not found`);
    const seconds = spec.expirationSeconds === undefined ? 3600 : Number(spec.expirationSeconds);
    if (!Number.isInteger(seconds) || seconds < 600) return answer(422, `TokenRequest.authentication.k8s.io "${name}" is invalid: spec.expirationSeconds: Invalid value: ${String(spec.expirationSeconds)}: may not specify a duration less than 10 minutes`);
    const audiences = spec.audiences;
    if (!Array.isArray(audiences) || audiences.length === 0) return answer(422, 'spec.audiences: Required value');
    const ref = spec.boundObjectRef as Obj | undefined;
    let podClaim: Obj | undefined;
    if (ref !== undefined) {
      if (ref.kind !== 'Pod' || ref.apiVersion !== 'v1') return answer(422, `spec.boundObjectRef.kind: Unsupported value: ${String(ref.kind)}`);
      const pod = this.store.get('pods', namespace, String(ref.name));
      if (pod === undefined) return answer(404, `pods "${String(ref.name)}" not found`);
      const meta = pod.metadata as Obj;
      if (ref.uid !== undefined && ref.uid !== meta.uid) return answer(409, `the UID in the bound object reference (${String(ref.uid)}) does not match the UID in record. The object might have been deleted and then recreated`);
      const runsAs = ((pod.spec as Obj | undefined)?.serviceAccountName as string | undefined) ?? 'default';
      if (runsAs !== name) return answer(400, `pod ${namespace}/${String(ref.name)} is not using service account ${namespace}/${name}`);
      podClaim = { name: ref.name, uid: meta.uid };
    }
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      aud: audiences, exp: now + seconds, iat: now, nbf: now, iss: this.issuer, jti: randomUUID(),
      sub: `system:serviceaccount:${namespace}:${name}`,
      'kubernetes.io': { namespace, serviceaccount: { name, uid: (account.metadata as Obj).uid ?? '' }, ...(podClaim === undefined ? {} : { pod: podClaim }) },
    };
    const input = `${Buffer.from(JSON.stringify({ alg: 'RS256', kid: this.keyId })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
    const token = `${input}.${sign('sha256', Buffer.from(input), this.#signingKey).toString('base64url')}`;
    this.tokenRequests.push({ namespace, serviceAccount: name, spec, status: 201 });
    this.#json(res, 201, {
      kind: 'TokenRequest', apiVersion: 'authentication.k8s.io/v1', metadata: { name, namespace },
      spec, status: { token, expirationTimestamp: new Date((now + seconds) * 1000).toISOString() },
    });
  }

  /** POST creates an Event (409 if the name exists), PATCH merges into one (404 if it does not). */
  async #eventWrite(req: IncomingMessage, res: ServerResponse, namespace: string, name: string | undefined): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    let body: Obj;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Obj;
    } catch {
      return this.#fail(res, 400, 'body is not JSON');
    }
    if (req.method === 'POST' && name === undefined) {
      const meta = (body.metadata ?? {}) as Obj;
      if (typeof meta.name !== 'string' || meta.name === '' || (meta.namespace !== undefined && meta.namespace !== namespace)) {
        return this.#fail(res, 400, 'event needs metadata.name in the path\'s namespace');
      }
      const key = `${namespace}/${meta.name}`;
      if (this.events.has(key)) return this.#fail(res, 409, `events "${meta.name}" already exists`);
      const stored = { ...body, metadata: { ...meta, namespace, resourceVersion: String(this.store.resourceVersion) } };
      this.events.set(key, stored);
      return this.#json(res, 201, stored);
    }
    if (req.method === 'PATCH' && name !== undefined) {
      if (req.headers['content-type'] !== 'application/merge-patch+json' && req.headers['content-type'] !== 'application/strategic-merge-patch+json') {
        return this.#fail(res, 415, `unsupported patch type ${String(req.headers['content-type'])}`);
      }
      const key = `${namespace}/${name}`;
      const existing = this.events.get(key);
      if (existing === undefined) return this.#fail(res, 404, `events "${name}" not found`);
      const merged = { ...existing, ...body, metadata: existing.metadata };
      this.events.set(key, merged);
      return this.#json(res, 200, merged);
    }
    return this.#fail(res, 405, `${req.method} is not supported on events by the fake API server`);
  }

  #get(res: ServerResponse, rp: ResourcePath): void {
    const obj = this.store.get(rp.resource.plural as ResourceName, rp.namespace ?? 'default', rp.name!);
    if (obj === undefined) return this.#fail(res, 404, `${rp.resource.plural} "${rp.name}" not found`);
    this.#json(res, 200, obj);
  }

  #list(res: ServerResponse, rp: ResourcePath, query: Record<string, string>): void {
    const info = rp.resource;
    const selector = parseSelectors(query, info);
    const limit = this.#watchCacheIgnoresLimit && query.resourceVersion === '0' ? 0 : Number(query.limit ?? 0);
    let rv: number;
    let items: unknown[];
    if (query.continue !== undefined && query.continue !== '') {
      const snap = this.#snapshots.get(query.continue);
      if (snap === undefined || snap.rv < this.store.compactedRv) {
        return this.#fail(res, 410, 'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.');
      }
      this.#snapshots.delete(query.continue);
      ({ rv, items } = snap);
    } else {
      rv = this.store.resourceVersion;
      items = this.store.snapshot(info.plural as ResourceName).filter((o) => this.#matches(o, rp.namespace, selector));
      items.push(...(this.#brokenItems.get(info.plural) ?? []));
    }
    const meta: Obj = { resourceVersion: String(rv) };
    let page = items;
    if (Number.isInteger(limit) && limit > 0 && items.length > limit) {
      page = items.slice(0, limit);
      const token = randomUUID();
      this.#snapshots.set(token, { rv, items: items.slice(limit) as Obj[] });
      if (this.#snapshots.size > MAX_SNAPSHOTS) this.#snapshots.delete(this.#snapshots.keys().next().value!);
      meta.continue = token;
      meta.remainingItemCount = items.length - limit;
    }
    const out = info.itemsCarryKind ? page : page.map((o) => withoutKind(o));
    this.#json(res, 200, { kind: info.listKind, apiVersion: info.apiVersion, metadata: meta, items: out });
  }

  #watch(res: ServerResponse, rp: ResourcePath, query: Record<string, string>): void {
    const info = rp.resource;
    const selector = parseSelectors(query, info);
    const rvText = query.resourceVersion ?? '';
    let from: number | undefined;
    if (rvText !== '' && rvText !== '0') {
      from = Number(rvText);
      if (!Number.isSafeInteger(from) || from < 0) return this.#fail(res, 400, `invalid resourceVersion ${rvText}`);
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    // The client awaits the headers before the informer's start resolves.
    res.flushHeaders();
    const w: Watcher = { res, resource: info, namespace: rp.namespace, selector, bookmarks: query.allowWatchBookmarks === 'true' };
    if (from === undefined) {
      for (const obj of this.store.snapshot(info.plural as ResourceName)) {
        if (this.#matches(obj, w.namespace, selector)) this.#write(w, { type: 'ADDED', object: obj });
      }
    } else {
      const events = this.store.historySince(from);
      if (events === undefined) {
        this.#write(w, { type: 'ERROR', object: status(410, 'Expired', `too old resource version: ${from} (${this.store.compactedRv})`) });
        res.end();
        return;
      }
      for (const event of events) if (event.resource === info) this.#deliver(w, event);
    }
    this.#watchers.add(w);
    const timeout = Number(query.timeoutSeconds ?? 0);
    if (Number.isFinite(timeout) && timeout > 0) w.timer = setTimeout(() => this.#endWatch(w), timeout * 1000);
    res.on('close', () => {
      clearTimeout(w.timer);
      this.#watchers.delete(w);
    });
  }

  /** What a filtered watch sees of a change: objects entering or leaving the filter are ADDED / DELETED. */
  #deliver(w: Watcher, event: StoreEvent): void {
    const now = this.#matches(event.object, w.namespace, w.selector);
    const before = event.previous !== undefined && this.#matches(event.previous, w.namespace, w.selector);
    let type: string | undefined;
    switch (event.type) {
      case 'ADDED':
        type = now ? 'ADDED' : undefined;
        break;
      case 'MODIFIED':
        type = before && now ? 'MODIFIED' : now ? 'ADDED' : before ? 'DELETED' : undefined;
        break;
      case 'DELETED':
        type = before ? 'DELETED' : undefined;
        break;
    }
    if (type !== undefined) this.#write(w, { type, object: event.object });
  }

  #matches(obj: Obj, namespace: string | undefined, selector: FieldSelector): boolean {
    if (namespace !== undefined && (obj.metadata as Obj | undefined)?.namespace !== namespace) return false;
    return selector(obj);
  }

  #write(w: Watcher, event: unknown): void {
    if (!w.res.writableEnded) w.res.write(`${JSON.stringify(event)}\n`);
  }

  #endWatch(w: Watcher): void {
    clearTimeout(w.timer);
    this.#watchers.delete(w);
    w.res.end();
  }

  #takeFault(resource: string | undefined, watch: boolean): FaultRule | undefined {
    const rule = this.#faults.find((f) => f.remaining > 0
      && (f.resource === undefined || f.resource === resource)
      && (f.watch === undefined || f.watch === watch));
    if (rule === undefined) return undefined;
    rule.remaining--;
    if (rule.remaining <= 0) this.#faults = this.#faults.filter((f) => f !== rule);
    return rule;
  }

  #fail(res: ServerResponse, code: number, message: string): void {
    this.#json(res, code, status(code, REASONS[code] ?? 'Unknown', message));
  }

  #json(res: ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  #record(r: RecordedRequest): void {
    if (this.requests.length >= MAX_RECORDED) this.requests.splice(0, this.requests.length - MAX_RECORDED + 1);
    this.requests.push(r);
  }
}

function withoutKind(obj: unknown): unknown {
  if (typeof obj !== 'object' || obj === null) return obj;
  const { kind: _kind, apiVersion: _apiVersion, ...rest } = obj as Obj;
  return rest;
}

export { RESOURCES };
