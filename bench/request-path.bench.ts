// Request-path benchmark, run by hand: `node_modules/.bin/node bench/request-path.bench.ts`.
// The emulator and the daemon run as their own processes (as in production, IMDS is another
// host); this process only generates load, from one keep-alive connection pool per scenario.
// Every scenario is bounded by a request count and a time cap. Ratios are against the
// emulator answered directly, measured in the same run.
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { deployedCommand } from './as-deployed.ts';
import { startProcess, spawned, cpuSeconds } from './processes.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 20_000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const CAP_MS = 15_000;
const PODS = 250;
const CLIENT = 'aaaaaaaa-0000-4000-8000-000000000001';

function state(): string {
  const docs = [`apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata: {name: id, namespace: bench}
spec: {type: 0, clientID: ${CLIENT}, resourceID: /subscriptions/s/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id}`,
  `apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {name: b, namespace: bench}
spec: {azureIdentity: id, selector: app}`];
  for (let i = 0; i < PODS; i++) {
    const ip = `127.0.${1 + Math.floor(i / 250)}.${(i % 250) + 2}`;
    docs.push(`apiVersion: v1
kind: Pod
metadata: {name: p${i}, namespace: bench, uid: u${i}, labels: {aadpodidbinding: app}}
spec: {nodeName: bench}
status: {phase: Running, podIPs: [{ip: ${ip}}]}`);
  }
  return docs.join('\n---\n');
}

// The daemons run with the image's node options and environment (Dockerfile ENTRYPOINT, ENV),
// so that runtime tuning is measured here as deployed. BENCH_NODE_ARGS / BENCH_ENV="K=V ..."
// replace them for an experiment; BENCH_DAEMON_ARGS adds daemon flags (--memory-saver=false).
const deployed = deployedCommand();
const extraDaemonArgs = (process.env.BENCH_DAEMON_ARGS ?? '').split(' ').filter((a) => a !== '');
const daemonNodeArgs = process.env.BENCH_NODE_ARGS !== undefined ? process.env.BENCH_NODE_ARGS.split(' ').filter((a) => a !== '') : deployed.nodeArgs;
const daemonEnv: Record<string, string> = { ...process.env as Record<string, string>, ...(process.env.BENCH_ENV !== undefined ? {} : deployed.env) };
for (const pair of (process.env.BENCH_ENV ?? '').split(' ').filter((x) => x.includes('='))) daemonEnv[pair.slice(0, pair.indexOf('='))] = pair.slice(pair.indexOf('=') + 1);



interface Result { name: string; n: number; rps: number; p50: number; p99: number; statuses: string; cpuUs: number | undefined }


