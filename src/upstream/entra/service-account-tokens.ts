// Federated credentials: a token for the calling pod's service account from the TokenRequest
// API, audience api://AzureADTokenExchange, bound to the pod (name and uid), so it is worthless
// once the pod is gone. One per pod, reused for most of its life (while more than a fifth of it
// is left), so a pod's fetches cost the API server one request an hour at most. A deleted pod's
// token is never asked for again (the key holds its uid) and ages out of the bounded cache.
import { LRUCache } from 'lru-cache';
import type { SecretRef } from '../../cluster/objects.ts';
import { systemClock, type Clock } from '../clock.ts';
import type { PodRef } from '../token-source.ts';
import { SourceRefusal } from './source-refusal.ts';

export const FEDERATION_AUDIENCE = 'api://AzureADTokenExchange';
/** kube-apiserver refuses less than 600 s; an hour is what projected tokens get by default. */
export const TOKEN_SECONDS = 3600;

export interface TokenRequester {
  postJson(path: string, body: unknown, timeoutMs: number): Promise<unknown>;
}

interface Held {
  readonly token: string;
  readonly reuseUntil: number;
}

export class ServiceAccountTokens {
  readonly #api: () => Promise<TokenRequester>;
  readonly #held: LRUCache<string, Promise<Held>>;
  readonly #clock: Clock;
  readonly #timeoutMs: number;

  constructor(api: () => Promise<TokenRequester>, o: { maxEntries?: number; clock?: Clock; timeoutMs?: number } = {}) {
    this.#api = api;
    this.#clock = o.clock ?? systemClock;
    this.#timeoutMs = o.timeoutMs ?? 5_000;
    this.#held = new LRUCache({ max: o.maxEntries ?? 1024 });
  }

  async get(pod: PodRef, account: SecretRef): Promise<string> {
    const key = `${pod.uid} ${account.namespace}/${account.name}`;
    const held = this.#held.get(key);
    if (held !== undefined) {
      try {
        const h = await held;
        if (h.reuseUntil > this.#clock.now()) return h.token;
      } catch {
        // refused or failed before: ask again
      }
      if (this.#held.get(key) === held) this.#held.delete(key);
    }
    let p = this.#held.get(key);
    if (p === undefined) {
      p = this.#request(pod, account);
      this.#held.set(key, p);
      p.catch(() => { if (this.#held.get(key) === p) this.#held.delete(key); });
    }
    return (await p).token;
  }

  async #request(pod: PodRef, account: SecretRef): Promise<Held> {
    const path = `/api/v1/namespaces/${encodeURIComponent(account.namespace)}/serviceaccounts/${encodeURIComponent(account.name)}/token`;
    const body = {
      apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest',
      spec: { audiences: [FEDERATION_AUDIENCE], expirationSeconds: TOKEN_SECONDS, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: pod.name, uid: pod.uid } },
    };
    const who = `service account ${account.namespace}/${account.name}, pod ${pod.namespace}/${pod.name}`;
    const asked = this.#clock.now();
    let raw: unknown;
    try {
      raw = await (await this.#api()).postJson(path, body, this.#timeoutMs);
    } catch (err) {
      const status = (err as { statusCode?: number }).statusCode;
      // 400 (the pod runs as another account), 403 (RBAC, the admission policy), 404 (pod or
      // account gone), 409 (uid differs: a new pod of that name), 422 (refused spec): final.
      if (status !== undefined && status >= 400 && status < 500 && status !== 429) {
        // The API server's own text names podid-nmi's RBAC and policy: the daemon's to read, not the pod's.
        throw new SourceRefusal('service_account_token_refused', `${who}: HTTP ${status}`);
      }
      throw new SourceRefusal('service_account_token_unavailable', `${who}: ${status === undefined ? 'no answer' : `HTTP ${status}`}`);
    }
    const status = (raw as { status?: { token?: unknown; expirationTimestamp?: unknown } }).status;
    const token = status?.token;
    const expires = Date.parse(String(status?.expirationTimestamp));
    if (typeof token !== 'string' || token === '' || !Number.isFinite(expires)) {
      throw new SourceRefusal('service_account_token_unavailable', `${who}: the TokenRequest answer has no token or expiry`);
    }
    return { token, reuseUntil: asked + ((expires - asked) * 4) / 5 };
  }
}
