import t from 'tap';
import { TokenCache, type TokenOutcome, type TokenSource } from '../src/upstream/token-cache.ts';
import { UpstreamFailure, type UpstreamAnswer } from '../src/upstream/imds-client.ts';

const T0 = 1_700_000_000_000;
const PATH = '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net';
const MARGIN = 15 * 60_000;

interface Call {
  readonly path: string;
  readonly signal: AbortSignal | undefined;
  resolve(answer: UpstreamAnswer): void;
  reject(err: unknown): void;
}

/** A TokenSource whose every fetch waits until the test settles it; rejects on abort unless told not to. */
class FakeSource implements TokenSource {
  readonly calls: Call[] = [];
  rejectOnAbort = true;
  fetch(method: 'GET', path: string, signal?: AbortSignal): Promise<UpstreamAnswer> {
    return new Promise<UpstreamAnswer>((resolve, reject) => {
      this.calls.push({ path, signal, resolve, reject });
      if (this.rejectOnAbort) signal?.addEventListener('abort', () => reject(new UpstreamFailure('aborted', 'cancelled')), { once: true });
    });
  }
  get last(): Call {
    const c = this.calls.at(-1);
    if (c === undefined) throw new Error('no fetch was made');
    return c;
  }
}

/** A TokenSource that answers at once with the next canned answer. */
class ImmediateSource implements TokenSource {
  count = 0;
  readonly answers: UpstreamAnswer[];
  constructor(...answers: UpstreamAnswer[]) {
    this.answers = answers;
  }
  async fetch(): Promise<UpstreamAnswer> {
    const a = this.answers[Math.min(this.count, this.answers.length - 1)]!;
    this.count++;
    return a;
  }
}

function tokenBody(expiresOnSec: number | string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    access_token: 'eyJ0eXAi.fake.sig',
    client_id: '11111111-1111-4111-8111-111111111111',
    expires_in: '3599',
    expires_on: String(expiresOnSec),
    ext_expires_in: '3599',
    not_before: String(Math.floor(T0 / 1000) - 5),
    resource: 'https://vault.azure.net',
    token_type: 'Bearer',
    ...extra,
  });
}

function answer(body: string, status = 200, contentType: string | undefined = 'application/json; charset=utf-8'): UpstreamAnswer {
  return { status, contentType, retryAfter: status === 429 ? '5' : undefined, body: Buffer.from(body, 'utf8') };
}

function clock(start = T0): { now: () => number; advance(ms: number): void } {
  let now = start;
  return { now: () => now, advance: (ms) => { now += ms; } };
}

function outcomes(): { list: TokenOutcome[]; on: (o: TokenOutcome) => void } {
  const list: TokenOutcome[] = [];
  return { list, on: (o) => list.push(o) };
}

t.test('a long-lived token is cached and its expires_in counts down', async (t) => {
  const c = clock();
  const original = tokenBody(T0 / 1000 + 3600);
  const source = new ImmediateSource(answer(original));
  const cache = new TokenCache(source, { now: c.now });
  const o = outcomes();

  const first = await cache.get(PATH, undefined, o.on);
  t.equal(first.body.toString(), original, 'the first answer is relayed as received');
  t.equal(source.count, 1);
  t.equal(cache.size, 1);

  c.advance(100_500);
  const second = await cache.get(PATH, undefined, o.on);
  t.equal(source.count, 1, 'no second fetch');
  t.same(o.list, ['miss', 'hit']);
  t.equal(second.status, 200);
  t.equal(second.contentType, 'application/json; charset=utf-8', 'content type kept');
  t.equal(second.retryAfter, undefined);
  const was = JSON.parse(original) as Record<string, unknown>;
  const now = JSON.parse(second.body.toString('utf8')) as Record<string, unknown>;
  t.same(Object.keys(now), Object.keys(was), 'same keys in the same order');
  t.equal(now.expires_in, String(3600 - 101), 'expires_in counts down from expires_on, rounded down, as a string');
  for (const k of Object.keys(was)) if (k !== 'expires_in') t.equal(now[k], was[k], `${k} unchanged`);

  c.advance(2_000_000);
  const third = JSON.parse((await cache.get(PATH, undefined, o.on)).body.toString()) as Record<string, unknown>;
  t.equal(third.expires_in, String(3600 - 2101));
  t.equal(source.count, 1);

  const other = await cache.get(PATH.replace('vault', 'storage'), undefined, o.on);
  t.equal(source.count, 2, 'another path is another entry');
  t.equal(other.body.toString(), original);
  t.same(o.list, ['miss', 'hit', 'hit', 'miss']);
});

