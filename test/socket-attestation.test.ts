// Socket attestation's parts: the /proc/net/tcp row search (against the kernel's own tables for
// real loopback sockets, and against generated tables as a property), and the attestation
// itself on a fake node: a temp dir standing for /proc and one for the cgroup hierarchy.
import fc from 'fast-check';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { podCgroupOf, podCgroupPaths } from '../src/pods/kubelet-cgroup.ts';
import { fileHolds, ipv6Bytes, socketNeedles, type Endpoint } from '../src/pods/proc-net-tcp.ts';
import { SocketAttestation, visibilityProblem } from '../src/pods/socket-attestation.ts';
import { CallerRoom } from '../src/pods/caller-room.ts';
import { pod } from './helpers/objects.ts';
import type { ClusterState } from '../src/cluster/view.ts';

const META: Endpoint = { ip: '169.254.169.254', port: 80 };

// ---- the row search ----

/** A row as the kernel prints it (net/ipv4/tcp_ipv4.c get_tcp4_sock): padded to 149 characters. */
function row4(sl: number, l: Endpoint, r: Endpoint, state: number): string {
  const a = (ip: string) => ip.split('.').map(Number).reverse().map((b) => b.toString(16).toUpperCase().padStart(2, '0')).join('');
  const p = (n: number) => n.toString(16).toUpperCase().padStart(4, '0');
  const s = `${String(sl).padStart(4)}: ${a(l.ip)}:${p(l.port)} ${a(r.ip)}:${p(r.port)} ${state.toString(16).toUpperCase().padStart(2, '0')} 00000000:00000000 00:00000000 00000000     0        0 ${100000 + sl} 1 0000000000000000 20 4 30 10 -1`;
  return `${s.padEnd(149)}\n`;
}
const HEADER4 = `${'  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode'.padEnd(149)}\n`;

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'podid-attest-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('needles match the kernel\'s own rows for real loopback sockets (tcp, tcp6, IPv4-mapped)', async (t) => {
  const cases: Array<{ listen: string; dial: string; table: 'tcp' | 'tcp6' }> = [
    { listen: '127.0.0.1', dial: '127.0.0.1', table: 'tcp' },
    { listen: '::1', dial: '::1', table: 'tcp6' },
    { listen: '::', dial: '::ffff:127.0.0.1', table: 'tcp6' },
  ];
  for (const c of cases) {
    const server = createServer(() => {});
    await new Promise<void>((resolve) => server.listen(0, c.listen, resolve));
    const port = (server.address() as { port: number }).port;
    const client = connect({ host: c.dial, port });
    await new Promise<void>((resolve) => client.once('connect', resolve));
    const local = { ip: client.localAddress!.replace(/^::ffff:/, ''), port: client.localPort! };
    const remote = { ip: c.dial.replace(/^::ffff:/, ''), port };
    const n = socketNeedles(local, remote)!;
    const needle = c.table === 'tcp' ? n.tcp! : n.tcp6!;
    t.ok(await fileHolds(`/proc/self/net/${c.table}`, needle), `${c.dial}: the client's row is found in ${c.table}`);
    const wrongPort = socketNeedles(local, { ...remote, port: port === 65535 ? 1 : port + 1 })!;
    t.notOk(await fileHolds(`/proc/self/net/${c.table}`, c.table === 'tcp' ? wrongPort.tcp! : wrongPort.tcp6!), `${c.dial}: not for another remote port`);
    client.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

t.test('needles: byte order, families, bad input', async (t) => {
  const n = socketNeedles({ ip: '10.0.0.1', port: 0x1234 }, META, true)!;
  t.equal(n.tcp!.toString('latin1'), ' 0100000A:1234 FEA9FEA9:0050 01 ', 'little-endian words, hex ports, ESTABLISHED');
  t.equal(n.tcp6!.toString('latin1'), ' 0000000000000000FFFF00000100000A:1234 0000000000000000FFFF0000FEA9FEA9:0050 01 ', 'IPv4-mapped in tcp6');
  t.equal(socketNeedles({ ip: '10.0.0.1', port: 0x1234 }, META, false)!.tcp!.toString('latin1'), ' 0A000001:1234 A9FEA9FE:0050 01 ', 'big-endian words');
  const v6 = socketNeedles({ ip: 'fd00::1', port: 80 }, { ip: 'fd00::254', port: 80 }, true)!;
  t.equal(v6.tcp, undefined, 'no IPv4 row for IPv6 ends');
  t.equal(v6.tcp6!.toString('latin1'), ' 000000FD000000000000000001000000:0050 000000FD000000000000000054020000:0050 01 ');
  t.equal(socketNeedles({ ip: '10.0.0.1', port: 1 }, { ip: 'fd00::1', port: 80 }), undefined, 'mixed families: no socket');
  t.equal(socketNeedles({ ip: '10.0.0.1', port: -1 }, META), undefined, 'no port');
  t.equal(socketNeedles({ ip: '', port: 1 }, META), undefined, 'no address');
  t.equal(socketNeedles({ ip: '10.0.0.1', port: 65536 }, META), undefined, 'port out of range');
});

t.test('ipv6Bytes reads every spelling of an address back to its bytes (property)', async () => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
    const groups = [];
    for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
    const full = groups.join(':');
    const canonical = new URL(`http://[${full}]/`).hostname.slice(1, -1);
    for (const text of [full, canonical]) {
      const back = ipv6Bytes(text);
      if (back === undefined || back.some((b, i) => b !== bytes[i])) throw new Error(`${text}: ${JSON.stringify(back)}`);
    }
  }), { numRuns: 300 });
  for (const bad of ['1::2::3', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', 'g::1', '::12345', '::1.2.3']) {
    if (ipv6Bytes(bad) !== undefined) throw new Error(`${bad} accepted`);
  }
  if (ipv6Bytes('::ffff:10.0.0.1')?.slice(10).join('.') !== '255.255.10.0.0.1') throw new Error('dotted quad');
});

