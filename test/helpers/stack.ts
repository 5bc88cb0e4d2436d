// The daemon (file-backed) in front of an IMDS emulator, both on loopback, torn down with the test.
import { Writable } from 'node:stream';
import type { Test } from 'tap';
import { toDaemonConfig, type DaemonConfig } from '../../src/config/daemon-config.ts';
import { parseFlags } from '../../src/config/flags.ts';
import { startDaemon, type Daemon, type DaemonOptions } from '../../src/daemon.ts';
import { startImdsEmulator, type EmulatedIdentity, type EmulatorOptions, type ImdsEmulator } from '../../src/emulator/imds-emulator.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { parseAllDocuments, type Document } from 'yaml';
import { FakeApiServer, type Obj, type ResourceName } from '../fake-apiserver/fake-apiserver.ts';
import { ask, type Answer, type Ask } from './http.ts';

export interface Stack {
  daemon: Daemon;
  emulator: ImdsEmulator;
  port: number;
  logs: string[];
  ask(path: string, o?: Ask): Promise<Answer>;
  metrics(): Promise<string>;
}

export const IDS: Record<string, EmulatedIdentity> = {
  reader: { clientID: '11111111-1111-4111-8111-111111111111', resourceID: '/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/reader', objectID: 'o-1' },
  writer: { clientID: '22222222-2222-4222-8222-222222222222', resourceID: '/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/writer', objectID: 'o-2' },
  agent: { clientID: '33333333-3333-4333-8333-333333333333', resourceID: '/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agent', objectID: 'o-3' },
};

/** Pods: .10 bound to reader, .11 unlabelled, .12 excepted, .13 bound to writer, .14 conflict pair. */
export const STATE_YAML = `
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata: {name: reader, namespace: shop}
spec: {type: 0, clientID: ${IDS.reader!.clientID}, resourceID: ${IDS.reader!.resourceID}}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {name: reader-binding, namespace: shop}
spec: {azureIdentity: reader, selector: orders}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata: {name: writer, namespace: shop}
spec: {type: 0, clientID: ${IDS.writer!.clientID}, resourceID: ${IDS.writer!.resourceID}}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {name: writer-binding, namespace: shop}
spec: {azureIdentity: writer, selector: billing}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {name: catch-all, namespace: shop}
spec: {azureIdentity: writer, selector: ""}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzurePodIdentityException
metadata: {name: system, namespace: kube-system}
spec: {podLabels: {component: agent}}
---
apiVersion: v1
kind: Pod
metadata: {name: orders, namespace: shop, uid: u-10, labels: {aadpodidbinding: orders}}
spec: {nodeName: node-1}
status: {phase: Running, podIPs: [{ip: 127.0.0.10}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, uid: u-11}
spec: {nodeName: node-1}
status: {phase: Running, podIPs: [{ip: 127.0.0.11}]}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: kube-system, uid: u-12, labels: {component: Agent}}
spec: {nodeName: node-1}
status: {phase: Running, podIPs: [{ip: 127.0.0.12}]}
---
apiVersion: v1
kind: Pod
metadata: {name: billing, namespace: shop, uid: u-13, labels: {aadpodidbinding: billing}}
spec: {nodeName: node-1}
status: {phase: Running, podIPs: [{ip: 127.0.0.13}]}
---
apiVersion: v1
kind: Pod
metadata: {name: old, namespace: shop, uid: u-14a, labels: {aadpodidbinding: orders}}
spec: {nodeName: node-1}
status: {phase: Running, podIPs: [{ip: 127.0.0.14}]}
---
apiVersion: v1
kind: Pod
metadata: {name: new, namespace: other, uid: u-14b, labels: {aadpodidbinding: orders}}
spec: {nodeName: node-1}
status: {phase: Pending, podIPs: [{ip: 127.0.0.14}]}
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere, namespace: shop, uid: u-15, labels: {aadpodidbinding: orders}}
spec: {nodeName: node-2}
status: {phase: Running, podIPs: [{ip: 127.0.0.15}]}
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: shop, uid: u-16, labels: {aadpodidbinding: orders}}
spec: {nodeName: node-1}
status: {phase: Succeeded, podIPs: [{ip: 127.0.0.16}]}
`;

/** `kubeconfig` makes the daemon read the Kubernetes API instead of a state file. */
export async function startStack(t: Test, o: {
  flags?: string[]; emulator?: Partial<EmulatorOptions>; stateYaml?: string; kubeconfig?: string;
  /** Changes the parsed configuration (values the flags refuse, for tests that scale time down). */
  configure?: (config: DaemonConfig) => void;
  daemon?: DaemonOptions;
} = {}): Promise<Stack> {
  const emulator = await startImdsEmulator({ identities: Object.values(IDS), rateLimit: false, ...o.emulator });
  t.teardown(() => emulator.close());
  const dir = t.testdir({ 'state.yaml': o.stateYaml ?? STATE_YAML });
  const source = o.kubeconfig === undefined ? `--cluster-state=${dir}/state.yaml` : `--kubeconfig=${o.kubeconfig}`;
  const parsed = parseFlags([
    // Never the machine's own iptables; managed mode unless a test says otherwise.
    source, '--node=node-1', '--manage-iptables=false', '--operation-mode=managed', '--nmi-port=0', '--http-probe-port=0', '--prometheus-port=0',
    '--probe-listen-address=127.0.0.1', '--metadata-ip=127.0.0.1', `--metadata-port=${emulator.port}`, '--pod-wait-ms=200',
    '--log-format=json', '--log-level=info', ...(o.flags ?? []),
  ]);
  const logs: string[] = [];
  const sink = new Writable({ write(chunk: Buffer, _enc, done) { logs.push(...chunk.toString('utf8').split('\n').filter(Boolean)); done(); } });
  const config = toDaemonConfig(parsed.values, {}, parsed.given);
  o.configure?.(config);
  const daemon = await startDaemon(config, createLogger('json', 'info', sink), { defaultMetrics: false, ...o.daemon });
  t.teardown(() => daemon.close());
  const port = daemon.listener.address.port;
  return {
    daemon, emulator, port, logs,
    ask: (path, a) => ask(port, path, a),
    metrics: async () => (await ask(daemon.probes.address.port, '/metrics')).body,
  };
}

export const TOKEN = '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net';

const PLURAL: Record<string, ResourceName> = {
  Pod: 'pods', AzureIdentity: 'azureidentities', AzureIdentityBinding: 'azureidentitybindings', AzurePodIdentityException: 'azurepodidentityexceptions',
};

/** A fake API server holding the objects of STATE_YAML (those `keep` accepts), closed with the test. */
export async function seededApi(t: Test, keep: (obj: Obj) => boolean = () => true): Promise<FakeApiServer> {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  for (const doc of parseAllDocuments(STATE_YAML) as Document[]) {
    const obj = doc.toJS() as Obj;
    if (keep(obj)) api.create(PLURAL[String(obj.kind)]!, obj);
  }
  return api;
}
