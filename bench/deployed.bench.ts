// The daemon as the image starts it (Dockerfile ENTRYPOINT and ENV, the DaemonSet's args and
// env, the compiled dist/), against a cluster of the size issue 11 names: 250 pods on this
// node, 5,000 pods on other nodes, 20,000 AzureIdentities and 20,000 bindings, shaped like
// real API objects. The fake API server and the IMDS emulator run in a second process, the
// load comes from this one, so the daemon's RSS is its own.
//
// Measures: time to ready, RSS at each phase (with V8's heap spaces from /metrics), RSS after
// 2,000 token requests, a pod's watch event to its first granted token, and RSS over a run
// with pod churn (BENCH_CHURN_S, default 600 s; 0 skips it).
//
// Run: npm run build && node_modules/.bin/node bench/deployed.bench.ts
// The image instead of the work tree (docs/image.md): build it (node test/image/podman.ts build),
// then, as root, in a network namespace of your own (podman joins it; nsenter keeps /sys):
//   ip netns add nmi-bench && ip -n nmi-bench link set lo up
//   BENCH_IMAGE=localhost/podid-nmi:test BENCH_NETNS=nmi-bench nsenter --net=/var/run/netns/nmi-bench node_modules/.bin/node bench/deployed.bench.ts
//   ip netns del nmi-bench
// Overridden, because they cannot run on a developer machine: --manage-iptables (false: the
// root namespace's rules are not ours to touch), --metadata-ip/--metadata-port (the emulator),
// the ports and --probe-listen-address (loopback, free ports). Everything else is as deployed.
import { fork, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { Agent, request } from 'undici';
import { NOT_INTERCEPTING } from '../src/probes/readiness.ts';
import { ROOT, deployedCommand, withFlags } from './as-deployed.ts';
import { realisticBinding, realisticIdentity, realisticPod } from './realistic-objects.ts';
import { freePort } from '../test/helpers/ports.ts';
import { cpuSeconds } from './processes.ts';
import { podmanRunArgs } from '../test/image/as-daemonset.ts';
import { CONTAINERS_CONF, podman, removeContainers, removeLibpodParent } from '../test/image/podman.ts';

const NODE = 'node-a';
const NODE_PODS = 250;
const CHURN_PODS = 50; // the last 50 of the node's pods are replaced in turn during the churn run
const OTHER_PODS = 5_000;
const IDENTITIES = 20_000;
const POD_NAMESPACES = 50;
const SELECTORS = 100;
const REQUESTS = 2_000;
const CONCURRENCY = 16;
const FIRST_TOKEN_SAMPLES = 50;
const CHURN_S = Number(process.env.BENCH_CHURN_S ?? 600);
const CHURN_EVERY_MS = 200; // one pod replaced every 200 ms: 5 pod starts a second on one node
const CHURN_REQUESTS_PER_S = 50;
const SAMPLE_EVERY_MS = 5_000;
const RESOURCES = ['https://vault.azure.net', 'https://storage.azure.com', 'https://management.azure.com', 'https://database.windows.net'];

const clientIdOf = (i: number): string => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
const nodePodIp = (i: number): string => `127.0.1.${i + 2}`;
/** Pod i of the node: namespace ns-(i%50), label sel-(i%100); its binding and identity are number 100*(i%50) + i%100. */
const podNs = (i: number): string => `ns-${i % POD_NAMESPACES}`;
const podSelector = (i: number): string => `sel-${i % SELECTORS}`;
const boundIdentity = (i: number): number => 100 * (i % POD_NAMESPACES) + (i % SELECTORS);

type ToCluster =
  | { op: 'create-pod'; i: number; name: string; ip: string }
  | { op: 'replace-pod'; i: number; oldName: string; name: string }
  | { op: 'exit' };
type FromCluster =
  | { op: 'ready'; kubeconfig: string; imdsPort: number; seedMs: number }
  | { op: 'created'; writtenAt: number }
  | { op: 'replaced' };

const now = (): number => performance.timeOrigin + performance.now();

// ---- child: the cluster (fake API server and IMDS emulator) ----

async function cluster(): Promise<void> {
  const { FakeApiServer } = await import('../test/fake-apiserver/fake-apiserver.ts');
  const { startImdsEmulator } = await import('../src/emulator/imds-emulator.ts');
  const send = (m: FromCluster): void => void process.send!(m);
  const started = performance.now();
  // As most clusters serve it: the first list (resourceVersion=0) comes from the watch cache in
  // one response whatever its limit (kube-apiserver before 1.33). BENCH_PAGED=1: pages of 500.
  const api = await FakeApiServer.start({ bookmarkIntervalMs: 60_000, watchCacheIgnoresLimit: process.env.BENCH_PAGED !== '1' });
  const podOf = (i: number, name: string, ip: string): ReturnType<typeof realisticPod> =>
    realisticPod({ name, namespace: podNs(i), node: NODE, ip, labels: { aadpodidbinding: podSelector(i) } });
  for (let i = 0; i < NODE_PODS; i++) api.create('pods', podOf(i, `app-${i}`, nodePodIp(i)));
  for (let i = 0; i < OTHER_PODS; i++) {
    api.create('pods', realisticPod({ name: `elsewhere-${i}`, namespace: podNs(i), node: `node-${i % 40}x`, ip: `10.20.${i >> 8}.${i & 255}` }));
  }
  for (let i = 0; i < IDENTITIES; i++) {
    // The first 5,000 live in the pods' namespaces (100 each, one per selector); the rest in 200 team namespaces.
    const ns = i < POD_NAMESPACES * SELECTORS ? `ns-${Math.floor(i / SELECTORS)}` : `team-${i % 200}`;
    api.create('azureidentities', realisticIdentity(`id-${i}`, ns, clientIdOf(i)));
    api.create('azureidentitybindings', realisticBinding(`bind-${i}`, ns, `id-${i}`, `sel-${i % SELECTORS}`));
  }
  api.compact();
  const used = new Set<number>();
  for (let i = 0; i < NODE_PODS + FIRST_TOKEN_SAMPLES; i++) used.add(boundIdentity(i));
  const imds = await startImdsEmulator({
    identities: [...used].map((i) => ({ clientID: clientIdOf(i), resourceID: `/subscriptions/s/id-${i}`, objectID: `o-${i}` })),
    rateLimit: false,
  });
  process.on('message', (m: ToCluster) => {
    if (m.op === 'create-pod') {
      api.create('pods', podOf(m.i, m.name, m.ip));
      send({ op: 'created', writtenAt: now() });
    } else if (m.op === 'replace-pod') {
      // As the kubelet and the API server do it: the old pod finishes, is deleted, and a new
      // pod (new name, new uid) gets the freed address.
      const ns = podNs(m.i);
      const old = api.modify('pods', ns, m.oldName, (o) => { (o.status as Record<string, unknown>).phase = 'Succeeded'; });
      api.delete('pods', ns, m.oldName);
      const ip = ((old.status as Record<string, unknown>).podIP as string);
      api.create('pods', podOf(m.i, m.name, ip));
      api.compact(); // keeps the server's history (its memory, not ours) from growing
      send({ op: 'replaced' });
    } else {
      void Promise.all([api.close(), imds.close()]).then(() => process.exit(0));
    }
  });
  send({ op: 'ready', kubeconfig: api.kubeconfig(), imdsPort: imds.port, seedMs: performance.now() - started });
}

// ---- parent: the daemon and the load ----

function next<T extends FromCluster['op']>(child: ChildProcess, op: T, timeoutMs = 120_000): Promise<Extract<FromCluster, { op: T }>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${op} from the cluster process within ${timeoutMs} ms`)), timeoutMs);
    const on = (m: FromCluster): void => {
      if (m.op !== op) return;
      clearTimeout(timer);
      child.off('message', on);
      resolve(m as Extract<FromCluster, { op: T }>);
    };
    child.on('message', on);
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const mib = (bytes: number): number => bytes / 1024 / 1024;

interface Memory { rss: number; anon: number; file: number; heapUsed: number; heapTotal: number; external: number; spaces: Record<string, number> }

function procStatus(pid: number): { rss: number; anon: number; file: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
}

async function memory(pid: number, metricsPort: number): Promise<Memory> {
  const res = await request(`http://127.0.0.1:${metricsPort}/metrics`);
  const text = await res.body.text();
  const value = (name: string): number => Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1] ?? NaN);
  const spaces: Record<string, number> = {};
  for (const m of text.matchAll(/^nodejs_heap_space_size_used_bytes\{space="(\w+)"\} (\S+)/gm)) spaces[m[1]!] = Number(m[2]);
  return { ...procStatus(pid), heapUsed: value('nodejs_heap_size_used_bytes'), heapTotal: value('nodejs_heap_size_total_bytes'), external: value('nodejs_external_memory_bytes'), spaces };
}

