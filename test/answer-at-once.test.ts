// The at-once lane (src/listener/answer-at-once.ts): what it reads of a head agrees with
// node:http's own parser, what it writes is node:http's bytes, and the connections it answers on
// keep node:http's timeouts, limits and drain. The daemon-level comparison (same answers, same
// reports with and without the lane) is in test/answer-at-once-daemon.test.ts.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import fc from 'fast-check';
import t, { type Test } from 'tap';
import { RawAnswer, keepAliveLine } from '../src/answer/raw-answer.ts';
import { listen, type Listener } from '../src/listener/listener.ts';
import { MAX_LANE_HEADERS, readHead } from '../src/listener/request-head.ts';
import { openRaw, parseAnswers } from './helpers/raw.ts';
import { eventually } from './helpers/eventually.ts';

/** What node:http made of a head: null when it refused it. */
interface NodeView { method: string; url: string; metadata: unknown; forwarded: boolean; keepAlive: boolean }

async function nodeServer(t: Test): Promise<{ port: number; seen: NodeView[] }> {
  const seen: NodeView[] = [];
  const server = createServer({ requireHostHeader: false }, (req: IncomingMessage, res: ServerResponse) => {
    seen.push({
      method: req.method ?? '', url: req.url ?? '', metadata: req.headers.metadata,
      forwarded: req.headers['x-forwarded-for'] !== undefined || req.headers.forwarded !== undefined,
      keepAlive: res.shouldKeepAlive,
    });
    res.end('ok');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => { server.closeAllConnections(); server.close(); });
  return { port: (server.address() as AddressInfo).port, seen };
}

/** Sends one head on a fresh connection; resolves with what came back (or '' when node closed without answering). */
function exchange(port: number, head: string): Promise<string> {
  return new Promise((resolve) => {
    const s: Socket = connect({ port, host: '127.0.0.1' });
    let got = '';
    const timer = setTimeout(() => s.destroy(), 2_000);
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('\r\n\r\n')) s.destroy();
    });
    s.on('error', () => {});
    s.on('close', () => { clearTimeout(timer); resolve(got); });
    s.write(Buffer.from(head, 'latin1'));
  });
}

// Mostly what clients send, with a part in ten that node:http or the lane treats otherwise.
const often = <T>(good: readonly T[], odd: readonly T[]): fc.Arbitrary<T> =>
  fc.oneof({ arbitrary: fc.constantFrom(...good), weight: 9 }, { arbitrary: fc.constantFrom(...odd), weight: 1 });
const header = fc.record({
  name: often(['Metadata', 'metadata', 'METADATA', 'MetaData', 'X-Forwarded-For', 'Forwarded', 'Connection', 'connection', 'Host', 'User-Agent', 'x'],
    ['Content-Length', 'Transfer-Encoding', 'Upgrade', 'Expect', 'Bad Name', 'Meta-data', 'Metadata ']),
  value: often(['true', 'True', 'TRUE', ' true ', '\ttrue', 'false', 'tru', 'close', 'keep-alive', 'Keep-Alive', 'Close', '', 'a b'],
    ['0', '5', 'chunked', 'a\tb', '\u00fc', 'keep-alive, close', 'h2c', '100-continue', 'x\x01y', 'a\x7fb']),
  sep: often([':', ': ', ':  ', ':\t'], [' : ', ' :']),
  fold: often([false], [true]),
});
const head = fc.record({
  method: often(['GET'], ['get', 'POST', 'HEAD', 'GET ']),
  target: often(['/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x', '/metadata/instance', '/', '/x?y=1#f', '/%2e%2e/x'],
    ['/a b', '/\u00e4', 'http://x/y', '*', '/\x01', '']),
  version: often(['HTTP/1.1'], ['HTTP/1.0', 'HTTP/2.0', 'http/1.1', 'HTTP/1.1 ']),
  headers: fc.oneof({ arbitrary: fc.array(header, { maxLength: 5 }), weight: 19 },
    { arbitrary: fc.array(header, { minLength: MAX_LANE_HEADERS - 1, maxLength: MAX_LANE_HEADERS + 2 }), weight: 1 }),
}).map((h) => `${h.method} ${h.target} ${h.version}\r\n${h.headers.map((x) => `${x.fold ? ' ' : ''}${x.name}${x.sep}${x.value}\r\n`).join('')}\r\n`);

