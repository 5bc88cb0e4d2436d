// Cluster state from the Kubernetes API: four informers (this node's pods, and the three
// aad-pod-identity kinds in all namespaces), plus in standard mode a fifth for MIC's
// AzureAssignedIdentities of this node, feeding one ClusterIndex. API trouble never ends
// the process nor empties the state: the informers retry with backoff and the request path
// keeps answering from the last known objects.
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { DEFAULT_BACKOFF } from './backoff.ts';
import type { BackoffOptions } from './backoff.ts';
import {
  CRD_GROUP, toAzureAssignedIdentity, toAzureIdentity, toAzureIdentityBinding, toAzurePodIdentityException, toPodInfo,
} from './convert.ts';
import { FreshnessTracker } from './freshness.ts';
import type { FreshnessTuning } from './freshness.ts';
import { BindingSink, NamedSink, PodSink } from './index-sinks.ts';
import { IndexedClusterState } from './indexed-state.ts';
import { releaseBurstMemory } from '../runtime/memory.ts';
import { InformerMetrics } from './informer-metrics.ts';
import { loadKubeConfig } from './kube-config.ts';
import { KubeHttp } from './kube-http.ts';
import { ResilientInformer } from './resilient-informer.ts';
import type { InformerTuning, ResourceSpec } from './resilient-informer.ts';

export interface InformerSourceOptions {
  /** Path of a kubeconfig file; else $KUBECONFIG; else the in-cluster service account. */
  kubeconfig?: string;
  /** Pods are listed and watched with fieldSelector spec.nodeName=<nodeName>. */
  nodeName: string;
  /** User-Agent of every API request (podid-nmi/<version> [--custom-user-agent]). */
  userAgent?: string;
  log: Logger;
  /** The informers' metrics (podid_nmi_informer_*) are registered here. */
  registry: Registry;
  /** Jittered reconnect backoff; default 200 ms doubling up to 30 s. */
  backoff?: BackoffOptions;
  /** Bounds on API requests; the defaults suit a real cluster, tests shorten them. */
  timeouts?: { connectMs?: number; idleMs?: number; listMs?: number };
  /** Objects per list page (default 500). */
  pageSize?: number;
  /** Standard mode: also watch MIC's AzureAssignedIdentities labelled `nodename=<nodeName>`. */
  assignedIdentities?: boolean;
  /** How the API server's silence is detected (freshness.ts); tests shorten it. */
  freshness?: Partial<FreshnessTuning>;
}

export const DEFAULT_TIMEOUTS = { connectMs: 10_000, idleMs: 150_000, listMs: 60_000 } as const;

const AAD_PATH = `/apis/${CRD_GROUP}/v1`;

