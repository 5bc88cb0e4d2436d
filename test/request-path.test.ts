// The whole request path against the real emulator: every route, every refusal (status, body,
// reason), every upstream failure, and what reaches IMDS asserted on the emulator's side.
import t, { type Test } from 'tap';
import { VERSION } from '../src/config/version.ts';
import { NOT_INTERCEPTING } from '../src/probes/readiness.ts';
import { connect } from 'node:net';
import { REFUSALS, type Reason } from '../src/decision/reasons.ts';
import { parkedCount } from '../src/cluster/wait-for-ip.ts';
import { decodeFakeToken } from '../src/emulator/imds-emulator.ts';
import { eventually } from './helpers/eventually.ts';
import { META, type Answer } from './helpers/http.ts';
import { IDS, startStack, TOKEN } from './helpers/stack.ts';

/** Bounded generously (a loaded machine is slow), named by the condition's own text. */
const waitFor = (cond: () => boolean | Promise<boolean>): Promise<number> => eventually(cond, cond.toString());

function refused(t: Test, a: Answer, reason: Reason, what: string, fixedRetryAfter = true): void {
  const spec = REFUSALS[reason];
  t.equal(a.status, spec.status, `${what}: status`);
  t.same(a.json, { error: spec.error, error_description: spec.description, reason }, `${what}: body`);
  t.equal(a.headers['x-podid-nmi-reason'], reason, `${what}: reason header`);
  t.equal(a.headers['content-type'], 'application/json; charset=utf-8', `${what}: content type`);
  if ('retryAfter' in spec) {
    if (fixedRetryAfter) t.equal(a.headers['retry-after'], String(spec.retryAfter), `${what}: Retry-After`);
    else t.ok(Number(a.headers['retry-after']) >= spec.retryAfter, `${what}: Retry-After ${a.headers['retry-after']}`);
  }
}

const tokenRequests = (s: { emulator: { requests: Array<{ url: string }> } }) =>
  s.emulator.requests.filter((r) => r.url.toLowerCase().includes('/oauth2/token'));

t.test('a bound pod gets its own token; the upstream request is rebuilt from checked values only', async (t) => {
  const s = await startStack(t);
  const a = await s.ask(`${TOKEN}&bogus=1&Extra=%41`, {
    from: '127.0.0.10',
    headers: { ...META, 'x-evil': '1', authorization: 'Bearer stolen', 'user-agent': 'sdk', cookie: 'c=1' },
  });
  t.equal(a.status, 200);
  t.equal(a.json?.client_id, IDS.reader!.clientID);
  t.equal(a.json?.resource, 'https://vault.azure.net');
  t.equal(decodeFakeToken(String(a.json?.access_token))?.client_id, IDS.reader!.clientID);
  const up = tokenRequests(s);
  t.equal(up.length, 1);
  t.equal(up[0]!.url, `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net&client_id=${IDS.reader!.clientID}`);
  const h = s.emulator.requests[0]!.headers;
  t.equal(h.metadata, 'true');
  for (const name of ['x-evil', 'authorization', 'cookie', 'x-forwarded-for', 'forwarded']) t.equal(h[name], undefined, `${name} not forwarded`);
  t.equal(h['user-agent'], `podid-nmi/${VERSION}`, 'the daemon\'s own User-Agent, not the pod\'s');
  t.equal(s.emulator.requests[0]!.remoteAddress.replace('::ffff:', ''), '127.0.0.1', 'upstream comes from the daemon');
});

t.test('resource by unencoded value, selector by resource id, and the mi_res_id alias', async (t) => {
  const s = await startStack(t);
  const a = await s.ask(`/metadata/identity/oauth2/token/?api-version=2018-02-01&resource=https://vault.azure.net&mi_res_id=${IDS.reader!.resourceID}`, { from: '127.0.0.10', headers: META });
  t.equal(a.status, 200);
  t.equal(a.json?.resource, 'https://vault.azure.net');
  t.equal(a.json?.client_id, IDS.reader!.clientID, 'minted with the identity\'s own client id');
  t.match(tokenRequests(s)[0]!.url, /&client_id=11111111-1111-4111-8111-111111111111$/);
});

