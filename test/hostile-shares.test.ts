// Fair shares, live-pod routes, logs and released addresses, one hostile pod beside a victim: for each attack, the victim (shop/orders at 127.0.0.10, bound
// to `reader`) keeps getting its token, memory stays under the DaemonSet's 512 MiB limit, and
// the attacker gets a clear refusal. Every flood is bounded in count and time.
import { Agent, request } from 'node:http';
import t from 'tap';
import { META } from './helpers/http.ts';
import { MEMORY_LIMIT_MIB, metric, UNLABELLED, VICTIM, victimServed } from './helpers/hostile.ts';
import { rssMiB, waitUntil } from './helpers/raw.ts';
import { assertRefused } from './helpers/refused.ts';
import { IDS, startStack, TOKEN } from './helpers/stack.ts';

t.test('in-flight and parked shares: an address with no pod cannot hold more than its share', async (t) => {
  const unknown = '127.0.0.60';
  await t.test('parked waits: eight per address, the rest 429 pod_wait_over_share', async (t) => {
    const s = await startStack(t, { flags: ['--pod-wait-ms=1500', '--max-requests-per-pod=12'] });
    const flood = Array.from({ length: 12 }, () => s.ask(TOKEN, { from: unknown, headers: META }));
    await waitUntil(async () => /podid_nmi_pods_waiting 8/.test(await s.metrics()), 1_000, 'eight parked');
    await victimServed(t, s, 3, 'parked flood');
    const answers = await Promise.all(flood);
    const over = answers.filter((a) => a.status === 429);
    t.equal(over.length, 4, 'four over the parking share');
    for (const a of over) assertRefused(t, a, 'pod_wait_over_share', 'parking over share');
    const parked = answers.filter((a) => a.status === 503);
    t.equal(parked.length, 8);
    assertRefused(t, parked[0]!, 'pod_unknown', 'a parked request when no pod comes');
  });
  await t.test('in-flight: beyond --max-requests-per-pod, 429 requests_over_share', async (t) => {
    const s = await startStack(t, { flags: ['--pod-wait-ms=1500', '--max-requests-per-pod=4'] });
    const flood = Array.from({ length: 10 }, () => s.ask(TOKEN, { from: unknown, headers: META }));
    await waitUntil(async () => /podid_nmi_pods_waiting 4/.test(await s.metrics()), 1_000, 'four in flight');
    await victimServed(t, s, 3, 'in-flight flood');
    const answers = await Promise.all(flood);
    const over = answers.filter((a) => a.status === 429);
    t.equal(over.length, 6);
    for (const a of over) assertRefused(t, a, 'requests_over_share', 'in flight over share');
    t.equal(answers.filter((a) => a.status === 503).length, 4);
  });
});

t.test('distinct resources from one pod evict only that pod\'s cached tokens', async (t) => {
  // The IMDS budget is not what this is about: lifted, so 4,200 fetches take seconds, not minutes.
  const s = await startStack(t, { flags: ['--max-requests-per-pod=16', '--log-level=warn', '--imds-max-rps=1000', '--imds-max-concurrency=100'] });
  const victimPath = `client_id=${IDS.reader!.clientID}`;
  const victimFetches = () => s.emulator.requests.filter((r) => r.url.includes(victimPath)).length;
  await victimServed(t, s, 1, 'before the flood');
  t.equal(victimFetches(), 1);
  // The attacker (shop/billing, bound to writer) asks for 4,200 distinct resources, 16 at a time.
  const agent = new Agent({ keepAlive: true, maxSockets: 16, localAddress: '127.0.0.13' });
  t.teardown(() => agent.destroy());
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < 4_200) {
      const i = next++;
      const status = await new Promise<number>((resolve, reject) => {
        request({ port: s.port, host: '127.0.0.1', agent, headers: META, path: `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://r${i}.example` }, (res) => {
          res.resume().on('end', () => resolve(res.statusCode ?? 0));
        }).on('error', reject).end();
      });
      if (status !== 200) throw new Error(`attacker's request ${i}: ${status}`);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  await victimServed(t, s, 3, 'after the flood');
  t.equal(victimFetches(), 1, 'the victim\'s token is still cached: IMDS was not asked again');
  const entries = metric(await s.metrics(), /^podid_nmi_token_cache_entries /);
  t.ok(entries <= 65, `the attacker holds at most its share of the cache (${entries} entries)`);
  t.ok(rssMiB() < MEMORY_LIMIT_MIB, 'memory under the DaemonSet limit');
});

