// Pod Events for a daemon that reads the Kubernetes API (a state file has no API to write to).
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { KubeHttp } from '../cluster/kube-http.ts';
import { loadKubeConfig } from '../cluster/kube-config.ts';
import type { ClusterView } from '../cluster/view.ts';
import { kubernetesApiErrors } from '../observability/nmi-metrics.ts';
import { KubeEventSink } from './kube-event-sink.ts';
import { PodEvents } from './pod-events.ts';
import { NodeEvents } from './node-events.ts';

export async function startPodEvents(o: { kubeconfig: string; node: string; view: ClusterView; registry: Registry; log: Logger; userAgent?: string }): Promise<PodEvents> {
  const http = new KubeHttp(await loadKubeConfig(o.kubeconfig === '' ? undefined : o.kubeconfig), o.userAgent);
  const sink = new KubeEventSink(http, kubernetesApiErrors(o.registry));
  return new PodEvents({ sink, view: o.view, node: o.node, registry: o.registry, log: o.log.child({ component: 'pod-events' }) });
}

/** Events on the node for the rule parts kept on their own (hostNetwork chain, route_localnet guard). */
export async function startNodeEvents(o: { kubeconfig: string; node: string; registry: Registry; log: Logger; userAgent?: string }): Promise<NodeEvents> {
  const http = new KubeHttp(await loadKubeConfig(o.kubeconfig === '' ? undefined : o.kubeconfig), o.userAgent);
  return new NodeEvents({ sink: new KubeEventSink(http, kubernetesApiErrors(o.registry)), node: o.node, log: o.log.child({ component: 'node-events' }) });
}
