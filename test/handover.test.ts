// The daemon's side of a rolling update, in process: listeners shared with SO_REUSEPORT, which
// ports are taken, tcp_migrate_req, and the drain at close (idle keep-alive connections closed,
// in-flight answers with Connection: close, close() always ends).
import t from 'tap';
import { Agent, request } from 'node:http';
import { startStack, TOKEN } from './helpers/stack.ts';
import { eventually } from './helpers/eventually.ts';

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
