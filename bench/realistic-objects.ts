// API objects shaped like what a real API server sends, so that list pages, watch events and
// whatever a daemon keeps of them weigh what they weigh in a cluster: a pod here is about
// 7 KB of JSON (managedFields, two containers, env, probes, projected volumes, conditions),
// an AzureIdentity or binding about 1.5 KB (kubectl's last-applied annotation, managedFields).
import { randomUUID } from 'node:crypto';
import type { Obj } from '../test/fake-apiserver/fake-apiserver.ts';

const TS = '2026-11-20T08:15:42Z';

function managedFields(manager: string, fields: Obj): Obj[] {
  return [
    { manager, operation: 'Update', apiVersion: 'v1', time: TS, fieldsType: 'FieldsV1', fieldsV1: fields },
    { manager: 'kubelet', operation: 'Update', apiVersion: 'v1', time: TS, fieldsType: 'FieldsV1', subresource: 'status',
      fieldsV1: { 'f:status': { 'f:conditions': { 'k:{"type":"Ready"}': { '.': {}, 'f:lastProbeTime': {}, 'f:lastTransitionTime': {}, 'f:status': {}, 'f:type': {} } }, 'f:containerStatuses': {}, 'f:hostIP': {}, 'f:phase': {}, 'f:podIP': {}, 'f:podIPs': { '.': {}, 'k:{"ip":"10.0.0.1"}': { '.': {}, 'f:ip': {} } }, 'f:startTime': {} } } },
  ];
}

function container(name: string, image: string): Obj {
  return {
    name,
    image,
    imagePullPolicy: 'IfNotPresent',
    ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
    env: Array.from({ length: 10 }, (_, i) => ({ name: `SETTING_${i}`, value: `value-of-setting-number-${i}` })).concat([
      { name: 'POD_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } } } as never,
    ]),
    resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '256Mi' } },
    livenessProbe: { httpGet: { path: '/healthz', port: 8080, scheme: 'HTTP' }, periodSeconds: 10, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3 },
    readinessProbe: { httpGet: { path: '/readyz', port: 8080, scheme: 'HTTP' }, periodSeconds: 5, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3 },
    volumeMounts: [
      { name: 'config', mountPath: '/etc/app', readOnly: true },
      { name: 'kube-api-access-x7k2p', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true },
    ],
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] } },
  };
}

export interface PodShape {
  name: string;
  namespace: string;
  node: string;
  ip: string;
  labels?: Record<string, string>;
}

export function realisticPod(p: PodShape): Obj {
  const labels = { app: p.name.replace(/-\d+$/, ''), 'app.kubernetes.io/part-of': 'shop', 'pod-template-hash': '7d9f8c6b5d', ...p.labels };
  return {
    metadata: {
      name: p.name,
      namespace: p.namespace,
      uid: randomUUID(),
      generateName: `${p.name}-`,
      labels,
      annotations: {
        'kubectl.kubernetes.io/restartedAt': TS,
        'prometheus.io/scrape': 'true',
        'prometheus.io/port': '9102',
      },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${p.name}-7d9f8c6b5d`, uid: randomUUID(), controller: true, blockOwnerDeletion: true }],
      managedFields: managedFields('kube-controller-manager', {
        'f:metadata': { 'f:generateName': {}, 'f:labels': Object.fromEntries(Object.keys(labels).map((k) => [`f:${k}`, {}])), 'f:ownerReferences': {} },
        'f:spec': { 'f:containers': { 'k:{"name":"app"}': { '.': {}, 'f:env': {}, 'f:image': {}, 'f:imagePullPolicy': {}, 'f:livenessProbe': {}, 'f:name': {}, 'f:ports': {}, 'f:readinessProbe': {}, 'f:resources': {}, 'f:securityContext': {}, 'f:volumeMounts': {} } }, 'f:dnsPolicy': {}, 'f:enableServiceLinks': {}, 'f:restartPolicy': {}, 'f:schedulerName': {}, 'f:securityContext': {}, 'f:terminationGracePeriodSeconds': {}, 'f:volumes': {} },
      }),
    },
    spec: {
      nodeName: p.node,
      serviceAccountName: 'default',
      containers: [container('app', `registry.example/shop/${p.name}:1.4.2`), container('sidecar', 'registry.example/mesh/proxy:2.1.0')],
      volumes: [
        { name: 'config', configMap: { name: 'app-config', defaultMode: 420 } },
        { name: 'kube-api-access-x7k2p', projected: { defaultMode: 420, sources: [
          { serviceAccountToken: { expirationSeconds: 3607, path: 'token' } },
          { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
          { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } },
        ] } },
      ],
      restartPolicy: 'Always',
      terminationGracePeriodSeconds: 30,
      dnsPolicy: 'ClusterFirst',
      schedulerName: 'default-scheduler',
      securityContext: { fsGroup: 2000 },
      tolerations: [
        { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
        { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
      ],
      priority: 0,
      enableServiceLinks: true,
      preemptionPolicy: 'PreemptLowerPriority',
    },
    status: {
      phase: 'Running',
      conditions: ['PodReadyToStartContainers', 'Initialized', 'Ready', 'ContainersReady', 'PodScheduled'].map((type) => ({ type, status: 'True', lastProbeTime: null, lastTransitionTime: TS })),
      hostIP: '10.224.0.4',
      hostIPs: [{ ip: '10.224.0.4' }],
      podIP: p.ip,
      podIPs: [{ ip: p.ip }],
      startTime: TS,
      containerStatuses: ['app', 'sidecar'].map((name) => ({
        name, state: { running: { startedAt: TS } }, lastState: {}, ready: true, restartCount: 0,
        image: `registry.example/${name}:1`, imageID: `registry.example/${name}@sha256:${'ab12'.repeat(16)}`,
        containerID: `containerd://${'cd34'.repeat(16)}`, started: true,
      })),
      qosClass: 'Burstable',
    },
  };
}

function lastApplied(kind: string, name: string, namespace: string, spec: Obj): string {
  return JSON.stringify({ apiVersion: 'aadpodidentity.k8s.io/v1', kind, metadata: { annotations: {}, name, namespace }, spec });
}

function crdManagedFields(spec: Obj): Obj[] {
  return [{
    manager: 'kubectl-client-side-apply', operation: 'Update', apiVersion: 'aadpodidentity.k8s.io/v1', time: TS, fieldsType: 'FieldsV1',
    fieldsV1: { 'f:metadata': { 'f:annotations': { '.': {}, 'f:kubectl.kubernetes.io/last-applied-configuration': {} } }, 'f:spec': Object.fromEntries(Object.keys(spec).map((k) => [`f:${k}`, {}])) },
  }];
}

export function realisticIdentity(name: string, namespace: string, clientID: string): Obj {
  const spec = {
    type: 0,
    resourceID: `/subscriptions/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0/resourcegroups/rg-${namespace}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/${name}`,
    clientID,
  };
  return {
    metadata: {
      name, namespace, uid: randomUUID(), generation: 1,
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': lastApplied('AzureIdentity', name, namespace, spec) },
      managedFields: crdManagedFields(spec),
    },
    spec,
  };
}

export function realisticBinding(name: string, namespace: string, azureIdentity: string, selector: string): Obj {
  const spec = { azureIdentity, selector };
  return {
    metadata: {
      name, namespace, uid: randomUUID(), generation: 1,
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': lastApplied('AzureIdentityBinding', name, namespace, spec) },
      managedFields: crdManagedFields(spec),
    },
    spec,
  };
}
