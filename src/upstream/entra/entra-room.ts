// Tokens from Entra ID, assembled: the client, the Secrets and service-account tokens it needs,
// the three sources, and their own scheduler and token cache (the same single-flight,
// refresh-ahead and per-pod shares as IMDS's, with bounds of their own: Entra's throttling is
// per application and tenant, not the VM's 20 requests a second). Per node: at most
// `maxConcurrency` requests at Entra and `maxRps` starts a second; per identity: IdentityGate.
import { LRUCache } from 'lru-cache';
import type { Clock } from '../clock.ts';
import { systemClock } from '../clock.ts';
import { UpstreamFailure, type UpstreamAnswer } from '../imds-client.ts';
import { fetchPaced, UpstreamScheduler, type SchedulerObserver } from '../scheduler.ts';
import { TokenCache, type TokenOutcome } from '../token-cache.ts';
import type { EntraOrder, TokenSource } from '../token-source.ts';
import { EntraClient } from './entra-client.ts';
import { ClientCertificateSource, ClientSecretSource, FederatedSource } from './entra-sources.ts';
import { IdentityGate } from './identity-gate.ts';
import { SecretStore, type SecretGetter } from './secrets.ts';
import { ServiceAccountTokens, type TokenRequester } from './service-account-tokens.ts';
import { sourceRefusal } from './source-refusal.ts';

export type KubeApi = SecretGetter & TokenRequester;

export interface EntraRoomOptions {
  /** The Kubernetes API for Secrets and TokenRequests; undefined when state comes from a file. */
  kube: (() => Promise<KubeApi>) | undefined;
  userAgent?: string;
  connectTimeoutMs?: number;
  responseTimeoutMs?: number;
  tokenCache: boolean;
  tokenWaitMs: number;
  maxConcurrency?: number;
  maxRps?: number;
  maxQueue?: number;
  maxQueuePerPod?: number;
  secretTtlMs?: number;
  observer?: SchedulerObserver;
  clock?: Clock;
}

export class EntraRoom {
  readonly scheduler: UpstreamScheduler;
  /** The node-wide bounds on Entra traffic, as `nmi status` shows them. */
  readonly limits: { maxRps: number; maxConcurrency: number; maxQueue: number; maxQueuePerPod: number };
  readonly tokens: TokenCache | undefined;
  readonly client: EntraClient;
  readonly secrets: SecretStore;
  readonly accounts: ServiceAccountTokens;
  readonly #kube: boolean;
  readonly #tokenWaitMs: number;
  /** The latest order per key: what the scheduler (and refresh-ahead) fetches for it. */
  readonly #orders: LRUCache<string, EntraOrder>;
  readonly #sources: { [K in EntraOrder['source']['kind']]: TokenSource<EntraOrder> };
  readonly #gate = new IdentityGate();

  constructor(o: EntraRoomOptions) {
    const clock = o.clock ?? systemClock;
    const missing = (): Promise<KubeApi> => Promise.reject(new Error('no Kubernetes API'));
    this.#kube = o.kube !== undefined;
    this.#tokenWaitMs = o.tokenWaitMs;
    this.client = new EntraClient({ userAgent: o.userAgent, connectTimeoutMs: o.connectTimeoutMs, responseTimeoutMs: o.responseTimeoutMs, clock });
    this.secrets = new SecretStore(o.kube ?? missing, { ttlMs: o.secretTtlMs });
    this.accounts = new ServiceAccountTokens(o.kube ?? missing, { clock });
    this.#sources = {
      'client-secret': new ClientSecretSource(this.client, this.secrets) as TokenSource<EntraOrder>,
      'client-certificate': new ClientCertificateSource(this.client, this.secrets, clock) as TokenSource<EntraOrder>,
      'workload-identity': new FederatedSource(this.client, this.accounts) as TokenSource<EntraOrder>,
    };
    const maxQueue = o.maxQueue ?? 1024;
    this.#orders = new LRUCache({ max: 4096 + maxQueue });
    this.limits = { maxRps: o.maxRps ?? 50, maxConcurrency: o.maxConcurrency ?? 16, maxQueue, maxQueuePerPod: o.maxQueuePerPod ?? 16 };
    this.scheduler = new UpstreamScheduler({
      transport: { fetch: (_method, key, signal) => this.#fetch(key, signal ?? new AbortController().signal) },
      maxRps: this.limits.maxRps,
      maxConcurrency: this.limits.maxConcurrency,
      maxQueue,
      maxQueuePerCaller: this.limits.maxQueuePerPod,
      throttleHoldsAll: false,
      clock,
      observer: o.observer,
    });
    this.tokens = o.tokenCache ? new TokenCache(this.scheduler, { waitMs: o.tokenWaitMs, clock }) : undefined;
  }

  /** A pod's token from Entra: cached, shared and paced like IMDS's, charged to the pod's share. */
  get(order: EntraOrder, podUid: string, signal: AbortSignal, onCache?: (o: TokenOutcome) => void): Promise<UpstreamAnswer> {
    if (!this.#kube) return Promise.resolve(sourceRefusal('entra_needs_kubernetes_api', `${order.source.kind} for client ${order.source.clientID}`));
    this.#orders.set(order.key, order);
    return this.tokens !== undefined
      ? this.tokens.get(order.key, { caller: podUid, signal, onOutcome: onCache })
      : fetchPaced(this.scheduler, order.key, podUid, signal, this.#tokenWaitMs);
  }

  /** The token `get` would answer at once from the cache; undefined when it would fetch, wait or refuse. */
  hit(order: EntraOrder): UpstreamAnswer | undefined {
    if (!this.#kube || this.tokens === undefined) return undefined;
    const answer = this.tokens.hit(order.key);
    if (answer !== undefined) this.#orders.set(order.key, order);
    return answer;
  }

  stop(): void {
    this.tokens?.stop();
    this.scheduler.stop();
  }

  close(): Promise<void> {
    this.stop();
    return this.client.close();
  }

  #fetch(key: string, signal: AbortSignal): Promise<UpstreamAnswer> {
    const order = this.#orders.get(key);
    if (order === undefined) return Promise.reject(new UpstreamFailure('aborted', 'the order was dropped'));
    const s = order.source;
    return this.#gate.run(`${s.authority} ${s.tenantID} ${s.clientID}`, signal, () => this.#sources[s.kind].fetch(order, signal));
  }
}