t.test('the lane reads a head only when node:http reads it the same way', async (t) => {
  const node = await nodeServer(t);
  let accepted = 0;
  let runs = 0;
  await fc.assert(fc.asyncProperty(head, async (text) => {
    runs++;
    const read = readHead(text);
    if (read === undefined) return true;
    accepted++;
    const before = node.seen.length;
    const answer = await exchange(node.port, text);
    if (!answer.startsWith('HTTP/1.1 200') || node.seen.length !== before + 1) throw new Error(`node:http refused what the lane read: ${JSON.stringify(text)} -> ${JSON.stringify(answer)}`);
    const n = node.seen.at(-1)!;
    const lane = {
      method: read.method, url: read.url, metadata: read.headers.metadata,
      forwarded: read.headers['x-forwarded-for'] !== undefined || read.headers.forwarded !== undefined, keepAlive: !read.close,
    };
    if (JSON.stringify(lane) !== JSON.stringify(n)) throw new Error(`${JSON.stringify(text)}: lane ${JSON.stringify(lane)}, node:http ${JSON.stringify(n)}`);
    return true;
  }), { numRuns: 400 });
  // Not vacuous: the generator reaches the heads the lane takes, and many it leaves to node:http.
  t.ok(accepted >= runs / 10, `the lane read ${accepted} of ${runs} heads`);
  t.ok(accepted <= runs * 0.9, 'and left the rest to node:http');
});

t.test('heads every SDK sends are read; each unusual part sends the head to node:http', async (t) => {
  const base = 'GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=x HTTP/1.1\r\n';
  t.same(readHead(`${base}Host: 169.254.169.254\r\nMetadata: true\r\nUser-Agent: azsdk-python\r\nConnection: keep-alive\r\n\r\n`),
    { method: 'GET', url: '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x', headers: { metadata: 'true' }, close: false });
  t.same(readHead(`${base}metadata:\t True \r\nconnection: Close\r\nx-forwarded-for: 10.0.0.1\r\n\r\n`)?.headers, { metadata: 'True', 'x-forwarded-for': '10.0.0.1' }, 'values trimmed as node:http trims them');
  t.equal(readHead(`${base}connection: close\r\n\r\n`)?.close, true, 'Connection: close is kept, for the answer to close');
  t.same(readHead(`${base}\r\n`)?.headers, {}, 'no headers at all');
  for (const [why, text] of [
    ['a second Metadata header (node:http joins them)', `${base}Metadata: true\r\nmetadata: true\r\n\r\n`],
    ['a body', `${base}Content-Length: 0\r\n\r\n`],
    ['chunked', `${base}Transfer-Encoding: chunked\r\n\r\n`],
    ['an upgrade', `${base}Upgrade: h2c\r\n\r\n`],
    ['Expect', `${base}Expect: 100-continue\r\n\r\n`],
    ['another Connection token', `${base}Connection: keep-alive, Upgrade\r\n\r\n`],
    ['two Connection headers', `${base}Connection: close\r\nConnection: keep-alive\r\n\r\n`],
    ['HTTP/1.0', 'GET / HTTP/1.0\r\n\r\n'],
    ['POST', 'POST / HTTP/1.1\r\n\r\n'],
    ['an absolute-form target', 'GET http://169.254.169.254/ HTTP/1.1\r\n\r\n'],
    ['obs-fold', `${base}Metadata: true\r\n continued\r\n\r\n`],
    ['obs-text in a value', `${base}X-A: \u00fc\r\n\r\n`],
    ['a control character in a value', `${base}X-A: a\x01b\r\n\r\n`],
    ['a space in a header name', `${base}Meta data: true\r\n\r\n`],
    ['more headers than the lane reads', `${base}${'X-A: 1\r\n'.repeat(MAX_LANE_HEADERS + 1)}\r\n`],
  ] as const) t.equal(readHead(text), undefined, why);
  t.ok(readHead(`${base}${'X-A: 1\r\n'.repeat(MAX_LANE_HEADERS)}\r\n`) !== undefined, 'up to the cap is read');
});

