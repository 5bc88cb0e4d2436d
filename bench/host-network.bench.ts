// hostNetwork attribution benchmark, run by hand as root (`node_modules/.bin/node bench/host-network.bench.ts`).
// 1. The added latency of socket-cgroup attribution: one client process, placed in a
//    hostNetwork pod's cgroup, asks the daemon for a (cached) token from 127.0.0.1 (attributed
//    by its socket's cgroup) and from 127.0.0.10 (a pod IP, attributed by source IP), in the
//    same run: new connection per request (every request pays one `ss`), and keep-alive (one
//    `ss` per connection).
// 2. The cost of one lookup: `ss --cgroup` (sock_diag) against a /proc scan (socket inode from
//    /proc/net/tcp, then every /proc/PID/fd for its owner, then /proc/PID/cgroup).
// Bounded by request counts and time caps. Cgroups are created under the v2 root and removed.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, readlinkSync, rmdirSync, existsSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { spawned, startProcess } from './processes.ts';
import { boundPodsYaml } from './bound-pods.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const N_NEW = Number(process.env.BENCH_REQUESTS ?? 2000);
const N_KEEP = N_NEW * 4;
const CAP_MS = 20_000;
// Ports away from the other benches, which may run at the same time on a shared machine.
const BASE_PORT = 30_000 + (process.pid % 5_000) * 4;
const CLIENT = 'aaaaaaaa-0000-4000-8000-000000000001';
const UID = 'b0b0b0b0-0000-4000-8000-000000000001';
const CG_ROOT = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'].find((d) => existsSync(join(d, 'cgroup.controllers')));
if (process.getuid?.() !== 0 || CG_ROOT === undefined) throw new Error('needs root and a cgroup v2 hierarchy');
const parent = `podid-bench-${process.pid}`;
const podDir = `${parent}/kubepods/besteffort/pod${UID}`;
const ctrDir = `${podDir}/c1`;
const made: string[] = [];
for (const d of [parent, `${parent}/kubepods`, `${parent}/kubepods/besteffort`, podDir, ctrDir]) { mkdirSync(join(CG_ROOT, d)); made.push(d); }

const cleanup = (): void => {
  for (const c of spawned) c.kill('SIGKILL');
  // Deepest first; only the client, which has exited by now, was ever moved in.
  for (const d of [...made].reverse()) { try { rmdirSync(join(CG_ROOT, d)); } catch { /* gone, or still emptying */ } }
};
process.on('exit', cleanup);

function start(args: string[], ready: string, inCgroup?: string): Promise<ChildProcess> {
  const argv = [process.execPath, `${root}src/cli.ts`, ...args];
  return inCgroup === undefined ? startProcess(argv[0]!, argv.slice(1), ready, { timeoutMs: 20_000 })
    : startProcess('bash', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', join(CG_ROOT!, inCgroup), ...argv], ready, { timeoutMs: 20_000 });
}

// The load client, run inside the pod's cgroup: prints one JSON line of results.
const CLIENT_SCRIPT = `
const http = require('node:http');
const [port, nNew, nKeep, cap] = process.argv.slice(1).map(Number);
const path = '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net';
function one(agent, from) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = http.get({ host: '127.0.0.1', port, path, agent, localAddress: from, headers: { metadata: 'true' } }, (res) => {
      res.resume(); res.on('end', () => resolve([res.statusCode, performance.now() - t0]));
    });
    req.on('error', reject);
  });
}
async function run(name, from, n, keepAlive) {
  const agent = keepAlive ? new http.Agent({ keepAlive: true, maxSockets: 4 }) : false;
  const lat = []; const statuses = {}; const deadline = Date.now() + cap; let issued = 0;
  const worker = async () => { while (issued < n && Date.now() < deadline) { issued++; const [s, ms] = await one(agent, from); lat.push(ms); statuses[s] = (statuses[s] || 0) + 1; } };
  await Promise.all([worker(), worker(), worker(), worker()]);
  if (agent) agent.destroy();
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  return { name, n: lat.length, p50: q(0.5), p99: q(0.99), statuses };
}
(async () => {
  await run('warm-up', '127.0.0.10', 500, true); await run('warm-up', '127.0.0.1', 200, false);
  const out = [];
  out.push(await run('new connection per request, source IP', '127.0.0.10', nNew, false));
  out.push(await run('new connection per request, socket cgroup', '127.0.0.1', nNew, false));
  out.push(await run('keep-alive, source IP', '127.0.0.10', nKeep, true));
  out.push(await run('keep-alive, socket cgroup', '127.0.0.1', nKeep, true));
  console.log(JSON.stringify(out));
})();
`;

async function lookupCosts(): Promise<{ ss: number; proc: number; samples: number }> {
  // One held connection from a process in the pod's cgroup, as a hostNetwork client's would be.
  const server = createServer(() => {}).listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const port = (server.address() as { port: number }).port;
  const holder = spawn('bash', ['-c', `echo $$ > "$0/cgroup.procs" && exec "$@"`, join(CG_ROOT!, ctrDir), process.execPath, '-e',
    `const s=require('net').connect(${port},'127.0.0.1',()=>console.log(s.localPort));setTimeout(()=>{},60000)`], { stdio: ['ignore', 'pipe', 'ignore'] });
  spawned.push(holder);
  const clientPort = Number(await new Promise<string>((r) => holder.stdout!.once('data', (d: Buffer) => r(d.toString().trim()))));
  const run = promisify(execFile);
  const samples = 100;
  let t0 = performance.now();
  for (let i = 0; i < samples; i++) await run('ss', ['-tHn', '--cgroup', 'state', 'connected', 'src', '127.0.0.1', 'sport', '=', `:${clientPort}`]);
  const ss = (performance.now() - t0) / samples;
  t0 = performance.now();
  for (let i = 0; i < samples; i++) procScan(clientPort);
  const proc = (performance.now() - t0) / samples;
  holder.kill('SIGKILL');
  server.close();
  void connect;
  return { ss, proc, samples };
}

/** The /proc way: socket inode from /proc/net/tcp, its owner by scanning every fd, then its cgroup. */
function procScan(localPort: number): string | undefined {
  const hexPort = localPort.toString(16).toUpperCase().padStart(4, '0');
  const line = readFileSync('/proc/net/tcp', 'utf8').split('\n').find((l) => l.trim().split(/\s+/)[1]?.endsWith(`:${hexPort}`));
  const inode = line?.trim().split(/\s+/)[9];
  if (inode === undefined) return undefined;
  const target = `socket:[${inode}]`;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let fds: string[];
    try { fds = readdirSync(`/proc/${pid}/fd`); } catch { continue; }
    for (const fd of fds) {
      try { if (readlinkSync(`/proc/${pid}/fd/${fd}`) === target) return readFileSync(`/proc/${pid}/cgroup`, 'utf8'); } catch { /* gone */ }
    }
  }
  return undefined;
}

