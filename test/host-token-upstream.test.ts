// /host/token when IMDS fails: the CSI provider (a hostNetwork pod, attributed by its socket's
// cgroup) gets exactly the refusals a pod gets on the token route for the same failure: status,
// IMDS-shaped body with the reason, reason header and Retry-After (IMDS's own kept), and 503
// shutting_down with the connection closed when the daemon stops. The token route is asked
// beside it each time, so the two cannot drift apart. Nothing leaves loopback.
import t, { type Test } from 'tap';
import { REFUSALS, type Reason, type RefusalSpec } from '../src/decision/reasons.ts';
import { cgroupsUnavailable, parseCurlOut, TestCgroups } from './helpers/cgroups.ts';
import { META } from './helpers/http.ts';
import { IDS, STATE_YAML, startStack, TOKEN, type Stack } from './helpers/stack.ts';

const CSI_UID = 'aaaaaaaa-0000-4000-8000-0000000000c5';
const CSI_POD = `---
apiVersion: v1
kind: Pod
metadata: {name: csi-provider, namespace: kube-system, uid: ${CSI_UID}, labels: {app: csi-secrets-store-provider-azure}}
spec: {nodeName: node-1, hostNetwork: true}
status: {phase: Running, podIPs: [{ip: 10.0.0.4}]}
`;
/** shop/orders (127.0.0.10, bound to reader), named by the CSI provider. */
const HOST_TOKEN = '/host/token/?resource=https://vault.azure.net';
const FOR_ORDERS = { podns: 'shop', podname: 'orders' };
const OTHER_TOKEN = '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com';

interface Seen {
  status: number;
  json: Record<string, unknown> | undefined;
  reason: string | undefined;
  retryAfter: string | undefined;
  connection: string | undefined;
}

async function setUp(t: Test, flags: string[]): Promise<{ s: Stack; hostToken: () => Promise<Seen>; token: (path?: string) => Promise<Seen> }> {
  const cg = new TestCgroups(t);
  const csi = cg.podContainer('systemd', 'guaranteed', CSI_UID);
  const s = await startStack(t, { stateYaml: STATE_YAML + CSI_POD, flags: [`--kubepods-cgroup-parent=${cg.parent}`, ...flags] });
  const curl = async (path: string, headers: Record<string, string>, from?: string): Promise<Seen> => {
    const args = ['-s', '--max-time', '20', '-w', '\n@@%{http_code}\n@@%header{x-podid-nmi-reason}\n@@%header{retry-after}\n@@%header{connection}'];
    for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
    if (from !== undefined) args.push('--interface', from);
    args.push(`http://127.0.0.1:${s.port}${path}`);
    const r = await cg.run(csi, 'curl', args, { prefix: ['env', '-i', 'PATH=/usr/bin:/bin'] });
    const parts = r.stdout.split('\n@@');
    const [connection, retryAfter, reason] = [parts.pop(), parts.pop(), parts.pop()].map((v) => v?.trim() || undefined);
    return { ...parseCurlOut(parts.join('\n@@')), reason, retryAfter, connection };
  };
  return {
    s,
    hostToken: () => curl(HOST_TOKEN, FOR_ORDERS),
    // The same pod's own request, from its address (the source-IP strategy comes first).
    token: (path = TOKEN) => curl(path, META, '127.0.0.10'),
  };
}

function refused(t: Test, a: Seen, reason: Reason, what: string, retryAfter = true): void {
  const spec: RefusalSpec = REFUSALS[reason];
  t.equal(a.status, spec.status, `${what}: status`);
  t.same(a.json, { error: spec.error, error_description: spec.description, reason }, `${what}: body`);
  t.equal(a.reason, reason, `${what}: reason header`);
  if (retryAfter) t.equal(a.retryAfter, String(spec.retryAfter), `${what}: Retry-After`);
}

async function suite(): Promise<void> {
  t.test('IMDS failing: /host/token answers as the token route does', async (t) => {
    const { s, hostToken, token } = await setUp(t, ['--token-cache=false', '--upstream-timeout-ms=300', '--token-wait-ms=1500']);
    const ok = await hostToken();
    t.equal(ok.status, 200, 'served while IMDS is well');
    t.equal(ok.json?.clientid, IDS.reader!.clientID);

    // One 5xx is retried inside the budget: the provider never sees it.
    s.emulator.setFault({ kind: 'status', status: 500, body: '{"error":"server_error"}' }, { times: 1 });
    const retried = await hostToken();
    t.equal(retried.status, 200, 'one 500: retried, and the token comes in NMI\'s shape');
    t.equal(retried.json?.clientid, IDS.reader!.clientID);

    for (const [what, ask] of [['/host/token', hostToken], ['token route', token]] as const) {
      s.emulator.setFault({ kind: 'slow', delayMs: 3_000 }, { times: 1 });
      refused(t, await ask(), 'upstream_timeout', `${what}, IMDS too slow`);
      s.emulator.setFault({ kind: 'reset' }, { times: 1 });
      refused(t, await ask(), 'upstream_unreachable', `${what}, connection reset`);
    }
    t.match(await s.metrics(), /podid_nmi_requests_total\{route="host_token",decision="granted",status="503",reason="upstream_timeout"\} 1/, 'counted under its route');
    t.match(await s.metrics(), /podid_nmi_requests_total\{route="host_token",decision="granted",status="200",reason=""\} 2/, 'its grants are counted as granted, as the token route\'s');

    // IMDS keeps failing and asks for 7 s: both are told to come back after it, not at once.
    // (Two tokens, so the second is not the first's fetch, still held.)
    s.emulator.setFault({ kind: 'status', status: 503, body: '{"error":"unavailable"}', headers: { 'retry-after': '7' } });
    for (const [what, ask] of [['/host/token', hostToken], ['token route', () => token(OTHER_TOKEN)]] as const) {
      const held = await ask();
      refused(t, held, 'upstream_queued', `${what}, IMDS 503 with Retry-After 7`, false);
      t.ok(Number(held.retryAfter) >= 6, `${what}: Retry-After covers IMDS's own (${held.retryAfter})`);
    }

    await s.emulator.close();
    refused(t, await hostToken(), 'upstream_unreachable', '/host/token, IMDS not listening');
    refused(t, await token(), 'upstream_unreachable', 'token route, IMDS not listening');
  });

  t.test('on stop, a waiting /host/token gets 503 shutting_down and the connection closes', async (t) => {
    const { s, hostToken, token } = await setUp(t, ['--token-cache=false', '--shutdown-grace-ms=1000', '--token-wait-ms=8000']);
    s.emulator.setFault({ kind: 'slow', delayMs: 20_000 });
    const asks = [hostToken(), token()];
    const started = Date.now();
    while (s.emulator.requests.length < 2 && Date.now() - started < 10_000) await new Promise((r) => setTimeout(r, 50));
    t.equal(s.emulator.requests.length, 2, 'both wait on IMDS');
    await s.daemon.close();
    const [host, own] = await Promise.all(asks);
    refused(t, host!, 'shutting_down', '/host/token');
    t.equal(host!.connection, 'close', '/host/token: the connection closes');
    refused(t, own!, 'shutting_down', 'token route');
    t.equal(own!.connection, 'close', 'token route: the connection closes');
  });
}

const why = cgroupsUnavailable();
if (why !== null) t.plan(0, why);
else await suite();