t.test('a 200 is relayed byte for byte', async (t) => {
  const s = await startStack(t, { flags: ['--token-cache=false'] });
  const exact = '{"access_token":"opaque", "client_id":"x",\n "expires_in":"3599","expires_on":"4102444800","resource":"r","token_type":"Bearer"}';
  s.emulator.setFault({ kind: 'status', status: 200, body: exact, headers: { 'content-type': 'application/json; charset=utf-8' } });
  const a = await s.ask(TOKEN, { from: '127.0.0.10', headers: META });
  t.equal(a.status, 200);
  t.equal(a.body, exact);
});

t.test('refusals before any lookup or upstream work', async (t) => {
  const s = await startStack(t);
  const token = '/metadata/identity/oauth2/token';
  const cases: Array<[string, string, Reason, Record<string, string>?, string?]> = [
    ['the SDK probe: no header, no query', token, 'metadata_header_missing', {}],
    ['a probe with a full query', `${TOKEN}&client_id=${IDS.reader!.clientID}`, 'metadata_header_missing', {}],
    ['Metadata: false', TOKEN, 'metadata_header_missing', { Metadata: 'false' }],
    ['X-Forwarded-For', TOKEN, 'forwarded_header', { ...META, 'X-Forwarded-For': '10.0.0.1' }],
    ['Forwarded', TOKEN, 'forwarded_header', { ...META, Forwarded: 'for=10.0.0.1' }],
    ['absolute-form target', `http://169.254.169.254${TOKEN}`, 'target_not_canonical'],
    ['double slash', `/metadata//identity/oauth2/token?api-version=2018-02-01&resource=r`, 'target_not_canonical'],
    ['dot-dot', `/metadata/instance/../identity/oauth2/token?api-version=2018-02-01&resource=r`, 'target_not_canonical'],
    ['encoded slash', `/metadata/identity%2Foauth2/token?api-version=2018-02-01&resource=r`, 'target_not_canonical'],
    ['backslash', `/metadata\\identity/oauth2/token?api-version=2018-02-01&resource=r`, 'target_not_canonical'],
    ['near-miss token path', `/metadata/identity/oauth2/token/extra?api-version=2018-02-01&resource=r`, 'token_path_malformed'],
    ['case-variant token path', `/metadata/Identity/OAuth2/Token?api-version=2018-02-01&resource=r`, 'token_path_malformed'],
    ['unknown route', '/metadata/secrets?api-version=2018-02-01', 'route_unknown'],
    ['not metadata at all', '/latest/meta-data/iam/security-credentials/', 'route_unknown'],
    ['duplicate key', `${TOKEN}&resource=https://evil`, 'query_duplicate_parameter'],
    ['duplicate key by case', `${TOKEN}&client_id=a&CLIENT_ID=b`, 'query_duplicate_parameter'],
    ['bad percent-encoding', `${TOKEN}&client_id=%ZZ`, 'query_malformed'],
    ['api-version missing', '/metadata/identity/oauth2/token?resource=r', 'api_version_missing'],
    ['api-version invalid', '/metadata/identity/oauth2/token?api-version=latest&resource=r', 'api_version_invalid'],
    ['resource missing', '/metadata/identity/oauth2/token?api-version=2018-02-01', 'resource_missing'],
    ['resource empty', '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=', 'resource_missing'],
    ['control character', `${TOKEN}&client_id=a%0d%0aX-Injected:%201`, 'parameter_invalid'],
    ['two selectors', `${TOKEN}&client_id=${IDS.reader!.clientID}&msi_res_id=${IDS.reader!.resourceID}`, 'selector_multiple'],
    ['msi_res_id and its alias', `${TOKEN}&msi_res_id=a&mi_res_id=a`, 'selector_multiple'],
    ['instance without api-version', '/metadata/instance', 'api_version_missing'],
    ['POST to the token path', TOKEN, 'method_not_allowed', META, 'POST'],
  ];
  for (const [what, path, reason, headers, method] of cases) {
    const a = await s.ask(path, { from: '127.0.0.10', headers: headers ?? META, method: method ?? 'GET' });
    refused(t, a, reason, what);
  }
  const post = await s.ask(TOKEN, { from: '127.0.0.10', headers: META, method: 'POST' });
  t.equal(post.headers.allow, 'GET');
  t.equal(s.emulator.requests.length, 0, 'IMDS never contacted');
});

