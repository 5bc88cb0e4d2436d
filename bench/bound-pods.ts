// The --cluster-state file the small benches share: one identity (clientID, resourceID /r/id)
// bound by selector `app` in namespace `bench`, and the pods that carry that label.

export interface BenchPod {
  name: string;
  uid: string;
  ip: string;
  hostNetwork?: boolean;
}

export function boundPodsYaml(clientID: string, pods: readonly BenchPod[]): string {
  const pod = (p: BenchPod): string => `---
apiVersion: v1
kind: Pod
metadata: {name: ${p.name}, namespace: bench, uid: ${p.uid}, labels: {aadpodidbinding: app}}
spec: {nodeName: bench${p.hostNetwork === true ? ', hostNetwork: true' : ''}}
status: {phase: Running, podIPs: [{ip: ${p.ip}}]}
`;
  return `apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata: {name: id, namespace: bench}
spec: {type: 0, clientID: ${clientID}, resourceID: /r/id}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {name: b, namespace: bench}
spec: {azureIdentity: id, selector: app}
${pods.map(pod).join('')}`;
}