t.test('fileHolds finds an ESTABLISHED row from L to R wherever it lies, and nothing else (property)', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'tcp');
  const ip = fc.tuple(fc.constantFrom(10, 169), fc.nat(1), fc.nat(2), fc.nat(3)).map((b) => b.join('.'));
  const endpoint = fc.record({ ip, port: fc.constantFrom(80, 443, 2579, 40000, 40001) });
  const socket = fc.record({ l: endpoint, r: endpoint, state: fc.constantFrom(1, 1, 6, 8, 10) });
  await fc.assert(fc.asyncProperty(fc.array(socket, { maxLength: 2000 }), endpoint, endpoint, async (rows, l, r) => {
    writeFileSync(file, HEADER4 + rows.map((s, i) => row4(i, s.l, s.r, s.state)).join(''));
    const expected = rows.some((s) => s.state === 1 && s.l.ip === l.ip && s.l.port === l.port && s.r.ip === r.ip && s.r.port === r.port);
    return (await fileHolds(file, socketNeedles(l, r, true)!.tcp!)) === expected;
  }), { numRuns: 60 });
  // A row across the 64 KiB read boundary: every offset of the needle around it.
  const l = { ip: '10.1.2.3', port: 40000 };
  for (let shift = 0; shift < 160; shift += 7) {
    const filler = 'x'.repeat(64 * 1024 - 20 + shift);
    writeFileSync(file, `${filler}\n${row4(1, l, META, 1)}`);
    t.ok(await fileHolds(file, socketNeedles(l, META, true)!.tcp!), `found across the boundary (shift ${shift})`);
  }
  await t.rejects(fileHolds(join(dir, 'gone'), socketNeedles(l, META, true)!.tcp!), { code: 'ENOENT' }, 'a vanished process is an error, not "no socket"');
});

// ---- attestation on a fake node ----

const UID = {
  victim: '11111111-2222-4333-8444-555555555555',
  attacker: '66666666-7777-4888-8999-aaaaaaaaaaaa',
};

class FakeNode {
  readonly proc: string;
  readonly cgroups: string;
  constructor(dir: string) {
    this.proc = join(dir, 'proc');
    this.cgroups = join(dir, 'cgroup');
    mkdirSync(this.proc);
    mkdirSync(this.cgroups);
  }

