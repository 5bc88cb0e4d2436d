// What the daemon leaves on a node, end to end in network namespaces, on both iptables flavours:
// - the route_localnet guard: a neighbour on the node's network sends its packets for
//   127.0.0.1 to the node (route tricks in its own namespace: its frames carry destination
//   127.0.0.1 and go out to the node, as CVE-2020-8558's attacker's do) and must not reach a
//   service bound to the node's 127.0.0.1 while the daemon runs, after SIGTERM, or after
//   cleanup-iptables, while a pod still gets its token through the DNAT;
// - with --intercept-host-network and no kubepods cgroup (wrong --cgroup-root, or a node with
//   no cgroup v2), pod-network pods are still intercepted and served, and /readyz says what is
//   missing.
// Everything happens in namespaces this test creates; the daemon's --cgroup-root points at a
// temporary directory that only imitates a hierarchy.
import t from 'tap';
import type { Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeFakeToken } from '../src/emulator/imds-emulator.ts';
import { netnsUnavailable, nodeBinary, type NsProcess, type PodNs } from './netns/netns.ts';
import { IDS, NODE_GATEWAY, NODE_NAME } from './e2e/cluster.ts';
import { E2E, METRICS_PORT, sleep, type DaemonRun } from './e2e/environment.ts';
import { READY_TIMEOUT_MS, TOKEN } from './e2e/upstream-launch.ts';

const unavailable = await netnsUnavailable();
t.setTimeout(900_000);

const CLI = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
const SECRET_PORT = 7777;
const GUARD_CHAIN = 'PODID-NMI-LOCALNET';

/** A host on the node's network that sends its packets for 127.0.0.1 to the node, as an attacker would. */
async function loopbackNeighbour(env: E2E): Promise<PodNs> {
  const nb = await env.node.addPod('nb', '10.250.0.99');
  // Its own namespace only: accept and send loopback-addressed packets on eth0, and route
  // 127.0.0.1 to the node instead of its own lo (the local table moved behind the rule).
  await nb.exec('sysctl', ['-qw', 'net.ipv4.conf.all.route_localnet=1']);
  await nb.exec('ip', ['route', 'add', '127.0.0.1/32', 'via', NODE_GATEWAY, 'dev', 'eth0', 'onlink', 'table', '100']);
  await nb.exec('ip', ['rule', 'add', 'pref', '10', 'to', '127.0.0.1/32', 'lookup', '100']);
  await nb.exec('ip', ['rule', 'add', 'pref', '100', 'lookup', 'local']);
  await nb.exec('ip', ['rule', 'del', 'pref', '0', 'lookup', 'local']);
  return nb;
}

/** Whether the neighbour got the node's loopback-only service to answer (bounded: 2 s). */
async function neighbourReaches(nb: PodNs): Promise<boolean> {
  const r = await nb.exec('curl', ['-s', '--max-time', '2', `http://127.0.0.1:${SECRET_PORT}/`], { allowFail: true, timeoutMs: 10_000 });
  return r.stdout.includes('node-loopback-only');
}

const routeLocalnet = async (env: E2E): Promise<string> =>
  (await env.node.exec('sysctl', ['-n', 'net.ipv4.conf.all.route_localnet'])).stdout.trim();

const filterRules = async (env: E2E, flavour: string, chain: string): Promise<{ code: number | null; lines: string[] }> => {
  const r = await env.node.exec(`iptables-${flavour}`, ['-w', '5', '-t', 'filter', '-S', chain], { allowFail: true });
  return { code: r.code, lines: r.stdout.split('\n').filter((l) => l.startsWith('-A')) };
};

async function tokenThroughDnat(t: Test, env: E2E, what: string): Promise<void> {
  const r = await env.curl('a', TOKEN);
  t.equal(r.status, 200, `${what}: pod A asks 169.254.169.254 (${r.body.slice(0, 120)})`);
  const token = typeof r.json?.access_token === 'string' ? decodeFakeToken(r.json.access_token) : undefined;
  t.equal(token?.client_id, IDS.A.clientID, `${what}: and gets its token from the daemon`);
}