t.test('a token without expires_in gets one; a numeric expires_on works', async (t) => {
  const c = clock();
  const body = JSON.stringify({ access_token: 'x', expires_on: T0 / 1000 + 7200, resource: 'r', token_type: 'Bearer' });
  const cache = new TokenCache(new ImmediateSource(answer(body)), { now: c.now });
  await cache.get(PATH, undefined);
  c.advance(1000);
  const hit = JSON.parse((await cache.get(PATH, undefined)).body.toString()) as Record<string, unknown>;
  t.same(Object.keys(hit), ['access_token', 'expires_on', 'resource', 'token_type', 'expires_in']);
  t.equal(hit.expires_on, T0 / 1000 + 7200, 'kept as a number');
  t.equal(hit.expires_in, '7199');
});

t.test('the refresh margin', async (t) => {
  const c = clock();
  const source = new ImmediateSource(answer(tokenBody(T0 / 1000 + 3600)));
  const cache = new TokenCache(source, { now: c.now });
  const o = outcomes();
  await cache.get(PATH, undefined, o.on);
  c.advance(3600_000 - MARGIN - 1000);
  await cache.get(PATH, undefined, o.on);
  t.equal(source.count, 1, 'a second more than the margin left: still a hit');
  c.advance(1000);
  await cache.get(PATH, undefined, o.on);
  t.equal(source.count, 2, 'exactly the margin left: fetched anew');
  t.same(o.list, ['miss', 'hit', 'miss']);

  // the second fetch brought the same (now near-expiry) token: it is not kept
  await cache.get(PATH, undefined, o.on);
  t.equal(source.count, 3, 'a near-expiry answer is not cached');
  t.equal(cache.size, 0);

  const short = new ImmediateSource(answer(tokenBody(T0 / 1000 + 600)));
  const shortCache = new TokenCache(short, { now: clock().now });
  await shortCache.get(PATH, undefined);
  await shortCache.get(PATH, undefined);
  t.equal(short.count, 2, 'a token 10 minutes from expiry is never cached with the default 15-minute margin');

  const custom = new ImmediateSource(answer(tokenBody(T0 / 1000 + 600)));
  const customCache = new TokenCache(custom, { now: clock().now, refreshMarginMs: 60_000 });
  await customCache.get(PATH, undefined);
  await customCache.get(PATH, undefined);
  t.equal(custom.count, 1, 'refreshMarginMs is honoured');
});

t.test('only good 200 answers are cached', async (t) => {
  const far = T0 / 1000 + 3600;
  const cases: Array<[string, UpstreamAnswer]> = [
    ['400', answer(tokenBody(far), 400)],
    ['404', answer(tokenBody(far), 404)],
    ['429', answer(tokenBody(far), 429)],
    ['500', answer(tokenBody(far), 500)],
    ['203', answer(tokenBody(far), 203)],
    ['not JSON', answer('<html>token</html>')],
    ['truncated JSON', answer(tokenBody(far).slice(0, 40))],
    ['empty body', answer('')],
    ['JSON null', answer('null')],
    ['JSON string', answer('"token"')],
    ['JSON number', answer(String(far))],
    ['no expires_on', answer(JSON.stringify({ access_token: 'x' }))],
    ['expires_on not a number', answer(tokenBody('soon'))],
    ['expires_on in the past', answer(tokenBody(T0 / 1000 - 10))],
  ];
  for (const [label, a] of cases) {
    const source = new ImmediateSource(a);
    const cache = new TokenCache(source, { now: clock().now });
    const o = outcomes();
    const got1 = await cache.get(PATH, undefined, o.on);
    const got2 = await cache.get(PATH, undefined, o.on);
    t.equal(source.count, 2, `${label}: fetched again`);
    t.same(o.list, ['miss', 'miss'], `${label}: two misses`);
    t.equal(cache.size, 0, `${label}: nothing held`);
    t.equal(got1, a, `${label}: relayed untouched`);
    t.equal(got2, a);
  }
});