  /** A process `pid` in network namespace `netns`, whose TCP table holds `sockets`. */
  process(pid: number, netns: number, sockets: Array<{ l: Endpoint; r: Endpoint; state?: number }>, tcp6 = ''): void {
    const dir = join(this.proc, String(pid));
    mkdirSync(join(dir, 'ns'), { recursive: true });
    mkdirSync(join(dir, 'net'));
    symlinkSync(`net:[${netns}]`, join(dir, 'ns', 'net'));
    writeFileSync(join(dir, 'net', 'tcp'), HEADER4 + sockets.map((s, i) => row4(i, s.l, s.r, s.state ?? 1)).join(''));
    writeFileSync(join(dir, 'net', 'tcp6'), tcp6);
  }

  /** A cgroup (relative path) listing `pids` in its cgroup.procs. */
  cgroup(path: string, pids: number[]): void {
    mkdirSync(join(this.cgroups, path), { recursive: true });
    writeFileSync(join(this.cgroups, path, 'cgroup.procs'), pids.map((p) => `${p}\n`).join(''));
  }

  attestation(waitMs = 0, parent = ''): SocketAttestation {
    return new SocketAttestation({ procRoot: this.proc, cgroupRoot: this.cgroups, cgroupParent: parent, metadata: META, waitMs });
  }
}

const VICTIM = { ip: '10.244.0.7', port: 41000 };
const NEVER = new AbortController().signal;

t.test('podCgroupPaths lists every layout kubelet may use, each read back to the pod', async (t) => {
  const paths = podCgroupPaths(UID.victim, 'kubelet');
  t.equal(paths.length, 6, 'systemd and cgroupfs, guaranteed, burstable and besteffort');
  for (const p of paths) t.equal(podCgroupOf(`${p}/container`, 'kubelet')?.uid, UID.victim, p);
  t.same(podCgroupPaths('../../etc', ''), [], 'not a UID: no path');
  t.same(podCgroupPaths(`${UID.victim}/..`, ''), [], 'no traversal');
});

t.test('attested only by a socket from the connection\'s source to the metadata address, ESTABLISHED, in the pod\'s own namespaces', async (t) => {
  for (const layout of podCgroupPaths(UID.victim, 'kp')) {
    const node = new FakeNode(tempDir(t));
    node.cgroup(layout, []);
    node.cgroup(`${layout}/pause`, []);
    node.cgroup(`${layout}/app/nested`, [101]);
    node.process(101, 1, [{ l: VICTIM, r: META }]);
    t.equal(await node.attestation(0, 'kp').check(VICTIM, UID.victim, NEVER), 'attested', `${layout}: found through a child cgroup`);
  }
  const node = new FakeNode(tempDir(t));
  const cg = podCgroupPaths(UID.victim)[0]!;
  node.cgroup(`${cg}/app`, [200, 201]);
  node.process(200, 7, [
    { l: VICTIM, r: META, state: 8 }, // CLOSE_WAIT: what a spoofer could reuse
    { l: { ...VICTIM, port: VICTIM.port + 1 }, r: META },
    { l: VICTIM, r: { ip: '10.0.0.9', port: 80 } },
    { l: VICTIM, r: { ...META, port: 8080 } },
  ]);
  node.process(201, 8, []);
  const a = node.attestation();
  t.equal(await a.check(VICTIM, UID.victim, NEVER), 'no_socket', 'not CLOSE_WAIT, another port, another remote');
  node.process(202, 9, [{ l: VICTIM, r: META }]);
  node.cgroup(`${podCgroupPaths(UID.attacker)[0]}/app`, [202]);
  t.equal(await a.check(VICTIM, UID.victim, NEVER), 'no_socket', 'the socket in another pod\'s namespace does not count for the victim');
  t.equal(await a.check(VICTIM, UID.attacker, NEVER), 'attested', 'it counts for the pod that holds it');
  node.cgroup(`${cg}/sidecar`, [203]);
  node.process(203, 10, [], ` 0: 0000000000000000FFFF00000700F40A:A028 0000000000000000FFFF0000FEA9FEA9:0050 01 00000000:00000000\n`);
  t.equal(await a.check(VICTIM, UID.victim, NEVER), 'attested', 'a dual-stack socket in another namespace of the pod (tcp6, IPv4-mapped)');
});