t.test('entitlement refusals, with the pod named in the log', async (t) => {
  const s = await startStack(t);
  const cases: Array<[string, string, string, Reason]> = [
    ['unlabelled pod (an empty-selector binding grants nothing)', '127.0.0.11', TOKEN, 'pod_unlabeled'],
    ['another pod\'s client id', '127.0.0.10', `${TOKEN}&client_id=${IDS.writer!.clientID}`, 'identity_not_bound'],
    ['another pod\'s resource id', '127.0.0.10', `${TOKEN}&msi_res_id=${IDS.writer!.resourceID}`, 'identity_not_bound'],
    ['an identity not in the cluster', '127.0.0.10', `${TOKEN}&client_id=${IDS.agent!.clientID}`, 'identity_not_bound'],
    ['object_id', '127.0.0.10', `${TOKEN}&object_id=o-1`, 'object_id_unverifiable'],
    ['unknown address', '127.0.0.99', TOKEN, 'pod_unknown'],
    ['pod of another node', '127.0.0.15', TOKEN, 'pod_unknown'],
    ['finished pod', '127.0.0.16', TOKEN, 'pod_unknown'],
    ['two live pods on one address', '127.0.0.14', TOKEN, 'pod_ip_conflict'],
  ];
  for (const [what, from, path, reason] of cases) refused(t, await s.ask(path, { from, headers: META }), reason, what);
  t.equal(tokenRequests(s).length, 0, 'IMDS never asked');
  const lines = s.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.decision === 'refused');
  t.equal(lines.length, cases.length, 'one log line per token decision');
  t.match(lines[0], { pod: 'shop/web', uid: 'u-11', reason: 'pod_unlabeled', status: 400, decision: 'refused' });
  const warning = s.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => String(l.msg).includes('empty selector'));
  t.match(warning, { namespace: 'shop', binding: 'catch-all', azureIdentity: 'writer' }, 'the empty-selector binding is warned about at start');
});

t.test('an excepted pod passes through with its own selector, rebuilt', async (t) => {
  const s = await startStack(t, { flags: ['--token-cache=false'] });
  const a = await s.ask(`${TOKEN}&client_id=${IDS.agent!.clientID}&junk=1`, { from: '127.0.0.12', headers: META });
  t.equal(a.status, 200);
  t.equal(a.json?.client_id, IDS.agent!.clientID);
  const b = await s.ask(TOKEN, { from: '127.0.0.12', headers: META });
  t.equal(b.status, 400, 'no selector: IMDS decides (the emulator has no system identity and several user ones)');
  t.same(tokenRequests(s).map((r) => r.url), [
    `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net&client_id=${IDS.agent!.clientID}`,
    '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net',
  ]);
});

