// The daemon's side of a rolling update, in process: listeners shared with SO_REUSEPORT, which
// ports are taken, tcp_migrate_req, and the drain at close (idle keep-alive connections closed,
// in-flight answers with Connection: close, close() always ends).
import t from 'tap';
import { Agent, request } from 'node:http';
import { startStack, TOKEN } from './helpers/stack.ts';
import { eventually } from './helpers/eventually.ts';
import { readFileSync, rmSync } from 'node:fs';
import { enableQueueMigration, listeningPorts, portHasListener } from '../src/listener/handover.ts';
import { readiness } from '../src/probes/readiness.ts';
import { desiredHostRules, excludedPaths } from '../src/iptables/host-rules.ts';
import { livePeerExclusions } from '../src/iptables/host-cgroups.ts';
import { InterceptionRules } from '../src/iptables/index.ts';
import { createNode, netnsUnavailable } from './netns/netns.ts';
import { pino } from 'pino';
import { Registry } from 'prom-client';

const META = { Metadata: 'true' };

function get(port: number, path: string, agent: Agent, localAddress: string): Promise<{ status: number; connection: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent, headers: META, localAddress }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body }));
    });
    req.on('error', reject).end();
  });
}

t.test('close(): stops accepting, answers in-flight and later requests on kept-alive connections with Connection: close, and ends', async (t) => {
  const s = await startStack(t);
  const agents = Array.from({ length: 30 }, () => new Agent({ keepAlive: true, maxSockets: 1 }));
  t.teardown(() => { for (const a of agents) a.destroy(); });
  const first = await Promise.all(agents.map((a) => get(s.port, TOKEN, a, '127.0.0.10')));
  t.ok(first.every((r) => r.status === 200 && r.connection === 'keep-alive'), 'kept alive while serving');
  s.emulator.setFault({ kind: 'slow', delayMs: 400 }, { times: 5 });
  const slow = agents.slice(0, 5).map((a, i) => get(s.port, `${TOKEN.replace('vault.azure.net', `slow-${i}.example`)}`, a, '127.0.0.10'));
  await eventually(() => s.emulator.requests.filter((r) => r.url.includes('slow-')).length >= 1, 'a slow request at IMDS');
  const closing = s.daemon.close();
  const fresh = new Agent({ keepAlive: false });
  await t.rejects(get(s.port, TOKEN, fresh, '127.0.0.10'), { code: 'ECONNREFUSED' }, 'no new connection is accepted');
  const later = await Promise.all(agents.slice(5, 15).map((a) => get(s.port, TOKEN, a, '127.0.0.10')));
  t.same(later.map((a) => [a.status, a.connection]), later.map(() => [200, 'close']),
    'a request on an idle kept-alive connection is answered, and the connection closed after it: no reset to race');
  await closing;
  const answers = await Promise.all(slow);
  t.same(answers.map((a) => a.status), [200, 200, 200, 200, 200], 'in-flight requests finish');
  t.same(answers.map((a) => a.connection), ['close', 'close', 'close', 'close', 'close'], 'and tell their clients to reconnect');
  const held = (): number => agents.reduce((n, a) => n + Object.values(a.freeSockets).flat().length + Object.values(a.sockets).flat().length, 0);
  await eventually(() => held() === 0, 'every kept-alive connection closed');
});

t.test('two daemons share the listener port (SO_REUSEPORT) and both answer', async (t) => {
  const { listen } = await import('../src/listener/listener.ts');
  const one = await listen({ host: '127.0.0.1', port: 0 }, (_req, res) => res.end('one'));
  t.teardown(() => one.close(0));
  const two = await listen({ host: '127.0.0.1', port: one.address.port }, (_req, res) => res.end('two'));
  t.teardown(() => two.close(0));
  t.equal(two.address.port, one.address.port, 'the second binds the port the first holds');
  t.ok(await portHasListener(one.address.port), 'and the port is seen as served');
  const seen = new Set<string>();
  for (let i = 0; i < 200 && seen.size < 2; i++) {
    seen.add(await (await fetch(`http://127.0.0.1:${one.address.port}/`, { headers: { connection: 'close' } })).text());
  }
  t.same([...seen].sort(), ['one', 'two'], 'new connections reach both');
  await one.close(0);
  t.equal(await (await fetch(`http://127.0.0.1:${one.address.port}/`, { headers: { connection: 'close' } })).text(), 'two', 'once one closes, the other takes every connection');
});