t.test('processes that vanish, PIDs of another namespace, and no process at all', async (t) => {
  const node = new FakeNode(tempDir(t));
  const cg = podCgroupPaths(UID.victim)[3]!;
  node.cgroup(`${cg}/c1`, [300, 301]);
  node.process(301, 1, [{ l: VICTIM, r: META }]);
  t.equal(await node.attestation().check(VICTIM, UID.victim, NEVER), 'attested', 'pid 300 is gone: 301 answers');
  const other = new FakeNode(tempDir(t));
  other.cgroup(`${cg}/c1`, [0, 0]);
  t.equal(await other.attestation().check(VICTIM, UID.victim, NEVER), 'no_process', 'cgroup.procs read from another PID namespace: 0s, nothing to read');
  t.equal(await other.attestation().check(VICTIM, UID.attacker, NEVER), 'no_process', 'no pod cgroup');
});

t.test('a pod with no process yet is looked for again within the wait, then refused', async (t) => {
  const node = new FakeNode(tempDir(t));
  const cg = podCgroupPaths(UID.victim)[1]!;
  const a = node.attestation(30_000);
  const pending = a.check(VICTIM, UID.victim, NEVER);
  node.process(400, 1, [{ l: VICTIM, r: META }]);
  node.cgroup(`${cg}/c`, [400]);
  t.equal(await pending, 'attested', 'found once its process appears');
  const stop = new AbortController();
  const waiting = node.attestation(30_000).check(VICTIM, UID.attacker, stop.signal);
  stop.abort();
  t.equal(await waiting, 'no_process', 'the wait ends with the request');
  t.equal(await node.attestation(50).check(VICTIM, UID.attacker, NEVER), 'no_process', 'and with --pod-wait-ms');
});

t.test('one verdict per connection; a missing process is not remembered', async (t) => {
  const node = new FakeNode(tempDir(t));
  const cg = podCgroupPaths(UID.victim)[2]!;
  node.cgroup(`${cg}/c`, [500]);
  node.process(500, 1, [{ l: VICTIM, r: META }]);
  const a = node.attestation();
  const conn = { remoteAddress: `::ffff:${VICTIM.ip}`, remotePort: VICTIM.port } as Socket;
  const victim = pod({ name: 'victim', uid: UID.victim, ips: [VICTIM.ip] });
  t.equal(await a.attest(conn, victim, NEVER), 'attested');
  writeFileSync(join(node.proc, '500', 'net', 'tcp'), HEADER4);
  t.equal(await a.attest(conn, victim, NEVER), 'attested', 'kept for the connection (IPv4-mapped peer address folded)');
  const next = { remoteAddress: VICTIM.ip, remotePort: VICTIM.port } as Socket;
  t.equal(await a.attest(next, victim, NEVER), 'no_socket', 'a new connection is attested afresh (its table no longer holds the row)');
  const stranger = pod({ name: 'attacker', uid: UID.attacker, ips: [VICTIM.ip] });
  t.equal(await a.attest(conn, stranger, NEVER), 'no_process', 'another pod on the same connection is asked again');
  node.cgroup(`${podCgroupPaths(UID.attacker)[2]}/c`, [501]);
  node.process(501, 2, [{ l: VICTIM, r: META }]);
  t.equal(await a.attest(conn, stranger, NEVER), 'attested', 'no_process was not kept');
});

