// Pod IP spoofing on a bridge network, end to end. Two pods share the node's bridge, as with
// kubenet, flannel or the bridge CNI; each is a network namespace AND a kubelet pod cgroup
// (processes enter both: `nsenter --net` keeps /sys, so the cgroup hierarchy stays visible).
// The attacker puts the victim's address on its own interface, the node's neighbour entry for
// that address is poisoned to the attacker's MAC (what a forged ARP reply does; set here with
// `ip neigh replace` in the node namespace), and it asks for the victim's identity. With
// --attest-pod-sockets the daemon looks for the connection's socket in the victim's network
// namespace, does not find it, and refuses. The IMDS emulator's record is the ground truth.
// Everything (namespaces, bridge, cgroups, processes) is ours and removed afterwards.
import t from 'tap';
import type { Test } from 'tap';
import { fileURLToPath } from 'node:url';
import { decodeFakeToken } from '../src/emulator/imds-emulator.ts';
import { REFUSALS } from '../src/decision/reasons.ts';
import { netnsUnavailable, NsProcess, nodeBinary } from './netns/netns.ts';
import { IDS, NODE_NAME, RESOURCE } from './e2e/cluster.ts';
import { E2E } from './e2e/environment.ts';
import type { ImdsRequest } from './e2e/environment.ts';
import { pod } from './fake-apiserver/fixtures.ts';
import { cgroupsUnavailable, parseCurlOut, TestCgroups } from './helpers/cgroups.ts';

const TOKEN = `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${RESOURCE}`;
const CLEAN_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const MI_CLIENT = fileURLToPath(new URL('./e2e/clients/managed-identity-credential.ts', import.meta.url));
const BRIDGE = { name: 'cbr0', gatewayCidr: '10.251.0.1/24' };
const IP = { victim: '10.251.0.20', attacker: '10.251.0.21', idle: '10.251.0.22' };
const UID = {
  daemon: 'dddddddd-2222-4000-8000-00000000000d',
  victim: 'aaaaaaaa-2222-4000-8000-00000000000a',
  attacker: 'bbbbbbbb-2222-4000-8000-00000000000b',
  idle: 'eeeeeeee-2222-4000-8000-00000000000e',
};

const fromBridge = (r: ImdsRequest): boolean => r.remoteAddress.replace(/^::ffff:/, '').startsWith('10.251.');

const why = (await netnsUnavailable()) ?? cgroupsUnavailable();
t.setTimeout(900_000);