t.test('every route needs a live pod of this node; instance paths and proxied queries are allow-listed', async (t) => {
  const s = await startStack(t);
  const routes: Array<[string, string?]> = [
    ['/metadata/instance/compute/userData?api-version=2021-01-01&format=text'],
    ['/metadata/attested/document?api-version=2020-09-01'],
    ['/metadata/identity/info?api-version=2018-02-01'],
    ['/metadata/scheduledevents?api-version=2020-07-01', 'POST'],
    ['/metadata/versions'],
  ];
  for (const [path, method] of routes) {
    for (const from of ['127.0.0.99', '127.0.0.15', '127.0.0.16']) {
      const a = await s.ask(path, { from, method: method ?? 'GET', headers: META, body: method === 'POST' ? '{"StartRequests":[{"EventId":"x"}]}' : undefined });
      assertRefused(t, a, 'pod_unknown', `${method ?? 'GET'} ${path} from ${from}`);
    }
    assertRefused(t, await s.ask(path, { from: '127.0.0.14', method: method ?? 'GET', headers: META }), 'pod_ip_conflict', `${path} from a conflicted address`);
  }
  t.equal(s.emulator.requests.length, 0, 'nothing reached IMDS for callers that are no live pod');

  for (const bad of ['/metadata/instance/..;/identity/oauth2/token', '/metadata/instance/compute;x', '/metadata/instance/compute/name.json', '/metadata/instance/a:b']) {
    assertRefused(t, await s.ask(`${bad}?api-version=2021-02-01`, { from: VICTIM, headers: META }), 'instance_path_invalid', bad);
  }
  const ok = await s.ask('/metadata/instance/compute/tagsList/0/name?api-version=2021-02-01&format=text&client_id=x&resource=y&extra=1', { from: VICTIM, headers: META });
  t.not(ok.status, 400, 'a well-formed sub-path is relayed');
  const att = await s.ask('/metadata/attested/document?nonce=1234567890&api-version=2020-09-01&client_id=x', { from: VICTIM, headers: META });
  t.equal(att.status, 200);
  t.same(s.emulator.requests.map((r) => r.url), [
    '/metadata/instance/compute/tagsList/0/name?api-version=2021-02-01&format=text',
    '/metadata/attested/document?nonce=1234567890&api-version=2020-09-01',
  ], 'only the keys each route needs go upstream');
});

t.test('logged values are escaped and truncated; refusal logs are rate-limited per pod with a count', async (t) => {
  const s = await startStack(t);
  const hostile = `https://x\u2028forged\u202Eevil\u200B\uFEFF\u2066${'y'.repeat(1000)}`;
  const a = await s.ask(`/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${encodeURIComponent(hostile)}`, { from: UNLABELLED, headers: META });
  assertRefused(t, a, 'pod_unlabeled', 'the hostile resource');
  const line = s.logs.find((l) => l.includes('"reason":"pod_unlabeled"'))!;
  t.ok(line !== undefined, 'the refusal is logged');
  t.notOk(/[\u2028\u2029\u202a-\u202e\u200b-\u200f\u2066-\u2069\ufeff]/.test(line), 'no raw line separator, bidi, zero-width or BOM character');
  const logged = String((JSON.parse(line) as Record<string, unknown>).resource);
  t.ok(logged.startsWith('https://x\\u{2028}forged\\u{202e}evil\\u{200b}\\u{feff}\\u{2066}yyy'), 'each is escaped visibly');
  t.match(logged, /…\(\+\d+\)$/, 'and the value is truncated with the count cut off');
  t.ok(line.length < 1_000, `the line stays short (${line.length} bytes)`);

  const before = s.logs.length;
  for (let i = 0; i < 200; i++) await s.ask(TOKEN, { from: UNLABELLED, headers: META });
  const written = s.logs.slice(before).filter((l) => l.includes('token request refused')).length;
  t.ok(written <= 5, `at most 5 refusal lines per window for the pod (${written} of 200)`);
  await victimServed(t, s, 1, 'log flood');
  t.ok(s.logs.some((l) => l.includes('token granted') && l.includes('shop/orders')), 'the victim\'s own line is written');
  await s.daemon.close();
  const summary = s.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.suppressed !== undefined);
  t.match(summary, { pod: 'shop/web', uid: 'u-11', reason: 'pod_unlabeled', suppressed: 200 - written }, 'what was suppressed is counted');
});

