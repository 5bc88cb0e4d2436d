// One hostile pod beside a victim: for each attack, the victim (shop/orders at 127.0.0.10, bound
// to `reader`) keeps getting its token, memory stays under the DaemonSet's 512 MiB limit, and
// the attacker gets a clear refusal. Every flood is bounded in count and time.
import t, { type Test } from 'tap';
import { ask, META } from './helpers/http.ts';
import { openRaw, parseAnswers, rssMiB, tokenRequest, waitUntil, type RawConnection } from './helpers/raw.ts';
import { assertRefused } from './helpers/refused.ts';
import { IDS, startStack, TOKEN, type Stack } from './helpers/stack.ts';

const VICTIM = '127.0.0.10';
const UNLABELLED = '127.0.0.11'; // shop/web, uid u-11: a pod with no identity
const MEMORY_LIMIT_MIB = 512;

/** The victim asks `n` times, one after another; every answer must be its own token. */
async function victimServed(t: Test, s: Stack, n: number, what: string): Promise<void> {
  for (let i = 0; i < n; i++) {
    const a = await s.ask(TOKEN, { from: VICTIM, headers: META, timeoutMs: 30_000 });
    t.equal(a.status, 200, `${what}: victim's request ${i + 1} answered 200`);
    t.equal(a.json?.client_id, IDS.reader!.clientID, `${what}: victim's request ${i + 1} got its own identity`);
  }
}