t.test('pod IP spoofing on a bridge: the spoofer gets nothing, the pods keep their own tokens', { skip: why ?? false }, async (t) => {
  const cg = new TestCgroups(t);
  const env = await E2E.start();
  t.teardown(() => env.destroy());
  const cgs = {
    daemon: cg.podContainer('systemd', 'burstable', UID.daemon, 'nmi'),
    victim: cg.podContainer('systemd', 'besteffort', UID.victim),
    attacker: cg.podContainer('cgroupfs', 'burstable', UID.attacker),
    idle: cg.podContainer('cgroupfs', 'guaranteed', UID.idle),
  };
  const victim = await env.node.addBridgePod('victim', IP.victim, BRIDGE);
  const attacker = await env.node.addBridgePod('attacker', IP.attacker, BRIDGE);
  await env.node.addBridgePod('idle', IP.idle, BRIDGE);
  const create = (name: string, namespace: string, uid: string, ip: string, labels: Record<string, string>) =>
    env.api.request({ op: 'create', resource: 'pods', object: pod({ name, namespace, uid, labels, node: NODE_NAME, ip, phase: 'Running' }) });
  await create('victim', 'team-a', UID.victim, IP.victim, { aadpodidbinding: 'a' });
  await create('attacker', 'team-b', UID.attacker, IP.attacker, { aadpodidbinding: 'b' });
  await create('idle', 'team-a', UID.idle, IP.idle, { aadpodidbinding: 'a' });
  const enter = (ns: string) => ['nsenter', `--net=/var/run/netns/${ns}`];
  // Each pod's sandbox: a process that lives as long as the pod, in its cgroup and namespace.
  // The idle pod has none, as a pod whose processes are not (yet) there.
  cg.spawn(cgs.victim, 'sleep', ['3600'], { prefix: enter(victim.ns) });
  cg.spawn(cgs.attacker, 'sleep', ['3600'], { prefix: enter(attacker.ns) });

  env.launchDaemon = (cmd, args, e) => new NsProcess(cg.spawn(cgs.daemon, cmd, args, { prefix: enter(env.node.ns), env: e }));
  const attest = (f: string[]) => [...f, '--attest-pod-sockets', `--cgroup-root=${cg.root}`, `--kubepods-cgroup-parent=${cg.parent}`, '--pod-wait-ms=500'];
  env.daemonFlags = attest;

  /** curl from a process in `cgroup` and network namespace `ns`, optionally from a given source address. */
  const curl = async (cgroup: string, ns: string, path: string, from?: string) => {
    const args = ['-s', '--noproxy', '*', '--max-time', '8', '-H', 'Metadata: true', '-w', '\n@@%{http_code}\n@@reason=%header{x-podid-nmi-reason}'];
    if (from !== undefined) args.push('--interface', from);
    args.push(`http://169.254.169.254${path}`);
    const r = await cg.run(cgroup, 'curl', args, { prefix: [...enter(ns), 'env', '-i', CLEAN_PATH] });
    const at = r.stdout.lastIndexOf('\n@@reason=');
    const reason = at === -1 ? '' : r.stdout.slice(at + 10).trim();
    return { exit: r.code, reason, ...parseCurlOut(at === -1 ? r.stdout : r.stdout.slice(0, at)) };
  };
  type Answer = Awaited<ReturnType<typeof curl>>;
  const tokenOf = (a: Answer) => (typeof a.json?.access_token === 'string' ? decodeFakeToken(a.json.access_token)?.client_id : undefined);
  const granted = (t: Test, a: Answer, clientId: string, what: string) => {
    t.equal(a.status, 200, `${what}: 200 (exit ${a.exit} ${a.body.slice(0, 160)})`);
    t.equal(tokenOf(a), clientId, `${what}: its own identity`);
  };
  const notAttested = (t: Test, a: Answer, what: string) => {
    const spec = REFUSALS.caller_not_attested;
    t.equal(a.status, spec.status, `${what}: 403 (exit ${a.exit} ${a.body.slice(0, 160)})`);
    t.same(a.json, { error: spec.error, error_description: spec.description, reason: 'caller_not_attested' }, `${what}: IMDS-shaped body`);
    t.equal(a.reason, 'caller_not_attested', `${what}: reason header (the daemon answered)`);
  };
  const poison = (mac: string) => env.node.exec('ip', ['neigh', 'replace', IP.victim, 'lladdr', mac, 'dev', BRIDGE.name, 'nud', 'permanent']);
  const spoof = async () => {
    await attacker.exec('ip', ['addr', 'add', `${IP.victim}/32`, 'dev', 'eth0']);
    await poison(attacker.mac);
  };
  const unspoof = async () => {
    await attacker.exec('ip', ['addr', 'del', `${IP.victim}/32`, 'dev', 'eth0'], { allowFail: true });
    await poison(victim.mac);
  };

  await t.test('the daemon starts with attestation on and says so', async (t) => {
    const run = await env.startDaemon(240_000);
    const on = env.runLog(run).find((l) => l.msg === 'socket attestation on: pod-network callers must hold their socket');
    t.ok(on, 'logged at start');
    t.equal((await env.readyz(run)).status, 200, 'ready: the node\'s /proc and cgroups are visible');
  });

  await t.test('each pod on the bridge gets its own identity', async (t) => {
    granted(t, await curl(cgs.victim, victim.ns, TOKEN), IDS.A.clientID, 'victim');
    granted(t, await curl(cgs.attacker, attacker.ns, TOKEN), IDS.B.clientID, 'attacker, from its own address');
    const line = await env.waitDaemonLog(env.daemons.at(-1)!, (l) => l.pod === 'team-a/victim' && l.decision === 'granted', 'the grant to the victim');
    t.equal(line.via, 'socket_attestation', 'the log says the caller was attested');
  });

  await t.test('the spoofer, from the victim\'s address, gets caller_not_attested and nothing reaches IMDS', async (t) => {
    await spoof();
    t.teardown(unspoof);
    const before = (await env.imdsRequests()).length;
    for (const ask of [TOKEN, `${TOKEN}&client_id=${IDS.A.clientID}`, '/metadata/instance?api-version=2021-02-01']) {
      const a = await curl(cgs.attacker, attacker.ns, ask, IP.victim);
      notAttested(t, a, `spoofed ${ask.slice(0, 40)}`);
      t.equal(a.json?.access_token, undefined, 'no token');
    }
    // A keep-alive connection is refused once and closed: nothing more rides on it.
    const kept = await cg.run(cgs.attacker, 'curl', ['-s', '--noproxy', '*', '--max-time', '8', '-H', 'Metadata: true', '--interface', IP.victim,
      '-w', ' @@%{http_code}%{num_connects}\n', `http://169.254.169.254${TOKEN}`, `http://169.254.169.254${TOKEN}`], { prefix: [...enter(attacker.ns), 'env', '-i', CLEAN_PATH] });
    t.same(kept.stdout.match(/@@\d+/g), ['@@4031', '@@4031'], `both refused, each on a connection of its own (${kept.code} ${kept.stdout.slice(-300)} ${kept.stderr.slice(-300)})`);
    // An address whose pod has no process to vouch for it: looked for within --pod-wait-ms, then refused.
    await attacker.exec('ip', ['addr', 'add', `${IP.idle}/32`, 'dev', 'eth0']);
    await env.node.exec('ip', ['neigh', 'replace', IP.idle, 'lladdr', attacker.mac, 'dev', BRIDGE.name, 'nud', 'permanent']);
    notAttested(t, await curl(cgs.attacker, attacker.ns, TOKEN, IP.idle), 'spoofing a pod with no process');
    await attacker.exec('ip', ['addr', 'del', `${IP.idle}/32`, 'dev', 'eth0']);
    const after = await env.imdsRequests();
    t.same(after.slice(before).map((r) => r.url), [], 'IMDS saw nothing for any of it');
    t.equal(after.filter(fromBridge).length, 0, 'and never a request from a bridge address');
    granted(t, await curl(cgs.attacker, attacker.ns, TOKEN, IP.attacker), IDS.B.clientID, 'the attacker still gets its own token meanwhile');
    await env.waitDaemonLog(env.daemons.at(-1)!, (l) => l.reason === 'caller_not_attested' && l.ip === IP.idle, 'the last refusal');
    const refusals = env.daemonLog().filter((l) => l.reason === 'caller_not_attested');
    t.ok(refusals.length >= 2 && refusals.every((l) => l.ip === IP.victim || l.ip === IP.idle), 'logged with the address claimed');
  });

  await t.test('once the neighbour entry is back, the victim gets its own token, and a real SDK client is unaffected', async (t) => {
    await unspoof();
    granted(t, await curl(cgs.victim, victim.ns, TOKEN), IDS.A.clientID, 'victim');
    const r = await cg.run(cgs.victim, nodeBinary, [MI_CLIENT, '--client-id', IDS.A.clientID, '--timeout-ms', '15000'],
      { prefix: [...enter(victim.ns), 'env', '-i', CLEAN_PATH, `HOME=${env.home}`], timeoutMs: 30_000 });
    const line = JSON.parse(r.stdout.split('\n').find((l) => l.startsWith('{')) ?? '{}') as { ok?: boolean; clientId?: string; error?: string };
    t.ok(line.ok, `ManagedIdentityCredential({clientId: A}) in the victim pod (${line.error ?? r.stderr.slice(-300)})`);
    t.equal(line.clientId, IDS.A.clientID);
    const metrics = await env.node.exec('curl', ['-s', '--max-time', '3', 'http://127.0.0.1:19090/metrics'], { allowFail: true });
    t.match(metrics.stdout, /reason="caller_not_attested"/, 'refusals counted by reason');
  });

  await t.test('control: without --attest-pod-sockets the same spoof gets the victim\'s token (the hole this closes)', async (t) => {
    t.equal(await env.stopDaemon(), 0);
    env.daemonFlags = (f) => [...f, `--cgroup-root=${cg.root}`, `--kubepods-cgroup-parent=${cg.parent}`];
    await env.startDaemon(240_000);
    await spoof();
    const stolen = await curl(cgs.attacker, attacker.ns, TOKEN, IP.victim);
    await unspoof();
    granted(t, stolen, IDS.A.clientID, 'spoofed, without attestation');
  });
});
