// One hostile hostNetwork pod beside a victim hostNetwork pod, with --intercept-host-network:
// both call from the node's own address (loopback here), so only their sockets' cgroups tell
// them apart. Each is a process in its own kubelet pod cgroup (real cgroups, see
// helpers/cgroups.ts); the daemon runs in this process and reads socket cgroups with ss.
// Before attribution by cgroup was moved to accept, every hostNetwork pod was charged to the
// node address's one share: the attacker filled it and the victim was refused. Now each pod
// has its own shares, and the attacker's refusals are its own. Nothing leaves loopback.
import t, { type Test } from 'tap';
import { fileURLToPath } from 'node:url';
import { assertRefused } from './helpers/refused.ts';
import { cgroupsUnavailable, parseCurlOut, TestCgroups } from './helpers/cgroups.ts';
import type { RawAnswer } from './helpers/raw.ts';
import { waitUntil } from './helpers/raw.ts';
import { IDS, STATE_YAML, startStack, TOKEN, type Stack } from './helpers/stack.ts';

const FLOOD = fileURLToPath(new URL('./helpers/host-flood.ts', import.meta.url));
const UID = { victim: 'aaaaaaaa-2222-4000-8000-000000000001', attacker: 'aaaaaaaa-2222-4000-8000-000000000002' };
const hostPod = (name: string, uid: string, binding: string): string => `---
apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: shop, uid: ${uid}, labels: {aadpodidbinding: ${binding}}}
spec: {nodeName: node-1, hostNetwork: true}
status: {phase: Running, podIPs: [{ip: 10.0.0.4}]}
`;
const STATE = STATE_YAML + hostPod('host-victim', UID.victim, 'orders') + hostPod('host-attacker', UID.attacker, 'billing');
const PER_POD = { connections: 8, requests: 4 };
const STALLED_HEAD = 'GET /metadata/identity/oauth2/token HTTP/1.1\r\nHost: 169.254.169.254\r\n';
const REQUEST = `GET ${TOKEN} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n`;
const STALLED_BODY = 'POST /metadata/scheduledevents?api-version=2020-07-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\ncontent-length: 1000\r\n\r\n{"Start';

interface Setup {
  s: Stack;
  held(uid: string): number;
  /** The victim asks `n` times; every answer must be its own token. */
  victimServed(t: Test, n: number, what: string): Promise<void>;
  /** Starts the attacker's client in its pod cgroup; resolves with what it saw. */
  attack(o: { count: number; bytes: string; holdMs: number; loops?: number }): Promise<{ opened: number; answers: RawAnswer[] }>;
}

async function setUp(t: Test): Promise<Setup> {
  const cg = new TestCgroups(t);
  const victim = cg.podContainer('systemd', 'burstable', UID.victim);
  const attacker = cg.podContainer('cgroupfs', 'besteffort', UID.attacker);
  const s = await startStack(t, {
    stateYaml: STATE,
    flags: ['--intercept-host-network', `--kubepods-cgroup-parent=${cg.parent}`,
      `--max-connections-per-pod=${PER_POD.connections}`, `--max-requests-per-pod=${PER_POD.requests}`],
  });
  return {
    s,
    held: (uid) => s.daemon.listener.connections.held(`pod:${uid}`),
    async victimServed(t, n, what) {
      for (let i = 0; i < n; i++) {
        const r = await cg.run(victim, 'curl', ['-s', '--max-time', '20', '-H', 'Metadata: true', '-w', '\n@@%{http_code}', `http://127.0.0.1:${s.port}${TOKEN}`],
          { prefix: ['env', '-i', 'PATH=/usr/bin:/bin'] });
        const a = parseCurlOut(r.stdout);
        t.equal(a.status, 200, `${what}: the victim's request ${i + 1} answered 200 (${a.body.slice(0, 120)})`);
        t.equal(a.json?.client_id, IDS.reader!.clientID, `${what}: the victim's request ${i + 1} got its own identity`);
      }
    },
    async attack(o) {
      const r = await cg.run(attacker, process.execPath, [FLOOD, JSON.stringify({ port: s.port, ...o })], { timeoutMs: o.holdMs + 30_000 });
      const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
      if (line === undefined) throw new Error(`the attacker's client failed: ${r.stderr.slice(0, 500)}`);
      return JSON.parse(line) as { opened: number; answers: RawAnswer[] };
    },
  };
}

