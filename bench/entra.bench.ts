// Entra-sourced tokens, run by hand: `node_modules/.bin/node bench/entra.bench.ts`.
// The daemon runs as its own process with the image's node options (as deployed), reading a
// fake API server; the IMDS emulator is another process; the fake Entra ID and the fake API
// server live in this process (they are asked only on cold grants). Measured in one run:
// - a cached grant from Entra (a client-secret identity) against a cached grant from IMDS:
//   the same hot path, so the ratio should be about 1;
// - cold federated grants (TokenRequest, then Entra), each from a pod of its own service
//   account so that nothing is cached: p50 and p99;
// - the daemon's RSS afterwards.
// Every scenario is bounded by a request count and a time cap.
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { FakeApiServer, type Obj } from '../test/fake-apiserver/fake-apiserver.ts';
import { FakeEntra } from '../test/fake-entra/fake-entra.ts';
import { deployedCommand } from './as-deployed.ts';
import { cpuSeconds, rssMiB, spawned, startProcess } from './processes.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 20_000);
const COLD = Number(process.env.BENCH_COLD ?? 200);
const CONCURRENCY = 16;
const CAP_MS = 15_000;
const TENANT = 'bench000-0000-4000-8000-000000000000';
const MSI = 'aaaaaaaa-0000-4000-8000-000000000001';
const SP = 'bbbbbbbb-0000-4000-8000-000000000002';
const FED = 'cccccccc-0000-4000-8000-000000000003';
const NS = 'bench';
const TOKEN = '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=';
const META = { metadata: 'true' };

const api = await FakeApiServer.start();
const entra = await FakeEntra.start('127.0.0.1');
entra.addApp(SP, { tenant: TENANT, secrets: ['bench-secret'] });
entra.addApp(FED, { tenant: TENANT, federated: Array.from({ length: COLD }, (_, i) => ({ issuer: api.issuer, subject: `system:serviceaccount:${NS}:sa-${i}` })) });
entra.trustIssuer(api.issuer, api.jwks());
const crd = (kind: string, name: string, spec: Obj, annotations: Record<string, string> = {}): Obj => ({ apiVersion: 'aadpodidentity.k8s.io/v1', kind, metadata: { name, namespace: NS, annotations }, spec });
api.create('azureidentities', crd('AzureIdentity', 'msi', { type: 0, clientID: MSI }));
api.create('azureidentities', crd('AzureIdentity', 'sp', { type: 1, clientID: SP, tenantID: TENANT, clientPassword: { name: 'sp', namespace: NS } }));
api.create('azureidentities', crd('AzureIdentity', 'fed', { type: 0, clientID: FED, tenantID: TENANT }, { 'podid-nmi.io/token-source': 'workload-identity' }));
for (const n of ['msi', 'sp', 'fed']) api.create('azureidentitybindings', crd('AzureIdentityBinding', n, { azureIdentity: n, selector: n }));
api.create('secrets', { kind: 'Secret', apiVersion: 'v1', metadata: { name: 'sp', namespace: NS }, data: { clientSecret: Buffer.from('bench-secret').toString('base64') } });
const pod = (name: string, ip: string, label: string, sa = 'default'): Obj => ({
  kind: 'Pod', apiVersion: 'v1', metadata: { name, namespace: NS, labels: { aadpodidbinding: label } },
  spec: { nodeName: 'bench', serviceAccountName: sa }, status: { phase: 'Running', podIPs: [{ ip }] },
});
api.create('pods', pod('msi', '127.0.1.2', 'msi'));
api.create('pods', pod('sp', '127.0.1.3', 'sp'));
for (let i = 0; i < COLD; i++) {
  api.create('serviceaccounts', { kind: 'ServiceAccount', apiVersion: 'v1', metadata: { name: `sa-${i}`, namespace: NS } });
  api.create('pods', pod(`fed-${i}`, `127.0.2.${i + 2}`, 'fed', `sa-${i}`));
}

const dir = await mkdtemp(`${tmpdir()}/podid-bench-entra-`);
await writeFile(`${dir}/ids.json`, JSON.stringify({ identities: [{ clientID: MSI, resourceID: '/r/msi', objectID: 'o' }] }));
await startProcess(process.execPath, [`${root}src/cli.ts`, 'imds-emulator', '--listen', '127.0.0.1:18179', '--identities', `${dir}/ids.json`, '--rate-limit=false'], 'listening');
const deployed = deployedCommand();
// Never the machine's own iptables.
const daemon = await startProcess(process.execPath, [...deployed.nodeArgs, `${root}src/cli.ts`, '--node=bench', '--manage-iptables=false', '--operation-mode=managed',
  `--kubeconfig=${api.kubeconfig()}`, '--metadata-ip=127.0.0.1', '--metadata-port=18179', '--nmi-port=12679', '--http-probe-port=18185', '--prometheus-port=18186',
  '--probe-listen-address=127.0.0.1', `--authority-host=${entra.authority}`, '--pod-events=false', '--log-level=info', '--log-format=json'], 'podid-nmi listening', { env: { ...process.env, ...deployed.env } });
