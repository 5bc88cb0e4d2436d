// The at-once lane's own work per request, in process: the daemon is started here as the image
// runs it (a --cluster-state file, an IMDS emulator on loopback), and its lane is handed the same
// head bytes again and again, as a pod's kept-alive connection does, on a stand-in socket whose
// writes go nowhere. Left out is what the kernel and node's streams cost per read and write
// (bench/request-path.bench.ts measures the whole path). Bounded by count. One command:
//   node_modules/.bin/node bench/at-once.bench.ts
import { get } from 'node:http';
import type { Socket } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Writable } from 'node:stream';
import { toDaemonConfig } from '../src/config/daemon-config.ts';
import { parseFlags } from '../src/config/flags.ts';
import { startDaemon } from '../src/daemon.ts';
import { startImdsEmulator } from '../src/emulator/imds-emulator.ts';
import type { LastHead } from '../src/listener/answer-at-once.ts';
import { createLogger } from '../src/observability/logger.ts';
import { boundPodsYaml } from './bound-pods.ts';

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 300_000);
const ROUNDS = 5;
const CLIENT = 'aaaaaaaa-0000-4000-8000-000000000001';
const BOUND = '127.0.1.2';
const UNBOUND = '127.0.1.3';
const TOKEN = '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net';
const head = (target: string, headers: string): string => `GET ${target} HTTP/1.1\r\nhost: 169.254.169.254\r\nconnection: keep-alive\r\n${headers}\r\n`;
const SCENARIOS = [
  { name: 'SDK probe (no Metadata header)', from: BOUND, text: head('/metadata/identity/oauth2/token', ''), status: 400 },
  { name: 'refusal (unbound pod)', from: UNBOUND, text: head(TOKEN, 'metadata: true\r\n'), status: 400 },
  { name: 'token, cache hit', from: BOUND, text: head(TOKEN, 'metadata: true\r\n'), status: 200 },
];

const dir = mkdtempSync(`${tmpdir()}/podid-at-once-`);
const emulator = await startImdsEmulator({ identities: [{ clientID: CLIENT, resourceID: '/r/id', objectID: 'o' }], rateLimit: false });
try {
  writeFileSync(`${dir}/state.yaml`, `${boundPodsYaml(CLIENT, [{ name: 'p0', uid: 'u0', ip: BOUND }])}---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: bench, uid: u1, labels: {aadpodidbinding: unbound}}
spec: {nodeName: bench}
status: {phase: Running, podIPs: [{ip: ${UNBOUND}}]}
`);
  // Never the machine's own iptables; log lines at info, as deployed, to a sink that drops them.
  const parsed = parseFlags([`--cluster-state=${dir}/state.yaml`, '--node=bench', '--manage-iptables=false', '--operation-mode=managed',
    '--nmi-port=0', '--http-probe-port=0', '--prometheus-port=0', '--probe-listen-address=127.0.0.1', '--metadata-ip=127.0.0.1',
    `--metadata-port=${emulator.port}`, '--log-format=json', '--log-level=info']);
  const sink = new Writable({ write(_chunk, _enc, done) { done(); } });
  const daemon = await startDaemon(toDaemonConfig(parsed.values, {}, parsed.given), createLogger('json', 'info', sink), { defaultMetrics: false });
  const lane = daemon.listener.lane!;
  const results: string[] = [];
  for (const s of SCENARIOS) {
    let written = '';
    let writes = 0;
    const socket = {
      remoteAddress: s.from, remotePort: 40000, writable: true, destroyed: false,
      write(b: Buffer) { writes++; if (writes === 1) written = b.toString('latin1', 0, 12); return true; },
      destroySoon() {}, once() { return this; }, setTimeout() { return this; },
    } as unknown as Socket;
    const last: LastHead = { text: '', head: undefined };
    // The token's first request is a miss: node:http's path fetches it, over a real connection.
    if (s.status === 200) {
      await new Promise<void>((resolve, reject) => {
        get({ host: '127.0.0.1', port: daemon.listener.address.port, path: TOKEN, headers: { metadata: 'true' }, localAddress: s.from }, (res) => {
          res.resume();
          res.on('end', resolve);
        }).on('error', reject);
      });
    }
    const bytes = Buffer.from(s.text, 'latin1');
    const perRound: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const started = process.hrtime.bigint();
      for (let i = 0; i < REQUESTS; i++) {
        // What the gate does with a read before the lane: find the head's end, read it as text.
        const end = bytes.indexOf('\r\n\r\n');
        if (!lane.answer(socket, bytes.toString('latin1', 0, end + 4), 0, last)) throw new Error(`${s.name}: the lane did not answer`);
      }
      perRound.push(Number(process.hrtime.bigint() - started) / REQUESTS);
    }
    if (!written.startsWith(`HTTP/1.1 ${s.status}`)) throw new Error(`${s.name}: answered ${written}`);
    perRound.sort((a, b) => a - b);
    results.push(`| ${s.name} | ${perRound[ROUNDS >> 1]!.toFixed(0)} | ${perRound.map((x) => x.toFixed(0)).join(', ')} |`);
  }
  console.log(`\nnode ${process.version}; ${ROUNDS} rounds of ${REQUESTS} requests per scenario, one pod's kept-alive connection, log level info\n`);
  console.log('| scenario | ns per request, median | rounds |\n|---|---|---|');
  for (const r of results) console.log(r);
  await daemon.close();
} finally {
  await emulator.close();
  rmSync(dir, { recursive: true, force: true });
}