function describeMemory(m: Memory): string {
  const top = Object.entries(m.spaces).filter(([, v]) => v >= 512 * 1024).map(([k, v]) => `${k} ${mib(v).toFixed(1)}`).join(', ');
  return `RSS ${mib(m.rss).toFixed(1)} MiB (anon ${mib(m.anon).toFixed(1)}, file ${mib(m.file).toFixed(1)}); V8 heap used ${mib(m.heapUsed).toFixed(1)} of ${mib(m.heapTotal).toFixed(1)} (${top}); external ${mib(m.external).toFixed(1)}`;
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

async function token(agent: Agent, origin: string, resource: string): Promise<number> {
  const res = await request(`${origin}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${encodeURIComponent(resource)}`, {
    headers: { metadata: 'true' }, dispatcher: agent,
  });
  const body = await res.body.text();
  if (res.statusCode !== 200 && process.env.BENCH_DEBUG) console.error(res.statusCode, body);
  return res.statusCode;
}

/** One agent per pod address: requests leave from the pod's IP, as intercepted traffic does. */
const agents = new Map<string, Agent>();
function agentFor(ip: string): Agent {
  let a = agents.get(ip);
  if (a === undefined) agents.set(ip, (a = new Agent({ localAddress: ip, connections: 2, keepAliveTimeout: 4_000 })));
  return a;
}

/** Least-squares slope of y over x. */
function slope(points: Array<[number, number]>): number {
  const n = points.length;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  const sxy = points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0);
  const sxx = points.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  return sxx === 0 ? 0 : sxy / sxx;
}