t.test('concurrent gets share one fetch', async (t) => {
  const source = new FakeSource();
  const cache = new TokenCache(source, { now: clock().now });
  const o = outcomes();
  const ps = [cache.get(PATH, undefined, o.on), cache.get(PATH, new AbortController().signal, o.on), cache.get(PATH, undefined, o.on)];
  t.equal(source.calls.length, 1, 'one upstream request');
  t.same(o.list, ['miss', 'shared', 'shared']);
  t.equal(source.last.path, PATH);
  t.equal(source.last.signal?.aborted, false, 'the source gets a signal of its own');
  const a = answer(tokenBody(T0 / 1000 + 3600));
  source.last.resolve(a);
  const got = await Promise.all(ps);
  t.ok(got.every((g) => g === a), 'every waiter gets the answer');
  await cache.get(PATH, undefined, o.on);
  t.same(o.list, ['miss', 'shared', 'shared', 'hit'], 'and then it is cached');
  t.equal(source.calls.length, 1);
});

t.test('when every waiter hangs up, the upstream request is cancelled', async (t) => {
  const source = new FakeSource();
  const cache = new TokenCache(source, { now: clock().now });
  const c1 = new AbortController();
  const c2 = new AbortController();
  const p1 = cache.get(PATH, c1.signal);
  const p2 = cache.get(PATH, c2.signal);
  const upstream = source.last.signal!;
  c1.abort();
  await t.rejects(p1, { name: 'UpstreamFailure', kind: 'aborted' });
  t.equal(upstream.aborted, false, 'one waiter left: still going');
  c2.abort();
  await t.rejects(p2, { name: 'UpstreamFailure', kind: 'aborted' });
  t.equal(upstream.aborted, true, 'the last one left: cancelled');
  t.equal(cache.size, 0);
  // the cancelled flight is gone once it settles: the next ask starts afresh
  await new Promise((r) => setImmediate(r));
  const o = outcomes();
  const p3 = cache.get(PATH, undefined, o.on);
  t.same(o.list, ['miss']);
  t.equal(source.calls.length, 2);
  source.last.resolve(answer('{}'));
  t.same((await p3).body.toString(), '{}');
});

t.test('an already-aborted signal', async (t) => {
  const source = new FakeSource();
  const cache = new TokenCache(source, { now: clock().now });
  const c = new AbortController();
  c.abort();
  await t.rejects(cache.get(PATH, c.signal), { name: 'UpstreamFailure', kind: 'aborted' });
  t.ok(source.calls.every((call) => call.signal?.aborted === true), 'nothing is left running upstream for it');
});

t.test('one waiter hangs up, the other still gets the answer', async (t) => {
  const source = new FakeSource();
  const cache = new TokenCache(source, { now: clock().now });
  const leaving = new AbortController();
  const staying = new AbortController();
  const p1 = cache.get(PATH, leaving.signal);
  const p2 = cache.get(PATH, staying.signal);
  leaving.abort();
  await t.rejects(p1, { name: 'UpstreamFailure', kind: 'aborted' });
  const a = answer(tokenBody(T0 / 1000 + 3600));
  source.last.resolve(a);
  t.equal(await p2, a);
  t.equal(source.last.signal!.aborted, false, 'the source was not cancelled');
  t.equal(cache.size, 1, 'and the answer is cached');

  // a waiter without a signal keeps the request alive too
  const s2 = new FakeSource();
  const cache2 = new TokenCache(s2, { now: clock().now });
  const withSignal = new AbortController();
  const q1 = cache2.get(PATH, withSignal.signal);
  const q2 = cache2.get(PATH, undefined);
  withSignal.abort();
  await t.rejects(q1, { name: 'UpstreamFailure', kind: 'aborted' });
  t.equal(s2.last.signal!.aborted, false, 'a signal-less waiter is still there');
  const b = answer('{"x":1}');
  s2.last.resolve(b);
  t.equal(await q2, b);
});

t.test('a rejected fetch rejects every waiter and is not cached', async (t) => {
  const source = new FakeSource();
  const cache = new TokenCache(source, { now: clock().now });
  const failure = new UpstreamFailure('unreachable', 'ECONNREFUSED');
  const ps = [cache.get(PATH, undefined), cache.get(PATH, new AbortController().signal), cache.get(PATH, undefined)];
  source.last.reject(failure);
  for (const p of ps) await t.rejects(p, failure);
  t.equal(cache.size, 0);
  const o = outcomes();
  const next = cache.get(PATH, undefined, o.on);
  t.same(o.list, ['miss'], 'the failed flight is not joined');
  t.equal(source.calls.length, 2);
  source.last.resolve(answer(tokenBody(T0 / 1000 + 3600)));
  t.equal((await next).status, 200);
});

