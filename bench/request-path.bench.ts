// Request-path benchmark, run by hand, one command:
//   node_modules/.bin/node bench/request-path.bench.ts                    this build alone
//   node_modules/.bin/node bench/request-path.bench.ts --compare=3719293  and another build (a commit, checked out
//                                                       in a temporary git worktree, or a checkout's directory)
// The emulator, each daemon, the bare servers and the naive proxy run as their own processes;
// this process only generates load: 32 keep-alive connections from one pod, 4,000 requests per
// scenario (BENCH_CONNECTIONS, BENCH_REQUESTS), each scenario capped at 15 s.
//
// Each scenario is measured against bare node:http serving the same bytes (bench/bare-server.ts,
// the daemon's own answer captured once), right before the daemon, in the same run: the ratio
// daemon rps / bare rps is what the daemon's own work costs, whatever else loads the machine.
// The token cache hit is also measured against a naive forwarding proxy (bench/naive-proxy.ts,
// every request to IMDS, as NMI). Rounds (BENCH_ROUNDS, 3) alternate the builds, A B, B A, A B,
// and the table gives each ratio's median and the daemon's CPU per request (all its threads).
import { execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { Pool } from 'undici';
import { deployedCommand, ROOT } from './as-deployed.ts';
import { freePort } from '../test/helpers/ports.ts';
import { cpuNanos, startProcess, spawned } from './processes.ts';

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 4_000);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CAP_MS = 15_000;
const PODS = 250;
const CLIENT = 'aaaaaaaa-0000-4000-8000-000000000001';
/** The pods the load comes from: p0 is bound to the identity, p1's label selects no binding. */
const BOUND = '127.0.1.2';
const UNBOUND = '127.0.1.3';

