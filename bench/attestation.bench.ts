// Socket attestation benchmark, run by hand as root (`node_modules/.bin/node bench/attestation.bench.ts`).
// The added latency of --attest-pod-sockets, with attestation on and off in the same run: a
// node network namespace (IMDS emulator on its 169.254.169.254:80, two daemons) and one pod
// namespace, wired by veth. The pod has two addresses, each DNATed (inside the node namespace
// only) to one daemon: from .10 to the daemon with --attest-pod-sockets, from .11 to the one
// without; the client alternates between them in the same process, so both see the same load.
// The pod is busy: another of its processes holds 10,000 ESTABLISHED connections, so its
// namespace's TCP table has over 10,000 rows to search. Both processes are in the pod's cgroup.
// Measured: a first request (a new connection per request: every one is attested) and a
// keep-alive request (attested once per connection), p50 and p99; then the cost of one table
// search alone. Bounded by request counts and time caps; namespaces and cgroups are removed.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileHolds, socketNeedles } from '../src/pods/proc-net-tcp.ts';
import { createNode } from '../test/netns/netns.ts';
import { cpuSeconds, spawned, startProcess } from './processes.ts';
import { boundPodsYaml } from './bound-pods.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const N_NEW = Number(process.env.BENCH_REQUESTS ?? 1000);
const N_KEEP = N_NEW * 4;
const BUSY = Number(process.env.BENCH_BUSY_SOCKETS ?? 10_000);
const CAP_MS = Number(process.env.BENCH_CAP_MS ?? 30_000);
const CLIENT = 'aaaaaaaa-0000-4000-8000-000000000001';
const UID = { on: 'b0b0b0b0-1111-4000-8000-000000000001', off: 'b0b0b0b0-1111-4000-8000-000000000002' };
const IP = { gateway: '10.252.0.1', on: '10.252.0.10', off: '10.252.0.11' };
const PORT = { on: 2579, off: 2580, sink: 9000 };
const CG_ROOT = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'].find((d) => existsSync(join(d, 'cgroup.controllers')));
if (process.getuid?.() !== 0 || CG_ROOT === undefined) throw new Error('needs root and a cgroup v2 hierarchy');

const parent = `podid-bench-${process.pid}`;
const podDir = `${parent}/kubepods/besteffort/pod${UID.on}`;
const ctrDir = `${podDir}/c1`;
const made: string[] = [];
for (const d of [parent, `${parent}/kubepods`, `${parent}/kubepods/besteffort`, podDir, ctrDir]) { mkdirSync(join(CG_ROOT, d)); made.push(d); }
const node = await createNode({ gatewayIp: IP.gateway });
const cleanup = async (): Promise<void> => {
  for (const c of spawned) c.kill('SIGKILL');
  await node.destroy();
  for (const d of [...made].reverse()) {
    for (let i = 0; i < 50; i++) { try { rmdirSync(join(CG_ROOT, d)); break; } catch { await new Promise((r) => setTimeout(r, 20)); } }
  }
};