t.test('a terminating pod whose containers have all stopped no longer holds its address', async (t) => {
  const s = await startStack(t, {
    stateYaml: `
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata: {name: reader, namespace: shop}
spec: {type: 0, clientID: ${IDS.reader!.clientID}}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {name: reader-binding, namespace: shop}
spec: {azureIdentity: reader, selector: orders}
---
apiVersion: v1
kind: Pod
metadata: {name: old, namespace: shop, uid: u-old, labels: {aadpodidbinding: orders}, deletionTimestamp: "2026-12-01T00:00:00Z"}
spec: {nodeName: node-1}
status: {phase: Running, podIPs: [{ip: 127.0.0.40}], containerStatuses: [{name: app, state: {terminated: {exitCode: 0}}}]}
---
apiVersion: v1
kind: Pod
metadata: {name: draining, namespace: shop, uid: u-drain, labels: {aadpodidbinding: orders}, deletionTimestamp: "2026-12-01T00:00:00Z"}
spec: {nodeName: node-1}
status: {phase: Running, podIPs: [{ip: 127.0.0.41}], containerStatuses: [{name: app, state: {terminated: {exitCode: 0}}}, {name: sidecar, state: {running: {}}}]}
---
apiVersion: v1
kind: Pod
metadata: {name: new, namespace: other, uid: u-new}
spec: {nodeName: node-1}
status: {phase: Pending, podIPs: [{ip: 127.0.0.40}]}
`,
  });
  assertRefused(t, await s.ask(TOKEN, { from: '127.0.0.40', headers: META }), 'pod_unlabeled', 'the address is the new pod\'s alone (no conflict, no old identity)');
  const draining = await s.ask(TOKEN, { from: '127.0.0.41', headers: META });
  t.equal(draining.status, 200, 'a terminating pod with a container still running keeps its address');
});

t.test('grant lines are rate-limited per pod, identity and resource: a pod served from the cache in a loop cannot flood the log', async (t) => {
  const s = await startStack(t);
  const ATTACKER = '127.0.0.13';
  const before = s.logs.length;
  // Kept-alive requests, as an SDK's: the at-once lane answers them from the cache.
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const asked = (): Promise<number> => new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port: s.port, path: TOKEN, headers: META, localAddress: ATTACKER, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    }).on('error', reject).end();
  });
  for (let i = 0; i < 200; i++) t.equal(await asked(), 200, `grant ${i}`, { diagnostic: false });
  const granted = s.logs.slice(before).filter((l) => l.includes('token granted') && l.includes('shop/billing'));
  t.equal(granted.length, 5, `5 of 200 grants written in the window (${granted.length})`);
  t.equal(await asked(), 200, 'one more, counted too');
  // Another resource of the same pod is a window of its own; another pod's is untouched.
  const other = await s.ask(TOKEN.replace('vault.azure.net', 'storage.azure.com'), { from: ATTACKER, headers: META });
  t.equal(other.status, 200);
  t.ok(s.logs.some((l) => l.includes('token granted') && l.includes('storage.azure.com')), 'another resource\'s grant is written');
  await victimServed(t, s, 1, 'grant log flood');
  t.ok(s.logs.some((l) => l.includes('token granted') && l.includes('shop/orders')), 'the victim\'s own line is written');
  await s.daemon.close();
  const summary = s.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.suppressed !== undefined && l.pod === 'shop/billing');
  t.match(summary, {
    msg: 'token grant lines suppressed for this pod, identity and resource', level: 30, pod: 'shop/billing', uid: 'u-13',
    identity: 'shop/writer', clientID: IDS.writer!.clientID, resource: 'https://vault.azure.net', suppressed: 201 - 5, windowMs: 10_000,
  }, 'what was not written is counted, naming the pod, identity and resource');
});