t.test('IMDS errors: final ones are relayed, transient ones retried inside the budget; transport failures answer 503 fast', async (t) => {
  const s = await startStack(t, { flags: ['--token-cache=false', '--upstream-timeout-ms=300', '--token-wait-ms=1500'] });
  const ask = () => s.ask(TOKEN, { from: '127.0.0.10', headers: META });
  const identityNotFound = '{"error":"invalid_request","error_description":"Identity not found"}';
  s.emulator.setFault({ kind: 'status', status: 400, body: identityNotFound }, { times: 1 });
  const final = await ask();
  t.equal(final.status, 400, 'another 4xx is final: relayed');
  t.equal(final.body, identityNotFound, 'with its body');
  t.equal(tokenRequests(s).length, 1, 'and not retried');
  for (const [status, body] of [
    [404, '{"error":"not_found","error_description":"IMDS is updating"}'],
    [410, '{"error":"gone","error_description":"IMDS is updating"}'],
    [500, '{"error":"server_error","error_description":"boom"}'],
    [429, '{"error":"too_many_requests"}'],
  ] as const) {
    const before = tokenRequests(s).length;
    s.emulator.setFault({ kind: 'status', status, body }, { times: 1 });
    const a = await ask();
    t.equal(a.status, 200, `one ${status}: retried, and the pod gets its token`);
    t.equal(tokenRequests(s).length - before, 2, `${status}: two requests reached IMDS`);
  }
  const retried = await s.metrics();
  for (const cause of ['404', '410', '5xx', '429']) t.match(retried, new RegExp(`podid_nmi_imds_retries_total\\{cause="${cause}"\\} 1`), `retry by ${cause} counted`);
  t.match(retried, /podid_nmi_imds_answers_total\{status="429"\} 1/, 'the throttled answer counted');
  t.match(retried, /podid_nmi_imds_starts_total\{priority="foreground",attempt="retry"\} 4/);
  s.emulator.setFault({ kind: 'slow', delayMs: 3_000 }, { times: 1 });
  const started = performance.now();
  const slow = await ask();
  refused(t, slow, 'upstream_timeout', 'slow IMDS');
  t.ok(performance.now() - started < 2_500, 'answered at the upstream timeout, not when IMDS got round to it');

  s.emulator.setFault({ kind: 'reset' }, { times: 1 });
  refused(t, await ask(), 'upstream_unreachable', 'connection reset');
  s.emulator.setFault({ kind: 'status', status: 200, body: `{"pad":"${'x'.repeat(2 << 20)}"}` }, { times: 1 });
  refused(t, await ask(), 'upstream_invalid', 'an answer over the size bound');
  const metrics = await s.metrics();
  t.match(metrics, /podid_nmi_upstream_responses_total\{route="token",status="timeout"\} 1/);
  t.match(metrics, /podid_nmi_requests_total\{route="token",decision="granted",status="503",reason="upstream_timeout"\} 1/);

  // IMDS asks for 7 s: the daemon waits that long before asking again, so the pod, which
  // waits at most 1.5 s, is told to come back after the hold, not at once.
  s.emulator.setFault({ kind: 'status', status: 429, body: '{}', headers: { 'retry-after': '7' } }, { times: 1 });
  const held = await ask();
  refused(t, held, 'upstream_queued', 'throttled by IMDS', false);
  t.ok(Number(held.headers['retry-after']) >= 6, `Retry-After covers IMDS's own (${held.headers['retry-after']})`);
});

t.test('IMDS not listening: 503 with Retry-After', async (t) => {
  const s = await startStack(t);
  await s.emulator.close();
  refused(t, await s.ask(TOKEN, { from: '127.0.0.10', headers: META }), 'upstream_unreachable', 'connection refused');
});

t.test('a client that hangs up cancels the upstream request', async (t) => {
  const s = await startStack(t);
  s.emulator.setFault({ kind: 'slow', delayMs: 5_000 });
  const controller = new AbortController();
  const pending = s.ask(TOKEN, { from: '127.0.0.10', headers: META, signal: controller.signal }).catch((e: Error) => e);
  await waitFor(() => tokenRequests(s).length === 1);
  controller.abort();
  t.type(await pending, Error);
  await waitFor(async () => /podid_nmi_upstream_responses_total\{route="token",status="aborted"\} 1/.test(await s.metrics()));
  t.match(await s.metrics(), /podid_nmi_upstream_pending 0/);
});

t.test('tokens are cached and concurrent asks share one upstream fetch', async (t) => {
  // IMDS answers slowly enough that all eight asks are in before it does, even on a loaded machine.
  const s = await startStack(t, { emulator: { tokenLatencyMs: 1_500 } });
  const asks = Array.from({ length: 8 }, () => s.ask(TOKEN, { from: '127.0.0.10', headers: META }));
  const answers = await Promise.all(asks);
  t.same(answers.map((a) => a.status), Array(8).fill(200));
  t.equal(new Set(answers.map((a) => a.json?.access_token)).size, 1, 'one token for all');
  const again = await s.ask(TOKEN, { from: '127.0.0.10', headers: META });
  t.equal(again.json?.access_token, answers[0]!.json?.access_token);
  t.equal(again.json?.resource, 'https://vault.azure.net');
  t.equal(tokenRequests(s).length, 1, 'IMDS asked once');
  const other = await s.ask(TOKEN, { from: '127.0.0.13', headers: META });
  t.equal(other.json?.client_id, IDS.writer!.clientID, 'a cached token never crosses identities');
  refused(t, await s.ask(TOKEN, { from: '127.0.0.11', headers: META }), 'pod_unlabeled', 'the decision still runs for every request');
  const m = await s.metrics();
  t.match(m, /podid_nmi_token_cache_total\{result="hit"\} 1/);
  t.match(m, /podid_nmi_token_cache_total\{result="shared"\} 7/);
});