const enter = (ns: string): string[] => ['nsenter', `--net=/var/run/netns/${ns}`];
/** A process in network namespace `ns` and, when given, in cgroup `cgroup` (nsenter keeps /sys). */
const inPod = (ns: string, cgroup: string | undefined, argv: string[]): [string, string[]] =>
  cgroup === undefined ? [enter(ns)[0]!, [...enter(ns).slice(1), ...argv]]
    : ['bash', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', join(CG_ROOT!, cgroup), ...enter(ns), ...argv]];

// Holds BUSY connections to the node's sink, prints the first one's local port when all are up.
const HOLDER = `
const net = require('node:net');
const [n, host, port] = [Number(process.argv[1]), process.argv[2], Number(process.argv[3])];
let open = 0; const socks = [];
function one() { return new Promise((res, rej) => { const s = net.connect({ host, port, localAddress: '${IP.on}' }, () => { open++; res(); }); s.on('error', rej); socks.push(s); }); }
(async () => { for (let i = 0; i < n; i += 200) await Promise.all(Array.from({ length: Math.min(200, n - i) }, one)); console.log('held ' + open + ' ' + socks[0].localPort); setTimeout(() => {}, 600000); })();
`;

// The client: alternates attestation on (.10) and off (.11), prints one JSON line.
const CLIENT_SCRIPT = `
const http = require('node:http');
const [nNew, nKeep, cap] = process.argv.slice(1).map(Number);
const path = '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net';
const FROM = { on: '${IP.on}', off: '${IP.off}' };
function one(agent, from) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = http.get({ host: '169.254.169.254', port: 80, path, agent, localAddress: from, headers: { metadata: 'true' } }, (res) => {
      let body = ''; res.setEncoding('utf8'); res.on('data', (d) => { body += d; });
      res.on('end', () => { if (res.statusCode !== 200 && !seen[res.statusCode]) { seen[res.statusCode] = true; console.error(from, res.statusCode, body.slice(0, 200)); } resolve([res.statusCode, performance.now() - t0]); });
    });
    req.on('error', reject);
  });
}
const seen = {};
async function run(n, keepAlive) {
  const agents = keepAlive ? { on: new http.Agent({ keepAlive: true, maxSockets: 1 }), off: new http.Agent({ keepAlive: true, maxSockets: 1 }) } : { on: false, off: false };
  const lat = { on: [], off: [] }; const statuses = { on: {}, off: {} }; const deadline = Date.now() + cap;
  for (let i = 0; i < n && Date.now() < deadline; i++) {
    for (const k of i % 2 === 0 ? ['on', 'off'] : ['off', 'on']) {
      const [s, ms] = await one(agents[k], FROM[k]); lat[k].push(ms); statuses[k][s] = (statuses[k][s] || 0) + 1;
    }
  }
  for (const a of Object.values(agents)) if (a) a.destroy();
  const q = (l, p) => l[Math.min(l.length - 1, Math.floor(p * l.length))];
  const out = {};
  for (const k of ['on', 'off']) { const l = lat[k].sort((a, b) => a - b); out[k] = { n: l.length, p50: q(l, 0.5), p99: q(l, 0.99), statuses: statuses[k] }; }
  return out;
}
(async () => {
  await run(200, true); await run(100, false);
  console.log(JSON.stringify({ first: await run(nNew, false), keepAlive: await run(nKeep, true) }));
})();
`;

const dir = await mkdtemp(`${tmpdir()}/podid-bench-`);
await writeFile(`${dir}/state.yaml`, boundPodsYaml(CLIENT, [
  { name: 'busy', uid: UID.on, ip: IP.on },
  { name: 'busy-baseline', uid: UID.off, ip: IP.off },
]));
try {
  // The node: the emulator on 169.254.169.254:80, the pod's two addresses DNATed to the two daemons.
  await node.addLoopbackAddress('169.254.169.254/32');
  await node.sysctl('net.ipv4.conf.all.route_localnet', '1');
  const pod = await node.addPod('busy', IP.on);
  await pod.exec('ip', ['addr', 'add', `${IP.off}/32`, 'dev', 'eth0']);
  await node.exec('ip', ['route', 'add', `${IP.off}/32`, 'dev', pod.hostVeth]);
  const iptables = existsSync('/usr/sbin/iptables-nft') ? 'iptables-nft' : 'iptables';
  for (const [from, port] of [[IP.on, PORT.on], [IP.off, PORT.off]] as const) {
    await node.exec(iptables, ['-w', '5', '-t', 'nat', '-A', 'PREROUTING', '-s', `${from}/32`, '-d', '169.254.169.254/32', '-p', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', `127.0.0.1:${port}`]);
  }
  const cli = (args: string[]): [string, string[]] => inPod(node.ns, undefined, [process.execPath, `${root}src/cli.ts`, ...args]);
  // The emulator on the node's metadata address, where the daemons' upstream requests go (not NATed: OUTPUT).
  await startProcess(...inPod(node.ns, undefined, [process.execPath, '--input-type=module', '-e',
    `import { startImdsEmulator } from '${root}src/emulator/imds-emulator.ts';
     await startImdsEmulator({ host: '169.254.169.254', port: 80, allowNonLoopback: true, rateLimit: false, identities: [{ clientID: '${CLIENT}', resourceID: '/r/id', objectID: 'o' }] });
     console.log('listening');`]), 'listening');
  const daemon = (port: number, probe: number, extra: string[]): string[] => ['--node=bench', '--manage-iptables=false', '--operation-mode=managed', `--cluster-state=${dir}/state.yaml`,
    '--probe-listen-address=127.0.0.1', '--log-level=info', '--log-format=json', `--nmi-port=${port}`, `--http-probe-port=${probe}`, `--prometheus-port=${probe}`, ...extra];
  const withAttestation = await startProcess(...cli(daemon(PORT.on, 18085, ['--attest-pod-sockets', `--cgroup-root=${CG_ROOT}`, `--kubepods-cgroup-parent=${parent}`])), 'podid-nmi listening', { timeoutMs: 60_000 });
  const without = await startProcess(...cli(daemon(PORT.off, 18086, [])), 'podid-nmi listening', { timeoutMs: 60_000 });
  // The sink the busy pod's connections go to, a node process, and the holder in the pod.
  await startProcess(...inPod(node.ns, undefined, [process.execPath, '-e',
    `const s=require('net').createServer(()=>{}).listen(${PORT.sink},'${IP.gateway}',2048,()=>console.log('sink up'));`]), 'sink up');
  const holder = await startProcess(...inPod(pod.ns, ctrDir, [process.execPath, '-e', HOLDER, String(BUSY), IP.gateway, String(PORT.sink)]), 'held', { timeoutMs: 120_000 });
  const holderPid = holder.pid!;
  // CPU (user + system, the kernel's table walk included) of each daemon over the client's run: less
  // dependent on the machine's load than latency. Every connection is attested once.
  const cpu0 = { on: cpuSeconds(withAttestation.pid!), off: cpuSeconds(without.pid!) };
  const client = await new Promise<string>((resolve, reject) => {
    const [cmd, args] = inPod(pod.ns, ctrDir, [process.execPath, '-e', CLIENT_SCRIPT, String(N_NEW), String(N_KEEP), String(CAP_MS)]);
    execFile(cmd, args, { timeout: 4 * CAP_MS + 30_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => { if (stderr !== "") console.error(stderr.trim()); return err ? reject(new Error(`${err.message} ${stderr}`)) : resolve(stdout); });
  });
  const cpu = { on: cpuSeconds(withAttestation.pid!) - cpu0.on, off: cpuSeconds(without.pid!) - cpu0.off };
  type Side = { n: number; p50: number; p99: number; statuses: Record<string, number> };
  const results = JSON.parse(client.trim().split('\n').at(-1)!) as Record<'first' | 'keepAlive', Record<'on' | 'off', Side>>;
  // One table search alone: a hit (a held connection) and a miss (a spoofer's: the whole table).
  const table = `/proc/${holderPid}/net/tcp`;
  const rows = await new Promise<number>((resolve) => execFile('wc', ['-l', table], (_e, out) => resolve(Number(out.trim().split(' ')[0]) - 1)));
  const time = async (needle: Buffer, n = 200): Promise<{ mean: number; p99: number }> => {
    const l: number[] = [];
    for (let i = 0; i < n; i++) { const t0 = performance.now(); await fileHolds(table, needle); l.push(performance.now() - t0); }
    l.sort((a, b) => a - b);
    return { mean: l.reduce((a, b) => a + b, 0) / n, p99: l[Math.floor(0.99 * n)]! };
  };
  const miss = await time(socketNeedles({ ip: IP.on, port: 1 }, { ip: '169.254.169.254', port: 80 })!.tcp!);
  console.log(`node ${process.version}; busy pod: ${rows} rows in its namespace's TCP table; one request at a time; token cache hit`);
  console.log('| request | attestation | requests | p50 ms | p99 ms | added p50 ms | added p99 ms | statuses |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const kind of ['first', 'keepAlive'] as const) {
    const { on, off } = results[kind];
    const label = kind === 'first' ? 'first (new connection)' : 'keep-alive';
    console.log(`| ${label} | off | ${off.n} | ${off.p50.toFixed(3)} | ${off.p99.toFixed(3)} | | | ${JSON.stringify(off.statuses)} |`);
    console.log(`| ${label} | on | ${on.n} | ${on.p50.toFixed(3)} | ${on.p99.toFixed(3)} | ${(on.p50 - off.p50).toFixed(3)} | ${(on.p99 - off.p99).toFixed(3)} | ${JSON.stringify(on.statuses)} |`);
  }
  // Connections the client opened to each daemon: warm-up (one keep-alive, 100 new), first requests, one keep-alive.
  const connections = 1 + 100 + results.first.on.n + 1;
  console.log(`\ndaemon CPU over the run: ${cpu.on.toFixed(2)} s with attestation, ${cpu.off.toFixed(2)} s without, for ${connections} connections each: ${((cpu.on - cpu.off) / connections * 1000).toFixed(2)} ms of CPU per attested connection`);
  console.log(`one search of the whole table (a miss, as for a spoofer), mean of 200: ${miss.mean.toFixed(2)} ms, p99 ${miss.p99.toFixed(2)} ms`);
} finally {
  await cleanup();
}
