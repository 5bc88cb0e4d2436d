// End to end for hostNetwork pods: processes placed in kubelet pod cgroups (systemd and
// cgroupfs layouts) in the node's network namespace call 169.254.169.254 as hostNetwork pods
// do. The daemon runs in its own pod cgroup there, with --intercept-host-network: its OUTPUT
// rules send pod cgroups' packets to it, it attributes them by socket cgroup, and its own
// upstream requests are not intercepted. `nsenter --net` keeps /sys (ip netns exec would hide
// the cgroup hierarchy). Everything (namespaces, cgroups, processes) is ours and removed after.
// Two node shapes: iptables-nft with both kubelet layouts side by side and an explicit
// --cgroup-root; iptables-legacy (kubelet's hint chain in legacy) with the cgroupfs layout only
// and the default --cgroup-root, where the daemon finds the v2 hierarchy itself (at
// /sys/fs/cgroup/unified on this hybrid machine).
import t from 'tap';
import type { Test } from 'tap';
import { fileURLToPath } from 'node:url';
import { decodeFakeToken } from '../src/emulator/imds-emulator.ts';
import { netnsUnavailable, NsProcess, nodeBinary } from './netns/netns.ts';
import { IDS, NODE_GATEWAY, NODE_NAME, RESOURCE } from './e2e/cluster.ts';
import { E2E } from './e2e/environment.ts';
import type { ImdsRequest } from './e2e/environment.ts';
import { pod } from './fake-apiserver/fixtures.ts';
import { cgroupsUnavailable, parseCurlOut, TestCgroups } from './helpers/cgroups.ts';

const TOKEN = `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${RESOURCE}`;
const CLEAN_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const TAINT = 'podid-nmi.io/agent-not-ready';
const OTHER_TAINT = { key: 'example.com/keep-me', effect: 'NoSchedule' };
const MI_CLIENT = fileURLToPath(new URL('./e2e/clients/managed-identity-credential.ts', import.meta.url));

const UID = {
  daemon: 'dddddddd-0000-4000-8000-00000000000d',
  a: 'aaaaaaaa-1111-4000-8000-00000000000a',
  b: 'bbbbbbbb-1111-4000-8000-00000000000b',
  u: 'eeeeeeee-1111-4000-8000-00000000000e',
  csi: 'cccccccc-1111-4000-8000-00000000000c',
};

/** A request the emulator got straight from curl: the daemon never forwards the pod's headers. */
const fromCurl = (r: ImdsRequest): boolean => String(r.headers['user-agent'] ?? '').startsWith('curl/');

const why = (await netnsUnavailable()) ?? cgroupsUnavailable();
// Bounds sized for a loaded shared machine, where a daemon's start alone has taken over 90 s.
t.setTimeout(900_000);

interface Shape {
  flavour: 'nft' | 'legacy';
  /** Kubelet's cgroup driver for each pod; 'mixed' puts both layouts on one node. */
  layout: 'mixed' | 'cgroupfs';
  /** Pass --cgroup-root, or leave the default for the daemon to find the v2 hierarchy. */
  explicitRoot: boolean;
}
const SHAPES: Shape[] = [
  { flavour: 'nft', layout: 'mixed', explicitRoot: true },
  { flavour: 'legacy', layout: 'cgroupfs', explicitRoot: false },
];