async function newestSource(dir: string): Promise<number> {
  let newest = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(`${entry.parentPath}/${entry.name}`).mtimeMs);
  }
  return newest;
}

async function main(): Promise<void> {
  const cmd = deployedCommand();
  if (statSync(cmd.script, { throwIfNoEntry: false }) === undefined || statSync(cmd.script).mtimeMs < await newestSource(`${ROOT}src`)) {
    throw new Error(`${cmd.script} is missing or older than src/: run npm run build first`);
  }
  const rows: Array<[string, string]> = [];
  const children: ChildProcess[] = [];
  const hardStop = setTimeout(() => {
    console.error('bench exceeded its time cap; aborting');
    for (const c of children) c.kill('SIGKILL');
    process.exit(1);
  }, (CHURN_S + 900) * 1000); // setup takes minutes on a loaded machine
  const clusterProc = fork(new URL(import.meta.url).pathname, ['--cluster'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.push(clusterProc);
  // Interrupted (Ctrl-C, timeout(1)): take the daemon and the cluster down too.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      for (const c of children) c.kill('SIGKILL');
      process.exit(130);
    });
  }
  try {
    const { kubeconfig, imdsPort, seedMs } = await next(clusterProc, 'ready');
    rows.push(['cluster', `${NODE_PODS} pods on ${NODE}, ${OTHER_PODS} elsewhere, ${IDENTITIES} identities, ${IDENTITIES} bindings (seeded in ${(seedMs / 1000).toFixed(1)} s); first lists ${process.env.BENCH_PAGED === '1' ? 'in pages of 500' : 'in one response each (watch cache)'}`]);

    const [nmiPort, probePort, metricsPort] = [await freePort(), await freePort(), await freePort()];
    const env: Record<string, string> = { ...cmd.env, NODE_NAME: NODE, HOST_IP: '127.0.0.1', KUBECONFIG: kubeconfig, PATH: process.env.PATH ?? '' };
    // BENCH_ENV="K=V ...": extra environment for an experiment, never for the figures.
    for (const pair of (process.env.BENCH_ENV ?? '').split(' ').filter((x) => x.includes('='))) env[pair.slice(0, pair.indexOf('='))] = pair.slice(pair.indexOf('=') + 1);
    const args = withFlags(cmd.args, env, {
      // Pods are played by loopback addresses, which are the node's own: no socket-cgroup attribution, no taint,
      // and no socket to attest (they call the listener, not 169.254.169.254; bench/attestation.bench.ts measures that).
      'manage-iptables': 'false', 'intercept-host-network': 'false', 'attest-pod-sockets': 'false', 'remove-node-taint': '', 'metadata-ip': '127.0.0.1', 'metadata-port': String(imdsPort),
      'nmi-port': String(nmiPort), 'http-probe-port': String(probePort), 'prometheus-port': String(metricsPort), 'probe-listen-address': '127.0.0.1',
      // Served as deployed, but not under the machine's /var/run; the daemon removes it when it stops.
      'admin-socket': `/tmp/podid-nmi-bench-${process.pid}.sock`,
    });
    // BENCH_NODE_ARGS: extra node options for a diagnostic run (--cpu-prof ...), never for figures.
    const extra = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter((x) => x !== '');
    const argv = [...extra, ...cmd.nodeArgs, cmd.script, ...args];
    rows.push(['command', `node ${argv.join(' ')}`.replace(ROOT, '/app/')]);
    rows.push(['env', Object.keys(cmd.env).map((k) => `${k}=${cmd.env[k]}`).join(' ') || '(none)']);

    const spawnedAt = performance.now();
    const image = process.env.BENCH_IMAGE;
    const container = `podid-nmi-bench-${process.pid}`;
    let daemon: ChildProcess;
    if (image === undefined) daemon = spawn(process.execPath, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    else {
      // The image as the DaemonSet runs it (limits, securityContext, mounts), with the same
      // overrides as above, in the network namespace this bench runs in.
      if (process.env.BENCH_NETNS === undefined) throw new Error('BENCH_IMAGE needs BENCH_NETNS, the network namespace this bench runs in');
      const scratch = `/tmp/${container}`;
      const run = podmanRunArgs({
        name: container, netns: process.env.BENCH_NETNS, scratch, cgroupParent: undefined,
        fields: { 'spec.nodeName': NODE, 'status.hostIP': '127.0.0.1' },
        overrides: { ...Object.fromEntries(args.map((a) => /^--([^=]+)=(.*)$/.exec(a)).filter((m) => m !== null).map((m) => [m[1]!, m[2]!])), kubeconfig: '/var/run/bench/kubeconfig' },
        mounts: [{ host: kubeconfig, path: '/var/run/bench/kubeconfig', readOnly: true }],
      }, image);
      rows[rows.length - 2] = ['command', `podman ${run.join(' ')}`];
      daemon = spawn('podman', run, { env: { ...process.env, CONTAINERS_CONF }, stdio: ['ignore', 'pipe', 'pipe'] });
      process.once('exit', () => { rmSync(scratch, { recursive: true, force: true }); removeLibpodParent(); });
    }
    children.push(daemon);
    let logBytes = 0;
    let tail = '';
    const startupLog: string[] = [];
    daemon.stdout!.on('data', (d: Buffer) => {
      logBytes += d.length;
      if (startupLog.length < 50) startupLog.push(...d.toString().split('\n').filter((l) => /initial list|state ready/.test(l)));
    });
    daemon.stderr!.on('data', (d: Buffer) => { tail = (tail + d.toString()).slice(-2000); });
    daemon.once('exit', (code) => { if (code !== null) console.error(`daemon exited ${code}: ${tail}`); });
    let pid = daemon.pid!;
    if (image !== undefined) {
      // The container's node process, as the host sees it: its RSS is what the limit counts.
      for (let i = 0; i < 600 && !(pid > 0 && pid !== daemon.pid); i++) {
        pid = Number((await podman(['inspect', '--format', '{{.State.Pid}}', container], { allowFail: true })).stdout.trim()) || daemon.pid!;
        if (pid === daemon.pid) await sleep(100);
      }
    }

    // Time to ready: spawn to the first /readyz that names nothing missing but the rules, which
    // the bench cannot install (--manage-iptables=false keeps the daemon unready on purpose).
    const readyBy = performance.now() + 180_000;
    const onlyRulesMissing = `not ready: ${NOT_INTERCEPTING}\n`;
    for (;;) {
      if (performance.now() > readyBy) throw new Error(`not ready within 180 s: ${tail}`);
      const body = await request(`http://127.0.0.1:${probePort}/readyz`).then(async (r) => (r.statusCode === 200 ? 'ready\n' : await r.body.text()), () => '');
      if (body === 'ready\n' || body === onlyRulesMissing) break;
      await sleep(10);
    }
    const readyMs = performance.now() - spawnedAt;
    rows.push(['time to ready (spawn to /readyz naming only the rules)', `${readyMs.toFixed(0)} ms (daemon CPU ${cpuSeconds(pid).toFixed(2)} s; the machine's 2 cores are shared)`]);
    for (const line of startupLog) {
      const r = JSON.parse(line) as { msg: string; resource?: string; ms?: number; objects?: number };
      rows.push([`  ${r.resource ?? 'all'}: ${r.msg}`, `${r.ms} ms${r.objects !== undefined ? `, ${r.objects} objects` : ''}`]);
    }
    const atReady = await memory(pid, metricsPort);
    if (process.env.BENCH_SMAPS) writeFileSync(`${process.env.BENCH_SMAPS}.ready`, readFileSync(`/proc/${pid}/smaps`));
    rows.push(['at ready', describeMemory(atReady)]);
    await sleep(10_000);
    const idle = await memory(pid, metricsPort);
    rows.push(['idle 10 s later', describeMemory(idle)]);

    // 2,000 token requests from the node's pods, 16 at a time, four audiences.
    const origin = `http://127.0.0.1:${nmiPort}`;
    const statuses = new Map<number, number>();
    let issued = 0;
    const loadStart = performance.now();
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (issued < REQUESTS) {
        const n = issued++;
        const i = n % NODE_PODS;
        const status = await token(agentFor(nodePodIp(i)), origin, RESOURCES[Math.floor(n / NODE_PODS) % RESOURCES.length]!);
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
      }
    }));
    const loadS = (performance.now() - loadStart) / 1000;
    if (statuses.get(200) !== REQUESTS) throw new Error(`token requests: ${JSON.stringify([...statuses])}`);
    const afterLoad = await memory(pid, metricsPort);
    // BENCH_SMAPS=prefix: the daemon's mappings at ready and after the load, for a diagnostic run.
    if (process.env.BENCH_SMAPS) writeFileSync(`${process.env.BENCH_SMAPS}.load`, readFileSync(`/proc/${pid}/smaps`));
    rows.push([`after ${REQUESTS} token requests (${(REQUESTS / loadS).toFixed(0)} req/s)`, describeMemory(afterLoad)]);

    // A new pod's first token: the request is parked before the pod exists (the pod-start
    // race), and measured from the moment the API server wrote the pod's ADDED event.
    const firstToken: number[] = [];
    for (let k = 0; k < FIRST_TOKEN_SAMPLES; k++) {
      const i = NODE_PODS + k;
      const ip = `127.0.4.${k + 2}`;
      let doneAt = 0;
      const asked = token(agentFor(ip), origin, RESOURCES[0]!).then((s) => { doneAt = now(); return s; });
      await sleep(30); // the request reaches the daemon and waits for its pod
      clusterProc.send({ op: 'create-pod', i, name: `new-${k}`, ip } satisfies ToCluster);
      const [{ writtenAt }, status] = await Promise.all([next(clusterProc, 'created'), asked]);
      if (status !== 200) throw new Error(`new pod ${ip}: status ${status}`);
      firstToken.push(doneAt - writtenAt);
    }
    firstToken.sort((a, b) => a - b);
    rows.push(['watch event -> first granted token', `p50 ${quantile(firstToken, 0.5).toFixed(1)} ms, p99 ${quantile(firstToken, 0.99).toFixed(1)} ms, max ${firstToken.at(-1)!.toFixed(1)} ms (${FIRST_TOKEN_SAMPLES} new pods, request parked first, IMDS round trip included)`]);

    if (CHURN_S > 0) {
      // Pod churn: one of the last 50 node pods replaced every 200 ms, 50 token requests a second.
      const names = Array.from({ length: NODE_PODS }, (_, i) => `app-${i}`);
      const samples: Array<[number, number]> = [];
      const churnStart = performance.now();
      const end = churnStart + CHURN_S * 1000;
      let replaced = 0;
      let requests = 0;
      const churnStatuses = new Map<number, number>();
      let nextSample = churnStart;
      let nextReplace = churnStart;
      let nextRequests = churnStart;
      const inflight = new Set<Promise<unknown>>();
      while (performance.now() < end) {
        const t = performance.now();
        if (t >= nextSample) {
          samples.push([(t - churnStart) / 60_000, mib(procStatus(pid).rss)]);
          nextSample += SAMPLE_EVERY_MS;
        }
        if (t >= nextReplace) {
          const i = NODE_PODS - CHURN_PODS + (replaced % CHURN_PODS);
          const name = `app-${i}-r${++replaced}`;
          clusterProc.send({ op: 'replace-pod', i, oldName: names[i]!, name } satisfies ToCluster);
          await next(clusterProc, 'replaced');
          names[i] = name;
          nextReplace += CHURN_EVERY_MS;
        }
        if (t >= nextRequests && inflight.size < 200) {
          for (let r = 0; r < CHURN_REQUESTS_PER_S / 10; r++) {
            const i = Math.floor(Math.random() * NODE_PODS);
            const p = token(agentFor(nodePodIp(i)), origin, RESOURCES[requests++ % RESOURCES.length]!)
              .then((s) => churnStatuses.set(s, (churnStatuses.get(s) ?? 0) + 1), () => churnStatuses.set(0, (churnStatuses.get(0) ?? 0) + 1))
              .finally(() => inflight.delete(p));
            inflight.add(p);
          }
          nextRequests += 100;
        }
        await sleep(Math.max(0, Math.min(nextSample, nextReplace, nextRequests) - performance.now()));
      }
      await Promise.all(inflight);
      const settled = samples.filter(([m]) => m >= 1); // the first minute warms up caches and the JIT
      const perMin = slope(settled);
      const rss = samples.map(([, y]) => y);
      rows.push([`churn ${CHURN_S} s (${replaced} pods replaced, ${requests} token requests)`,
        `RSS start ${rss[0]!.toFixed(1)} MiB, end ${rss.at(-1)!.toFixed(1)} MiB, max ${Math.max(...rss).toFixed(1)} MiB; slope after the first minute ${(perMin * 1024).toFixed(0)} KiB/min; statuses ${[...churnStatuses].map(([s, c]) => `${s}x${c}`).join(' ')}`]);
      rows.push(['  RSS by minute (MiB)', samples.filter((_, k) => k % Math.round(60_000 / SAMPLE_EVERY_MS) === 0).map(([, y]) => y.toFixed(1)).join(', ')]);
      rows.push(['after churn', describeMemory(await memory(pid, metricsPort))]);
    }
    rows.push(['daemon log output', `${(logBytes / 1024 / 1024).toFixed(1)} MiB`]);
    if (image !== undefined) await podman(['kill', '--signal', 'TERM', container], { allowFail: true });
    else daemon.kill('SIGTERM');
    await new Promise((r) => daemon.once('exit', r));
    if (image !== undefined) { await removeContainers([container]); removeLibpodParent(); }
  } finally {
    clearTimeout(hardStop);
    for (const a of agents.values()) void a.close();
    if (clusterProc.connected) clusterProc.send({ op: 'exit' } satisfies ToCluster);
    for (const c of children) if (c.exitCode === null && c !== clusterProc) c.kill('SIGTERM');
  }
  console.log(`\npodid-nmi as deployed, Node ${process.version}, ${new Date().toISOString()}`);
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) console.log(`  ${k.padEnd(width)}  ${v}`);
}

if (process.argv.includes('--cluster')) await cluster();
else await main();