t.test('which ports have a listener, from /proc/net/tcp', async (t) => {
  const listing = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 0100007F:0A13 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0',
    '   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1',
    '   2: 00000000000000000000000000000000:2382 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 3 1 0',
  ].join('\n');
  t.same([...listeningPorts(listing)].sort(), [2579, 9090], 'LISTEN sockets only (v4 and v6), not established ones (8080 here)');
  const dir = t.testdir({ tcp: listing, tcp6: '' });
  t.equal(await portHasListener(2579, [`${dir}/tcp`, `${dir}/tcp6`]), true);
  t.equal(await portHasListener(8080, [`${dir}/tcp`, `${dir}/tcp6`]), false, 'a connection on the port is not a listener');
  t.equal(await portHasListener(2579, [`${dir}/missing`]), false, 'unreadable: nobody (listen at once, as before)');
});

t.test('tcp_migrate_req: set to 1 when 0, left when 1, an error when it cannot be written', async (t) => {
  const dir = t.testdir({ off: '0\n', on: '1\n' });
  t.equal(await enableQueueMigration(`${dir}/on`), 'already');
  t.equal(await enableQueueMigration(`${dir}/off`), 'set');
  t.equal(readFileSync(`${dir}/off`, 'utf8'), '1\n', 'written');
  const missing = await enableQueueMigration(`${dir}/nope/tcp_migrate_req`);
  t.ok(missing instanceof Error, 'a kernel without it (or a read-only /proc/sys) is reported, not thrown');
});

t.test('readiness names the wait for the previous daemon', async (t) => {
  const ok = { closing: false, stateReady: true, manageIptables: true, interception: { backend: 'nft' as const, rulesInstalled: true, routeLocalnet: true, localnetGuard: null, hostNetwork: null, lastSuccess: new Date(), lastError: null } };
  t.same(readiness({ ...ok, listening: true }), { ready: true });
  t.same(readiness(ok), { ready: true }, 'undefined: listening');
  t.same(readiness({ ...ok, listening: false }), { ready: false, reasons: ['not listening yet: the previous daemon serves the port until this one has synced'] });
});

t.test('hostNetwork chain: each daemon keeps the other\'s exclusion while its pod lives, in one order', async (t) => {
  const U1 = '11111111_0000_4000_8000_000000000001';
  const U2 = '22222222_0000_4000_8000_000000000002';
  const pod1 = `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U1}.slice`;
  const pod2 = `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U2}.slice`;
  const root = t.testdir({ 'cgroup.controllers': 'cpu memory pids\n', 'kubepods.slice': { 'kubepods-burstable.slice': { [`kubepods-burstable-pod${U1}.slice`]: {}, [`kubepods-burstable-pod${U2}.slice`]: {} } } });
  const opts = { cgroupRoot: root, cgroupParent: '', ownCgroup: '' };
  const target = { metadataIp: '169.254.169.254', metadataPort: 80, targetIp: '127.0.0.1', targetPort: 2579 };
  const chainOf = (own: string, found: string[]) => desiredHostRules(target, { kubepods: ['kubepods.slice'], ownPodPath: own, peerPodPaths: found });
  // The new daemon (pod2) finds the old one's chain; the old one (pod1) then finds the new one's.
  const byNew = chainOf(pod2, await livePeerExclusions(opts, excludedPaths(chainOf(pod1, [])), pod2));
  const byOld = chainOf(pod1, await livePeerExclusions(opts, excludedPaths(byNew), pod1));
  t.same(byOld, byNew, 'both write the same chain: neither rewrites it against the other');
  t.same(excludedPaths(byNew), [pod1, pod2], 'both pods excluded, sorted');
  t.same(excludedPaths(['-A aad-metadata-host -m cgroup --path kubepods -j RETURN']), ['kubepods'], 'a bare (unquoted) path is read too');
  rmSync(`${root}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U1}.slice`, { recursive: true });
  t.same(await livePeerExclusions(opts, excludedPaths(byNew), pod2), [], 'once kubelet removed the old pod\'s cgroup, its exclusion goes');
  t.same(await livePeerExclusions(opts, ['kubepods.slice', 'system.slice', `${pod2}/cri-containerd-x.scope`], undefined), [],
    'only whole pod cgroups are kept: never a kubepods root, a node cgroup or a container');
});