for (const flavour of ['nft', 'legacy'] as const) {
  t.test(`the route_localnet guard keeps neighbours off the node's loopback (${flavour})`, { skip: unavailable ?? false }, async (t) => {
    const env = await E2E.start();
    t.teardown(() => env.destroy());
    const other = flavour === 'nft' ? 'legacy' : 'nft';
    // What kube-proxy's images look for to pick a flavour: kubelet's hint chain.
    if (flavour === 'legacy') await env.node.exec('iptables-legacy', ['-w', '5', '-t', 'mangle', '-N', 'KUBE-IPTABLES-HINT']);
    const nb = await loopbackNeighbour(env);
    const secret: NsProcess = env.node.spawn(nodeBinary, ['-e',
      `require('http').createServer((q, s) => s.end('node-loopback-only')).listen(${SECRET_PORT}, '127.0.0.1', () => console.log('listening'))`]);
    await secret.waitForOutput(/listening/, 30_000);

    await t.test('control: without the daemon, route_localnet=1 alone opens the loopback (the probe sees it)', async (t) => {
      t.equal(await routeLocalnet(env), '0');
      t.equal(await neighbourReaches(nb), false, 'route_localnet=0: dropped as a martian');
      await env.node.sysctl('net.ipv4.conf.all.route_localnet', '1');
      t.equal(await neighbourReaches(nb), true, 'route_localnet=1 and no guard: the neighbour reaches 127.0.0.1:7777');
      await env.node.sysctl('net.ipv4.conf.all.route_localnet', '0');
    });

    await t.test('while the daemon runs: guard first in INPUT, route_localnet on, neighbour dropped, pods served', async (t) => {
      await env.startDaemon(READY_TIMEOUT_MS);
      t.equal(env.backend(), flavour, `the daemon picked ${flavour}`);
      t.equal(await routeLocalnet(env), '1', 'the daemon turned route_localnet on');
      const input = await filterRules(env, flavour, 'INPUT');
      t.equal(input.lines[0], `-A INPUT -j ${GUARD_CHAIN}`, 'the guard is jumped to first');
      const guard = await filterRules(env, flavour, GUARD_CHAIN);
      t.match(guard.lines, [/-d 127\.0\.0\.0\/8 .*--ctstate RELATED,ESTABLISHED,DNAT -j DROP/, /turned route_localnet on/]);
      t.notMatch((await env.node.exec(`iptables-${other}-save`, [], { allowFail: true })).stdout, /aad-metadata|PODID-NMI/,
        `nothing written with iptables-${other}`);
      t.equal(await neighbourReaches(nb), false, 'the neighbour does not reach the node\'s 127.0.0.1');
      await tokenThroughDnat(t, env, 'with the guard');
    });

    await t.test('a deleted guard jump is put back', async (t) => {
      const run = env.daemons.at(-1)!;
      await env.node.exec(`iptables-${flavour}`, ['-w', '5', '-t', 'filter', '-D', 'INPUT', '-j', GUARD_CHAIN]);
      const repaired = await env.waitDaemonLog(run, (l) => l.msg === 'interception rules had drifted and were repaired', 'the repair', 30_000);
      t.same(repaired.drift, ['guard_jump_missing']);
      t.equal((await filterRules(env, flavour, 'INPUT')).lines[0], `-A INPUT -j ${GUARD_CHAIN}`);
      t.equal(await neighbourReaches(nb), false);
    });

    await t.test('after SIGTERM (and a restart that remembers it turned the sysctl on): guard kept', async (t) => {
      t.equal(await env.stopDaemon(), 0);
      t.equal(await routeLocalnet(env), '1', 'the sysctl stays on');
      t.equal((await filterRules(env, flavour, GUARD_CHAIN)).code, 0, 'the guard stays too (fail closed)');
      t.equal(await neighbourReaches(nb), false, 'the neighbour is still dropped');
      // A second run finds route_localnet already on: the record in the guard chain says it was podid-nmi.
      await env.startDaemon(READY_TIMEOUT_MS);
      t.equal(await env.stopDaemon(), 0);
      t.match((await filterRules(env, flavour, GUARD_CHAIN)).lines, [/DROP/, /turned route_localnet on/], 'the record survives the restart');
    });

    await t.test('cleanup-iptables: route_localnet back off, then the guard and the NAT rules go, and says so', async (t) => {
      const r = await env.node.exec(nodeBinary, [CLI, 'cleanup-iptables', '--log-format=json'], { allowFail: true, timeoutMs: 60_000 });
      t.equal(r.code, 0, r.stderr);
      const said = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
      t.match(said.at(-1), { msg: 'NAT rules removed: pods now reach the metadata service directly', routeLocalnet: 'turned_off', backend: flavour,
        removed: ['aad-metadata', GUARD_CHAIN] });
      t.equal(await routeLocalnet(env), '0', 'route_localnet is 0 again');
      t.not((await filterRules(env, flavour, GUARD_CHAIN)).code, 0, 'guard chain gone');
      t.notMatch((await filterRules(env, flavour, 'INPUT')).lines.join('\n'), /PODID-NMI/, 'and its jump');
      t.equal(await neighbourReaches(nb), false, 'the neighbour is dropped as a martian again');
    });
    await secret.kill();
  });
}

