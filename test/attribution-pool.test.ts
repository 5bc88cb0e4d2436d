// The listener's side of attribution at accept (socket-guard.ts), without cgroups: a stand-in
// attribution that resolves when the test says. A connection waits unread in the pool, then is
// charged to the pod it is attributed to; the pool is bounded and only pooled connections are
// looked up; what a held client sends before attribution is kept, within a bound.
import t, { type Test } from 'tap';
import { listen } from '../src/listener/listener.ts';
import type { Caller } from '../src/pods/caller.ts';
import { openRaw, parseAnswers, tokenRequest, waitUntil } from './helpers/raw.ts';
import { assertRefused } from './helpers/refused.ts';

async function serve(t: Test, pool: number) {
  const pending: Array<(c: Caller | undefined) => void> = [];
  let lookups = 0;
  let handled = 0;
  const l = await listen({
    host: '127.0.0.1', port: 0, connectionsPerCaller: 1, strangerConnections: 8, attributionPool: pool,
    callerOf: (ip) => ({ key: `ip:${ip}`, known: false }),
    attribute: () => () => { lookups++; return new Promise((resolve) => pending.push(resolve)); },
  }, (_req, res) => { handled++; res.end('served'); });
  t.teardown(() => l.close(0));
  return { l, pending, lookups: () => lookups, handled: () => handled };
}

t.test('held unread until attributed, then charged to its pod and served', async (t) => {
  const s = await serve(t, 4);
  const c = await openRaw(t, s.l.address.port, '127.0.0.1', tokenRequest());
  await waitUntil(() => s.pending.length === 1, 2_000, 'the lookup started');
  await new Promise((r) => setTimeout(r, 100));
  t.equal(s.handled(), 0, 'nothing parsed before attribution');
  t.equal(s.l.connections.held('ip:127.0.0.1'), 0, 'the address is not charged while the pool holds it');
  s.pending[0]!({ key: 'pod:u-1', known: true });
  await waitUntil(() => s.handled() === 1, 2_000, 'served after attribution');
  t.equal(s.l.connections.held('pod:u-1'), 1, 'charged to the pod');
  await waitUntil(() => c.received().includes('served'), 2_000, 'the answer');

  // The pod's share is one connection: its second is refused once attributed.
  const over = await openRaw(t, s.l.address.port, '127.0.0.1', tokenRequest());
  await waitUntil(() => s.pending.length === 2, 2_000, 'the second lookup');
  s.pending[1]!({ key: 'pod:u-1', known: true });
  await over.closed;
  assertRefused(t, parseAnswers(over.received())[0]!, 'connections_over_share', 'the pod over its share');
  t.equal(s.handled(), 1, 'the refused connection was never parsed');

  // No pod: the address's own share.
  const node = await openRaw(t, s.l.address.port, '127.0.0.1', tokenRequest());
  await waitUntil(() => s.pending.length === 3, 2_000, 'the third lookup');
  s.pending[2]!(undefined);
  await waitUntil(() => node.received().includes('served'), 2_000, 'served on the address\'s share');
  t.equal(s.l.connections.held('ip:127.0.0.1'), 1);
});

t.test('the pool is bounded and only what it took is looked up', async (t) => {
  const s = await serve(t, 2);
  await openRaw(t, s.l.address.port, '127.0.0.1');
  await openRaw(t, s.l.address.port, '127.0.0.1');
  await waitUntil(() => s.pending.length === 2, 2_000, 'two in the pool');
  const refused = await openRaw(t, s.l.address.port, '127.0.0.1', tokenRequest());
  await refused.closed;
  assertRefused(t, parseAnswers(refused.received())[0]!, 'connections_over_share', 'the pool full');
  t.equal(s.lookups(), 2, 'the refused connection cost no lookup');
  for (const resolve of s.pending) resolve({ key: `pod:u-${Math.random()}`, known: true });
  const after = await openRaw(t, s.l.address.port, '127.0.0.1', tokenRequest());
  await waitUntil(() => s.pending.length === 3, 2_000, 'room again once attributed');
  s.pending[2]!({ key: 'pod:u-9', known: true });
  await waitUntil(() => after.received().includes('served'), 2_000, 'served');
});

t.test('a held client that sends more than a request can hold is dropped', async (t) => {
  const s = await serve(t, 2);
  const c = await openRaw(t, s.l.address.port, '127.0.0.1');
  await waitUntil(() => s.pending.length === 1, 2_000, 'held');
  c.socket.write(Buffer.alloc(100 * 1024, 'a'));
  await c.closed;
  t.pass('the socket was destroyed');
  s.pending[0]!({ key: 'pod:u-1', known: true });
  await new Promise((r) => setTimeout(r, 50));
  t.equal(s.handled(), 0);
  t.equal(s.l.connections.held('pod:u-1'), 0, 'a connection gone before attribution is charged to no one');
});