// RFC 1123 subdomain, as node names are; anything else could smuggle a second field selector.
const NODE_NAME = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export class InformerClusterState extends IndexedClusterState {
  readonly #http: KubeHttp;
  readonly #log: Logger;
  readonly #informers: ResilientInformer[] = [];
  readonly #readyWaiters = new Set<() => void>();
  readonly #startedAt = performance.now();
  #ready = false;
  #closed = false;
  freshness: FreshnessTracker | undefined;

  private constructor(http: KubeHttp, log: Logger) {
    super();
    this.#http = http;
    this.#log = log;
  }

  /**
   * Starts the four informers and resolves at once, without waiting for them to sync.
   * Rejects only on configuration errors (kubeconfig, node name), never on API errors.
   */
  static async start(opts: InformerSourceOptions): Promise<InformerClusterState> {
    if (!NODE_NAME.test(opts.nodeName)) throw new Error(`invalid node name ${JSON.stringify(opts.nodeName)}`);
    const kc = await loadKubeConfig(opts.kubeconfig);
    const http = new KubeHttp(kc, opts.userAgent);
    // Unusable credentials (missing token or key file) are a startup error, not something to retry forever.
    await http.prepare(http.url('/api', {}));
    const log = opts.log.child({ component: 'informers' });
    const state = new InformerClusterState(http, log);
    const tuning: InformerTuning = {
      backoff: opts.backoff ?? DEFAULT_BACKOFF,
      connectTimeoutMs: opts.timeouts?.connectMs ?? DEFAULT_TIMEOUTS.connectMs,
      idleTimeoutMs: opts.timeouts?.idleMs ?? DEFAULT_TIMEOUTS.idleMs,
      listTimeoutMs: opts.timeouts?.listMs ?? DEFAULT_TIMEOUTS.listMs,
      pageSize: opts.pageSize ?? 500,
    };
    const metrics = new InformerMetrics(opts.registry, () => state.#informers);
    const shared = { http, tuning, metrics, log };
    for (const spec of state.#specs(opts.nodeName, opts.assignedIdentities === true)) {
      state.#informers.push(new ResilientInformer(shared, spec, () => state.#onSynced()));
    }
    state.freshness = new FreshnessTracker({ http, sources: () => state.#informers, registry: opts.registry, log, tuning: opts.freshness });
    log.info({ server: http.server, node: opts.nodeName }, 'starting informers');
    for (const informer of state.#informers) informer.start();
    return state;
  }

  isReady(): boolean {
    return this.#ready;
  }

  /** Resolves once every informer has applied its first list; rejects on abort or close. */
  whenReady(signal?: AbortSignal): Promise<void> {
    if (this.#ready) return Promise.resolve();
    if (this.#closed) return Promise.reject(new Error('cluster state closed before it was ready'));
    if (signal?.aborted === true) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      const settle = (err?: unknown): void => {
        this.#readyWaiters.delete(onChange);
        signal?.removeEventListener('abort', onAbort);
        if (err === undefined) resolve();
        else reject(err);
      };
      const onChange = (): void => {
        if (this.#ready) settle();
        else if (this.#closed) settle(new Error('cluster state closed before it was ready'));
      };
      const onAbort = (): void => settle(signal?.reason);
      this.#readyWaiters.add(onChange);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.freshness?.stop();
    await Promise.all(this.#informers.map((informer) => informer.stop()));
    await this.#http.close();
    this.#notify();
  }

  #specs(nodeName: string, assignedIdentities: boolean): ResourceSpec[] {
    const index = this.index;
    const specs: ResourceSpec[] = [
      {
        resource: 'pods',
        path: '/api/v1/pods',
        fieldSelector: `spec.nodeName=${nodeName}`,
        convert: (raw) => ({ kind: 'Pod', object: toPodInfo(raw) }),
        sink: new PodSink(index, nodeName),
        count: () => index.counts().pods,
      },
      {
        resource: 'azureidentities',
        path: `${AAD_PATH}/azureidentities`,
        convert: (raw) => ({ kind: 'AzureIdentity', object: toAzureIdentity(raw) }),
        sink: new NamedSink(index, 'AzureIdentity'),
        count: () => index.counts().identities,
      },
      {
        resource: 'azureidentitybindings',
        path: `${AAD_PATH}/azureidentitybindings`,
        convert: (raw) => ({ kind: 'AzureIdentityBinding', object: toAzureIdentityBinding(raw) }),
        sink: new BindingSink(index, this.#log),
        count: () => index.counts().bindings,
      },
      {
        resource: 'azurepodidentityexceptions',
        path: `${AAD_PATH}/azurepodidentityexceptions`,
        convert: (raw) => ({ kind: 'AzurePodIdentityException', object: toAzurePodIdentityException(raw) }),
        sink: new NamedSink(index, 'AzurePodIdentityException'),
        count: () => index.counts().exceptions,
      },
    ];
    if (assignedIdentities) {
      specs.push({
        resource: 'azureassignedidentities',
        path: `${AAD_PATH}/azureassignedidentities`,
        // The only label MIC sets (NMI with --enableScaleFeatures watched the same way).
        labelSelector: `nodename=${nodeName}`,
        convert: (raw) => ({ kind: 'AzureAssignedIdentity', object: toAzureAssignedIdentity(raw) }),
        sink: new NamedSink(index, 'AzureAssignedIdentity'),
        count: () => index.counts().assignedIdentities,
      });
    }
    return specs;
  }

  #onSynced(): void {
    if (this.#ready || this.#closed || !this.#informers.every((i) => i.isSynced())) return;
    this.#ready = true;
    const ms = Math.round(performance.now() - this.#startedAt);
    const released = releaseBurstMemory();
    this.#log.info({ ...this.counts(), ms, released }, 'cluster state ready');
    this.#notify();
  }

  #notify(): void {
    for (const waiter of [...this.#readyWaiters]) waiter();
  }
}
