// Tokens from Entra ID for identities that are not on the node, end to end against a fake
// API server and a fake Entra ID that check what the real ones check. Every refusal is
// asserted with its status, body and reason; the IMDS emulator must never be asked.
import t from 'tap';
import type { Test } from 'tap';
import { REFUSALS, type Reason } from '../src/decision/reasons.ts';
import { assertRefused } from './helpers/refused.ts';
import type { Answer } from './helpers/http.ts';
import { CLIENT, imdsTokenCalls, META, NS, secret, SECRET_VALUE, startEntraCluster, TENANT, token, type EntraCluster } from './helpers/entra-cluster.ts';
import { startStack } from './helpers/stack.ts';
import { eventually } from './helpers/eventually.ts';

const IMDS_KEYS = ['access_token', 'client_id', 'expires_in', 'expires_on', 'ext_expires_in', 'not_before', 'resource', 'token_type'];

function claims(a: Answer): Record<string, unknown> {
  return JSON.parse(Buffer.from(String(a.json?.access_token).split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** IMDS's JSON shape: exactly its keys, every value a string, expires_on from expires_in. */
function assertImdsShape(t: Test, a: Answer, clientID: string, resource: string): void {
  t.equal(a.status, 200, 'granted');
  t.same(Object.keys(a.json ?? {}).sort(), IMDS_KEYS, 'IMDS\'s keys, no more');
  for (const k of IMDS_KEYS) t.type(a.json?.[k], 'string', `${k} is a string`);
  t.equal(a.json?.client_id, clientID);
  t.equal(a.json?.resource, resource, 'resource echoed as asked');
  t.equal(a.json?.token_type, 'Bearer');
  const on = Number(a.json?.expires_on);
  const notBefore = Number(a.json?.not_before);
  t.ok(on - notBefore >= 3590 && on - notBefore <= 3599, 'expires_on = the request time + Entra\'s expires_in');
  t.ok(Math.abs(on - Date.now() / 1000 - Number(a.json?.expires_in)) <= 2, 'expires_in counts down to expires_on');
}

/** A relayed Entra refusal: Entra's status, its AADSTS code leading the text, its codes. */
function assertEntraError(t: Test, a: Answer, status: number, code: number, what: string): void {
  t.equal(a.status, status, `${what}: Entra's status`);
  t.equal(a.headers['x-podid-nmi-reason'], 'entra_refused', `${what}: reason header`);
  t.match(String(a.json?.error_description), new RegExp(`^AADSTS${code}: `), `${what}: the AADSTS text`);
  t.same(a.json?.error_codes, [code], `${what}: error_codes`);
  t.same(Object.keys(a.json ?? {}).sort(), ['correlation_id', 'error', 'error_codes', 'error_description', 'timestamp', 'trace_id'], `${what}: Entra's fields, nothing else (no error_uri)`);
}

/** A token source's refusal: the reason's status and text, followed by what was found. */
function assertSourceRefused(t: Test, a: Answer, reason: Reason, detail: RegExp, what: string): void {
  const spec = REFUSALS[reason];
  t.equal(a.status, spec.status, `${what}: status`);
  t.equal(a.headers['x-podid-nmi-reason'], reason, `${what}: reason header`);
  t.equal(a.json?.error, spec.error, `${what}: error`);
  t.equal(a.json?.reason, reason, `${what}: reason in the body`);
  t.ok(String(a.json?.error_description).startsWith(`${spec.description}: `), `${what}: the reason's text leads`);
  t.match(String(a.json?.error_description), detail, `${what}: names what was found`);
}

let cluster: EntraCluster;
const ask = (ip: string, resource = 'https://vault.azure.net'): Promise<Answer> => cluster.stack.ask(token(resource), { from: ip, headers: META });

t.test('Entra-sourced tokens', async (t) => {
  cluster = await startEntraCluster(t);
  const { entra, other, api, stack } = cluster;

  t.test('client secret (type 1): a token in IMDS\'s shape, cached, IMDS never asked', async (t) => {
    const a = await ask('127.0.0.40');
    assertImdsShape(t, a, CLIENT.secret, 'https://vault.azure.net');
    t.match(claims(a), { aud: 'https://vault.azure.net', appid: CLIENT.secret, tid: TENANT, via: 'secret' });
    t.match(entra.callsFor(CLIENT.secret).at(-1), { scope: 'https://vault.azure.net/.default', credential: 'secret', status: 200 });
    const calls = entra.calls.length;
    const atOnce = async (): Promise<number> => Number(/podid_nmi_requests_answered_at_once_total (\d+)/.exec(await stack.metrics())?.[1]);
    const before = await atOnce();
    const again = await ask('127.0.0.40');
    t.equal(again.json?.access_token, a.json?.access_token, 'the cached token');
    t.equal(await atOnce(), before + 1, 'answered at once, from the cache, as an IMDS token is');
    t.equal(entra.calls.length, calls, 'no second call to Entra');
    t.equal(imdsTokenCalls(stack), 0, 'IMDS is never asked for this identity');
  });

  t.test('a resource with a trailing slash keeps it in the scope', async (t) => {
    const a = await ask('127.0.0.40', 'https://management.azure.com/');
    t.equal(a.status, 200);
    t.equal(a.json?.resource, 'https://management.azure.com/');
    t.equal(entra.callsFor(CLIENT.secret).at(-1)?.scope, 'https://management.azure.com//.default');
  });

  t.test('a rotated Secret is used on the next fetch', async (t) => {
    const reads = (): number => api.requests.filter((r) => r.path === `/api/v1/namespaces/${NS}/secrets/sp-secret`).length;
    const before = reads();
    entra.apps.get(CLIENT.secret)!.secrets = ['rotated-secret'];
    api.update('secrets', secret('sp-secret', { clientSecret: 'rotated-secret' }));
    // A resource not cached yet: the Secret read 30 s ago at most is still the old one;
    // Entra's 7000215 makes the source read it again and retry once with the new one.
    const a = await ask('127.0.0.40', 'https://storage.azure.com');
    t.equal(a.status, 200, 'granted with the rotated secret');
    const calls = entra.callsFor(CLIENT.secret).filter((c) => c.scope === 'https://storage.azure.com/.default');
    t.same(calls.map((c) => [c.status, c.code ?? 0]), [[401, 7000215], [200, 0]], 'the old secret refused, the new one taken');
    t.equal(reads(), before + 1, 'the Secret was read again, once');
    // The old value is gone for good: a wrong secret now is relayed as Entra said it.
    entra.apps.get(CLIENT.secret)!.secrets = ['yet-another'];
    const refused = await ask('127.0.0.40', 'https://graph.microsoft.com');
    assertEntraError(t, refused, 401, 7000215, 'a secret Entra refuses');
    entra.apps.get(CLIENT.secret)!.secrets = ['rotated-secret'];
  });

  t.test('certificate (type 2): signed assertion, AES and 3DES PKCS#12; RC2-40 refused by name', async (t) => {
    const a = await ask('127.0.0.41');
    assertImdsShape(t, a, CLIENT.cert, 'https://vault.azure.net');
    t.match(claims(a), { appid: CLIENT.cert, via: 'certificate' });
    const des = await ask('127.0.0.50');
    t.equal(des.status, 200, 'PBE-SHA1-3DES (what Key Vault exports)');
    t.equal(des.json?.client_id, CLIENT.des);
    const rc2 = await ask('127.0.0.51');
    assertSourceRefused(t, rc2, 'certificate_invalid', /Secret team\/sp-rc2: .*RC2-40/, 'an RC2-40 file');
    t.equal(entra.callsFor(CLIENT.rc2).length, 0, 'nothing was sent to Entra');
  });

  t.test('workload identity federation: TokenRequest bound to the pod, token per service account', async (t) => {
    const a = await ask('127.0.0.42');
    assertImdsShape(t, a, CLIENT.fed, 'https://vault.azure.net');
    t.match(claims(a), { appid: CLIENT.fed, via: 'federated' });
    t.equal(entra.callsFor(CLIENT.fed).at(-1)?.subject, `system:serviceaccount:${NS}:app-sa`);
    const tr = api.tokenRequests.at(-1)!;
    t.match(tr, { namespace: NS, serviceAccount: 'app-sa', status: 201 });
    t.same(tr.spec.audiences, ['api://AzureADTokenExchange']);
    t.same(tr.spec.boundObjectRef, { apiVersion: 'v1', kind: 'Pod', name: 'fed-app', uid: 'uid-fed-app' });
    t.ok(Number(tr.spec.expirationSeconds) >= 600, 'expirationSeconds at least 600');
    // Another pod of the same service account: the same token, no new TokenRequest or Entra call.
    const requests = api.tokenRequests.length;
    const calls = entra.calls.length;
    const same = await ask('127.0.0.48');
    t.equal(same.json?.access_token, a.json?.access_token, 'shared within the service account');
    t.equal(api.tokenRequests.length, requests);
    t.equal(entra.calls.length, calls);
    // Another service account: never that token; Entra checks the subject and refuses.
    const otherSa = await ask('127.0.0.43');
    assertEntraError(t, otherSa, 400, 700213, 'a service account with no federated credential');
    t.match(api.tokenRequests.at(-1), { serviceAccount: 'other-sa', status: 201 });
    t.equal(imdsTokenCalls(stack), 0, 'IMDS is never asked');
  });

  t.test('spec.adEndpoint sends the identity to its own authority', async (t) => {
    const before = entra.calls.length;
    const a = await ask('127.0.0.47');
    assertImdsShape(t, a, CLIENT.ad, 'https://vault.azure.net');
    t.equal(other.callsFor(CLIENT.ad).length, 1, 'asked at the identity\'s adEndpoint');
    t.equal(entra.calls.length, before, 'not at --authority-host');
  });

  t.test('throttling: Entra\'s 429 and Retry-After are honoured within the pod\'s wait', async (t) => {
    entra.throttle(1, 1);
    const a = await ask('127.0.0.41', 'https://database.windows.net');
    t.equal(a.status, 200, 'retried after Entra\'s Retry-After, inside the wait');
    t.same(entra.callsFor(CLIENT.cert).filter((c) => c.scope === 'https://database.windows.net/.default').map((c) => c.status), [429, 200], 'throttled once, then granted');
    // Throttled past the pod's bounded wait: 429 with a Retry-After from Entra's.
    entra.throttle(50, 30);
    const held = await cluster.stack.ask(token('https://cosmos.azure.com'), { from: '127.0.0.41', headers: META, timeoutMs: 30_000 });
    t.equal(held.status, 429, 'still throttled when the wait ends');
    t.equal(held.headers['x-podid-nmi-reason'], 'upstream_queued');
    t.ok(Number(held.headers['retry-after']) >= 20, `Retry-After from Entra's 30 s (${String(held.headers['retry-after'])})`);
    entra.throttle(0, 0);
    const metrics = await cluster.stack.metrics();
    t.match(metrics, /podid_nmi_entra_answers_total\{status="429"\} [1-9]/, 'Entra\'s 429s are counted');
    t.match(metrics, /podid_nmi_entra_retries_total\{cause="429"\} [1-9]/, 'and the retries');
    t.match(metrics, /podid_nmi_imds_starts_total\{priority="foreground",attempt="first"\} 0\b|^(?![\s\S]*podid_nmi_imds_starts_total\{)/, 'none of it spent the IMDS budget');
  });

  t.test('a pod flooding Entra with distinct tokens does not hold another pod back', async (t) => {
    entra.delayMs = 300;
    entra.peakInFlight = 0;
    const flood = Array.from({ length: 40 }, (_, i) => ask('127.0.0.40', `https://flood-${i}.example`));
    const victim = await ask('127.0.0.41', 'https://victim.example');
    t.equal(victim.status, 200, 'the other pod got its token while the flood was on');
    const answers = await Promise.all(flood);
    const refusals = answers.filter((a) => a.status === 429).map((a) => a.headers['x-podid-nmi-reason']);
    t.ok(refusals.length > 0, `the flooding pod was held to its share (${refusals.length} of 40 refused)`);
    t.ok(refusals.every((r) => r === 'requests_over_share' || r === 'upstream_share_exceeded' || r === 'upstream_queued'), `refused for its share: ${[...new Set(refusals)].join(', ')}`);
    t.ok(entra.peakInFlight <= 5, `at most 4 of one identity at Entra at once, plus the other pod's (peak ${entra.peakInFlight})`);
    entra.delayMs = 0;
  });

  t.test('refusals of the identity\'s configuration, before anything is fetched', async (t) => {
    const calls = entra.calls.length;
    const cases: Array<[string, Reason]> = [
      ['127.0.0.44', 'secret_cross_namespace'],
      ['127.0.0.49', 'authority_insecure'],
      ['127.0.0.52', 'tenant_missing'],
      ['127.0.0.53', 'auxiliary_tenants_unsupported'],
    ];
    for (const [ip, reason] of cases) assertRefused(t, await ask(ip), reason, `${ip} ${reason}`);
    t.equal(entra.calls.length, calls, 'Entra was not asked');
    t.ok(!api.requests.some((r) => r.path.endsWith('/secrets/elsewhere')), 'the other namespace\'s Secret was not even read');
  });

  t.test('a missing Secret, and a Secret without a usable key, are refused naming the Secret', async (t) => {
    assertSourceRefused(t, await ask('127.0.0.46'), 'secret_missing', /Secret team\/ghost not found/, 'missing Secret');
    assertSourceRefused(t, await ask('127.0.0.45'), 'secret_key_missing', /Secret team\/two-keys has no key "clientSecret" and 2 keys \(pass, username\)/, 'no clientSecret key');
    // OAuth separates scopes by whitespace: a resource holding some would ask for more than one.
    const calls = entra.calls.length;
    assertSourceRefused(t, await ask('127.0.0.40', 'https://vault.azure.net https://graph.microsoft.com'), 'parameter_invalid', /whitespace/, 'two scopes in one resource');
    t.equal(entra.calls.length, calls, 'Entra was not asked');
    t.notOk(JSON.stringify(stack.logs).includes(SECRET_VALUE), 'no log line holds a secret');
    t.notOk(stack.logs.some((l) => /eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/.test(l)), 'no log line holds a JWT (assertion or token)');
    t.equal(imdsTokenCalls(stack), 0, 'IMDS was never asked, for any of these identities');
  });
});

t.test('what a token source found wrong becomes a Warning Event on the pod, naming the Secret', async (t) => {
  const { api, stack } = await startEntraCluster(t, ['--pod-events=true']);
  for (const ip of ['127.0.0.46', '127.0.0.45', '127.0.0.40']) await stack.ask(token('https://vault.azure.net'), { from: ip, headers: META });
  const eventOn = (name: string, reason: string) => [...api.events.values()]
    .find((e) => (e.involvedObject as Record<string, unknown>).name === name && e.reason === reason);
  await eventually(() => eventOn('nosecret-app', 'SecretMissing') !== undefined && eventOn('nokey-app', 'SecretKeyMissing') !== undefined, 'the Events');
  t.match(eventOn('nosecret-app', 'SecretMissing'), {
    type: 'Warning', message: `AzureIdentity team/no-secret (clientID ${CLIENT.secret}) bound to this pod: The service principal's Secret does not exist: Secret team/ghost not found.`,
  }, 'a missing Secret, named on the pod');
  t.match(eventOn('nokey-app', 'SecretKeyMissing')?.message, /AzureIdentity team\/no-key .*Secret team\/two-keys has no key "clientSecret"/, 'a Secret without the key, named');
  t.notOk([...api.events.values()].some((e) => (e.involvedObject as Record<string, unknown>).name === 'secret-app'), 'none for the pod that got its token');
  t.notOk(JSON.stringify([...api.events.values()]).includes(SECRET_VALUE), 'no Event holds a secret');
});

t.test('--cluster-state has no Secrets or TokenRequest: a service principal is refused, not sent to IMDS', async (t) => {
  const yaml = `
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata: {name: sp, namespace: lab}
spec: {type: 1, clientID: ${CLIENT.secret}, tenantID: ${TENANT}, clientPassword: {name: s}}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {name: sp, namespace: lab}
spec: {azureIdentity: sp, selector: sp}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: lab, uid: u-p, labels: {aadpodidbinding: sp}}
spec: {nodeName: node-1}
status: {phase: Running, podIPs: [{ip: 127.0.0.60}]}
`;
  const s = await startStack(t, { stateYaml: yaml, flags: ['--authority-host=http://127.0.0.1:9/'] });
  const a = await s.ask(token('https://vault.azure.net'), { from: '127.0.0.60', headers: META });
  assertSourceRefused(t, a, 'entra_needs_kubernetes_api', /client-secret for client c1111111/, 'file state');
  t.equal(imdsTokenCalls(s), 0);
});
