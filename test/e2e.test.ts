// End to end, with real packets: pods in their own network namespaces call 169.254.169.254:80
// with curl, @azure/identity and @azure/msal-node; the daemon in the node namespace intercepts
// them (its own iptables rules, in that namespace only), learns the pods from a fake Kubernetes
// API server through the real informers, and asks the IMDS emulator on the node's
// 169.254.169.254. The emulator's record is the ground truth: a request from a pod address is a
// bypass. Nothing touches the root namespace; everything is removed afterwards, also on failure.
import t from 'tap';
import type { Test } from 'tap';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { decodeFakeToken } from '../src/emulator/imds-emulator.ts';
import { netnsUnavailable } from './netns/netns.ts';
import { IDS, PODS, RESOURCE, rebuiltTokenUrl } from './e2e/cluster.ts';
import { E2E, isPodAddress, METRICS_PORT, sleep } from './e2e/environment.ts';
import { eventually } from './helpers/eventually.ts';
import { dashboardExprs, exposedNames, metricNames, ruleExprs } from './helpers/monitoring.ts';
import type { ClientResult, CurlResult, ImdsRequest } from './e2e/environment.ts';

const execFileP = promisify(execFile);

const TOKEN = `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${RESOURCE}`;
const DNAT = '-A aad-metadata ! -s 127.0.0.1/32 -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:2579';
const CHAIN = ['-N aad-metadata', DNAT, '-A aad-metadata -j RETURN'];
/** Where the daemon's own requests to IMDS come from: the node (lo), never a pod. */
const NODE_ADDRESSES = new Set(['169.254.169.254', '127.0.0.1']);
/** Exactly what the daemon may send upstream in this test: rebuilt queries for A, B and C. */
const REBUILT = new Set([IDS.A.clientID, IDS.B.clientID, IDS.C.clientID].map(rebuiltTokenUrl));
/** What the daemon's upstream requests carry: nothing from the pod. */
const UPSTREAM_HEADERS = new Set(['host', 'connection', 'metadata', 'user-agent']);

const isToken = (r: ImdsRequest): boolean => r.url.toLowerCase().includes('/oauth2/token');
const addr = (r: ImdsRequest): string => r.remoteAddress.replace(/^::ffff:/, '');
const brief = (r: CurlResult): string => `exit=${r.exit} status=${r.status} ${r.body.slice(0, 200)}`;
const tokenClient = (r: CurlResult): string | undefined =>
  typeof r.json?.access_token === 'string' ? decodeFakeToken(r.json.access_token)?.client_id : undefined;

/** A 200 carrying a token minted for `clientId`, as the pod sees it. */
function grantedTo(t: Test, r: CurlResult, clientId: string, what: string): void {
  t.equal(r.status, 200, `${what}: 200 (${brief(r)})`);
  t.equal(r.json?.client_id, clientId, `${what}: client_id in the answer`);
  t.equal(tokenClient(r), clientId, `${what}: the token itself is for that identity`);
  t.equal(r.json?.resource, RESOURCE, `${what}: resource echoed`);
}

function refusedWith(t: Test, r: CurlResult, status: number, reason: string, what: string): void {
  t.equal(r.status, status, `${what}: ${status} (${brief(r)})`);
  t.equal(r.json?.reason, reason, `${what}: reason in the body`);
  t.equal(r.headers['x-podid-nmi-reason'], reason, `${what}: reason header (the daemon answered, not IMDS)`);
  t.equal(r.json?.access_token, undefined, `${what}: no token`);
}

function sdkGot(t: Test, r: ClientResult, clientId: string, what: string): void {
  t.ok(r.ok, `${what}: token (${r.error ?? ''})`);
  t.equal(r.clientId, clientId, `${what}: for the right identity`);
}

/** Every request the emulator received from a pod address: each one is an interception bypass. */
function assertNoBypass(t: Test, requests: ImdsRequest[], what: string): void {
  const bypass = requests.filter((r) => isPodAddress(r.remoteAddress));
  t.same(bypass.map((r) => `${addr(r)} ${r.method} ${r.url}`), [], `${what}: no request reached IMDS from a pod address`);
  const foreign = [...new Set(requests.map(addr))].filter((a) => !NODE_ADDRESSES.has(a));
  t.same(foreign, [], `${what}: every request came from the node itself (${[...new Set(requests.map(addr))].join(', ')})`);
}

const unavailable = await netnsUnavailable();
// Several daemon starts: on a loaded machine each takes tens of seconds.
t.setTimeout(600_000);

