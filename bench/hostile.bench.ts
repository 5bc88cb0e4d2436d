// Hostile-pod benchmark, run by hand: `node_modules/.bin/node bench/hostile.bench.ts`.
// The emulator and the daemon run as their own processes; each flood runs in a worker thread of
// this process, and the victim (a bound pod) asks for its token from the main thread, one request
// at a time on a fresh connection, throughout. Reported per flood: the victim's latency (ratio
// against the same victim with no flood, same run), its failures, the daemon's peak RSS, and
// the daemon's log output. Every flood is bounded by FLOOD_MS and by a cap on its sockets.
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { request, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { startProcess, spawned, rssMiB } from './processes.ts';

const FLOOD_MS = Number(process.env.BENCH_FLOOD_MS ?? 8_000);
const IMDS_PORT = 18_179;
const NMI_PORT = 12_679;
const PROBE_PORT = 18_185;
const VICTIM = '127.0.1.2';
const BOUND_ATTACKER = '127.0.1.3';
/** 16 unlabelled pods, and 64 addresses no pod holds. */
const ATTACKER_PODS = Array.from({ length: 16 }, (_, i) => `127.0.2.${i + 2}`);
const STRANGERS = Array.from({ length: 64 }, (_, i) => `127.0.3.${i + 2}`);
const TOKEN = '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net';
const RAW_TOKEN = `GET ${TOKEN} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n`;

type Attack = 'stalled' | 'body' | 'pipelining' | 'distinct' | 'parked' | 'probe' | 'refusals';

// ---- the attacker (a worker thread) ----------------------------------------------------------

/** Keeps `perAddress` sockets open from each address, reopening each as soon as it closes. */
async function holdSockets(port: number, addresses: string[], perAddress: number, bytes: string, until: number): Promise<number> {
  let opened = 0;
  const one = async (from: string): Promise<void> => {
    while (Date.now() < until && opened < 200_000) {
      opened++;
      await new Promise<void>((resolve) => {
        const s: Socket = connect({ host: '127.0.0.1', port, localAddress: from });
        const timer = setTimeout(() => s.destroy(), Math.max(0, until - Date.now()));
        s.on('error', () => {});
        s.on('data', () => {}); // read (and drop) only to notice the close and reconnect at once
        s.once('connect', () => s.write(bytes));
        s.once('close', () => { clearTimeout(timer); resolve(); });
      });
    }
  };
  await Promise.all(addresses.flatMap((a) => Array.from({ length: perAddress }, () => one(a))));
  return opened;
}

async function asks(from: string, concurrency: number, until: number, path: (i: number) => string): Promise<number> {
  let i = 0;
  const worker = async (): Promise<void> => {
    while (Date.now() < until && i < 1_000_000) {
      const n = i++;
      await new Promise<void>((resolve) => {
        const req = request({ host: '127.0.0.1', port: NMI_PORT, path: path(n), localAddress: from, headers: { metadata: 'true' }, agent: false }, (res) => {
          res.resume().on('end', resolve).on('error', resolve);
        });
        req.on('error', () => resolve());
        req.end();
      });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return i;
}

async function attack(kind: Attack, until: number): Promise<string> {
  switch (kind) {
    case 'stalled':
      return `${await holdSockets(NMI_PORT, ATTACKER_PODS, 64, 'GET /metadata/identity/oauth2/token HTTP/1.1\r\n', until)} sockets opened`;
    case 'body':
      return `${await holdSockets(NMI_PORT, ATTACKER_PODS, 64, 'POST /metadata/scheduledevents?api-version=2020-07-01 HTTP/1.1\r\nMetadata: true\r\ncontent-length: 1000\r\n\r\n{', until)} sockets opened`;
    case 'pipelining':
      return `${await holdSockets(NMI_PORT, ATTACKER_PODS, 64, RAW_TOKEN.repeat(1_000), until)} sockets of 1,000 pipelined requests`;
    case 'distinct':
      return `${await asks(BOUND_ATTACKER, 16, until, (i) => `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://r${i}.example`)} distinct resources asked`;
    case 'parked':
      return `${(await Promise.all(STRANGERS.map((a) => asks(a, 32, until, () => TOKEN)))).reduce((x, y) => x + y, 0)} requests from addresses with no pod`;
    case 'probe':
      return `${await holdSockets(PROBE_PORT, ATTACKER_PODS, 64, 'GET /healthz HTTP/1.1\r\n', until)} probe sockets opened`;
    case 'refusals':
      return `${(await Promise.all(ATTACKER_PODS.map((a) => asks(a, 4, until, () => TOKEN)))).reduce((x, y) => x + y, 0)} refused requests`;
  }
}

if (!isMainThread) {
  const { kind, until } = workerData as { kind: Attack; until: number };
  parentPort!.postMessage(await attack(kind, until));
}

// ---- the victim and the measurements (main thread) ---------------------------------------------

function state(): string {
  const docs = [
    'apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\nmetadata: {name: victim, namespace: bench}\nspec: {type: 0, clientID: aaaaaaaa-0000-4000-8000-000000000001}',
    'apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\nmetadata: {name: victim, namespace: bench}\nspec: {azureIdentity: victim, selector: victim}',
    'apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\nmetadata: {name: attacker, namespace: bench}\nspec: {type: 0, clientID: bbbbbbbb-0000-4000-8000-000000000002}',
    'apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\nmetadata: {name: attacker, namespace: bench}\nspec: {azureIdentity: attacker, selector: attacker}',
  ];
  const pod = (name: string, ip: string, label?: string) => `apiVersion: v1\nkind: Pod\nmetadata: {name: ${name}, namespace: bench, uid: ${name}${label === undefined ? '' : `, labels: {aadpodidbinding: ${label}}`}}\nspec: {nodeName: bench}\nstatus: {phase: Running, podIPs: [{ip: ${ip}}]}`;
  docs.push(pod('victim', VICTIM, 'victim'), pod('bound-attacker', BOUND_ATTACKER, 'attacker'));
  ATTACKER_PODS.forEach((ip, i) => docs.push(pod(`attacker-${i}`, ip)));
  return docs.join('\n---\n');
}

const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
let logBytes = 0;
const countLogs = (d: Buffer): void => { logBytes += d.length; };



function get(port: number, path: string, from: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, localAddress: from, headers, agent: false, timeout: 10_000 }, (res: IncomingMessage) => {
      res.resume().on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

interface Row { name: string; asked: number; failed: number; p50: number; p99: number; max: number; rss: number; logKiB: number; note: string }

async function measure(name: string, kind: Attack | undefined, daemon: ChildProcess): Promise<Row> {
  const until = Date.now() + FLOOD_MS;
  const worker = kind === undefined ? undefined : new Worker(new URL(import.meta.url), { workerData: { kind, until } });
  const note = worker === undefined ? Promise.resolve('') : new Promise<string>((r) => worker.once('message', r));
  const logsBefore = logBytes;
  let rss = rssMiB(daemon.pid!);
  const sampler = setInterval(() => { rss = Math.max(rss, rssMiB(daemon.pid!)); }, 100);
  await new Promise((r) => setTimeout(r, 500)); // let the flood build up first
  const latencies: number[] = [];
  let failed = 0;
  const probe = kind === 'probe';
  while (Date.now() < until - 200) {
    const t0 = performance.now();
    const status = probe ? await get(PROBE_PORT, '/healthz', '127.0.0.1', {}) : await get(NMI_PORT, TOKEN, VICTIM, { metadata: 'true' });
    latencies.push(performance.now() - t0);
    if (status !== 200) failed++;
    await new Promise((r) => setTimeout(r, 50));
  }
  const done = await note;
  clearInterval(sampler);
  await worker?.terminate();
  await new Promise((r) => setTimeout(r, 3_000)); // let reaping finish before the next flood
  latencies.sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!;
  return { name, asked: latencies.length, failed, p50: q(0.5), p99: q(0.99), max: latencies.at(-1)!, rss, logKiB: (logBytes - logsBefore) / 1024, note: done };
}

if (isMainThread) {
  const dir = await mkdtemp(`${tmpdir()}/podid-hostile-`);
  await writeFile(`${dir}/state.yaml`, state());
  await writeFile(`${dir}/ids.json`, JSON.stringify({ identities: [
    { clientID: 'aaaaaaaa-0000-4000-8000-000000000001', resourceID: '/r/victim', objectID: 'o1' },
    { clientID: 'bbbbbbbb-0000-4000-8000-000000000002', resourceID: '/r/attacker', objectID: 'o2' },
  ] }));
  await startProcess(process.execPath, [cli, 'imds-emulator', '--listen', `127.0.0.1:${IMDS_PORT}`, '--identities', `${dir}/ids.json`, '--rate-limit=false'], 'listening');
  const daemon = await startProcess(process.execPath, [cli, '--node=bench', '--manage-iptables=false', `--cluster-state=${dir}/state.yaml`, '--metadata-ip=127.0.0.1', `--metadata-port=${IMDS_PORT}`,
    '--probe-listen-address=127.0.0.1', `--nmi-port=${NMI_PORT}`, `--http-probe-port=${PROBE_PORT}`, `--prometheus-port=${PROBE_PORT}`,
    '--operation-mode=managed', '--forceNamespaced=true', '--log-level=info', '--log-format=json'], 'podid-nmi listening', { onOutput: countLogs });
  try {
    const rows: Row[] = [];
    await measure('warm-up', undefined, daemon);
    rows.push(await measure('no flood (baseline)', undefined, daemon));
    rows.push(await measure('stalled sockets, reconnecting (16 pods x 64)', 'stalled', daemon));
    rows.push(await measure('bodies that never arrive (16 pods x 64)', 'body', daemon));
    rows.push(await measure('pipelining, never read (16 pods x 64 x 1,000 requests)', 'pipelining', daemon));
    rows.push(await measure('distinct resources from one bound pod', 'distinct', daemon));
    rows.push(await measure('requests parked from 64 addresses with no pod', 'parked', daemon));
    rows.push(await measure('refused requests from 16 pods (log flood)', 'refusals', daemon));
    rows.push(await measure('stalled sockets on the probe port (kubelet /healthz measured)', 'probe', daemon));
    const base = rows[0]!;
    console.log(`node ${process.version}, ${FLOOD_MS / 1000} s per flood, DaemonSet memory limit 512 MiB`);
    console.log('| flood | victim asks | failed | p50 ms | p99 ms | max ms | p50 vs no flood | daemon peak RSS MiB | log KiB | attacker |');
    console.log('|---|---|---|---|---|---|---|---|---|---|');
    for (const r of rows) {
      console.log(`| ${r.name} | ${r.asked} | ${r.failed} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.max.toFixed(1)} | ${(r.p50 / base.p50).toFixed(2)}x | ${r.rss.toFixed(0)} | ${r.logKiB.toFixed(0)} | ${r.note} |`);
    }
  } finally {
    for (const child of spawned) child.kill('SIGTERM');
  }
}
