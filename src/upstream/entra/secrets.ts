// Service principals' Secrets, read from the API on demand: a GET when a token is fetched, kept
// a short while (30 s) so a burst of fetches reads once, and forgotten at once when Entra says
// the credential is wrong, so a rotated Secret is used on the next fetch. Why not a watch: a
// watch needs `list`/`watch` on Secrets (every Secret of the cluster, or of each namespace,
// held in memory here), where a GET needs `get` on the named ones, and Secrets are read only
// on a token cache miss (about once an hour per identity and resource).
import { LRUCache } from 'lru-cache';
import type { SecretRef } from '../../cluster/objects.ts';
import { SourceRefusal } from './source-refusal.ts';

export interface SecretGetter {
  getJson(path: string, query: Record<string, string>, timeoutMs: number): Promise<unknown>;
}

export type SecretData = ReadonlyMap<string, Buffer>;

export interface SecretStoreOptions {
  ttlMs?: number;
  maxEntries?: number;
  timeoutMs?: number;
}

export class SecretStore {
  readonly #api: () => Promise<SecretGetter>;
  readonly #cache: LRUCache<string, Promise<SecretData>>;
  readonly #timeoutMs: number;

  constructor(api: () => Promise<SecretGetter>, o: SecretStoreOptions = {}) {
    this.#api = api;
    this.#timeoutMs = o.timeoutMs ?? 5_000;
    this.#cache = new LRUCache({ max: o.maxEntries ?? 256, ttl: o.ttlMs ?? 30_000 });
  }

  /** The Secret's data, decoded; a SourceRefusal when it is missing or cannot be read. */
  read(ref: SecretRef): Promise<SecretData> {
    const key = `${ref.namespace}/${ref.name}`;
    let p = this.#cache.get(key);
    if (p === undefined) {
      p = this.#get(ref);
      this.#cache.set(key, p);
      // A failure is not kept: the next fetch asks again.
      p.catch(() => { if (this.#cache.get(key) === p) this.#cache.delete(key); });
    }
    return p;
  }

  /** Entra refused what was read: the next fetch reads the Secret again (rotation). */
  forget(ref: SecretRef): void {
    this.#cache.delete(`${ref.namespace}/${ref.name}`);
  }

  async #get(ref: SecretRef): Promise<SecretData> {
    const path = `/api/v1/namespaces/${encodeURIComponent(ref.namespace)}/secrets/${encodeURIComponent(ref.name)}`;
    let raw: unknown;
    try {
      raw = await (await this.#api()).getJson(path, {}, this.#timeoutMs);
    } catch (err) {
      const status = (err as { statusCode?: number }).statusCode;
      if (status === 404) throw new SourceRefusal('secret_missing', `Secret ${ref.namespace}/${ref.name} not found`);
      if (status === 403) throw new SourceRefusal('secret_unreadable', `Secret ${ref.namespace}/${ref.name}: forbidden (does podid-nmi's ClusterRole have get on secrets? see the service-principals kustomize component)`);
      throw new SourceRefusal('secret_unreadable', `Secret ${ref.namespace}/${ref.name}: ${status === undefined ? 'no answer' : `HTTP ${status}`}`);
    }
    const data = (raw as { data?: unknown }).data;
    const out = new Map<string, Buffer>();
    if (typeof data === 'object' && data !== null) {
      for (const [k, v] of Object.entries(data)) if (typeof v === 'string') out.set(k, Buffer.from(v, 'base64'));
    }
    return out;
  }
}

/** NMI's rule for a client secret: key `clientSecret`, or the Secret's only key. */
export function clientSecretOf(data: SecretData, ref: SecretRef): string {
  const value = data.get('clientSecret') ?? (data.size === 1 ? data.values().next().value : undefined);
  if (value === undefined || value.length === 0) {
    throw new SourceRefusal('secret_key_missing', `Secret ${ref.namespace}/${ref.name} has no key "clientSecret" and ${data.size === 0 ? 'no key at all' : `${data.size} keys (${[...data.keys()].sort().join(', ')})`}`);
  }
  return value.toString('utf8');
}