t.test('a raw answer is node:http\'s bytes for the same writeHead and end', async (t) => {
  const cases: Array<{ status: number; headers: Record<string, string | number>; body: string; close: boolean }> = [
    { status: 200, headers: { 'content-type': 'application/json; charset=utf-8', 'content-length': 17 }, body: '{"access_token":1}'.slice(0, 17), close: false },
    { status: 400, headers: { 'content-type': 'application/json; charset=utf-8', 'content-length': 2, 'x-podid-nmi-reason': 'binding_missing' }, body: '{}', close: false },
    { status: 405, headers: { 'content-type': 'application/json', 'content-length': 2, allow: 'GET, POST' }, body: '{}', close: true },
    { status: 429, headers: { 'content-length': 0, 'retry-after': '3' }, body: '', close: false },
    { status: 503, headers: { 'content-length': 1 }, body: 'x', close: true },
  ];
  const server = createServer({ requireHostHeader: false, keepAliveTimeout: 5_000 }, (req, res) => {
    const c = cases[Number(req.url!.slice(1))]!;
    res.writeHead(c.status, c.headers).end(Buffer.from(c.body));
  });
  server.maxRequestsPerSocket = 1000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => { server.closeAllConnections(); server.close(); });
  const port = (server.address() as AddressInfo).port;
  const noDate = (s: string): string => s.replace(/\r\nDate: [^\r]+\r\n/, '\r\nDate: -\r\n');
  for (const [i, c] of cases.entries()) {
    const theirs = await exchange(port, `GET /${i} HTTP/1.1\r\n${c.close ? 'Connection: close\r\n' : ''}\r\n`);
    let ours = '';
    const fake = { writable: true, destroyed: false, write(b: Buffer) { ours += b.toString('latin1'); return true; }, destroySoon() {}, once() {} };
    const answer = new RawAnswer(fake as unknown as Socket, keepAliveLine(5_000, 1000), c.close);
    answer.writeHead(c.status, c.headers);
    answer.end(Buffer.from(c.body));
    t.equal(noDate(ours), noDate(theirs), `${c.status}${c.close ? ', closing' : ''}`);
    t.ok(answer.headersSent && answer.writableFinished, 'written');
  }
});

/** A listener whose lane answers GET /lane at once and leaves everything else to `slow`. */
async function laneListener(t: Test, o: { headersTimeoutMs?: number; requestTimeoutMs?: number; keepAliveTimeoutMs?: number; slowMs?: number } = {}): Promise<{ l: Listener; lane: () => number; slow: () => number }> {
  let lane = 0;
  let slow = 0;
  const l = await listen({
    host: '127.0.0.1', port: 0, headersTimeoutMs: o.headersTimeoutMs ?? 5_000, requestTimeoutMs: o.requestTimeoutMs ?? 10_000, keepAliveTimeoutMs: o.keepAliveTimeoutMs ?? 5_000,
    answerAtOnce: (head, answer) => {
      if (head.url !== '/lane') return false;
      lane++;
      answer.writeHead(200, { 'content-length': 4 });
      answer.end(Buffer.from('lane'));
      return true;
    },
  }, (req, res) => {
    slow++;
    const body = req.method === 'POST' ? 'body' : 'node';
    setTimeout(() => res.writeHead(200, { 'content-length': 4 }).end(body), o.slowMs ?? 0);
  });
  t.teardown(() => l.close(0));
  return { l, lane: () => lane, slow: () => slow };
}

const GET = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`;

t.test('a connection the lane answers on lives as long as it is used, past node:http\'s header and request timeouts', async (t) => {
  const { l, lane } = await laneListener(t, { headersTimeoutMs: 200, requestTimeoutMs: 300, keepAliveTimeoutMs: 2_000 });
  const c = await openRaw(t, l.address.port, '127.0.0.2');
  // Fifteen requests, 100 ms apart: a second and a half, seven header timeouts, at least one
  // pass of node:http's connection check (every second).
  for (let i = 1; i <= 15; i++) {
    c.socket.write(GET('/lane'));
    await eventually(() => parseAnswers(c.received()).length === i, `answer ${i}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(lane(), 15, 'all answered by the lane');
  t.notOk(c.socket.destroyed, 'the connection is still open');
  t.ok(parseAnswers(c.received()).every((a) => a.status === 200 && a.headers.connection === 'keep-alive' && a.headers['keep-alive'] === 'timeout=2, max=1000'));
});