t.test('end to end: pods, the daemon and IMDS in network namespaces', { skip: unavailable ?? false }, async (t) => {
  const began = performance.now();
  const env = await E2E.start();
  t.teardown(() => env.destroy());

  await t.test('the daemon starts from the API server, installs its rules and reports ready', async (t) => {
    const run = await env.startDaemon();
    t.ok(env.daemon.running, 'running');
    t.same(await env.chainRules(), CHAIN, 'NMI\'s chain, DNAT to the listener');
    const prerouting = (await env.iptables('-S', 'PREROUTING')).stdout.split('\n').filter((l) => l.startsWith('-A'));
    t.equal(prerouting[0], '-A PREROUTING -j aad-metadata', 'jump at position 1 of PREROUTING');
    // README: "/readyz is 200 only when cluster state has synced and, with --manage-iptables,
    // the rules are in place."
    t.same(run.rulesAtFirstReady, CHAIN, 'the rules were in place when /readyz first said 200');
  });

  await t.test('pod A gets identity A from every client', async (t) => {
    const [curl, dac, miClient, miResource, msalSystem, msalClient] = await Promise.all([
      env.curl('a', TOKEN),
      env.client('a', 'default-azure-credential'),
      env.client('a', 'managed-identity-credential', ['--client-id', IDS.A.clientID]),
      env.client('a', 'managed-identity-credential', ['--resource-id', IDS.A.resourceID]),
      env.client('a', 'msal-managed-identity'),
      env.client('a', 'msal-managed-identity', ['--client-id', IDS.A.clientID]),
    ]);
    grantedTo(t, curl, IDS.A.clientID, 'curl');
    sdkGot(t, dac, IDS.A.clientID, 'DefaultAzureCredential');
    sdkGot(t, miClient, IDS.A.clientID, 'ManagedIdentityCredential({clientId: A})');
    sdkGot(t, miResource, IDS.A.clientID, 'ManagedIdentityCredential({resourceId: RA})');
    sdkGot(t, msalSystem, IDS.A.clientID, 'msal-node ManagedIdentityApplication (system-assigned form)');
    sdkGot(t, msalClient, IDS.A.clientID, 'msal-node ManagedIdentityApplication({userAssignedClientId: A})');
    const tokens = (await env.imdsRequests()).filter(isToken);
    t.ok(tokens.length >= 1, 'IMDS was asked');
    t.same([...new Set(tokens.map((r) => r.url))], [rebuiltTokenUrl(IDS.A.clientID)], 'only ever for A, by its own client id, rebuilt');
  });

  await t.test('pod A asking for identity B is refused, and IMDS is never asked for B', async (t) => {
    const [byClient, byResource, mi, msal] = await Promise.all([
      env.curl('a', `${TOKEN}&client_id=${IDS.B.clientID}`),
      env.curl('a', `${TOKEN}&msi_res_id=${IDS.B.resourceID}`),
      env.client('a', 'managed-identity-credential', ['--client-id', IDS.B.clientID]),
      env.client('a', 'msal-managed-identity', ['--client-id', IDS.B.clientID]),
    ]);
    refusedWith(t, byClient, 403, 'identity_not_bound', 'curl client_id=B');
    refusedWith(t, byResource, 403, 'identity_not_bound', 'curl msi_res_id=RB');
    t.notOk(mi.ok, 'ManagedIdentityCredential({clientId: B}) throws');
    t.match(mi.error, /not bound to this pod/, 'with the daemon\'s description');
    t.notOk(msal.ok, 'msal-node ({userAssignedClientId: B}) throws');
    t.match(msal.error, /not bound to this pod/, 'with the daemon\'s description');
    t.equal(mi.clientId, null, 'ManagedIdentityCredential got no token at all');
    t.equal(msal.clientId, null, 'msal-node got no token at all');
    const forB = (await env.imdsRequests()).filter((r) => isToken(r) && r.url.includes(IDS.B.clientID));
    t.same(forB, [], 'no token request for B reached IMDS (pod B has not asked yet)');
  });

  await t.test('pod B gets identity B (so A was refused by policy, not for want of B)', async (t) => {
    grantedTo(t, await env.curl('b', TOKEN), IDS.B.clientID, 'curl from pod B');
  });

  await t.test('an unlabelled pod gets 400 pod_unlabeled, and DefaultAzureCredential gives up at once', async (t) => {
    refusedWith(t, await env.curl('u', TOKEN), 400, 'pod_unlabeled', 'curl');
    const started = performance.now();
    const dac = await env.client('u', 'default-azure-credential');
    const wall = Math.round(performance.now() - started);
    t.notOk(dac.ok, 'getToken fails');
    t.equal(dac.clientId, null, 'no token');
    t.match(dac.error, /ManagedIdentityCredential: .*no aadpodidbinding label/, 'managed identity was tried and refused by the daemon');
    t.ok(dac.ms < 5_000, `the whole getToken failed within a few seconds (${dac.ms} ms)`);
    t.comment(`DefaultAzureCredential in the unlabelled pod: getToken failed after ${dac.ms} ms (process ${wall} ms)`);
  });

  await t.test('an excepted pod passes through with the identity it names', async (t) => {
    const [curl, mi] = await Promise.all([
      env.curl('x', `${TOKEN}&client_id=${IDS.C.clientID}`),
      env.client('x', 'managed-identity-credential', ['--client-id', IDS.C.clientID]),
    ]);
    grantedTo(t, curl, IDS.C.clientID, 'curl client_id=C');
    sdkGot(t, mi, IDS.C.clientID, 'ManagedIdentityCredential({clientId: C})');
  });

  await t.test('IMDS only ever heard from the daemon, with rebuilt token queries', async (t) => {
    const requests = await env.imdsRequests();
    assertNoBypass(t, requests, 'so far');
    const tokens = requests.filter(isToken);
    t.same(tokens.filter((r) => !REBUILT.has(r.url)).map((r) => r.url), [], 'every token query is exactly a rebuilt one');
    for (const id of [IDS.A, IDS.B, IDS.C]) {
      t.ok(tokens.some((r) => r.url === rebuiltTokenUrl(id.clientID)), `asked for ${id.clientID} by client id`);
    }
    t.same(requests.filter((r) => !isToken(r)).map((r) => r.url), [], 'the SDK probes were answered by the daemon, not forwarded');
    for (const r of tokens) {
      t.equal(r.method, 'GET');
      t.equal(r.headers.metadata, 'true', 'Metadata: true');
      t.match(r.headers['user-agent'], /^podid-nmi\/\d+\.\d+\.\d+$/, 'the daemon\'s own User-Agent');
      t.same(Object.keys(r.headers).filter((h) => !UPSTREAM_HEADERS.has(h)), [], `no header from the pod (${Object.keys(r.headers).join(', ')})`);
    }
  });

  await t.test('every series the monitoring component reads is on this daemon\'s /metrics', async (t) => {
    const page = await env.node.exec('curl', ['-s', '--max-time', '5', `http://127.0.0.1:${METRICS_PORT}/metrics`], { timeoutMs: 10_000 });
    const exposed = exposedNames(page.stdout);
    t.ok(exposed.has('podid_nmi_iptables_rules_installed'), 'a daemon that manages the rules');
    const used = metricNames([...await ruleExprs(), ...await dashboardExprs()]);
    used.delete('up');
    t.same([...used].filter((n) => !exposed.has(n)), [], `all ${used.size} series used are exposed`);
  });

  await t.test('restart: while the daemon is down pods are refused, never let through', async (t) => {
    const before = (await env.imdsRequests()).length;
    const loopStart = Date.now();
    // Pod A asks every 100 ms with curl --max-time 1 (at most 150 requests, 20 s).
    const loop = env.curlLoop('a', TOKEN, { intervalMs: 100, maxTimeSec: 1, maxCount: 150, maxMs: 20_000 });
    let stoppedAt = 0;
    let restartedAt = 0;
    let readyAt = 0;
    try {
      await sleep(1_500);
      const code = await env.stopDaemon();
      stoppedAt = Date.now();
      t.equal(code, 0, 'SIGTERM: exit 0');
      t.same(await env.chainRules(), CHAIN, 'the rules stay after the daemon exits (fail closed)');
      await sleep(1_000);
      restartedAt = Date.now();
      const run = await env.startDaemon();
      readyAt = Date.now();
      const logged = (msg: string): number => (env.daemonLog().findLast((l) => l.msg === msg)?.time as number | undefined) ?? NaN;
      t.comment(`new daemon: informers started +${logged('starting informers') - run.startedAtEpoch} ms, `
        + `listening +${logged('podid-nmi listening') - run.startedAtEpoch} ms after spawn`);
      // Keep asking for 2 s more (and at least 8 s in all).
      await sleep(Math.max(2_000, loopStart + 8_000 - Date.now()));
    } finally {
      loop.stop();
    }
    const results = await loop.done;
    const granted = results.filter((r) => r.status === 200 && r.json?.client_id === IDS.A.clientID
      && typeof r.json.access_token === 'string' && decodeFakeToken(r.json.access_token)?.client_id === IDS.A.clientID);
    // 7: refused (nothing listens behind the DNAT); 52/56: a connection cut while the listener closed.
    const failedToConnect = results.filter((r) => r.exit === 7 || r.exit === 52 || r.exit === 56);
    // A refusal written by the daemon itself (its JSON carries a reason), never a token.
    const refusedByDaemon = results.filter((r) => r.exit === 0 && r.status !== null && r.status >= 400
      && typeof r.json?.reason === 'string' && r.json.access_token === undefined);
    const other = results.filter((r) => !granted.includes(r) && !failedToConnect.includes(r) && !refusedByDaemon.includes(r));
    const show = (list: typeof results): string[] => list.map((r) => `+${r.at - loopStart} ms exit=${r.exit} ${r.raw}`);
    t.comment(`restart loop: ${results.length} requests, ${granted.length} × 200, ${failedToConnect.length} connection failures `
      + `(${failedToConnect.filter((r) => r.exit === 7).length} refused), ${refusedByDaemon.length} refusals by the daemon; `
      + `down ${restartedAt - stoppedAt} ms before the restart, ready ${readyAt - restartedAt} ms after it`);
    t.ok(results.length >= 20, `the pod kept asking (${results.length} requests)`);
    t.same(show(other), [], 'no answer but a 200 for A, a connection failure, or a refusal by the daemon: no IMDS answer, no timeout');
    // While the new daemon loads its state it may answer 503 state_not_ready (retried by SDKs);
    // a definitive refusal of a bound pod would end its credential chain.
    const definitive = refusedByDaemon.filter((r) => r.json?.reason !== 'state_not_ready');
    t.same(show(definitive), [], 'every answer is a 200 for A, a connection failure, or a retryable state_not_ready');
    t.ok(refusedByDaemon.every((r) => r.status === 503), 'state_not_ready is a 503');
    t.ok(failedToConnect.some((r) => r.exit === 7 && r.at >= stoppedAt - 50), 'requests during the downtime were refused');
    t.ok(granted.some((r) => r.at < stoppedAt), '200s before the stop');
    t.ok(granted.some((r) => r.at > restartedAt), '200s resume after the restart');
    const during = (await env.imdsRequests()).slice(before);
    assertNoBypass(t, during, 'during the restart');
    t.ok(during.filter(isToken).every((r) => r.url === rebuiltTokenUrl(IDS.A.clientID)), 'the new daemon asks for A, rebuilt');
  });

  await t.test('a restarting daemon does not decide for a bound pod before its bindings are listed', async (t) => {
    const before = (await env.imdsRequests()).length;
    t.equal(await env.stopDaemon(), 0, 'stopped');
    // The API server fails the new daemon's first four lists of bindings: pods are known at
    // once, bindings only after the informer's backoff (200, 400, 800, 1600 ms, jittered down
    // to half: at least 1.5 s).
    await env.api.request({ op: 'failNext', count: 4, resource: 'azureidentitybindings', watch: false, status: 500 });
    const run = env.spawnDaemon();
    try {
      await env.waitDaemonLog(run, (l) => l.msg === 'initial list applied' && l.resource === 'pods', 'the pods list');
      const bindingsListed = (): boolean => env.daemonLog().some((l) => l.msg === 'initial list applied' && l.resource === 'azureidentitybindings' && (l.time as number) >= run.startedAtEpoch);
      t.notOk(bindingsListed(), 'pods listed, bindings not yet');
      let r = await env.curl('a', TOKEN, { maxTimeSec: 5 });
      // The listener opens right after the informers start; until then the DNAT target refuses.
      await eventually(async () => {
        if (r.exit !== 7) return true;
        r = await env.curl('a', TOKEN, { maxTimeSec: 5 });
        return r.exit !== 7;
      }, 'the new listener accepting', undefined, 50);
      t.comment(`pod A while the bindings were not listed: ${brief(r)} (bindings listed by then: ${bindingsListed()})`);
      t.ok(r.status === 200 ? tokenClient(r) === IDS.A.clientID : r.json?.access_token === undefined, 'never a token but A\'s');
      t.ok(r.status === 200 || (r.status === 503 && r.json?.reason === 'state_not_ready'), `a wait or a transient 503, not a definitive refusal (${brief(r)})`);
      if (r.status === 503) t.ok(r.headers['retry-after'] !== undefined, '503 with Retry-After');
    } finally {
      await env.waitDaemonReady(run);
    }
    grantedTo(t, await env.curl('a', TOKEN), IDS.A.clientID, 'pod A once the daemon is ready');
    assertNoBypass(t, (await env.imdsRequests()).slice(before), 'meanwhile');
  });

  await t.test('drift: rules deleted by hand are restored within the interval', async (t) => {
    const repairs = () => env.daemonLog().filter((l) => l.msg === 'interception rules had drifted and were repaired').length;
    const drifts: Array<{ what: string; args: string[] }> = [
      { what: 'DNAT rule deleted', args: ['-D', 'aad-metadata', ...DNAT.split(' ').slice(2)] },
      { what: 'chain flushed', args: ['-F', 'aad-metadata'] },
      { what: 'jump deleted', args: ['-D', 'PREROUTING', '-j', 'aad-metadata'] },
    ];
    for (const { what, args } of drifts) {
      const repairedBefore = repairs();
      t.same(await env.chainRules(), CHAIN, `${what}: in place before`);
      const del = await env.iptables(...args);
      t.equal(del.code, 0, `${what}: done (${del.stderr.trim()})`);
      // Pods stay silent meanwhile: without the rule their packets would reach IMDS directly.
      const ms = await eventually(async () => {
        const chain = await env.chainRules();
        const prerouting = (await env.iptables('-S', 'PREROUTING')).stdout.split('\n').filter((l) => l.startsWith('-A'));
        return JSON.stringify(chain) === JSON.stringify(CHAIN) && prerouting[0] === '-A PREROUTING -j aad-metadata';
      }, `${what}: the daemon restoring the rules`, undefined, 100);
      // How long is a figure, not a check: a loaded machine stretches the 1 s interval.
      t.comment(`${what}: restored after ${Math.round(ms)} ms (interval 1 s)`);
      // The daemon logs after it has verified the rules, so the log line can trail what iptables shows.
      await eventually(() => repairs() !== repairedBefore, `${what}: the repair logged`);
      t.equal(repairs(), repairedBefore + 1, `${what}: logged as drift and repaired`);
      grantedTo(t, await env.curl('a', TOKEN), IDS.A.clientID, `${what}: pod A after the repair`);
    }
  });

  await t.test('bypass: over the whole run, nothing from a pod address reached IMDS', async (t) => {
    const requests = await env.imdsRequests();
    t.ok(requests.filter(isToken).length >= 3, `IMDS was asked (${requests.length} requests)`);
    assertNoBypass(t, requests, 'whole run');
    t.same(requests.filter(isToken).filter((r) => !REBUILT.has(r.url)).map((r) => r.url), [], 'every token query is exactly a rebuilt one');
    const decisions = env.daemonLog().filter((l) => typeof l.decision === 'string');
    t.ok(decisions.length > 0, 'the daemon logged its decisions');
    const podA = decisions.filter((l) => l.pod === `${PODS.a.namespace}/${PODS.a.name}`);
    t.same(podA.filter((l) => l.status === 200 && (l.decision !== 'granted' || l.clientID !== IDS.A.clientID)), [],
      'every 200 for pod A was a grant of identity A');
  });

  await t.test('everything the test created is removed', async (t) => {
    const namespaces = [env.node.ns, ...Object.values(env.pods).map((p) => p.ns)];
    const veths = Object.values(env.pods).map((p) => p.hostVeth);
    const procs = [...env.daemons.map((d) => d.proc), env.api.proc, env.imds.proc];
    await env.destroy();
    const list = (await execFileP('ip', ['netns', 'list'])).stdout;
    t.same(namespaces.filter((ns) => list.split('\n').some((l) => l.split(' ')[0] === ns)), [], 'namespaces deleted (with their links, addresses and rules)');
    const links = (await execFileP('ip', ['-o', 'link', 'show'])).stdout;
    t.same(veths.filter((v) => links.includes(v)), [], 'no veth left in the root namespace');
    t.same(procs.filter((p) => p.running).map((p) => p.child.pid), [], 'every process ended');
    t.same([env.api.proc.child.exitCode, env.imds.proc.child.exitCode], [0, 0], 'API server and emulator shut down cleanly');
    t.notOk(env.apiDir !== '' && existsSync(env.apiDir), 'the API server\'s temp dir removed');
    t.notOk(existsSync(env.dir), 'temp dir removed');
  });

  t.comment(`end to end: ${Math.round(performance.now() - began)} ms`);
});