t.test('the pod-start race: a request waits for its pod and is woken by its arrival', async (t) => {
  const s = await startStack(t, { flags: ['--pod-wait-ms=3000'] });
  const state = s.daemon.state as import('../src/cluster/file-source.ts').FileClusterState;
  const started = performance.now();
  const pending = s.ask(TOKEN, { from: '127.0.0.20', headers: META });
  // The pod arrives once the request is parked (a fixed delay raced the request on a busy machine).
  await waitFor(() => parkedCount() === 1);
  state.index.upsertPod({
    uid: 'u-20', namespace: 'shop', name: 'fresh', labels: { aadpodidbinding: 'orders' }, ips: ['127.0.0.20'],
    phase: 'Pending', hostNetwork: false, nodeName: 'node-1',
  });
  const a = await pending;
  t.equal(a.status, 200);
  t.equal(a.json?.client_id, IDS.reader!.clientID);
  t.ok(performance.now() - started < 2_000, 'woken by the event, not by the end of the wait');
  t.match(await s.metrics(), /podid_nmi_pod_wait_total\{outcome="found"\} 1/);
});

t.test('other IMDS routes are proxied with the checked path and query only', async (t) => {
  const s = await startStack(t);
  const a = await s.ask('/METADATA/instance/compute?format=json&api-version=2021-02-01', { from: '127.0.0.11', headers: { ...META, 'x-evil': '1' } });
  t.equal(a.status, 200);
  t.equal(s.emulator.requests[0]!.url, '/metadata/instance/compute?format=json&api-version=2021-02-01');
  t.equal(s.emulator.requests[0]!.headers['x-evil'], undefined);
  t.equal((await s.ask('/metadata/versions', { from: '127.0.0.11', headers: META })).status, 200, 'versions needs no api-version');
  const posted = await s.ask('/metadata/scheduledevents?api-version=2020-07-01', { from: '127.0.0.11', method: 'POST', headers: { ...META, 'content-type': 'application/json' }, body: '{"StartRequests":[]}' });
  t.equal(posted.status, 200);
  const huge = await s.ask('/metadata/scheduledevents?api-version=2020-07-01', { from: '127.0.0.11', method: 'POST', headers: META, body: 'x'.repeat(70_000) });
  refused(t, huge, 'body_too_large', 'huge body');
  t.equal(huge.headers.connection, 'close', 'a 413 closes its connection');
  refused(t, await s.ask('/metadata/attested/document?api-version=2020-09-01', { method: 'DELETE', headers: META }), 'method_not_allowed', 'DELETE');
  t.match(await s.metrics(), /podid_nmi_requests_total\{route="instance",decision="proxied",status="200",reason=""\} 1/);
});

t.test('--block-instance-metadata and --metadata-header-required=false', async (t) => {
  const s = await startStack(t, { flags: ['--block-instance-metadata', '--metadata-header-required=false'] });
  refused(t, await s.ask('/metadata/instance?api-version=2021-02-01', { headers: META }), 'instance_metadata_blocked', 'instance');
  refused(t, await s.ask('/metadata/instance/compute/location?api-version=2021-02-01', { headers: META }), 'instance_metadata_blocked', 'instance sub-path');
  const noHeader = await s.ask(TOKEN, { from: '127.0.0.10' });
  t.equal(noHeader.status, 200, 'token without the header when not required');
  t.equal(s.emulator.requests.at(-1)!.headers.metadata, 'true', 'upstream still gets Metadata: true');
  refused(t, await s.ask('/metadata/identity/info?api-version=2018-02-01', {}), 'metadata_header_missing', 'other routes still need it');
});

t.test('no token ever reaches a log line', async (t) => {
  const s = await startStack(t, { flags: ['--log-level=trace'] });
  const a = await s.ask(TOKEN, { from: '127.0.0.10', headers: META });
  const token = String(a.json?.access_token);
  t.ok(token.length > 20);
  t.ok(s.logs.length > 0);
  t.notOk(s.logs.some((l) => l.includes(token) || l.includes('access_token')), 'no token in logs');
  const granted = s.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.decision === 'granted');
  t.match(granted, { pod: 'shop/orders', uid: 'u-10', identity: 'shop/reader', clientID: IDS.reader!.clientID, resource: 'https://vault.azure.net', status: 200 });
  t.type(granted?.ms, 'number');
  t.type(granted?.req, 'number');
});