for (const shape of SHAPES) t.test(`hostNetwork pods in pod cgroups: intercepted, attributed by socket cgroup (${shape.flavour}, ${shape.layout} layout)`, { skip: why ?? false }, async (t) => {
  const cg = new TestCgroups(t);
  const env = await E2E.start();
  t.teardown(() => env.destroy());
  const nsenter = ['nsenter', `--net=/var/run/netns/${env.node.ns}`];
  const mixed = shape.layout === 'mixed';
  const cgs = {
    daemon: cg.podContainer(mixed ? 'systemd' : 'cgroupfs', 'burstable', UID.daemon, 'nmi'),
    a: cg.podContainer(mixed ? 'systemd' : 'cgroupfs', 'besteffort', UID.a),
    b: cg.podContainer('cgroupfs', 'burstable', UID.b),
    u: cg.podContainer('cgroupfs', 'guaranteed', UID.u),
    csi: cg.podContainer(mixed ? 'systemd' : 'cgroupfs', 'guaranteed', UID.csi),
    node: cg.plain('system.slice'),
  };
  const other = shape.flavour === 'nft' ? 'legacy' : 'nft';
  // What kube-proxy's images (and the daemon) look for to pick a flavour: kubelet's hint chain.
  if (shape.flavour === 'legacy') await env.node.exec('iptables-legacy', ['-w', '5', '-t', 'mangle', '-N', 'KUBE-IPTABLES-HINT']);
  const hostPod = (name: string, namespace: string, uid: string, labels: Record<string, string>) => env.api.request({
    op: 'create', resource: 'pods', object: pod({ name, namespace, uid, labels, node: NODE_NAME, ip: NODE_GATEWAY, hostNetwork: true, phase: 'Running' }),
  });
  await hostPod('podid-nmi-x1', 'kube-system', UID.daemon, { app: 'podid-nmi' });
  await hostPod('host-a', 'team-a', UID.a, { aadpodidbinding: 'a' });
  await hostPod('host-b', 'team-b', UID.b, { aadpodidbinding: 'b' });
  await hostPod('host-u', 'team-a', UID.u, {});
  await hostPod('csi-provider', 'kube-system', UID.csi, { app: 'csi-secrets-store-provider-azure' });
  await env.api.request({ op: 'create', resource: 'nodes', object: { metadata: { name: NODE_NAME }, spec: { taints: [OTHER_TAINT, { key: TAINT, effect: 'NoSchedule' }] } } });

  env.launchDaemon = (cmd, args, e) => new NsProcess(cg.spawn(cgs.daemon, cmd, args, { prefix: nsenter, env: e }));
  // With --attest-pod-sockets too, as the DaemonSet runs: hostNetwork pods stay with their socket cgroup.
  env.daemonFlags = (f) => [...f, '--intercept-host-network', '--attest-pod-sockets', ...(shape.explicitRoot ? [`--cgroup-root=${cg.root}`] : []),
    `--kubepods-cgroup-parent=${cg.parent}`, `--remove-node-taint=${TAINT}`];

  /** curl to 169.254.169.254 from a process in `cgroup`, in the node's network namespace. */
  const curl = async (cgroup: string, path: string, headers: Record<string, string> = { Metadata: 'true' }, host = '169.254.169.254') => {
    const args = ['-s', '--noproxy', '*', '--max-time', '5', '-w', '\n@@%{http_code}\n@@reason=%header{x-podid-nmi-reason}'];
    for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
    args.push(`http://${host}${path}`);
    const r = await cg.run(cgroup, 'curl', args, { prefix: [...nsenter, 'env', '-i', CLEAN_PATH] });
    const at = r.stdout.lastIndexOf('\n@@reason=');
    const reason = at === -1 ? '' : r.stdout.slice(at + 10).trim();
    return { exit: r.code, reason, ...parseCurlOut(at === -1 ? r.stdout : r.stdout.slice(0, at)) };
  };
  const tokenOf = (a: { json: Record<string, unknown> | undefined }) =>
    typeof a.json?.access_token === 'string' ? decodeFakeToken(a.json.access_token)?.client_id : undefined;
  const refused = (t: Test, a: Awaited<ReturnType<typeof curl>>, status: number, reason: string) => {
    t.equal(a.status, status, `${status} ${a.body.slice(0, 160)}`);
    t.equal(a.json?.reason, reason);
    t.equal(a.reason, reason, 'the daemon answered (reason header)');
    t.equal(a.json?.access_token, undefined, 'no token');
  };

  await t.test('the daemon starts in its own pod cgroup, installs both chains, then lifts the startup taint', async (t) => {
    const run = await env.startDaemon(240_000);
    t.equal(cg.cgroupOf(run.proc.child.pid!), `${cgs.daemon}`, 'the daemon runs in its pod cgroup');
    t.equal(env.backend(), shape.flavour, `the daemon picked ${shape.flavour}`);
    const host = (await env.iptables('-S', 'aad-metadata-host')).stdout.split('\n').filter((l) => l.startsWith('-A'));
    const daemonPod = cgs.daemon.slice(0, cgs.daemon.lastIndexOf('/'));
    const dnatFor = (root: string) => `-A aad-metadata-host -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m cgroup --path "${cg.parent}/${root}" -j DNAT --to-destination 127.0.0.1:2579`;
    t.same(host, [
      `-A aad-metadata-host -m cgroup --path "${daemonPod}" -j RETURN`,
      ...(mixed ? [dnatFor('kubepods.slice'), dnatFor('kubepods')] : [dnatFor('kubepods')]),
      '-A aad-metadata-host -j RETURN',
    ], 'its own pod first, then each kubepods root that exists');
    t.notMatch((await env.node.exec(`iptables-${other}-save`, [], { allowFail: true })).stdout, /aad-metadata|PODID-NMI/, `nothing written with iptables-${other}`);
    t.notOk(env.daemonLog().some((l) => l.msg === 'interception rules had drifted and were repaired'), 'no drift seen after the install (rules compared by meaning)');
    const output = (await env.iptables('-S', 'OUTPUT')).stdout.split('\n').filter((l) => l.startsWith('-A'));
    t.equal(output[0], '-A OUTPUT -j aad-metadata-host', 'jump at position 1 of OUTPUT');
    const removed = await env.waitDaemonLog(run, (l) => l.msg === 'startup taint removed: the node is intercepted and takes pods', 'taint removal', 15_000);
    const installed = env.daemonLog().find((l) => l.msg === 'interception rules installed');
    t.ok(installed !== undefined && Number(installed.time) <= Number(removed.time), 'rules were installed before the taint went');
    const node = (await env.api.request({ op: 'get', resource: 'nodes', namespace: 'default', name: NODE_NAME })).object as { spec: { taints: unknown[] } };
    t.same(node.spec.taints, [OTHER_TAINT], 'only the startup taint went');
  });

  await t.test('the hostNetwork chain is repaired on drift', async (t) => {
    const run = env.daemons.at(-1)!;
    await env.iptables('-D', 'OUTPUT', '-j', 'aad-metadata-host');
    await env.iptables('-F', 'aad-metadata-host');
    const repaired = await env.waitDaemonLog(run, (l) => l.msg === 'interception rules had drifted and were repaired', 'the repair', 15_000);
    t.same(repaired.drift, ['host_chain_changed', 'host_jump_missing']);
    const output = (await env.iptables('-S', 'OUTPUT')).stdout.split('\n').filter((l) => l.startsWith('-A'));
    t.equal(output[0], '-A OUTPUT -j aad-metadata-host', 'jump back at position 1');
    t.match((await env.iptables('-S', 'aad-metadata-host')).stdout, /DNAT/, 'rules back');
  });

  await t.test('each hostNetwork pod gets its own bound identity and nothing else', async (t) => {
    const a = await curl(cgs.a, TOKEN);
    t.equal(a.status, 200, a.body.slice(0, 200));
    t.equal(tokenOf(a), IDS.A.clientID, `${mixed ? 'systemd' : 'cgroupfs'}-layout pod A: token A`);
    const grant = await env.waitDaemonLog(env.daemons.at(-1)!, (l) => l.pod === 'team-a/host-a' && l.decision === 'granted', 'the grant to host-a');
    t.equal(grant.via, 'socket_cgroup', 'found by socket cgroup, attestation on or not');
    const b = await curl(cgs.b, TOKEN);
    t.equal(tokenOf(b), IDS.B.clientID, 'cgroupfs-layout pod B: token B');
    refused(t, await curl(cgs.a, `${TOKEN}&client_id=${IDS.B.clientID}`), 403, 'identity_not_bound');
    refused(t, await curl(cgs.b, `${TOKEN}&client_id=${IDS.C.clientID}`), 403, 'identity_not_bound');
    refused(t, await curl(cgs.u, TOKEN), 400, 'pod_unlabeled');
    const direct = (await env.imdsRequests()).filter(fromCurl);
    t.same(direct.map((r) => r.url), [], 'no pod request reached IMDS directly');
  });

  await t.test('a real SDK client in a hostNetwork pod gets its token', async (t) => {
    const r = await cg.run(cgs.a, nodeBinary, [MI_CLIENT, '--client-id', IDS.A.clientID, '--timeout-ms', '15000'],
      { prefix: [...nsenter, 'env', '-i', CLEAN_PATH, `HOME=${env.home}`], timeoutMs: 30_000 });
    const line = JSON.parse(r.stdout.split('\n').find((l) => l.startsWith('{')) ?? '{}') as { ok?: boolean; clientId?: string; error?: string };
    t.ok(line.ok, `ManagedIdentityCredential({clientId: A}) (${line.error ?? ''})`);
    t.equal(line.clientId, IDS.A.clientID);
  });

  await t.test('a node process outside kubepods reaches IMDS untouched', async (t) => {
    const before = (await env.imdsRequests()).length;
    const r = await curl(cgs.node, `${TOKEN}&client_id=${IDS.C.clientID}`);
    t.equal(r.status, 200);
    t.equal(tokenOf(r), IDS.C.clientID, 'IMDS itself answered, with any identity of the node, as before');
    t.equal(r.reason, '', 'the daemon was not in the way');
    const seen = (await env.imdsRequests()).slice(before);
    t.equal(seen.length, 1);
    t.ok(seen.every(fromCurl), 'the request came straight from curl');
  });

  await t.test('/host/token: the CSI provider gets the named pod\'s token in NMI\'s shape; others 403', async (t) => {
    const listener = '127.0.0.1:2579';
    const ok = await curl(cgs.csi, `/host/token/?resource=${RESOURCE}`, { podns: 'team-a', podname: 'pod-a' }, listener);
    t.equal(ok.status, 200, ok.body.slice(0, 200));
    t.equal(ok.json?.clientid, IDS.A.clientID);
    t.equal(decodeFakeToken(String((ok.json?.token as Record<string, unknown> | undefined)?.access_token))?.client_id, IDS.A.clientID);
    refused(t, await curl(cgs.a, `/host/token/?resource=${RESOURCE}`, { podns: 'team-b', podname: 'pod-b' }, listener), 403, 'host_token_forbidden');
    refused(t, await curl(cgs.node, `/host/token/?resource=${RESOURCE}`, { podns: 'team-b', podname: 'pod-b' }, listener), 403, 'host_token_forbidden');
  });

  await t.test('after SIGTERM the rules stay: no hostNetwork pod reaches IMDS', async (t) => {
    t.equal(await env.stopDaemon(), 0);
    const before = (await env.imdsRequests()).length;
    const a = await curl(cgs.a, TOKEN);
    t.equal(a.exit, 7, 'connection refused: the DNAT still points at the stopped daemon');
    t.equal(a.status, 0);
    const out = (await env.iptables('-S', 'aad-metadata-host')).stdout;
    t.match(out, /DNAT/, 'the hostNetwork chain is still there');
    t.equal((await env.imdsRequests()).length, before, 'IMDS saw nothing');
    const node = await curl(cgs.node, `${TOKEN}&client_id=${IDS.C.clientID}`);
    t.equal(node.status, 200, 'node processes keep their direct access meanwhile');
  });

  await t.test('nmi cleanup-iptables removes both chains', async (t) => {
    const CLI = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
    const r = await env.node.exec(nodeBinary, [CLI, 'cleanup-iptables'], { allowFail: true, timeoutMs: 30_000 });
    t.equal(r.code, 0, r.stderr);
    t.not((await env.iptables('-S', 'aad-metadata-host')).code, 0, 'host chain gone');
    t.not((await env.iptables('-S', 'aad-metadata')).code, 0, 'pod chain gone');
    const guard = await env.node.exec(`iptables-${shape.flavour}`, ['-w', '5', '-t', 'filter', '-S', 'PODID-NMI-LOCALNET'], { allowFail: true });
    t.not(guard.code, 0, 'route_localnet guard gone');
    t.equal((await env.node.exec('sysctl', ['-n', 'net.ipv4.conf.all.route_localnet'])).stdout.trim(), '0', 'route_localnet back off');
    const output = (await env.iptables('-S', 'OUTPUT')).stdout;
    t.notMatch(output, /aad-metadata-host/);
    // Uninstalled, a hostNetwork pod is back to NMI's hole: any identity of the node, here B.
    t.equal(tokenOf(await curl(cgs.a, `${TOKEN}&client_id=${IDS.B.clientID}`)), IDS.B.clientID, 'and hostNetwork pods reach IMDS directly again, as uninstalled');
  });
});