const dir = await mkdtemp(`${tmpdir()}/podid-bench-`);
await writeFile(`${dir}/state.yaml`, boundPodsYaml(CLIENT, [
  { name: 'by-ip', uid: 'u-ip', ip: '127.0.0.10' },
  { name: 'host', uid: UID, ip: '10.0.0.4', hostNetwork: true },
]));
await writeFile(`${dir}/ids.json`, JSON.stringify({ identities: [{ clientID: CLIENT, resourceID: '/r/id', objectID: 'o' }] }));
try {
  await start(['imds-emulator', '--listen', `127.0.0.1:${BASE_PORT}`, '--identities', `${dir}/ids.json`, '--rate-limit=false'], 'listening');
  await start(['--node=bench', '--manage-iptables=false', `--cluster-state=${dir}/state.yaml`, '--metadata-ip=127.0.0.1', `--metadata-port=${BASE_PORT}`,
    '--probe-listen-address=127.0.0.1', '--log-level=info', '--log-format=json', `--nmi-port=${BASE_PORT + 1}`, `--http-probe-port=${BASE_PORT + 2}`, `--prometheus-port=${BASE_PORT + 2}`,
    '--intercept-host-network', `--kubepods-cgroup-parent=${parent}`], 'podid-nmi listening');
  const client = await new Promise<string>((resolve, reject) => {
    execFile('bash', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', join(CG_ROOT, ctrDir), process.execPath, '-e', CLIENT_SCRIPT, String(BASE_PORT + 1), String(N_NEW), String(N_KEEP), String(CAP_MS)],
      { timeout: 5 * CAP_MS + 30_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message} ${stderr}`)) : resolve(stdout)));
  });
  const results = JSON.parse(client.trim().split('\n').at(-1)!) as Array<{ name: string; n: number; p50: number; p99: number; statuses: Record<string, number> }>;
  const costs = await lookupCosts();
  console.log(`node ${process.version}; client in a hostNetwork pod's cgroup; 4 concurrent requests; token cache hit`);
  console.log('| scenario | requests | p50 ms | p99 ms | p50 vs source IP | statuses |');
  console.log('|---|---|---|---|---|---|');
  for (let i = 0; i < results.length; i++) {
    const r = results[i]!;
    const base = results[i - (i % 2)]!;
    console.log(`| ${r.name} | ${r.n} | ${r.p50.toFixed(3)} | ${r.p99.toFixed(3)} | ${(r.p50 / base.p50).toFixed(2)}x | ${JSON.stringify(r.statuses)} |`);
  }
  console.log(`\none lookup (mean of ${costs.samples}): ss --cgroup ${costs.ss.toFixed(2)} ms, /proc scan ${costs.proc.toFixed(2)} ms (${(costs.proc / costs.ss).toFixed(1)}x; ${readdirSync('/proc').filter((p) => /^\d+$/.test(p)).length} processes on this machine)`);
} finally {
  cleanup();
}
