// Workload identity federation end to end, with real packets: a pod in its own network
// namespace runs @azure/identity's ManagedIdentityCredential unchanged; its IMDS call is DNATed
// to the daemon, which gets a service-account token bound to the pod from the (fake) API
// server's TokenRequest and trades it at a fake Entra ID that checks it against the cluster's
// JWKS, issuer and subject. The IMDS emulator holds no such identity and is never asked.
import t from 'tap';
import { netnsUnavailable } from './netns/netns.ts';
import { nodeBinary } from './netns/netns.ts';
import { PODS } from './e2e/cluster.ts';
import { E2E } from './e2e/environment.ts';
import { LineProcess } from './e2e/line-process.ts';
import type { Json } from './e2e/line-process.ts';

const FED = 'f0f0f0f0-0000-4000-8000-0000000000fe';
const TENANT = 'e2e00000-0000-4000-8000-0000000000e2';
const SA = 'orders-runner';
const NS = PODS.b.namespace;

const unavailable = await netnsUnavailable();
t.setTimeout(300_000);

t.test('a pod\'s ManagedIdentityCredential gets a federated token through the DNAT; IMDS is never asked', { skip: unavailable ?? false }, async (t) => {
  const env = await E2E.start();
  t.teardown(() => env.destroy());
  const ready = env.api.lines.find((l) => l.event === 'ready')!;
  const entra = new LineProcess(env.node.ns, nodeBinary, [
    new URL('./e2e/entra-process.ts', import.meta.url).pathname,
    '--tenant', TENANT, '--client-id', FED, '--issuer', String(ready.issuer), '--subject', `system:serviceaccount:${NS}:${SA}`,
    '--jwks', JSON.stringify(ready.jwks),
  ], { NODE_OPTIONS: '' });
  t.teardown(() => entra.close());
  const authority = String((await entra.waitFor((l) => l.event === 'ready', 'the fake Entra ID', 60_000)).authority);

  // Pod B now runs as its own service account, bound to an identity that says workload-identity.
  await env.api.request({ op: 'create', resource: 'serviceaccounts', object: { metadata: { name: SA, namespace: NS } } });
  await env.api.request({ op: 'create', resource: 'azureidentities', object: {
    apiVersion: 'aadpodidentity.k8s.io/v1', kind: 'AzureIdentity',
    metadata: { name: 'fed', namespace: NS, annotations: { 'podid-nmi.io/token-source': 'workload-identity' } },
    spec: { type: 0, clientID: FED, tenantID: TENANT },
  } });
  await env.api.request({ op: 'create', resource: 'azureidentitybindings', object: {
    apiVersion: 'aadpodidentity.k8s.io/v1', kind: 'AzureIdentityBinding',
    metadata: { name: 'fed', namespace: NS }, spec: { azureIdentity: 'fed', selector: 'fed' },
  } });
  const podB = (await env.api.request({ op: 'get', resource: 'pods', namespace: NS, name: PODS.b.name })).object as Json & { metadata: Json; spec: Json };
  podB.metadata.labels = { aadpodidbinding: 'fed' };
  podB.spec.serviceAccountName = SA;
  await env.api.request({ op: 'update', resource: 'pods', object: podB });

  env.daemonFlags = (f) => [...f, `--authority-host=${authority}`];
  await env.startDaemon();

  const got = await env.client('b', 'managed-identity-credential', ['--client-id', FED], 30_000);
  t.ok(got.ok, `ManagedIdentityCredential({clientId}) got a token (${got.error ?? ''})`);
  t.equal(got.clientId, FED, 'a token of the federated identity');

  const calls = (await entra.request({ op: 'calls' })).value as Array<Record<string, unknown>>;
  t.match(calls, [{ tenant: TENANT, clientID: FED, credential: 'federated', subject: `system:serviceaccount:${NS}:${SA}`, status: 200, scope: 'https://vault.azure.net/.default' }],
    'Entra was asked once, with the pod\'s service-account token, and accepted it');
  const requests = (await env.api.request({ op: 'tokenRequests' })).value as Array<{ spec: Json; serviceAccount: string; status: number }>;
  t.equal(requests.length, 1, 'one TokenRequest');
  t.match(requests[0], { serviceAccount: SA, status: 201, spec: { audiences: ['api://AzureADTokenExchange'], boundObjectRef: { kind: 'Pod', name: PODS.b.name, uid: podB.metadata.uid } } });
  const imdsTokens = (await env.imdsRequests()).filter((r) => r.url.toLowerCase().includes('/oauth2/token'));
  t.same(imdsTokens.map((r) => r.url), [], 'the IMDS emulator was never asked for a token');
});