function metric(text: string, pattern: RegExp): number {
  let sum = 0;
  for (const line of text.split('\n')) if (pattern.test(line)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

t.test('stalled sockets: over its share refused at once, the rest reaped after the header timeout even unread; the victim is served', async (t) => {
  const s = await startStack(t, { flags: ['--max-connections=64', '--max-connections-per-pod=8'] });
  const shares = s.daemon.listener.connections;
  const partial = 'GET /metadata/identity/oauth2/token HTTP/1.1\r\nHost: 169.254.169.254\r\n';
  // Eight sockets that send half a request and never read: the attacker's whole share.
  for (let i = 0; i < 8; i++) await openRaw(t, s.port, UNLABELLED, partial, { read: false });
  await waitUntil(() => shares.held('pod:u-11') === 8, 2_000, 'eight sockets held');
  const over: RawConnection[] = [];
  for (let i = 0; i < 4; i++) over.push(await openRaw(t, s.port, UNLABELLED, partial));
  await Promise.all(over.map((c) => c.closed));
  for (const c of over) {
    const [answer] = parseAnswers(c.received());
    assertRefused(t, { ...answer!, headers: answer!.headers }, 'connections_over_share', 'a connection over the pod\'s share');
  }
  t.equal(shares.held('pod:u-11'), 8, 'refused sockets hold nothing');
  await victimServed(t, s, 5, 'attacker at its share');

  // A socket that reads gets the 408 before the socket goes; those that never read go all the same.
  const reading = await openRaw(t, s.port, '127.0.0.13', partial);
  await reading.closed;
  t.match(reading.received(), /^HTTP\/1\.1 408 /, 'a timed-out request gets 408 and its socket is closed');
  await waitUntil(() => shares.held('pod:u-11') === 0, 9_000, 'unread stalled sockets reaped');
  t.pass('stalled sockets that never read were destroyed, not half-closed');

  // Reconnecting every socket the daemon closes: the attacker never holds more than its share.
  const until = Date.now() + 2_500;
  let reconnects = 0;
  const keepStalling = async (): Promise<void> => {
    while (Date.now() < until && reconnects < 400) {
      reconnects++;
      const c = await openRaw(t, s.port, UNLABELLED, partial).catch(() => undefined);
      if (c !== undefined) await Promise.race([c.closed, new Promise((r) => setTimeout(r, until - Date.now()))]);
    }
  };
  const attackers = Array.from({ length: 12 }, keepStalling);
  let peak = 0;
  const sampler = setInterval(() => { peak = Math.max(peak, shares.held('pod:u-11')); }, 10);
  await victimServed(t, s, 10, 'attacker reconnecting');
  await Promise.all(attackers);
  clearInterval(sampler);
  t.ok(peak <= 8, `the reconnecting attacker held at most its share (peak ${peak})`);

  // Strangers (addresses no pod holds) share a quarter of --max-connections between them.
  const strangers: RawConnection[] = [];
  for (let i = 0; i < 20; i++) strangers.push(await openRaw(t, s.port, `127.0.0.${100 + i}`, partial, { read: false }));
  const strangersHeld = (): number => {
    let n = 0;
    for (let i = 0; i < 20; i++) n += shares.held(`ip:127.0.0.${100 + i}`);
    return n;
  };
  await waitUntil(() => strangersHeld() === 16, 2_000, 'strangers at their share');
  await new Promise((r) => setTimeout(r, 100));
  t.equal(strangersHeld(), 16, 'strangers together hold 64 / 4 connections, no more');
  await victimServed(t, s, 3, 'strangers at their share');
  t.ok(rssMiB() < MEMORY_LIMIT_MIB, 'memory under the DaemonSet limit');
  t.ok(metric(await s.metrics(), /^podid_nmi_requests_total\{route="connection",decision="refused",status="429",reason="connections_over_share"\}/) >= 8, 'refused connections are counted');
});

t.test('a body that never arrives: the socket is reaped at the request timeout; the victim is served', async (t) => {
  const s = await startStack(t, { flags: ['--max-connections-per-pod=4'] });
  const shares = s.daemon.listener.connections;
  const post = 'POST /metadata/scheduledevents?api-version=2020-07-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\ncontent-length: 1000\r\n\r\n{"Start';
  for (let i = 0; i < 4; i++) await openRaw(t, s.port, UNLABELLED, post, { read: false });
  await waitUntil(() => shares.held('pod:u-11') === 4, 2_000, 'four sockets held');
  await victimServed(t, s, 5, 'bodies stalled');
  await waitUntil(() => shares.held('pod:u-11') === 0, 14_000, 'stalled bodies reaped');
  t.equal(s.emulator.requests.filter((r) => r.url.startsWith('/metadata/scheduledevents')).length, 0, 'nothing half-received went upstream');
});

t.test('pipelining: the second request is refused and closes the connection; a flood never reaches the handler', async (t) => {
  const s = await startStack(t, { flags: ['--max-connections-per-pod=8'] });
  const one = await openRaw(t, s.port, UNLABELLED, tokenRequest().repeat(3));
  await one.closed;
  const answers = parseAnswers(one.received());
  t.equal(answers.length, 2, 'two answers, then the connection closes');
  assertRefused(t, answers[0]!, 'pod_unlabeled', 'the first request is answered as usual');
  assertRefused(t, answers[1]!, 'pipelining_refused', 'the pipelined one');

  // 16 addresses x 8 connections x 400 pipelined requests, never read.
  let peak = rssMiB();
  const sampler = setInterval(() => { peak = Math.max(peak, rssMiB()); }, 50);
  const burst = tokenRequest().repeat(400);
  const floods: Array<Promise<RawConnection>> = [];
  for (let a = 0; a < 16; a++) {
    const from = a === 0 ? UNLABELLED : `127.0.0.${130 + a}`;
    for (let c = 0; c < 8; c++) floods.push(openRaw(t, s.port, from, burst, { read: false }));
  }
  await Promise.all(floods);
  await victimServed(t, s, 10, 'pipelining flood');
  await waitUntil(async () => metric(await s.metrics(), /reason="pipelining_refused"/) === 129, 10_000, 'every flooding connection refused');
  clearInterval(sampler);
  const handled = metric(await s.metrics(), /^podid_nmi_requests_total\{/);
  t.ok(handled <= 2 * 129 + 10 + 1, `at most two requests per connection reached the handler (${handled} of ${128 * 400})`);
  t.ok(peak < MEMORY_LIMIT_MIB, `peak RSS ${peak.toFixed(0)} MiB under the DaemonSet limit`);
});

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
  const s = await startStack(t, { flags: ['--max-requests-per-pod=16'] });
  const victimPath = `client_id=${IDS.reader!.clientID}`;
  const victimFetches = () => s.emulator.requests.filter((r) => r.url.includes(victimPath)).length;
  await victimServed(t, s, 1, 'before the flood');
  t.equal(victimFetches(), 1);
  // The attacker (shop/billing, bound to writer) asks for 4,200 distinct resources, 16 at a time.
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < 4_200) {
      const i = next++;
      const a = await s.ask(`/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://r${i}.example`, { from: '127.0.0.13', headers: META });
      if (a.status !== 200) throw new Error(`attacker's request ${i}: ${a.status}`);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  await victimServed(t, s, 3, 'after the flood');
  t.equal(victimFetches(), 1, 'the victim\'s token is still cached: IMDS was not asked again');
  const entries = metric(await s.metrics(), /^podid_nmi_token_cache_entries /);
  t.ok(entries <= 65, `the attacker holds at most its share of the cache (${entries} entries)`);
  t.ok(rssMiB() < MEMORY_LIMIT_MIB, 'memory under the DaemonSet limit');
});

t.test('the probe server: its own limits; stalled reconnecting sockets do not starve /healthz', async (t) => {
  const s = await startStack(t);
  const probe = s.daemon.probes.address.port;
  const until = Date.now() + 3_000;
  let opened = 0;
  let refused = 0;
  const stall = async (): Promise<void> => {
    while (Date.now() < until && opened < 400) {
      opened++;
      const c = await openRaw(t, probe, UNLABELLED, 'GET /healthz HTTP/1.1\r\n').catch(() => undefined);
      if (c === undefined) continue;
      await Promise.race([c.closed, new Promise((r) => setTimeout(r, Math.max(0, until - Date.now())))]);
      if (/^HTTP\/1\.1 429 /.test(c.received())) refused++;
    }
  };
  const attackers = Array.from({ length: 24 }, stall);
  await new Promise((r) => setTimeout(r, 200));
  for (let i = 0; i < 10; i++) {
    const a = await ask(probe, '/healthz', { from: '127.0.0.1', timeoutMs: 3_000 });
    t.equal(a.status, 200, `kubelet's /healthz ${i + 1}`);
  }
  await Promise.all(attackers);
  t.ok(refused >= 16, `sockets over the address's share were refused at once (${refused})`);
  const stalled = await openRaw(t, probe, '127.0.0.12', 'GET /healthz HTTP/1.1\r\n');
  await stalled.closed;
  t.match(stalled.received(), /^HTTP\/1\.1 408 /, 'a stalled probe socket gets 408 and is closed');
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