t.test('visibility: each missing piece is named', async (t) => {
  const dir = tempDir(t);
  const proc = join(dir, 'proc');
  const cgroups = join(dir, 'cgroup');
  mkdirSync(join(proc, '4242', 'net'), { recursive: true });
  symlinkSync('4242', join(proc, 'self'));
  const o = { procRoot: proc, cgroupRoot: cgroups, cgroupParent: 'kp' };
  t.match(await visibilityProblem(o), /cannot read .*--proc-root/, 'no TCP table');
  writeFileSync(join(proc, '4242', 'net', 'tcp'), HEADER4);
  writeFileSync(join(proc, '4242', 'cgroup'), '0::/system.slice/nmi.scope\n');
  t.match(await visibilityProblem(o), /system.slice\/nmi.scope does not exist: --cgroup-root is not the node's cgroup v2 hierarchy/);
  mkdirSync(join(cgroups, 'system.slice', 'nmi.scope'), { recursive: true });
  writeFileSync(join(cgroups, 'system.slice', 'nmi.scope', 'cgroup.procs'), '1\n');
  t.match(await visibilityProblem(o), /needs the node's PID namespace \(hostPID: true\)/, 'cgroup.procs numbers it otherwise');
  writeFileSync(join(cgroups, 'system.slice', 'nmi.scope', 'cgroup.procs'), '17\n4242\n');
  t.match(await visibilityProblem(o), /no kubelet pod cgroups \(kp\/kubepods.slice or kp\/kubepods\)/);
  mkdirSync(join(cgroups, 'kp', 'kubepods'), { recursive: true });
  t.equal(await visibilityProblem(o), undefined, 'all visible');
  t.equal(await visibilityProblem({ procRoot: '/proc', cgroupRoot: join(dir, 'none'), cgroupParent: '' }) !== undefined, true, 'the real /proc with a wrong cgroup root');
});

t.test('the caller room: attested callers are named so, others refused caller_not_attested, hostNetwork pods untouched', async (t) => {
  const node = new FakeNode(tempDir(t));
  node.cgroup(`${podCgroupPaths(UID.victim)[0]}/c`, [600]);
  node.process(600, 1, [{ l: VICTIM, r: META }]);
  const victim = pod({ name: 'victim', uid: UID.victim, ips: [VICTIM.ip] });
  const hostPod = pod({ name: 'host', uid: UID.attacker, ips: ['10.0.0.4'], hostNetwork: true });
  const byIp = new Map([[VICTIM.ip, [victim]], ['10.0.0.4', [hostPod]]]);
  const state = {
    isReady: () => true, podsAt: (ip: string) => byIp.get(ip) ?? [], podByUid: () => undefined,
    waitForIp: async () => false, whenReady: async () => {},
  } as unknown as ClusterState;
  const room = new CallerRoom({ state, nodeName: '', sockets: undefined, cgroupParent: '', selfUid: undefined, podWaitMs: 0, attestation: node.attestation() });
  const conn = (ip: string, port: number) => ({ remoteAddress: ip, remotePort: port }) as Socket;
  t.same(await room.identify(conn(VICTIM.ip, VICTIM.port), NEVER, false), { kind: 'pod', pod: victim, via: 'socket_attestation' });
  t.same(await room.identify(conn(VICTIM.ip, VICTIM.port + 1), NEVER, false), { kind: 'refuse', reason: 'caller_not_attested', via: 'socket_attestation' });
  t.same(await room.identify(conn('10.0.0.4', 5000), NEVER, false), { kind: 'pod', pod: hostPod, via: 'source_ip' }, 'a hostNetwork pod found by address is not attested here');
  t.same(await room.identify(conn('10.9.9.9', 5000), NEVER, false), { kind: 'refuse', reason: 'pod_unknown', via: 'source_ip' }, 'no pod: as before');
});

t.test('the daemon with --attest-pod-sockets on a host it cannot see: says so at start and in /readyz, and refuses rather than falls back', async (t) => {
  const { startStack, TOKEN } = await import('./helpers/stack.ts');
  const { META: HEADERS, ask } = await import('./helpers/http.ts');
  const { assertRefused } = await import('./helpers/refused.ts');
  const { NOT_INTERCEPTING } = await import('../src/probes/readiness.ts');
  const empty = tempDir(t);
  const s = await startStack(t, { flags: ['--attest-pod-sockets', `--cgroup-root=${empty}`] });
  const r = s.daemon.readiness();
  t.equal(r.ready, false);
  const reasons = r.ready ? [] : r.reasons;
  t.equal(reasons[0], NOT_INTERCEPTING);
  t.match(reasons[1], /^socket attestation unavailable: .* does not exist: --cgroup-root is not the node's cgroup v2 hierarchy/, 'named in /readyz');
  t.match((await ask(s.daemon.probes.address.port, '/readyz')).body, /socket attestation unavailable/);
  t.ok(s.logs.some((l) => l.includes('socket attestation unavailable') && l.includes('pod-network callers are refused (caller_not_attested)')), 'said at start');
  const a = await s.ask(TOKEN, { from: '127.0.0.10', headers: HEADERS });
  assertRefused(t, a, 'caller_not_attested', 'a bound pod that cannot be attested');
  t.equal(s.emulator.requests.length, 0, 'nothing reached IMDS');
  t.match(await s.metrics(), /reason="caller_not_attested"[^\n]* 1\n/, 'counted');
  const line = s.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.reason === 'caller_not_attested');
  t.match(line, { via: 'socket_attestation', ip: '127.0.0.10', status: 403, decision: 'refused' }, 'logged with the address it claimed');
});