const compare = process.argv.find((a) => a.startsWith('--compare='))?.slice('--compare='.length);

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
metadata: {name: p${i}, namespace: bench, uid: u${i}, labels: {aadpodidbinding: ${i === 1 ? 'unbound' : 'app'}}}
spec: {nodeName: bench}
status: {phase: Running, podIPs: [{ip: ${ip}}]}`);
  }
  return docs.join('\n---\n');
}

// Every daemon runs with the image's node options and environment (Dockerfile ENTRYPOINT, ENV),
// whatever build it is, so that only the code differs. BENCH_NODE_ARGS replaces the options
// (say, to add --cpu-prof); BENCH_DAEMON_ARGS adds daemon flags.
const deployed = deployedCommand();
const nodeArgs = process.env.BENCH_NODE_ARGS !== undefined ? process.env.BENCH_NODE_ARGS.split(' ').filter((a) => a !== '') : deployed.nodeArgs;
const extraDaemonArgs = (process.env.BENCH_DAEMON_ARGS ?? '').split(' ').filter((a) => a !== '');
const env = { ...process.env, ...deployed.env };

interface Scenario {
  readonly name: string;
  readonly from: string;
  readonly target: string;
  readonly headers: Record<string, string>;
  readonly status: number;
}

const TOKEN = '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net';
const META = { metadata: 'true' };
const SCENARIOS: readonly Scenario[] = [
  { name: 'SDK probe (no Metadata header)', from: BOUND, target: '/metadata/identity/oauth2/token', headers: {}, status: 400 },
  { name: 'refusal (unbound pod)', from: UNBOUND, target: TOKEN, headers: META, status: 400 },
  { name: 'token, cache hit', from: BOUND, target: TOKEN, headers: META, status: 200 },
];
const CACHE_HIT = SCENARIOS[2]!;
const VS_PROXY = 'token, cache hit, vs a naive forwarding proxy';
const GOALS: Record<string, string> = { [SCENARIOS[0]!.name]: '>= 0.95', [SCENARIOS[1]!.name]: '>= 0.95', [CACHE_HIT.name]: '>= 0.95', [VS_PROXY]: '>= 2.5x' };

interface Load { n: number; rps: number; cpuUs: number; statuses: Map<number, number> }

async function load(port: number, s: Scenario, server: ChildProcess, requests = REQUESTS): Promise<Load> {
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: CONNECTIONS, pipelining: 1, localAddress: s.from, headersTimeout: CAP_MS, bodyTimeout: CAP_MS });
  const statuses = new Map<number, number>();
  const deadline = Date.now() + CAP_MS;
  let issued = 0;
  let done = 0;
  const cpuBefore = cpuNanos(server.pid!);
  const started = performance.now();
  async function worker(): Promise<void> {
    while (issued < requests && Date.now() < deadline) {
      issued++;
      const res = await pool.request({ path: s.target, method: 'GET', headers: s.headers });
      await res.body.dump();
      done++;
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
    }
  }
  await Promise.all(Array.from({ length: CONNECTIONS }, worker));
  const seconds = (performance.now() - started) / 1000;
  const cpuUs = (cpuNanos(server.pid!) - cpuBefore) / 1000 / done;
  await pool.close();
  return { n: done, rps: done / seconds, cpuUs, statuses };
}

/** The answer as a bare server replays it: what node:http adds itself (date, connection) is left out. */
async function capture(port: number, s: Scenario): Promise<{ status: number; headers: Record<string, string>; body: string }> {
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 1, localAddress: s.from, headersTimeout: CAP_MS, bodyTimeout: CAP_MS });
  const res = await pool.request({ path: s.target, method: 'GET', headers: s.headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  await pool.close();
  if (res.statusCode !== s.status) throw new Error(`${s.name}: status ${res.statusCode}, expected ${s.status}: ${body.toString()}`);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) {
    if (!['date', 'connection', 'keep-alive', 'transfer-encoding'].includes(k) && typeof v === 'string') headers[k] = v;
  }
  return { status: res.statusCode, headers, body: body.toString('base64') };
}

interface Build { name: string; root: string; daemon?: ChildProcess; port: number; bare?: ChildProcess; barePort: number }

/** A commit checked out beside this one, with this checkout's node_modules (compare builds whose lock matches). */
function checkout(ref: string): { root: string; remove(): void } {
  if (existsSync(`${ref}/src/cli.ts`)) return { root: ref.endsWith('/') ? ref : `${ref}/`, remove() {} };
  const dir = mkdtempSync(`${tmpdir()}/podid-bench-build-`);
  execFileSync('git', ['-C', ROOT, 'worktree', 'add', '--detach', dir, ref], { stdio: 'ignore', timeout: 60_000 });
  symlinkSync(`${ROOT}node_modules`, `${dir}/node_modules`);
  return {
    root: `${dir}/`,
    remove() {
      execFileSync('git', ['-C', ROOT, 'worktree', 'remove', '--force', dir], { stdio: 'ignore', timeout: 60_000 });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
/** The commit a checkout is at; `+` when its files differ from it. */
const commitOf = (root: string): string => {
  const sha = execFileSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', timeout: 60_000 }).trim();
  const dirty = execFileSync('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', timeout: 60_000 }).trim() !== '';
  return dirty ? `${sha}+` : sha;
};

const other = compare === undefined ? undefined : checkout(compare);
const dir = mkdtempSync(`${tmpdir()}/podid-bench-`);
try {
  await writeFile(`${dir}/state.yaml`, state());
  await writeFile(`${dir}/ids.json`, JSON.stringify({ identities: [{ clientID: CLIENT, resourceID: '/r/id', objectID: 'o' }] }));
  const EMULATOR_PORT = await freePort();
  const PROXY_PORT = await freePort();
  await startProcess(process.execPath, [`${ROOT}src/cli.ts`, 'imds-emulator', '--listen', `127.0.0.1:${EMULATOR_PORT}`, '--identities', `${dir}/ids.json`, '--rate-limit=false'], 'listening');
  const proxy = await startProcess(process.execPath, [...nodeArgs, `${ROOT}bench/naive-proxy.ts`, String(PROXY_PORT), String(EMULATOR_PORT)], 'naive proxy listening', { env });
  const builds: Build[] = [{ name: `this build (${commitOf(ROOT)})`, root: ROOT, port: await freePort(), barePort: await freePort() }];
  if (other !== undefined) builds.push({ name: `other build (${commitOf(other.root)})`, root: other.root, port: await freePort(), barePort: await freePort() });
  for (const [i, b] of builds.entries()) {
    const probePort = await freePort();
    // Never the machine's own iptables.
    const args = [...extraDaemonArgs, '--node=bench', '--manage-iptables=false', '--operation-mode=managed', `--cluster-state=${dir}/state.yaml`, '--metadata-ip=127.0.0.1', `--metadata-port=${EMULATOR_PORT}`, '--probe-listen-address=127.0.0.1', '--log-level=info', '--log-format=json', `--nmi-port=${b.port}`, `--http-probe-port=${probePort}`, `--prometheus-port=${probePort}`];
    b.daemon = await startProcess(process.execPath, [...nodeArgs, `${b.root}src/cli.ts`, ...args], 'podid-nmi listening', { env });
    const answers: Record<string, unknown> = {};
    for (const s of SCENARIOS) answers[`${s.from} ${s.target}`] = await capture(b.port, s);
    await writeFile(`${dir}/answers-${i}.json`, JSON.stringify(answers));
    b.bare = await startProcess(process.execPath, [...nodeArgs, `${ROOT}bench/bare-server.ts`, String(b.barePort), `${dir}/answers-${i}.json`], 'bare server listening', { env });
  }
  const proxied: Scenario = { ...CACHE_HIT, target: `${TOKEN}&client_id=${CLIENT}` };
  // Warm-up, so that JIT and connection set-up land in no measured run.
  for (const b of builds) for (const s of SCENARIOS) { await load(b.barePort, s, b.bare!, 2_000); await load(b.port, s, b.daemon!, 2_000); }
  await load(PROXY_PORT, proxied, proxy, 2_000);

  const ratios = new Map<string, number[]>();
  const cpu = new Map<string, number[]>();
  const push = (m: Map<string, number[]>, k: string, v: number): void => void m.set(k, [...(m.get(k) ?? []), v]);
  const unexpected: string[] = [];
  const check = (what: string, l: Load, status: number): void => {
    if (l.n !== REQUESTS || l.statuses.size !== 1 || !l.statuses.has(status)) unexpected.push(`${what}: ${l.n} answered, ${[...l.statuses].map(([s, c]) => `${s}x${c}`).join(' ')}`);
  };
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? builds : [...builds].reverse();
    for (const b of order) {
      const line: string[] = [];
      for (const s of SCENARIOS) {
        const bare = await load(b.barePort, s, b.bare!);
        const daemon = await load(b.port, s, b.daemon!);
        check(`${b.name}, ${s.name}, bare`, bare, s.status);
        check(`${b.name}, ${s.name}`, daemon, s.status);
        push(ratios, `${b.name}|${s.name}`, daemon.rps / bare.rps);
        push(cpu, `${b.name}|${s.name}|daemon`, daemon.cpuUs);
        push(cpu, `${b.name}|${s.name}|bare`, bare.cpuUs);
        line.push(`${s.name}: ${(daemon.rps / bare.rps).toFixed(2)} (${Math.round(daemon.rps)}/${Math.round(bare.rps)} rps, ${daemon.cpuUs.toFixed(0)}/${bare.cpuUs.toFixed(0)} µs)`);
        if (s === CACHE_HIT) {
          const naive = await load(PROXY_PORT, proxied, proxy);
          check('naive proxy', naive, 200);
          push(ratios, `${b.name}|${VS_PROXY}`, daemon.rps / naive.rps);
          line.push(`vs proxy: ${(daemon.rps / naive.rps).toFixed(2)}x (${Math.round(naive.rps)} rps)`);
        }
      }
      console.error(`round ${round + 1}, ${b.name}: ${line.join('; ')}`);
    }
  }

  console.log(`\nnode ${process.version}; ${CONNECTIONS} connections from one pod, ${REQUESTS} requests per scenario; ${ROUNDS} rounds, builds alternating; ${PODS} pods in state, log level info`);
  console.log(`daemon node options: ${nodeArgs.join(' ') || '(none)'}; env: ${Object.entries(deployed.env).map(([k, v]) => `${k}=${v}`).join(' ')}${extraDaemonArgs.length > 0 ? `; extra flags: ${extraDaemonArgs.join(' ')}` : ''}`);
  console.log('ratio: daemon req/s / bare node:http req/s serving the same bytes (vs proxy: daemon / naive proxy), measured back to back; CPU: all threads, µs per request\n');
  console.log(`| scenario | ${builds.map((b) => `${b.name}: ratio, median (runs)`).join(' | ')} | goal | ${builds.map((b) => `${b.name}: CPU µs/req, daemon / bare`).join(' | ')} |`);
  console.log(`|---|${builds.map(() => '---|').join('')}---|${builds.map(() => '---|').join('')}`);
  for (const name of [...SCENARIOS.map((s) => s.name), VS_PROXY]) {
    const r = builds.map((b) => {
      const xs = ratios.get(`${b.name}|${name}`)!;
      return `**${median(xs).toFixed(2)}${name === VS_PROXY ? 'x' : ''}** (${xs.map((x) => x.toFixed(2)).join(', ')})`;
    });
    const c = builds.map((b) => {
      const d = cpu.get(`${b.name}|${name}|daemon`);
      return d === undefined ? '' : `${median(d).toFixed(0)} / ${median(cpu.get(`${b.name}|${name}|bare`)!).toFixed(0)}`;
    });
    console.log(`| ${name} | ${r.join(' | ')} | ${GOALS[name]} | ${c.join(' | ')} |`);
  }
  if (unexpected.length > 0) {
    console.log(`\nUNEXPECTED ANSWERS (the figures above do not hold):\n${unexpected.join('\n')}`);
    process.exitCode = 1;
  }
} finally {
  for (const child of spawned) child.kill('SIGTERM');
  other?.remove();
  rmSync(dir, { recursive: true, force: true });
}