t.test('an idle connection the lane answered on goes after the keep-alive timeout', async (t) => {
  const { l } = await laneListener(t, { keepAliveTimeoutMs: 300 });
  const c = await openRaw(t, l.address.port, '127.0.0.2', GET('/lane'));
  await eventually(() => parseAnswers(c.received()).length === 1, 'answered');
  await c.closed;
  t.pass('closed by the daemon');
});

t.test('after a lane answer, a head that never ends gets 408 and its connection goes, as node:http would do', async (t) => {
  const { l, slow } = await laneListener(t, { headersTimeoutMs: 300, requestTimeoutMs: 600, keepAliveTimeoutMs: 5_000 });
  const c = await openRaw(t, l.address.port, '127.0.0.2', GET('/lane'));
  await eventually(() => parseAnswers(c.received()).length === 1, 'answered by the lane');
  c.socket.write('GET /slow HTTP/1.1\r\nX-A: 1\r\n');
  await c.closed;
  t.match(c.received(), /HTTP\/1\.1 408 Request Timeout/, '408');
  t.equal(slow(), 0, 'the handler never saw it');
});

t.test('after a lane answer, a body that never ends gets 408 at the request timeout', async (t) => {
  const { l, slow } = await laneListener(t, { headersTimeoutMs: 300, requestTimeoutMs: 600, keepAliveTimeoutMs: 5_000 });
  const c = await openRaw(t, l.address.port, '127.0.0.2', GET('/lane'));
  await eventually(() => parseAnswers(c.received()).length === 1, 'answered by the lane');
  c.socket.write('POST /slow HTTP/1.1\r\nContent-Length: 10\r\n\r\nab');
  await c.closed;
  t.match(c.received(), /HTTP\/1\.1 408 Request Timeout/, '408');
  t.equal(slow(), 1, 'node:http had started the request (the handler saw its head)');
});

t.test('a request the lane leaves to node:http is answered, however long its handler takes, on the same connection', async (t) => {
  const { l, lane, slow } = await laneListener(t, { headersTimeoutMs: 200, keepAliveTimeoutMs: 200, slowMs: 600 });
  const c = await openRaw(t, l.address.port, '127.0.0.2', GET('/lane'));
  await eventually(() => parseAnswers(c.received()).length === 1, 'answered by the lane');
  c.socket.write(GET('/slow'));
  await eventually(() => parseAnswers(c.received()).length === 2, 'answered by node:http', 3_000);
  c.socket.write(GET('/lane'));
  await eventually(() => parseAnswers(c.received()).length === 3, 'and the lane again');
  t.same(parseAnswers(c.received()).map((a) => a.body), ['lane', 'node', 'lane']);
  t.equal(lane(), 2);
  t.equal(slow(), 1);
  t.notOk(c.socket.destroyed, 'the connection stays');
});

t.test('the lane keeps node:http\'s limit of requests per connection: the last answer closes it', async (t) => {
  const { l, lane } = await laneListener(t);
  const c = await openRaw(t, l.address.port, '127.0.0.2');
  for (let i = 1; i <= 1000; i++) {
    c.socket.write(GET('/lane'));
    await eventually(() => c.received().split('HTTP/1.1 200').length - 1 === i || c.socket.destroyed, `answer ${i}`, 20_000, 1);
  }
  await c.closed;
  const answers = parseAnswers(c.received());
  t.equal(answers.length, 1000);
  t.equal(lane(), 1000);
  t.equal(answers[998]!.headers.connection, 'keep-alive');
  t.equal(answers[999]!.headers.connection, 'close', 'the 1,000th says close, and the connection goes');
});

t.test('a request with Connection: close is answered by the lane, and its connection goes', async (t) => {
  const { l, lane } = await laneListener(t);
  const c = await openRaw(t, l.address.port, '127.0.0.2', 'GET /lane HTTP/1.1\r\nConnection: close\r\n\r\n');
  await c.closed;
  t.equal(lane(), 1);
  t.equal(parseAnswers(c.received())[0]!.headers.connection, 'close');
});

