// A rolling update on one node, end to end: the DaemonSet's own command line (read from
// daemonset/daemonset.yaml) runs twice in one node namespace, each daemon in a pod cgroup of its
// own, as maxSurge 1 places them. The second starts while the first serves, joins its ports
// (SO_REUSEPORT) once synced; the first gets SIGTERM. Pods asking for tokens throughout, on
// fresh and kept-alive connections, must see no failure at all.
import t from 'tap';
import type { Test } from 'tap';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { netnsUnavailable, nodeBinary, NsProcess } from './netns/netns.ts';
import type { PodNs } from './netns/netns.ts';
import { NODE_GATEWAY, NODE_NAME, PODS, RESOURCE } from './e2e/cluster.ts';
import { E2E, sleep, type DaemonRun } from './e2e/environment.ts';
import { pod } from './fake-apiserver/fixtures.ts';
import { cgroupsUnavailable, TestCgroups } from './helpers/cgroups.ts';
import { eventually } from './helpers/eventually.ts';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const TRAFFIC = here('./e2e/clients/token-traffic.ts');
const CLEAN_ENV = { NODE_OPTIONS: '', KUBECONFIG: '', NODE_NAME: '' };

/** The nmi container's args and env of daemonset/daemonset.yaml, with the downward API's values filled in. */
function daemonSetCommandLine(): string[] {
  const docs = parseAllDocuments(readFileSync(here('../daemonset/daemonset.yaml'), 'utf8')).map((d) => d.toJS() as Record<string, any>);
  const ds = docs.find((d) => d.kind === 'DaemonSet')!;
  const container = (ds.spec.template.spec.containers as Array<{ name: string; args: string[] }>).find((c) => c.name === 'nmi')!;
  const values: Record<string, string> = { NODE_NAME, HOST_IP: NODE_GATEWAY };
  return container.args.map((a) => a.replace(/\$\((\w+)\)/g, (_, k: string) => values[k] ?? `$(${k})`));
}

const why = (await netnsUnavailable()) ?? cgroupsUnavailable();
t.setTimeout(900_000);