t.test('listener bounds: oversized headers and garbage get 4xx without reaching the handler', async (t) => {
  const s = await startStack(t);
  const big = await s.ask(TOKEN, { from: '127.0.0.10', headers: { ...META, 'x-pad': 'x'.repeat(16 * 1024) } });
  t.equal(big.status, 431);
  const raw = await new Promise<string>((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port: s.port, localAddress: '127.0.0.10' }, () => sock.write('NOT HTTP AT ALL\r\n\r\n'));
    let got = '';
    sock.on('data', (d) => { got += d.toString(); });
    sock.on('close', () => resolve(got));
    sock.on('error', reject);
    sock.setTimeout(3_000, () => sock.destroy());
  });
  t.match(raw, /^HTTP\/1\.1 400/);
  t.equal(s.emulator.requests.length, 0);
});

t.test('probes: /healthz, /readyz, /metrics; never ready without interception, and says why', async (t) => {
  const s = await startStack(t);
  const probe = s.daemon.probes.address.port;
  const { ask } = await import('./helpers/http.ts');
  t.equal((await ask(probe, '/healthz')).status, 200);
  t.equal(s.daemon.state.isReady(), true, 'cluster state synced');
  const readyz = await ask(probe, '/readyz');
  t.equal(readyz.status, 503, 'the stack runs with --manage-iptables=false: not ready, whatever else');
  t.equal(readyz.body, `not ready: ${NOT_INTERCEPTING}\n`, 'the one reason, in the body');
  t.equal((await ask(probe, '/nope')).status, 404);
  t.match(await s.metrics(), /podid_nmi_ready 0/);
  t.ok(s.logs.some((l) => l.includes('not intercepting: started with --manage-iptables=false')), 'said at start');
  const slow = s.emulator;
  slow.setFault({ kind: 'slow', delayMs: 300 }, { times: 1 });
  const inflight = s.ask(TOKEN, { from: '127.0.0.10', headers: META });
  await waitFor(() => tokenRequests(s).length === 1);
  t.same(s.daemon.readiness(), { ready: false, reasons: [NOT_INTERCEPTING] });
  const closing = s.daemon.close();
  t.same(s.daemon.readiness(), { ready: false, reasons: ['shutting down', NOT_INTERCEPTING] }, 'draining is named too');
  t.equal((await inflight).status, 200, 'the in-flight request finishes during shutdown');
  await closing;
});

t.test('the remaining entitlement refusals, over HTTP', async (t) => {
  const pod = (ip: string, name: string, label: string) => `
apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: lab, uid: u-${name}, labels: {aadpodidbinding: ${label}}}
spec: {nodeName: node-1}
status: {phase: Running, podIPs: [{ip: ${ip}}]}`;
  const s = await startStack(t, {
    stateYaml: [
      pod('127.0.0.30', 'nobinding', 'nothing-selects-me'),
      pod('127.0.0.31', 'noidentity', 'ghost'),
      pod('127.0.0.32', 'sp', 'sp'),
      pod('127.0.0.33', 'noids', 'empty'),
      'apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\nmetadata: {name: ghost, namespace: lab}\nspec: {azureIdentity: missing, selector: ghost}',
      'apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\nmetadata: {name: sp, namespace: lab}\nspec: {type: 1, clientID: 44444444-4444-4444-8444-444444444444, tenantID: t}',
      'apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\nmetadata: {name: sp, namespace: lab}\nspec: {azureIdentity: sp, selector: sp}',
      'apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\nmetadata: {name: empty, namespace: lab}\nspec: {type: 0}',
      'apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\nmetadata: {name: empty, namespace: lab}\nspec: {azureIdentity: empty, selector: empty}',
    ].join('\n---\n'),
  });
  const cases: Array<[string, Reason]> = [
    ['127.0.0.30', 'binding_missing'],
    ['127.0.0.31', 'identity_missing'],
    ['127.0.0.32', 'secret_reference_missing'],
    ['127.0.0.33', 'identity_incomplete'],
  ];
  for (const [from, reason] of cases) refused(t, await s.ask(TOKEN, { from, headers: META }), reason, reason);
  t.equal(s.emulator.requests.length, 0, 'IMDS never asked');
});
