// IMDS-budget benchmark, run by hand: `node_modules/.bin/node bench/imds-budget.bench.ts`.
// Two emulators enforce IMDS's limits (20 token requests a second, 5 at once, 20 ms per
// answer); one sits behind the daemon, the other behind a naive forwarding proxy measured in
// the same run. 250 pods on loopback addresses (127.0.1.2-251), each its own connections.
// Scenarios (each bounded: at most 5 tries per client, a 30 s timeout per request):
//  1. 1,000 requests at once, 4 per pod, for 100 distinct identity/resource pairs;
//  2. the same burst again;
//  3. 250 pods with 250 distinct identities; clients honour Retry-After for up to 5 tries.
import { spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { startProcess, spawned } from './processes.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const PODS = 250;
const GROUPS = 25;
const RESOURCES = ['https://vault.azure.net', 'https://storage.azure.com', 'https://management.azure.com', 'https://database.windows.net'];
const TRIES = 5;
const id = (prefix: string, i: number) => `${prefix}-0000-4000-8000-${String(i).padStart(12, '0')}`;
const own = (i: number) => id('aaaaaaaa', i);
const group = (g: number) => id('bbbbbbbb', g);
const podIp = (i: number) => `127.0.1.${i + 2}`;

function state(): string {
  const docs: string[] = [];
  const identity = (name: string, clientID: string) => `apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata: {name: ${name}, namespace: bench}
spec: {type: 0, clientID: ${clientID}, resourceID: /subscriptions/s/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/${name}}`;
  const binding = (name: string, identityName: string, selector: string) => `apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {name: ${name}, namespace: bench}
spec: {azureIdentity: ${identityName}, selector: ${selector}}`;
  for (let g = 0; g < GROUPS; g++) docs.push(identity(`grp-${g}`, group(g)));
  for (let i = 0; i < PODS; i++) {
    docs.push(identity(`id-${i}`, own(i)), binding(`own-${i}`, `id-${i}`, `app-${i}`), binding(`grp-${i}`, `grp-${i % GROUPS}`, `app-${i}`));
    docs.push(`apiVersion: v1
kind: Pod
metadata: {name: p${i}, namespace: bench, uid: u${i}, labels: {aadpodidbinding: app-${i}}}
spec: {nodeName: bench}
status: {phase: Running, podIPs: [{ip: ${podIp(i)}}]}`);
  }
  return docs.join('\n---\n');
}

function identities(): string {
  const all = [...Array.from({ length: PODS }, (_, i) => own(i)), ...Array.from({ length: GROUPS }, (_, g) => group(g))];
  return JSON.stringify({ identities: all.map((clientID, n) => ({ clientID, resourceID: `/r/${n}`, objectID: `o-${n}` })) });
}



interface Reply { status: number; retryAfter: number | undefined; body: string }

function get(port: number, path: string, from: string): Promise<Reply> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { metadata: 'true' }, localAddress: from, agent: false, timeout: 30_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const ra = res.headers['retry-after'];
        resolve({ status: res.statusCode ?? 0, retryAfter: ra === undefined ? undefined : Number(ra), body: Buffer.concat(chunks).toString() });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, retryAfter: undefined, body: e.message }));
    req.end();
  });
}

const tokenPath = (resource: string, clientId: string) =>
  `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${encodeURIComponent(resource)}&client_id=${clientId}`;

interface Outcome { firstTry: boolean; token: boolean; ms: number; tries: number }

/** One client: as the SDKs do, it retries 429/5xx when told Retry-After, up to `tries` times. */
async function client(port: number, path: string, from: string, tries: number): Promise<Outcome> {
  const t0 = performance.now();
  for (let n = 1; ; n++) {
    const r = await get(port, path, from);
    if (r.status === 200) return { firstTry: n === 1, token: true, ms: performance.now() - t0, tries: n };
    const retryable = r.status === 429 || r.status >= 500;
    if (n >= tries || !retryable || r.retryAfter === undefined) return { firstTry: false, token: false, ms: performance.now() - t0, tries: n };
    await new Promise((res) => setTimeout(res, r.retryAfter! * 1000));
  }
}

interface Upstream { calls: number; throttled: number }

interface Row { system: string; scenario: string; requests: number; firstTry: number; token: number; calls: number; throttled: number; p50: number; p99: number; seconds: number }

async function scenario(system: string, name: string, port: number, counts: () => Promise<Upstream>, jobs: Array<() => Promise<Outcome>>): Promise<Row> {
  const before = await counts();
  const t0 = performance.now();
  const outcomes = await Promise.all(jobs.map((j) => j()));
  const seconds = (performance.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 300));
  const after = await counts();
  const ms = outcomes.map((o) => o.ms).sort((a, b) => a - b);
  const q = (p: number) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))]!;
  return {
    system, scenario: name, requests: outcomes.length, seconds,
    firstTry: outcomes.filter((o) => o.firstTry).length / outcomes.length,
    token: outcomes.filter((o) => o.token).length / outcomes.length,
    calls: after.calls - before.calls, throttled: after.throttled - before.throttled,
    p50: q(0.5), p99: q(0.99),
  };
}