t.test('a fetch that rejects after every waiter left leaves no unhandled rejection', async (t) => {
  const source = new FakeSource();
  source.rejectOnAbort = false;
  const cache = new TokenCache(source, { now: clock().now });
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown): void => { unhandled.push(err); };
  process.on('unhandledRejection', onUnhandled);
  t.teardown(() => { process.off('unhandledRejection', onUnhandled); });
  const c = new AbortController();
  const p = cache.get(PATH, c.signal);
  c.abort();
  await t.rejects(p, { name: 'UpstreamFailure', kind: 'aborted' });
  source.last.reject(new UpstreamFailure('aborted', 'late'));
  await new Promise((r) => setTimeout(r, 20));
  t.same(unhandled, []);
});

t.test('a request after every waiter left does not join the cancelled flight', async (t) => {
  const source = new FakeSource();
  source.rejectOnAbort = false; // the cancelled request settles a little later, as a real one does
  const cache = new TokenCache(source, { now: clock().now });
  const c = new AbortController();
  const p1 = cache.get(PATH, c.signal);
  c.abort();
  await t.rejects(p1, { name: 'UpstreamFailure', kind: 'aborted' });
  const cancelled = source.last;
  t.equal(cancelled.signal!.aborted, true);

  const o = outcomes();
  const p2 = cache.get(PATH, new AbortController().signal, o.on);
  const fresh = source.calls.length === 2;
  t.same(o.list, ['miss'], 'a fresh request');
  cancelled.reject(new UpstreamFailure('aborted', 'cancelled'));
  if (fresh) source.last.resolve(answer('{}'));
  const r = await p2.then(() => 'answered', (err: unknown) => (err instanceof UpstreamFailure ? err.kind : 'other'));
  t.equal(r, 'answered', 'the new request is answered');
});

t.test('maxEntries bounds the cache', async (t) => {
  const source = new ImmediateSource(answer(tokenBody(T0 / 1000 + 3600)));
  const cache = new TokenCache(source, { now: clock().now, maxEntries: 2 });
  for (let i = 0; i < 5; i++) await cache.get(`${PATH}&client_id=${i}`, undefined);
  t.equal(cache.size, 2);
  t.equal(source.count, 5);
  const o = outcomes();
  await cache.get(`${PATH}&client_id=4`, undefined, o.on);
  await cache.get(`${PATH}&client_id=3`, undefined, o.on);
  await cache.get(`${PATH}&client_id=0`, undefined, o.on);
  t.same(o.list, ['hit', 'hit', 'miss'], 'the least recently used went first');
  t.equal(cache.size, 2);
  cache.clear();
  t.equal(cache.size, 0, 'clear empties it');
  await cache.get(`${PATH}&client_id=4`, undefined, o.on);
  t.equal(o.list.at(-1), 'miss');
});

t.test('per-owner share: a caller past its share evicts its own oldest entry, nobody else\'s', async (t) => {
  const c = clock();
  const source = new ImmediateSource(answer(tokenBody(T0 / 1000 + 3600)));
  const cache = new TokenCache(source, { now: c.now, maxEntries: 8, maxEntriesPerOwner: 3 });
  await cache.get(`${PATH}&victim`, undefined, undefined, 'pod:victim');
  for (let i = 0; i < 20; i++) await cache.get(`${PATH}&r${i}`, undefined, undefined, 'pod:attacker');
  t.equal(cache.size, 4, 'the attacker holds 3, the victim 1');
  const o = outcomes();
  await cache.get(`${PATH}&victim`, undefined, o.on, 'pod:victim');
  await cache.get(`${PATH}&r19`, undefined, o.on, 'pod:attacker');
  await cache.get(`${PATH}&r16`, undefined, o.on, 'pod:attacker');
  t.same(o.list, ['hit', 'hit', 'miss'], 'the victim\'s token and the attacker\'s newest stay; its older ones went');
  t.equal(source.count, 22);
});

t.test('an entry larger than maxEntryBytes is served but not kept', async (t) => {
  const c = clock();
  const big = tokenBody(T0 / 1000 + 3600, { pad: 'x'.repeat(9_000) });
  const source = new ImmediateSource(answer(big));
  const cache = new TokenCache(source, { now: c.now });
  const first = await cache.get(PATH, undefined);
  t.equal(first.body.toString('utf8'), big, 'served as received');
  t.equal(cache.size, 0, 'not cached: the default bound is 8 KiB');
  await cache.get(PATH, undefined);
  t.equal(source.count, 2, 'fetched again');
});
