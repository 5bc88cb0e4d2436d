// Sockets under attack (stalls, reconnects, pipelining, the probe port), one hostile pod beside a victim: for each attack, the victim (shop/orders at 127.0.0.10, bound
// to `reader`) keeps getting its token, memory stays under the DaemonSet's 512 MiB limit, and
// the attacker gets a clear refusal. Every flood is bounded in count and time.
import t from 'tap';
import { ask } from './helpers/http.ts';
import { MEMORY_LIMIT_MIB, metric, UNLABELLED, VICTIM, victimServed } from './helpers/hostile.ts';
import { openRaw, parseAnswers, rssMiB, tokenRequest, waitUntil, type RawConnection } from './helpers/raw.ts';
import { assertRefused } from './helpers/refused.ts';
import { startStack } from './helpers/stack.ts';

t.test('stalled sockets: over its share refused at once, the rest reaped after the header timeout even unread; the victim is served', async (t) => {
  const s = await startStack(t, { flags: ['--max-connections=64', '--max-connections-per-pod=8'] });
  const shares = s.daemon.listener.connections;
  const partial = 'GET /metadata/identity/oauth2/token HTTP/1.1\r\nHost: 169.254.169.254\r\n';
  // Eight sockets that send half a request and never read: the attacker's whole share.
  for (let i = 0; i < 8; i++) await openRaw(t, s.port, UNLABELLED, partial, { read: false });
  await waitUntil(() => shares.held('pod:u-11') === 8, 2_000, 'eight sockets held');
  const over: RawConnection[] = [];
  for (let i = 0; i < 4; i++) over.push(await openRaw(t, s.port, UNLABELLED, partial));
  await Promise.all(over.map((c) => c.closed));
  for (const c of over) {
    const [answer] = parseAnswers(c.received());
    assertRefused(t, { ...answer!, headers: answer!.headers }, 'connections_over_share', 'a connection over the pod\'s share');
  }
  t.equal(shares.held('pod:u-11'), 8, 'refused sockets hold nothing');
  await victimServed(t, s, 5, 'attacker at its share');

  // A socket that reads gets the 408 before the socket goes; those that never read go all the same.
  const reading = await openRaw(t, s.port, '127.0.0.13', partial);
  await reading.closed;
  t.match(reading.received(), /^HTTP\/1\.1 408 /, 'a timed-out request gets 408 and its socket is closed');
  await waitUntil(() => shares.held('pod:u-11') === 0, 9_000, 'unread stalled sockets reaped');
  t.pass('stalled sockets that never read were destroyed, not half-closed');

  // Reconnecting every socket the daemon closes: the attacker never holds more than its share.
  const until = Date.now() + 2_500;
  let reconnects = 0;
  const keepStalling = async (): Promise<void> => {
    while (Date.now() < until && reconnects < 400) {
      reconnects++;
      const c = await openRaw(t, s.port, UNLABELLED, partial).catch(() => undefined);
      if (c !== undefined) await Promise.race([c.closed, new Promise((r) => setTimeout(r, until - Date.now()))]);
    }
  };
  const attackers = Array.from({ length: 12 }, keepStalling);
  let peak = 0;
  const sampler = setInterval(() => { peak = Math.max(peak, shares.held('pod:u-11')); }, 10);
  await victimServed(t, s, 10, 'attacker reconnecting');
  await Promise.all(attackers);
  clearInterval(sampler);
  t.ok(peak <= 8, `the reconnecting attacker held at most its share (peak ${peak})`);

  // Strangers (addresses no pod holds) share a quarter of --max-connections between them.
  const strangers: RawConnection[] = [];
  for (let i = 0; i < 20; i++) strangers.push(await openRaw(t, s.port, `127.0.0.${100 + i}`, partial, { read: false }));
  const strangersHeld = (): number => {
    let n = 0;
    for (let i = 0; i < 20; i++) n += shares.held(`ip:127.0.0.${100 + i}`);
    return n;
  };
  await waitUntil(() => strangersHeld() === 16, 2_000, 'strangers at their share');
  await new Promise((r) => setTimeout(r, 100));
  t.equal(strangersHeld(), 16, 'strangers together hold 64 / 4 connections, no more');
  await victimServed(t, s, 3, 'strangers at their share');
  t.ok(rssMiB() < MEMORY_LIMIT_MIB, 'memory under the DaemonSet limit');
  t.ok(metric(await s.metrics(), /^podid_nmi_requests_total\{route="connection",decision="refused",status="429",reason="connections_over_share"\}/) >= 8, 'refused connections are counted');
});

t.test('a body that never arrives: the socket is reaped at the request timeout; the victim is served', async (t) => {
  const s = await startStack(t, { flags: ['--max-connections-per-pod=4'] });
  const shares = s.daemon.listener.connections;
  const post = 'POST /metadata/scheduledevents?api-version=2020-07-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\ncontent-length: 1000\r\n\r\n{"Start';
  for (let i = 0; i < 4; i++) await openRaw(t, s.port, UNLABELLED, post, { read: false });
  await waitUntil(() => shares.held('pod:u-11') === 4, 2_000, 'four sockets held');
  await victimServed(t, s, 5, 'bodies stalled');
  await waitUntil(() => shares.held('pod:u-11') === 0, 14_000, 'stalled bodies reaped');
  t.equal(s.emulator.requests.filter((r) => r.url.startsWith('/metadata/scheduledevents')).length, 0, 'nothing half-received went upstream');
});

