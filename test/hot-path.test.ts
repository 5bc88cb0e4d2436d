// The hot path's shortcuts (issue 20) answer exactly as the long way did: log redaction without
// pino's per-line copy, safe log values returned as they are, memoised query decoding, metric
// children cached per label set, a cached token answer re-serialised each second, and refusal
// header blocks built once.
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { Registry } from 'prom-client';
import t from 'tap';
import { writeRefusal } from '../src/answer/respond.ts';
import { parseQuery } from '../src/matcher/query.ts';
import { LabelChildren } from '../src/observability/label-children.ts';
import { safeForLog } from '../src/observability/log-safe.ts';
import { createLogger, redactSecrets } from '../src/observability/logger.ts';
import { DaemonMetrics } from '../src/observability/metrics.ts';

function lines(): { stream: Writable; read(): Array<Record<string, unknown>> } {
  let text = '';
  const stream = new Writable({ write(chunk: Buffer, _e, cb) { text += chunk.toString(); cb(); } });
  return { stream, read: () => text.trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>) };
}

t.test('log lines: the paths pino redacted are still censored, and nothing else is touched', async (t) => {
  const out = lines();
  const log = createLogger('json', 'info', out.stream);
  const fields = {
    access_token: 'A', token: 'T', nested: { access_token: 'NA', token: 'NT', keep: 1 },
    headers: { authorization: 'Bearer H', host: 'h' }, req: { headers: { authorization: 'Bearer R', accept: 'x' }, url: '/u' },
    plain: 'p', deep: { deeper: { token: 'deep tokens were never a redacted path' } },
  };
  log.info(fields, 'm');
  log.child({ component: 'c' }).warn({ upstream: { token: 'C' } }, 'child');
  await new Promise((r) => setImmediate(r));
  const [line, child] = out.read();
  t.equal(line!.access_token, '[redacted]');
  t.equal(line!.token, '[redacted]');
  t.same(line!.nested, { access_token: '[redacted]', token: '[redacted]', keep: 1 });
  t.same(line!.headers, { authorization: '[redacted]', host: 'h' });
  t.same(line!.req, { headers: { authorization: '[redacted]', accept: 'x' }, url: '/u' });
  t.equal(line!.plain, 'p');
  t.same(line!.deep, fields.deep, 'deeper paths as before: untouched');
  t.same(child!.upstream, { token: '[redacted]' }, 'child loggers too');
  t.equal(fields.access_token, 'A', 'the caller\'s object is not changed');
  t.equal(fields.nested.token, 'NT');
  t.equal(fields.req.headers.authorization, 'Bearer R');
  const clean = { a: 1, b: { c: 2 } };
  t.equal(redactSecrets(clean), clean, 'a line without secrets is not copied');
  const err = Object.assign(new Error('boom'), { token: 'E' });
  const redacted = redactSecrets({ err }).err as Error & { token: string };
  t.ok(redacted instanceof Error, 'an Error stays an Error for its serialiser');
  t.equal(redacted.token, '[redacted]');
  t.equal(redacted.message, 'boom');
  t.equal(err.token, 'E');
});

t.test('safeForLog returns safe values as they are, and escapes as before', async (t) => {
  const v = 'https://vault.azure.net';
  t.equal(safeForLog(v), v);
  t.equal(safeForLog('a\nb'), 'a\\u{000a}b');
  t.equal(safeForLog('x'.repeat(300)), `${'x'.repeat(256)}…(+44)`);
  t.equal(safeForLog('x'.repeat(256)), 'x'.repeat(256));
});

t.test('parseQuery: memoised decoding answers the same the second time, malformed included', async (t) => {
  for (let i = 0; i < 2; i++) {
    t.same(parseQuery('resource=https%3A%2F%2Fvault.azure.net&a=b+c'), new Map([['resource', 'https://vault.azure.net'], ['a', 'b c']]));
    t.equal(parseQuery('a=%zz'), 'query_malformed');
    t.equal(parseQuery('%7a=1&z=2'), 'query_duplicate_parameter');
  }
  // Many distinct values (more than the memo keeps, some longer than it keeps) decode as decodeURIComponent does.
  fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (s) => {
    const parsed = parseQuery(`v=${encodeURIComponent(s)}`);
    return parsed instanceof Map && parsed.get('v') === s;
  }), { numRuns: 2000 });
});

t.test('LabelChildren makes one child per label set, with the values as strings in order', async (t) => {
  const made: string[][] = [];
  const children = new LabelChildren(3, (values) => { made.push(values); return { values }; });
  const a = children.get('token', 200, 'x');
  t.equal(children.get('token', 200, 'x'), a);
  t.not(children.get('token', 400, 'x'), a);
  t.not(children.get('token', '200', 'x'), a, 'a number and its text are different keys, never confused');
  t.same(made[0], ['token', '200', 'x']);
  t.equal(made.length, 3);
});

t.test('metrics through cached children count as prom-client did', async (t) => {
  const m = new DaemonMetrics(new Registry(), { defaultMetrics: false });
  for (let i = 0; i < 3; i++) m.request('token', 'granted', 200, '', 0.001);
  m.request('token', 'refused', 400, 'binding_missing', 0.002);
  m.tokenCache('hit');
  m.tokenCache('hit');
  const text = await m.registry.metrics();
  t.match(text, /podid_nmi_requests_total\{route="token",decision="granted",status="200",reason=""\} 3/);
  t.match(text, /podid_nmi_requests_total\{route="token",decision="refused",status="400",reason="binding_missing"\} 1/);
  t.match(text, /podid_nmi_request_duration_seconds_count\{route="token",decision="granted"\} 3/);
  t.match(text, /podid_nmi_token_cache_total\{result="hit"\} 2/);
});

