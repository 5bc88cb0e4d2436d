// The pure hot path, in process: matcher -> query -> token parameters -> pod lookup -> decision,
// with 250 pods on the node and 20,000 identities and bindings in the cluster, in managed mode
// and in standard mode (one MIC AzureAssignedIdentity per pod). Bounded by count.
// Run: node_modules/.bin/node bench/decision.bench.ts
import { ClusterIndex } from '../src/cluster/cluster-index.ts';
import { decideToken, MANAGED, type DecisionPolicy } from '../src/decision/decide.ts';
import { parseTokenRequest } from '../src/decision/token-request.ts';
import { parseQuery } from '../src/matcher/query.ts';
import { matchTarget } from '../src/matcher/request-target.ts';
import { lookupPodNow } from '../src/pods/pod-lookup.ts';

const index = new ClusterIndex();
const IDENTITIES = 20_000;
for (let i = 0; i < IDENTITIES; i++) {
  const ns = `ns${i % 200}`;
  index.upsertIdentity({ namespace: ns, name: `id${i}`, type: 0, clientID: `client-${i}`, resourceID: `/r/${i}` });
  index.upsertBinding({ namespace: ns, name: `b${i}`, azureIdentity: `id${i}`, selector: `sel${i}` });
}
const ips: string[] = [];
for (let i = 0; i < 250; i++) {
  const ip = `10.244.${i >> 8}.${i & 255}`;
  ips.push(ip);
  index.upsertPod({ uid: `u${i}`, namespace: `ns${i % 200}`, name: `p${i}`, labels: { aadpodidbinding: `sel${i}` }, ips: [ip], phase: 'Running', hostNetwork: false, nodeName: 'n' });
  index.upsertAssigned({
    namespace: 'default', name: `p${i}-ns${i % 200}-id${i}`, pod: `p${i}`, podNamespace: `ns${i % 200}`, nodeName: 'n', state: 'Assigned',
    identity: index.identity(`ns${i % 200}`, `id${i}`)!, bindingSelector: `sel${i}`,
  });
}
const STANDARD: DecisionPolicy = { mode: 'standard', forceNamespaced: false };

const targets = ips.map((_, i) => `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net&client_id=client-${i}`);

function once(i: number, policy: DecisionPolicy): string {
  const m = matchTarget(targets[i]!, false);
  if (typeof m === 'string') return m;
  const q = parseQuery(m.rawQuery);
  if (typeof q === 'string') return q;
  const r = parseTokenRequest(q);
  if (typeof r === 'string') return r;
  const found = lookupPodNow(index, ips[i]!);
  if (found === undefined || found.kind === 'refuse') return 'no pod';
  return decideToken(found.pod, index, r, policy).kind;
}

function measure(policy: DecisionPolicy): number {
  // Sanity: every request is granted, so the benchmark measures the full path.
  for (let i = 0; i < ips.length; i++) if (once(i, policy) !== 'grant') throw new Error(`${policy.mode}: request ${i} not granted: ${once(i, policy)}`);
  const N = 2_000_000;
  for (let i = 0; i < 200_000; i++) once(i % 250, policy);
  const started = process.hrtime.bigint();
  for (let i = 0; i < N; i++) once(i % 250, policy);
  return Number(process.hrtime.bigint() - started) / N;
}

const managed = measure(MANAGED);
const standard = measure(STANDARD);
for (const [mode, ns] of [['managed', managed], ['standard', standard]] as const) {
  console.log(`${mode}: ${IDENTITIES} identities/bindings, 250 pods: ${ns.toFixed(0)} ns per token request decided (${(1e9 / ns / 1e6).toFixed(2)} M/s on one core)`);
}
console.log(`standard/managed: ${(standard / managed).toFixed(2)}x, heap ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MiB`);