t.test('pipelining: refused in the bytes, before node:http parses the burst; keep-alive still works', async (t) => {
  const s = await startStack(t, { flags: ['--max-connections-per-pod=8', '--pod-wait-ms=1000'] });
  const one = await openRaw(t, s.port, UNLABELLED, tokenRequest().repeat(3));
  await one.closed;
  const answers = parseAnswers(one.received());
  t.equal(answers.length, 1, 'one answer, then the connection closes');
  assertRefused(t, answers[0]!, 'pipelining_refused', 'a burst of three');
  const cooled = await openRaw(t, s.port, UNLABELLED, tokenRequest());
  await cooled.closed;
  assertRefused(t, parseAnswers(cooled.received())[0]!, 'pipelining_refused', 'the same pod\'s next connection, refused at accept while it cools down');

  // Sequential requests on one keep-alive connection are not pipelining.
  const keepAlive = await openRaw(t, s.port, VICTIM, tokenRequest());
  await waitUntil(() => parseAnswers(keepAlive.received()).length === 1, 5_000, 'first answer');
  keepAlive.socket.write(tokenRequest());
  await waitUntil(() => parseAnswers(keepAlive.received()).length === 2, 5_000, 'second answer');
  t.same(parseAnswers(keepAlive.received()).map((a) => a.status), [200, 200], 'two requests, one after the other, on one connection');
  keepAlive.socket.destroy();

  // A second request sent while the first is still in flight (parked for its pod): the first is
  // answered, its connection closes, and the second is never parsed.
  const early = await openRaw(t, s.port, '127.0.0.70', tokenRequest());
  await new Promise((r) => setTimeout(r, 100));
  early.socket.write(tokenRequest());
  await early.closed;
  const earlyAnswers = parseAnswers(early.received());
  t.equal(earlyAnswers.length, 1);
  assertRefused(t, earlyAnswers[0]!, 'pod_unknown', 'the request in flight is answered');
  t.equal(earlyAnswers[0]!.headers.connection, 'close', 'and closes the connection');

  const chunked = await openRaw(t, s.port, VICTIM, 'POST /metadata/scheduledevents?api-version=2020-07-01 HTTP/1.1\r\nHost: x\r\nMetadata: true\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
  await chunked.closed;
  assertRefused(t, parseAnswers(chunked.received())[0]!, 'body_length_required', 'a chunked body');
  t.equal(s.emulator.requests.filter((r) => r.url.startsWith('/metadata/scheduledevents')).length, 0, 'nothing went upstream');

  // 16 addresses x 8 connections x 400 pipelined requests, never read.
  let peak = rssMiB();
  const sampler = setInterval(() => { peak = Math.max(peak, rssMiB()); }, 50);
  const burst = tokenRequest().repeat(400);
  const floods: Array<Promise<RawConnection>> = [];
  for (let a = 0; a < 16; a++) {
    const from = a === 0 ? UNLABELLED : `127.0.0.${130 + a}`;
    for (let c = 0; c < 8; c++) floods.push(openRaw(t, s.port, from, burst, { read: false }));
  }
  await Promise.all(floods);
  await victimServed(t, s, 10, 'pipelining flood');
  await waitUntil(async () => metric(await s.metrics(), /reason="pipelining_refused"/) >= 128, 10_000, 'every flooding connection refused');
  clearInterval(sampler);
  const m = await s.metrics();
  const handled = metric(m, /^podid_nmi_requests_total\{/);
  t.ok(handled <= 128 + 20, `at most one request per connection reached the handler (${handled} of ${128 * 400} sent)`);
  t.ok(peak < MEMORY_LIMIT_MIB, `peak RSS ${peak.toFixed(0)} MiB under the DaemonSet limit`);
});

t.test('the probe server: its own limits; stalled reconnecting sockets do not starve /healthz', async (t) => {
  const s = await startStack(t);
  const probe = s.daemon.probes.address.port;
  const until = Date.now() + 3_000;
  let opened = 0;
  let refused = 0;
  const stall = async (from: string): Promise<void> => {
    while (Date.now() < until && opened < 1_000) {
      opened++;
      const c = await openRaw(t, probe, from, 'GET /healthz HTTP/1.1\r\n').catch(() => undefined);
      if (c === undefined) continue;
      await Promise.race([c.closed, new Promise((r) => setTimeout(r, Math.max(0, until - Date.now())))]);
      if (/^HTTP\/1\.1 429 /.test(c.received())) refused++;
    }
  };
  // 12 sockets from one pod (over its 8), and 9 from each of 16 more addresses: without a
  // reserve they would fill all 128. Addresses other than the node's share 64, and the kubelet
  // calls from the node's own address.
  const attackers = [
    ...Array.from({ length: 12 }, () => stall(UNLABELLED)),
    ...Array.from({ length: 144 }, (_, i) => stall(`127.0.0.${140 + (i % 16)}`)),
  ];
  await new Promise((r) => setTimeout(r, 200));
  for (let i = 0; i < 10; i++) {
    const a = await ask(probe, '/healthz', { from: '127.0.0.1', timeoutMs: 3_000 });
    t.equal(a.status, 200, `kubelet's /healthz ${i + 1}`);
  }
  await Promise.all(attackers);
  t.ok(refused >= 36, `sockets over their shares were refused at once (${refused})`);
  const scrape = await openRaw(t, probe, '127.0.0.1', 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitUntil(() => parseAnswers(scrape.received()).length === 1, 5_000, 'first answer');
  scrape.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitUntil(() => parseAnswers(scrape.received()).length === 2, 5_000, 'second request on the same connection');
  t.same(parseAnswers(scrape.received()).map((a) => a.status), [200, 200], 'keep-alive works on the probe port (Prometheus reuses its connections)');
  scrape.socket.destroy();
  const stalled = await openRaw(t, probe, '127.0.0.1', 'GET /healthz HTTP/1.1\r\n');
  await stalled.closed;
  t.match(stalled.received(), /^HTTP\/1\.1 408 /, 'a stalled probe socket gets 408 and is closed');
});