t.test('refusals: the shared header block is never changed by an answer that replaces a header', async (t) => {
  const heads: Array<[number, Record<string, unknown>]> = [];
  const res = () => ({ headersSent: false, destroyed: false, shouldKeepAlive: true, writeHead(s: number, h: Record<string, unknown>) { heads.push([s, { ...h }]); }, end() {} });
  writeRefusal(res() as never, 'method_not_allowed', ['GET']);
  writeRefusal(res() as never, 'method_not_allowed');
  writeRefusal(res() as never, 'upstream_busy', undefined, 7);
  writeRefusal(res() as never, 'upstream_busy');
  t.equal(heads[0]![1].allow, 'GET');
  t.equal(heads[1]![1].allow, undefined, 'Allow of one answer does not stay for the next');
  t.equal(heads[2]![1]['retry-after'], '7');
  t.not(heads[3]![1]['retry-after'], '7', 'nor a computed Retry-After');
  t.same(Object.keys(heads[0]![1]), ['content-type', 'content-length', 'x-podid-nmi-reason', 'allow'], 'header order as before');
});

t.test('hang-up signal: aborted by a hang-up or by the stop, and forgotten once answered', async (t) => {
  const { EventEmitter } = await import('node:events');
  const { hangUpSignal } = await import('../src/listener/hang-up.ts');
  const fakeRes = (finished: boolean) => Object.assign(new EventEmitter(), { writableFinished: finished });
  const stop = new AbortController();
  const hungUp = fakeRes(false);
  const a = hangUpSignal(hungUp as never, stop.signal);
  hungUp.emit('close');
  t.ok(a.aborted, 'the client hung up before its answer');
  const answered = fakeRes(true);
  const b = hangUpSignal(answered as never, stop.signal);
  answered.emit('close');
  const waiting = fakeRes(false);
  const c = hangUpSignal(waiting as never, stop.signal);
  stop.abort(new Error('stopping'));
  t.notOk(b.aborted, 'an answered request is not aborted by the stop');
  t.ok(c.aborted, 'a waiting request is');
  t.equal((c.reason as Error).message, 'stopping', 'with the stop\'s reason');
  t.ok(hangUpSignal(fakeRes(false) as never, stop.signal).aborted, 'after the stop, new signals start aborted');
});

t.test('histogram series: the same exposition as prom-client\'s own observe, across a reset', async (t) => {
  const { Histogram } = await import('prom-client');
  const { histogramSeries } = await import('../src/observability/histogram-series.ts');
  const make = (r: Registry) => new Histogram({ name: 'h', help: 'h', labelNames: ['a', 'b'] as const, buckets: [0.001, 0.01, 0.1, 1], registers: [r] });
  const ours = new Registry();
  const theirs = new Registry();
  const oursH = make(ours);
  const theirsH = make(theirs);
  const x = histogramSeries(oursH, ['a', 'b'], ['x', '200']);
  const y = histogramSeries(oursH, ['a', 'b'], ['y', '']);
  const values = [0, 0.0005, 0.001, 0.002, 0.05, 0.5, 1, 3, 1e9];
  for (const v of values) {
    x.observe(v);
    theirsH.observe({ a: 'x', b: '200' }, v);
  }
  y.observe(0.02);
  theirsH.labels('y', '').observe(0.02);
  t.equal(await ours.metrics(), await theirs.metrics());
  t.throws(() => x.observe(Number.NaN), TypeError, 'NaN is refused, as prom-client does');
  oursH.reset();
  theirsH.reset();
  x.observe(0.5);
  theirsH.observe({ a: 'x', b: '200' }, 0.5);
  t.equal(await ours.metrics(), await theirs.metrics(), 'after a reset, a series starts again');
});

t.test('counter series: the same exposition as prom-client\'s own inc, across a reset', async (t) => {
  const { Counter } = await import('prom-client');
  const { counterSeries } = await import('../src/observability/counter-series.ts');
  const make = (r: Registry) => new Counter({ name: 'c', help: 'c', labelNames: ['route', 'status'] as const, registers: [r] });
  const ours = new Registry();
  const theirs = new Registry();
  const oursC = make(ours);
  const theirsC = make(theirs);
  // A series prom-client already holds (counted through its own inc) is added to, not replaced.
  oursC.inc({ route: 'token', status: '200' }, 2);
  theirsC.inc({ route: 'token', status: '200' }, 2);
  const x = counterSeries(oursC, ['route', 'status'], ['token', '200']);
  const y = counterSeries(oursC, ['route', 'status'], ['token', '400']);
  for (let i = 0; i < 5; i++) {
    x.inc();
    theirsC.inc({ route: 'token', status: '200' });
  }
  y.inc();
  theirsC.labels('token', '400').inc();
  t.equal(await ours.metrics(), await theirs.metrics());
  t.match(await ours.metrics(), /c\{route="token",status="200"\} 7/, 'the counts are there');
  oursC.reset();
  theirsC.reset();
  x.inc();
  theirsC.inc({ route: 'token', status: '200' });
  t.equal(await ours.metrics(), await theirs.metrics(), 'after a reset, a series starts again');
});