async function daemonCounts(metricsPort: number): Promise<Upstream> {
  const text = (await get(metricsPort, '/metrics', '127.0.0.1')).body;
  let calls = 0;
  let throttled = 0;
  for (const m of text.matchAll(/^podid_nmi_imds_answers_total\{status="(\w+)"\} (\d+)/gm)) {
    calls += Number(m[2]);
    if (m[1] === '429') throttled += Number(m[2]);
  }
  return { calls, throttled };
}

async function proxyCounts(port: number): Promise<Upstream> {
  const stats = JSON.parse((await get(port, '/stats', '127.0.0.1')).body) as Record<string, number>;
  return { calls: Object.values(stats).reduce((a, b) => a + b, 0), throttled: stats['429'] ?? 0 };
}

const burst = (port: number, tries: number) => Array.from({ length: PODS * RESOURCES.length }, (_, n) => {
  const pod = n % PODS;
  const resource = RESOURCES[Math.floor(n / PODS)]!;
  return () => client(port, tokenPath(resource, group(pod % GROUPS)), podIp(pod), tries);
});
const distinct = (port: number) => Array.from({ length: PODS }, (_, pod) => () => client(port, tokenPath(RESOURCES[0]!, own(pod)), podIp(pod), TRIES));

const dir = await mkdtemp(`${tmpdir()}/podid-budget-`);
await writeFile(`${dir}/state.yaml`, state());
await writeFile(`${dir}/ids.json`, identities());
const emulatorArgs = (port: number) => [`${root}src/cli.ts`, 'imds-emulator', '--listen', `127.0.0.1:${port}`, '--identities', `${dir}/ids.json`,
  '--rate-limit=true', '--rps', '20', '--concurrent', '5', '--token-latency-ms', '20'];
await startProcess(process.execPath, emulatorArgs(18179), 'listening');
await startProcess(process.execPath, emulatorArgs(18180), 'listening');
// The daemon logs at info as in production, to a file: a pipe to this busy process would stall it.
const log = openSync(`${dir}/daemon.log`, 'w');
spawned.push(spawn(process.execPath, [`${root}src/cli.ts`, '--node=bench', '--manage-iptables=false', '--operation-mode=managed', `--cluster-state=${dir}/state.yaml`, '--metadata-ip=127.0.0.1',
  '--metadata-port=18179', '--probe-listen-address=127.0.0.1', '--nmi-port=12679', '--http-probe-port=18185', '--prometheus-port=18185',
  '--log-level=info', '--log-format=json', '--max-connections=4096'], { stdio: ['ignore', log, log] }));
for (let i = 0; i < 150 && (await get(18185, '/healthz', '127.0.0.1')).status !== 200; i++) await new Promise((r) => setTimeout(r, 100));
await startProcess(process.execPath, [`${root}bench/naive-proxy.ts`, '12680', '18180'], 'listening');
const rows: Row[] = [];
try {
  const daemon = () => daemonCounts(18185);
  const naive = () => proxyCounts(12680);
  rows.push(await scenario('podid-nmi', '1. burst: 1,000 requests, 100 distinct pairs', 12679, daemon, burst(12679, 1)));
  rows.push(await scenario('naive proxy', '1. burst: 1,000 requests, 100 distinct pairs', 12680, naive, burst(12680, 1)));
  await new Promise((r) => setTimeout(r, 1500));
  rows.push(await scenario('podid-nmi', '2. the same burst again', 12679, daemon, burst(12679, 1)));
  rows.push(await scenario('naive proxy', '2. the same burst again', 12680, naive, burst(12680, 1)));
  await new Promise((r) => setTimeout(r, 1500));
  rows.push(await scenario('podid-nmi', '3. 250 distinct identities, Retry-After honoured, 5 tries', 12679, daemon, distinct(12679)));
  rows.push(await scenario('naive proxy', '3. 250 distinct identities, Retry-After honoured, 5 tries', 12680, naive, distinct(12680)));
  console.log(`node ${process.version}; emulators enforce 20 rps / 5 concurrent / 20 ms; daemon defaults (--imds-max-rps=19 --imds-max-concurrency=4 --token-wait-ms=8000)`);
  console.log('| scenario | system | requests | 200 on first try | ended with token | upstream calls | throttled (429) | p50 s | p99 s | wall s |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
    console.log(`| ${r.scenario} | ${r.system} | ${r.requests} | ${pct(r.firstTry)} | ${pct(r.token)} | ${r.calls} | ${r.throttled} (${pct(r.calls === 0 ? 0 : r.throttled / r.calls)}) | ${(r.p50 / 1000).toFixed(2)} | ${(r.p99 / 1000).toFixed(2)} | ${r.seconds.toFixed(1)} |`);
  }
} finally {
  for (const child of spawned) child.kill('SIGTERM');
}