async function suite(): Promise<void> {
  t.test('pipelining: the cooldown is the attacker pod\'s own, not every hostNetwork pod\'s', async (t) => {
    const { victimServed, attack } = await setUp(t);
    const burst = await attack({ count: 1, bytes: REQUEST.repeat(3), holdMs: 1_000 });
    t.ok(burst.answers.length >= 1);
    assertRefused(t, burst.answers.at(-1)!, 'pipelining_refused', 'a pipelined burst');
    const next = await attack({ count: 1, bytes: REQUEST, holdMs: 1_000 });
    t.equal(next.answers.length, 1);
    assertRefused(t, next.answers[0]!, 'pipelining_refused', 'the attacker\'s next connection, in its cooldown');
    await victimServed(t, 3, 'attacker in its cooldown');
  });

  t.test('stalled connections: the attacker holds its own share, not the node address\'s', async (t) => {
    const { s, held, victimServed, attack } = await setUp(t);
    const flood = attack({ count: 40, bytes: STALLED_HEAD, holdMs: 4_000 });
    await waitUntil(() => held(UID.attacker) === PER_POD.connections, 10_000, 'the attacker at its share');
    await victimServed(t, 3, 'attacker at its share');
    t.equal(held(UID.attacker), PER_POD.connections, 'the attacker never holds more than its share');
    t.equal(s.daemon.listener.connections.held('ip:127.0.0.1'), 0, 'nothing is charged to the node address');
    const { opened, answers } = await flood;
    t.equal(opened, 40);
    t.equal(answers.length, 40 - PER_POD.connections, 'every connection over the share was answered');
    for (const a of answers) assertRefused(t, a, 'connections_over_share', 'the attacker over its connection share');
    t.match(await s.metrics(), /podid_nmi_requests_total\{route="connection",decision="refused",status="429",reason="connections_over_share"\} 32/);
  });

  t.test('requests in flight: the attacker\'s are its own, the victim keeps its share', async (t) => {
    const { victimServed, attack } = await setUp(t);
    // Bodies that never arrive keep each request in flight (until the 10 s request timeout).
    // Six connections: within the attacker's connection share, over its share of requests.
    const flood = attack({ count: 6, bytes: STALLED_BODY, holdMs: 4_000 });
    await new Promise((r) => setTimeout(r, 1_000));
    await victimServed(t, 3, 'attacker\'s requests in flight');
    const { answers } = await flood;
    t.equal(answers.length, 6 - PER_POD.requests, 'requests over the share are answered at once');
    for (const a of answers) assertRefused(t, a, 'requests_over_share', 'the attacker over its in-flight share');
  });

  t.test('reconnecting as fast as it can: attribution at accept keeps the attacker to its share', async (t) => {
    const { held, victimServed, attack } = await setUp(t);
    let peak = 0;
    const sampler = setInterval(() => { peak = Math.max(peak, held(UID.attacker)); }, 10);
    t.teardown(() => clearInterval(sampler));
    const flood = attack({ count: 2_000, bytes: STALLED_HEAD, holdMs: 3_000, loops: 24 });
    await victimServed(t, 5, 'attacker reconnecting');
    const { opened, answers } = await flood;
    clearInterval(sampler);
    t.ok(peak <= PER_POD.connections, `the attacker held at most its share (peak ${peak})`);
    t.ok(opened > 24, `the attacker reconnected (${opened} connections)`);
    const reasons = new Set(answers.map((a) => a.json?.reason));
    t.ok([...reasons].every((r) => r === 'connections_over_share'), `its refusals are connection refusals (${[...reasons].join(', ')})`);
  });
}

const why = cgroupsUnavailable();
if (why !== null) t.plan(0, why);
else await suite();