for (const backend of ['nft', 'legacy'] as const) {
  t.test(`two daemons repairing the same drift at once converge, neither fails (${backend})`, { skip: (await netnsUnavailable()) ?? false }, async (t) => {
    const node = await createNode({ t });
    const ipt = (...args: string[]) => node.exec(`iptables-${backend}`, ['-w', '5', '-t', 'nat', ...args], { allowFail: true });
    const log = pino({ level: 'silent' });
    const opts = { metadataIp: '169.254.169.254', metadataPort: 80, targetIp: '127.0.0.1', targetPort: 2579, intervalSec: 3600, conntrackFlush: false, log, commandPrefix: node.prefix, backend };
    const one = await InterceptionRules.start({ ...opts, registry: new Registry() });
    const two = await InterceptionRules.start({ ...opts, registry: new Registry() });
    t.teardown(() => Promise.all([one.stop(), two.stop()]));
    const failures: string[] = [];
    for (let round = 0; round < 6; round++) {
      // Drift both see: the jump deleted, or the chain flushed.
      if (round % 2 === 0) await ipt('-D', 'PREROUTING', '-j', 'aad-metadata');
      else await ipt('-F', 'aad-metadata');
      const results = await Promise.allSettled([one.check(), two.check()]);
      for (const r of results) if (r.status === 'rejected') failures.push(String(r.reason));
      const prerouting = (await ipt('-S', 'PREROUTING')).stdout.split('\n').filter((l) => l.startsWith('-A'));
      t.same(prerouting, ['-A PREROUTING -j aad-metadata'], `round ${round}: one jump, first`);
    }
    t.same(failures, [], 'no check failed');
    t.ok(one.status.rulesInstalled && two.status.rulesInstalled, 'both report the rules installed (both stay ready)');
  });
}

t.test('the metrics port is not shared: the next daemon takes it over once the previous one lets go', async (t) => {
  const { startProbeServer } = await import('../src/probes/probe-server.ts');
  const registry = new Registry();
  const old = await startProbeServer({ host: '127.0.0.1', port: 0, registry, exclusive: true });
  const events: string[] = [];
  const port = old.address.port;
  const next = await startProbeServer({
    host: '127.0.0.1', port, registry,
    exclusive: true, whenHeld: { onWaiting: () => events.push('waiting'), onBound: () => events.push('bound') },
  });
  t.teardown(() => next.close());
  t.same(events, ['waiting'], 'the port is held: it waits instead of failing');
  t.equal(next.address.port, port, 'and names the port it waits for');
  await old.close();
  await eventually(() => events.includes('bound'), 'the port taken over');
  t.equal((await fetch(`http://127.0.0.1:${port}/metrics`)).status, 200, 'the next daemon answers scrapes');
  const closing = await startProbeServer({ host: '127.0.0.1', port, registry, exclusive: true, whenHeld: { onWaiting: () => events.push('third waiting'), onBound: () => events.push('third bound') } });
  await closing.close();
  t.notOk(events.includes('third bound'), 'closed while waiting: it stops trying');
});

t.test('a holder that does not share the port (a version before SO_REUSEPORT): the daemon waits for it, then serves', async (t) => {
  const { createServer } = await import('node:net');
  const holder = createServer((s) => s.destroy());
  await new Promise<void>((r) => holder.listen({ port: 0, host: '127.0.0.1' }, r));
  const port = (holder.address() as { port: number }).port;
  const probeHolder = createServer((s) => s.destroy());
  await new Promise<void>((r) => probeHolder.listen({ port: 0, host: '127.0.0.1' }, r));
  const probePort = (probeHolder.address() as { port: number }).port;
  const starting = startStack(t, { flags: [`--nmi-port=${port}`, `--http-probe-port=${probePort}`] });
  // Without the wait the start would fail at once with EADDRINUSE.
  const early = await Promise.race([starting.then(() => 'started', (err: unknown) => `failed: ${String(err)}`), new Promise((r) => setTimeout(() => r('waiting'), 1_000))]);
  t.equal(early, 'waiting', 'it waits while the port is held');
  await new Promise<void>((r) => holder.close(() => r()));
  await new Promise<void>((r) => probeHolder.close(() => r()));
  const s = await starting;
  t.equal(s.port, port, 'then listens on the port');
  t.equal((await s.ask(TOKEN, { from: '127.0.0.10', headers: META })).status, 200, 'and answers');
  t.ok(s.logs.some((l) => l.includes('the metadata port is held by a process that does not share it')), 'said why it waited');
  t.ok(s.logs.some((l) => l.includes('probe port taken over')), 'the probe port too');
});