async function load(name: string, origin: string, path: string, headers: Record<string, string>, from = '127.0.1.2', daemon?: ChildProcess): Promise<Result> {
  const cpuBefore = daemon?.pid !== undefined ? cpuSeconds(daemon.pid) : 0;
  const pool = new Pool(origin, { connections: CONCURRENCY, pipelining: 1, localAddress: from });
  const latencies: number[] = [];
  const statuses = new Map<number, number>();
  const deadline = Date.now() + CAP_MS;
  let issued = 0;
  const started = performance.now();
  async function worker(): Promise<void> {
    while (issued < REQUESTS && Date.now() < deadline) {
      issued++;
      const t0 = performance.now();
      const res = await pool.request({ path, method: 'GET', headers });
      await res.body.dump();
      latencies.push(performance.now() - t0);
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (performance.now() - started) / 1000;
  await pool.close();
  latencies.sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!;
  // CPU time, unlike latency, is barely moved by other load on the machine.
  const cpuUs = daemon?.pid !== undefined ? (cpuSeconds(daemon.pid) - cpuBefore) * 1e6 / latencies.length : undefined;
  return { name, n: latencies.length, rps: latencies.length / seconds, p50: q(0.5), p99: q(0.99), statuses: [...statuses].map(([s, c]) => `${s}x${c}`).join(' '), cpuUs };
}

const dir = await mkdtemp(`${tmpdir()}/podid-bench-`);
await writeFile(`${dir}/state.yaml`, state());
await writeFile(`${dir}/ids.json`, JSON.stringify({ identities: [{ clientID: CLIENT, resourceID: '/r/id', objectID: 'o' }] }));
await startProcess(process.execPath, [`${root}src/cli.ts`, 'imds-emulator', '--listen', '127.0.0.1:18079', '--identities', `${dir}/ids.json`, '--rate-limit=false'], 'listening');
// Never the machine's own iptables.
const common = [...extraDaemonArgs, '--node=bench', '--manage-iptables=false', '--operation-mode=managed', `--cluster-state=${dir}/state.yaml`, '--metadata-ip=127.0.0.1', '--metadata-port=18079',
  '--probe-listen-address=127.0.0.1', '--log-level=info', '--log-format=json'];
const daemon = (args: string[]) => startProcess(process.execPath, [...daemonNodeArgs, `${root}src/cli.ts`, ...args], 'podid-nmi listening', { env: daemonEnv });
const cached = await daemon([...common, '--nmi-port=12579', '--http-probe-port=18085', '--prometheus-port=18085']);
const uncached = await daemon([...common, '--nmi-port=12580', '--http-probe-port=18086', '--prometheus-port=18086', '--token-cache=false']);
const META = { metadata: 'true' };
const TOKEN = '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net';
try {
  const results: Result[] = [];
  // Warm-up, so JIT and connection setup do not land in the first scenario.
  for (const origin of ['http://127.0.0.1:18079', 'http://127.0.0.1:12579', 'http://127.0.0.1:12580']) {
    await load('warm-up', origin, `${TOKEN}&client_id=${CLIENT}`, META);
  }
  results.push(await load('baseline: emulator directly', 'http://127.0.0.1:18079', `${TOKEN}&client_id=${CLIENT}`, META));
  results.push(await load('daemon, token cache off', 'http://127.0.0.1:12580', TOKEN, META, undefined, uncached));
  results.push(await load('daemon, token cache hit', 'http://127.0.0.1:12579', TOKEN, META, undefined, cached));
  results.push(await load('daemon, refusal (foreign client_id, 403)', 'http://127.0.0.1:12579', `${TOKEN}&client_id=bbbbbbbb-0000-4000-8000-000000000002`, META, undefined, cached));
  results.push(await load('daemon, SDK probe (no header)', 'http://127.0.0.1:12579', '/metadata/identity/oauth2/token', {}, undefined, cached));
  const base = results[0]!;
  console.log(`node ${process.version}, ${PODS} pods in state, ${CONCURRENCY} connections, up to ${REQUESTS} requests or ${CAP_MS / 1000} s per scenario`);
  const envNames = process.env.BENCH_ENV !== undefined ? process.env.BENCH_ENV.split(' ').map((p) => p.split('=')[0]!) : Object.keys(deployed.env);
  console.log(`daemon node options: ${daemonNodeArgs.join(' ') || '(none)'}; env: ${envNames.map((k) => `${k}=${daemonEnv[k]}`).join(' ')}; extra flags: ${extraDaemonArgs.join(' ') || '(none)'}`);
  console.log('| scenario | requests | req/s | p50 ms | p99 ms | p50 vs baseline | daemon CPU µs/request | statuses |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of results) {
    console.log(`| ${r.name} | ${r.n} | ${Math.round(r.rps)} | ${r.p50.toFixed(3)} | ${r.p99.toFixed(3)} | ${(r.p50 / base.p50).toFixed(2)}x | ${r.cpuUs === undefined ? '' : r.cpuUs.toFixed(0)} | ${r.statuses} |`);
  }
} finally {
  for (const child of spawned) child.kill('SIGTERM');
}