t.test('rolling update on one node: two daemons, one hand-over, no failed token request', { skip: why ?? false }, async (t) => {
  const cg = new TestCgroups(t);
  const env = await E2E.start();
  t.teardown(() => env.destroy());
  const nsenter = ['nsenter', `--net=/var/run/netns/${env.node.ns}`];
  const args = daemonSetCommandLine();
  t.ok(args.includes('--manage-iptables=true') && args.includes('--intercept-host-network=true'), 'the DaemonSet\'s own flags');
  // Only what this environment needs on top: where the API server and the cgroup tree are.
  const launch = { argv: [...args, '--kubeconfig', env.kubeconfig, `--cgroup-root=${cg.root}`, `--kubepods-cgroup-parent=${cg.parent}`], env: CLEAN_ENV };
  await env.api.request({ op: 'create', resource: 'nodes', object: { metadata: { name: NODE_NAME }, spec: { taints: [] } } });

  // Ten more pods bound to identity A: together they hold 220 connections (32 at most each).
  // The DaemonSet attests pod sockets: each pod's processes run in its kubelet pod cgroup (named
  // for its UID) and its own network namespace, where the daemon finds the socket.
  const podCgroups = new Map<string, string>([[env.pods.a.name, cg.podContainer('systemd', 'besteffort', PODS.a.uid)]]);
  const holders: PodNs[] = [];
  for (let i = 0; i < 10; i++) {
    const ip = `10.250.0.${40 + i}`;
    const uid = `aaaaaaaa-4444-4000-8000-0000000000${String(i).padStart(2, '0')}`;
    const holder = await env.node.addPod(`hold-${i}`, ip);
    holders.push(holder);
    podCgroups.set(holder.name, cg.podContainer('cgroupfs', 'besteffort', uid));
    await env.api.request({ op: 'create', resource: 'pods', object: pod({ name: `hold-${i}`, namespace: 'team-a', uid, node: NODE_NAME, ip, phase: 'Running', labels: { aadpodidbinding: 'a' } }) });
  }

  let generation = 0;
  const daemonCgroups: string[] = [];
  env.launchDaemon = (cmd, argv, e) => {
    const uid = `dddddddd-0000-4000-8000-00000000000${generation++}`;
    const path = cg.podContainer('systemd', 'burstable', uid, 'nmi');
    daemonCgroups.push(path.slice(0, path.lastIndexOf('/')));
    return new NsProcess(cg.spawn(path, cmd, argv, { prefix: nsenter, env: e }));
  };
  const started = (run: DaemonRun): Promise<unknown> => env.waitDaemonLog(run, (l) => l.msg === 'podid-nmi listening', 'listening', 240_000);
  const decisionsOf = (run: DaemonRun, pods: string[]): number => env.runLog(run).filter((l) => typeof l.decision === 'string' && pods.includes(String(l.pod))).length;
  const hostChain = async (): Promise<string[]> => (await env.iptables('-S', 'aad-metadata-host')).stdout.split('\n').filter((l) => l.startsWith('-A'));
  const migrate = async (): Promise<string> => (await env.node.exec('sysctl', ['-n', 'net.ipv4.tcp_migrate_req'])).stdout.trim();

  /** Runs the token traffic script in `p`; its `done` line, parsed. */
  const traffic = (p: PodNs, argv: string[]): { proc: NsProcess; result: () => Promise<Record<string, any>> } => {
    const proc = new NsProcess(cg.spawn(podCgroups.get(p.name)!, 'env', ['-i', 'PATH=/usr/local/bin:/usr/bin:/bin', nodeBinary, TRAFFIC, ...argv],
      { prefix: ['nsenter', `--net=/var/run/netns/${p.ns}`], env: CLEAN_ENV }));
    return {
      proc,
      result: async () => {
        const m = await proc.waitForOutput(/^\{"event":"done".*$/m, 180_000);
        return JSON.parse(m[0]) as Record<string, any>;
      },
    };
  };

  /** One hand-over: a starts, b starts beside it, a gets SIGTERM; `during` runs once b serves. */
  const handOver = async (t: Test, during: (a: DaemonRun, b: DaemonRun) => Promise<void>): Promise<{ a: DaemonRun; b: DaemonRun; aCode: number | null }> => {
    const a = env.daemons.at(-1)!;
    const b = env.spawnDaemon(launch);
    await started(b);
    t.ok(a.proc.running, 'the first daemon still runs');
    t.ok(env.runLog(b).some((l) => l.msg === 'another daemon serves the port (a rolling update): joining it once the cluster state has synced'),
      'the second found the port served and waited for its state before joining it');
    await during(a, b);
    a.proc.child.kill('SIGTERM');
    const aCode = await Promise.race([a.proc.exited, sleep(30_000).then(() => 'timeout' as const)]);
    if (aCode === 'timeout') t.comment(`the first daemon did not exit; its log ends: ${env.runLog(a).slice(-12).map((l) => JSON.stringify(l).slice(0, 300)).join('\n')}`);
    return { a, b, aCode: aCode === 'timeout' ? null : aCode };
  };

  await t.test('the first daemon starts alone and sets tcp_migrate_req in the node namespace', async (t) => {
    await env.node.sysctl('net.ipv4.tcp_migrate_req', '0');
    const run = env.spawnDaemon(launch);
    await env.waitDaemonReady(run, 240_000);
    t.equal(await migrate(), '1', 'net.ipv4.tcp_migrate_req=1 where the daemon manages the node');
    t.notOk(env.runLog(run).some((l) => String(l.msg).startsWith('another daemon serves the port')), 'alone: listened at once');
  });

  await t.test('a pod asking on fresh and kept-alive connections sees no failure while the second daemon takes over', async (t) => {
    const stop = join(env.dir, 'stop-loop-1');
    const loop = traffic(env.pods.a, ['--loop', '--resource', RESOURCE, '--stop-file', stop, '--interval-ms', '20', '--max-ms', '180000', '--max-count', '6000']);
    const { a, b, aCode } = await handOver(t, async (a, b) => {
      // Both serve: the kernel spreads new connections over both listeners.
      await eventually(() => decisionsOf(b, ['team-a/pod-a']) > 0, 'the second daemon answering pod A', 120_000, 50);
      const chain = await hostChain();
      const [first, second] = daemonCgroups;
      t.same(chain.filter((l) => l.endsWith('-j RETURN') && l.includes('--path')), [first!, second!].sort().map((p) => `-A aad-metadata-host -m cgroup --path "${p}" -j RETURN`),
        'the hostNetwork chain excludes both daemon pods: each reaches IMDS itself');
      t.ok(decisionsOf(a, ['team-a/pod-a']) > 0, 'the first daemon answered pod A');
    });
    t.equal(aCode, 0, 'SIGTERM: the first daemon drains and exits 0');
    t.ok(env.runLog(b).some((l) => String(l.msg).startsWith('the previous daemon holds the metrics port')), 'the metrics port was the first daemon\'s alone meanwhile');
    await env.waitDaemonLog(b, (l) => l.msg === 'metrics port taken over', 'the metrics port taken over', 30_000);
    await sleep(1_500);
    writeFileSync(stop, '');
    const r = await loop.result();
    rmSync(stop, { force: true });
    t.comment(`loop: ${r.total} requests (${r.fresh} fresh, ${r.keptAlive} kept-alive), ${r.ok} × 200, ${r.failureCount} failures, `
      + `${r.retriedStale} stale kept-alive retries, ${r.closeHeaders} Connection: close; first daemon decided ${decisionsOf(a, ['team-a/pod-a'])}, second ${decisionsOf(b, ['team-a/pod-a'])}`);
    t.ok(r.total >= 50, `the pod kept asking (${r.total})`);
    t.same(r.failures, [], 'no failure at all');
    t.equal(r.ok, r.total, 'every request answered 200');
    t.equal(r.retriedStale, 0, 'no kept-alive connection was reset under a request (none needed a client\'s retry)');
    t.ok(decisionsOf(b, ['team-a/pod-a']) > 0 && decisionsOf(a, ['team-a/pod-a']) > 0, 'both daemons served');
    t.same(env.daemonLog().filter((l) => l.msg === 'interception rules had drifted and were repaired' || String(l.msg).startsWith('interception rules check failed')), [],
      'neither daemon repaired nor failed a rules check: they kept the same rules');
    t.match((await env.iptables('-S', 'aad-metadata')).stdout, /DNAT --to-destination 127\.0\.0\.1:2579/, 'the rules stayed');
  });

  await t.test('200 idle kept-alive connections and 20 requests in flight at SIGTERM: none fails', async (t) => {
    const stop = join(env.dir, 'stop-loop-2');
    const slowFile = join(env.dir, 'slow-now');
    // The connections open while the (now) first daemon is alone: they are all its own.
    const holds = holders.map((p) => traffic(p, ['--hold', '22', '--slow', '2', '--slow-file', slowFile, '--ping-ms', '2000',
      '--resource', RESOURCE, '--stop-file', stop, '--max-ms', '180000', '--max-count', '20000']));
    await Promise.all(holds.map((h) => h.proc.waitForOutput(/"event":"holding"/, 60_000)));
    const loop = traffic(env.pods.a, ['--loop', '--resource', RESOURCE, '--stop-file', stop, '--interval-ms', '20', '--max-ms', '180000', '--max-count', '6000']);
    const holderPods = holders.map((h) => `team-a/${h.name}`);
    const { a, b, aCode } = await handOver(t, async (a) => {
      await eventually(() => decisionsOf(env.daemons.at(-1)!, ['team-a/pod-a']) > 0, 'the second daemon answering pod A', 120_000, 50);
      await env.imds.request({ op: 'slow', delayMs: 500, times: 20 });
      writeFileSync(slowFile, '');
      // In flight: the first daemon has started fetching them (IMDS takes 4 at a time).
      const atImds = async (): Promise<number> => {
        await env.imds.request({ op: 'flush' }, 20_000);
        return env.imds.lines.filter((l) => l.event === 'request' && String(l.url).includes('slow-')).length;
      };
      await eventually(async () => (await atImds()) >= 4, 'the slow requests at IMDS', 60_000, 20);
      t.ok(a.proc.running, 'the first daemon holds them');
    });
    t.equal(aCode, 0, 'SIGTERM: the first daemon drains and exits 0');
    await sleep(3_000);
    writeFileSync(stop, '');
    const results = await Promise.all(holds.map((h) => h.result()));
    const r = await loop.result();
    rmSync(stop, { force: true });
    const sum = (k: string): number => results.reduce((n, x) => n + Number(x[k] ?? 0), 0);
    const slow = results.reduce((n, x) => n + Number(x.slow.ok), 0);
    const slowStatuses = results.flatMap((x) => x.slow.statuses as number[]);
    t.comment(`holders: ${sum('total')} requests on 220 connections, ${sum('ok')} × 200, ${sum('failureCount')} failures, ${sum('retriedStale')} stale retries, `
      + `${sum('closeHeaders')} Connection: close; slow ${slow}/20 × 200 (${slowStatuses.join(',')}); `
      + `loop ${r.total} requests, ${r.ok} × 200, ${r.failureCount} failures, ${r.retriedStale} stale retries; `
      + `first daemon decided ${decisionsOf(a, holderPods)} for the holders, second ${decisionsOf(b, holderPods)}`);
    t.same(results.flatMap((x) => x.failures), [], 'no failure on any held connection');
    t.equal(sum('retriedStale') + Number(r.retriedStale), 0, 'no kept-alive connection was reset under a request (none needed a client\'s retry)');
    t.equal(slow, 20, 'the 20 requests in flight at SIGTERM were answered 200');
    const stoppedAt = Number(env.runLog(a).find((l) => String(l.msg).startsWith('stopping'))?.time);
    const finishedAfter = env.runLog(a).filter((l) => String(l.resource).includes('slow-') && l.status === 200 && Number(l.time) >= stoppedAt).length;
    t.ok(finishedAfter > 0, `the first daemon answered ${finishedAfter} of them after its SIGTERM: they were in flight`);
    t.ok(sum('closeHeaders') >= 1, 'in-flight answers told their clients to reconnect (Connection: close)');
    t.same(r.failures, [], 'no failure for the pod asking throughout');
    t.ok(decisionsOf(b, holderPods) > 0, 'the held connections\' pods moved on to the second daemon');
    t.same(env.daemonLog().filter((l) => String(l.msg).startsWith('interception rules check failed')), [], 'no rules check failed');
  });

  await t.test('the last daemon alone: SIGTERM still fails closed', async (t) => {
    const last = env.daemons.at(-1)!;
    t.equal(await env.stopDaemon(), 0, 'exit 0');
    t.notOk(last.proc.running);
    t.match((await env.iptables('-S', 'aad-metadata')).stdout, /DNAT --to-destination 127\.0\.0\.1:2579/, 'the rules stay');
    const r = await env.curl('a', `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${RESOURCE}`, { maxTimeSec: 2 });
    t.equal(r.exit, 7, 'pod A is refused (nothing listens behind the DNAT), never answered by IMDS');
  });
});