t.test('--intercept-host-network with no kubepods cgroup: pods still intercepted and served, /readyz says what is missing',
  { skip: unavailable ?? false }, async (t) => {
    const env = await E2E.start();
    t.teardown(() => env.destroy());
    const dir = mkdtempSync(join(tmpdir(), 'podid-cgroot-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    // A cgroup v2 hierarchy in appearance only (its cgroup.controllers), with no kubepods in it.
    writeFileSync(join(dir, 'cgroup.controllers'), 'cpu memory pids\n');
    const v1Only = mkdtempSync(join(tmpdir(), 'podid-cgv1-'));
    t.teardown(() => rmSync(v1Only, { recursive: true, force: true }));

    const cases: Array<[string, string, RegExp]> = [
      ['a wrong --cgroup-root (no kubepods under it)', dir, /^host_cgroups: neither kubepods\.slice nor kubepods exists under .*podid-cgroot-.*: wrong --cgroup-root/],
      ['a node with no cgroup v2 hierarchy', v1Only, /^host_cgroups: no cgroup v2 hierarchy at .*podid-cgv1-.* nor at .*unified .*hostNetwork interception cannot work/],
    ];
    for (const [what, root, missing] of cases) {
      await t.test(what, async (t) => {
        env.daemonFlags = (f) => [...f, '--intercept-host-network', `--cgroup-root=${root}`];
        const eventsBefore = (await nodeEvents(env)).filter((e) => e.reason === 'HostNetworkInterceptionFailed').length;
        const run = env.spawnDaemon();
        t.teardown(() => env.stopDaemon());
        await env.waitDaemonLog(run, (l) => l.msg === 'podid-nmi listening', 'listening', READY_TIMEOUT_MS);
        const readyz = await settledReadyz(env, run);
        t.equal(readyz.status, 503, 'not ready: what --intercept-host-network protects is not protected');
        const reason = /^not ready: hostNetwork interception not in place \(pod-network interception is, and pods are served\): (.*)$/.exec(readyz.body.trim());
        t.ok(reason, `the only reason is the hostNetwork chain: ${readyz.body.trim()}`);
        t.match(reason?.[1], missing, 'and says what is missing');
        t.same(await env.chainRules(), ['-N aad-metadata',
          '-A aad-metadata ! -s 127.0.0.1/32 -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:2579',
          '-A aad-metadata -j RETURN'], 'the pod chain is installed');
        t.not((await env.iptables('-S', 'aad-metadata-host')).code, 0, 'no hostNetwork chain');
        await tokenThroughDnat(t, env, what);
        const before = (await env.imdsRequests()).filter((r) => String(r.headers['user-agent'] ?? '').startsWith('curl/')).length;
        const other = await env.curl('a', `${TOKEN}&client_id=${IDS.B.clientID}`);
        t.equal(other.status, 403, 'and refused another pod\'s identity: intercepted, not passed through');
        t.equal((await env.imdsRequests()).filter((r) => String(r.headers['user-agent'] ?? '').startsWith('curl/')).length, before, 'IMDS saw no pod request');
        const metrics = await env.node.exec('curl', ['-s', '--max-time', '2', `http://127.0.0.1:${METRICS_PORT}/metrics`], { allowFail: true, timeoutMs: 5_000 });
        t.match(metrics.stdout, /^podid_nmi_iptables_host_rules_installed 0$/m, 'podid_nmi_iptables_host_rules_installed 0');
        t.match(metrics.stdout, /^podid_nmi_iptables_rules_installed 1$/m, 'podid_nmi_iptables_rules_installed 1');
        const logged = env.runLog(run).find((l) => String(l.msg).startsWith('hostNetwork interception rules could not be kept'));
        t.equal(logged?.level, 50, 'logged as an error');
        const onNode = (await nodeEvents(env)).filter((e) => e.reason === 'HostNetworkInterceptionFailed');
        t.equal(onNode.length, eventsBefore + 1, 'one Warning Event on the node for this run (written on the change, not on every check)');
        t.match(onNode.at(-1), { type: 'Warning', involvedObject: { kind: 'Node', name: NODE_NAME }, message: /pod-network interception is unaffected: host_cgroups: / });
        t.equal(await env.stopDaemon(), 0);
      });
    }
  });

/** The Events the daemon wrote about the node, from the fake API server. */
async function nodeEvents(env: E2E): Promise<Array<Record<string, any>>> {
  const all = (await env.api.request({ op: 'events' })).value as Array<Record<string, any>>;
  return all.filter((e) => e.involvedObject?.kind === 'Node');
}

/** /readyz once the cluster state has synced (bounded). */
async function settledReadyz(env: E2E, run: DaemonRun): Promise<{ status: number; body: string }> {
  const deadline = performance.now() + READY_TIMEOUT_MS;
  let r = await env.readyz(run);
  while ((r.status === 0 || r.body.includes('not checked yet') || r.body.includes('cluster state not synced')) && performance.now() < deadline) {
    await sleep(100);
    r = await env.readyz(run);
  }
  return r;
}