const origin = 'http://127.0.0.1:12679';

interface Result { name: string; n: number; p50: number; p99: number; cpuUs: number; statuses: string }

function summary(name: string, latencies: number[], statuses: Map<number, number>, cpu: number): Result {
  latencies.sort((a, b) => a - b);
  const q = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!;
  return { name, n: latencies.length, p50: q(0.5), p99: q(0.99), cpuUs: cpu * 1e6 / latencies.length, statuses: [...statuses].map(([s, c]) => `${s}x${c}`).join(' ') };
}

async function cached(name: string, from: string, resource: string): Promise<Result> {
  const pool = new Pool(origin, { connections: CONCURRENCY, pipelining: 1, localAddress: from });
  const path = `${TOKEN}${encodeURIComponent(resource)}`;
  // The first answer fills the cache; the rest are hits.
  await (await pool.request({ path, method: 'GET', headers: META })).body.dump();
  const latencies: number[] = [];
  const statuses = new Map<number, number>();
  const cpu0 = cpuSeconds(daemon.pid!);
  const deadline = Date.now() + CAP_MS;
  let issued = 0;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (issued < REQUESTS && Date.now() < deadline) {
      issued++;
      const t0 = performance.now();
      const res = await pool.request({ path, method: 'GET', headers: META });
      await res.body.dump();
      latencies.push(performance.now() - t0);
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
    }
  }));
  await pool.close();
  return summary(name, latencies, statuses, cpuSeconds(daemon.pid!) - cpu0);
}

/** Each fed pod asks once: a TokenRequest for its own service account, then Entra; 4 at a time. */
async function cold(): Promise<Result> {
  const latencies: number[] = [];
  const statuses = new Map<number, number>();
  const cpu0 = cpuSeconds(daemon.pid!);
  let next = 0;
  const deadline = Date.now() + 60_000;
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (next < COLD && Date.now() < deadline) {
      const i = next++;
      const pool = new Pool(origin, { connections: 1, localAddress: `127.0.2.${i + 2}` });
      const t0 = performance.now();
      const res = await pool.request({ path: `${TOKEN}${encodeURIComponent('https://vault.azure.net')}`, method: 'GET', headers: META });
      await res.body.dump();
      latencies.push(performance.now() - t0);
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
      await pool.close();
    }
  }));
  return summary('cold federated grant (TokenRequest + Entra)', latencies, statuses, cpuSeconds(daemon.pid!) - cpu0);
}

try {
  // Warm-up: JIT and connections.
  await cached('warm-up', '127.0.1.2', 'https://warm.example');
  await cached('warm-up', '127.0.1.3', 'https://warm.example');
  const results: Result[] = [];
  // Alternated, twice each, so that drift on a shared machine lands on both.
  for (let round = 0; round < 2; round++) {
    results.push(await cached('cached grant, IMDS (type 0)', '127.0.1.2', 'https://vault.azure.net'));
    results.push(await cached('cached grant, Entra (type 1, client secret)', '127.0.1.3', 'https://vault.azure.net'));
  }
  results.push(await cold());
  const rss = rssMiB(daemon.pid!);
  console.log(`node ${process.version}, daemon as deployed (${deployed.nodeArgs.join(' ')}), ${COLD + 2} pods, ${CONCURRENCY} connections, up to ${REQUESTS} requests or ${CAP_MS / 1000} s per cached scenario`);
  console.log('| scenario | requests | p50 ms | p99 ms | daemon CPU µs/request | statuses |');
  console.log('|---|---|---|---|---|---|');
  for (const r of results) console.log(`| ${r.name} | ${r.n} | ${r.p50.toFixed(3)} | ${r.p99.toFixed(3)} | ${r.cpuUs.toFixed(0)} | ${r.statuses} |`);
  const imds = results.filter((r) => r.name.includes('IMDS'));
  const ent = results.filter((r) => r.name.includes('Entra (type 1'));
  const mean = (rs: Result[], f: (r: Result) => number): number => rs.reduce((s, r) => s + f(r), 0) / rs.length;
  console.log(`cached Entra / cached IMDS: p50 ${(mean(ent, (r) => r.p50) / mean(imds, (r) => r.p50)).toFixed(2)}x, CPU ${(mean(ent, (r) => r.cpuUs) / mean(imds, (r) => r.cpuUs)).toFixed(2)}x`);
  console.log(`Entra calls: ${entra.calls.length}; TokenRequests: ${api.tokenRequests.length}; Secret GETs: ${api.requests.filter((r) => r.path.includes('/secrets/')).length}`);
  console.log(`daemon RSS after the run: ${rss.toFixed(1)} MiB`);
} finally {
  for (const child of spawned) child.kill('SIGTERM');
  await entra.close();
  await api.close();
}