t.test('once the listener drains, node:http answers, and its answer closes the connection', async (t) => {
  const { l, lane, slow } = await laneListener(t);
  const c = await openRaw(t, l.address.port, '127.0.0.2', GET('/lane'));
  await eventually(() => parseAnswers(c.received()).length === 1, 'answered by the lane');
  const closing = l.close(5_000);
  c.socket.write(GET('/lane'));
  await c.closed;
  await closing;
  const answers = parseAnswers(c.received());
  t.equal(answers.length, 2);
  t.equal(answers[1]!.headers.connection, 'close', 'the connection\'s last answer');
  t.equal(answers[1]!.body, 'node', 'given by node:http');
  t.equal(lane(), 1);
  t.equal(slow(), 1);
});

t.test('bytes after a whole head are pipelining: the lane leaves them to the gate, which refuses them', async (t) => {
  const { l, lane } = await laneListener(t);
  const c = await openRaw(t, l.address.port, '127.0.0.2', GET('/lane') + GET('/lane'));
  await c.closed;
  t.equal(lane(), 0, 'the lane answered none');
});

t.test('a client that sends and never reads: the lane stops once the socket\'s buffer is full, and node:http stops reading', async (t) => {
  let lane = 0;
  let slow = 0;
  const big = Buffer.alloc(256 * 1024, 0x61);
  const l = await listen({
    host: '127.0.0.1', port: 0,
    answerAtOnce: (head, answer) => {
      lane++;
      answer.writeHead(200, { 'content-length': big.length });
      answer.end(big);
      return true;
    },
  }, (_req, res) => {
    slow++;
    res.writeHead(200, { 'content-length': big.length }).end(big);
  });
  t.teardown(() => l.close(0));
  const c = await openRaw(t, l.address.port, '127.0.0.2', undefined, { read: false });
  // One request at a time, the next only once the last was read (so none is pipelining in the
  // bytes), until one is not read within half a second.
  let sent = 0;
  for (; sent < 40; sent++) {
    const before = lane + slow;
    c.socket.write(GET('/lane'));
    const read = await eventually(() => lane + slow > before, 'read', 500).then(() => true, () => false);
    if (!read) break;
  }
  t.ok(lane < 20, `the lane answered ${lane}, then left the connection to node:http`);
  t.equal(slow, 1, 'node:http answered one, and stopped reading');
  t.ok(sent < 40, `request ${sent + 1} was never read`);
});

t.test('a fault of the request path in the lane takes nothing down: unanswered, the request goes to node:http', async (t) => {
  const faults: unknown[] = [];
  let calls = 0;
  const l = await listen({
    host: '127.0.0.1', port: 0, onLaneError: (err) => faults.push(err),
    answerAtOnce: () => {
      calls++;
      throw new Error('a bug');
    },
  }, (_req, res) => res.writeHead(200, { 'content-length': 4 }).end('node'));
  t.teardown(() => l.close(0));
  const c = await openRaw(t, l.address.port, '127.0.0.2', GET('/lane'));
  await eventually(() => parseAnswers(c.received()).length === 1, 'answered');
  t.equal(parseAnswers(c.received())[0]!.body, 'node', 'by node:http');
  t.equal(calls, 1);
  t.match(faults, [{ message: 'a bug' }], 'the fault is reported');
});

t.test('a fault of the request path after the lane wrote its answer: the connection goes, and nothing more is read from it', async (t) => {
  const faults: unknown[] = [];
  let slow = 0;
  const l = await listen({
    host: '127.0.0.1', port: 0, onLaneError: (err) => faults.push(err),
    answerAtOnce: (_head, answer) => {
      answer.writeHead(200, { 'content-length': 4 });
      answer.end(Buffer.from('lane'));
      throw new Error('a bug after the answer');
    },
  }, (_req, res) => {
    slow++;
    res.writeHead(200, { 'content-length': 4 }).end('node');
  });
  t.teardown(() => l.close(0));
  const c = await openRaw(t, l.address.port, '127.0.0.2', GET('/lane'));
  await c.closed;
  t.same(parseAnswers(c.received()).map((a) => a.body), ['lane'], 'the answer written, then the connection closed');
  t.equal(slow, 0, 'node:http was not given the request as well');
  t.match(faults, [{ message: 'a bug after the answer' }], 'the fault is reported');
});
