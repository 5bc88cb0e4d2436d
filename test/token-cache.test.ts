import t from 'tap';
import { TokenCache, type TokenCacheOptions, type TokenOutcome } from '../src/upstream/token-cache.ts';
import { UpstreamFailure, type UpstreamAnswer } from '../src/upstream/imds-client.ts';
import { UpstreamScheduler, type TokenTransport } from '../src/upstream/scheduler.ts';
import { FakeClock } from './helpers/fake-clock.ts';

type TokenSource = TokenTransport;

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

function clock(start = T0): FakeClock {
  return new FakeClock(start);
}

/**
 * The cache's own rules, so the scheduler under it is out of the way: no budget to speak of,
 * one attempt per fetch (retries are the scheduler's tests), no refresh-ahead.
 */
function cacheOn(source: TokenSource, o: TokenCacheOptions & { clock: FakeClock }): TokenCache {
  const scheduler = new UpstreamScheduler({ transport: source, maxRps: 1e6, maxConcurrency: 1e6, maxAttempts: 1, clock: o.clock });
  return new TokenCache(scheduler, { refreshLeadMs: 0, ...o });
}

function ask(cache: TokenCache, path: string, signal?: AbortSignal, onOutcome?: (o: TokenOutcome) => void): Promise<UpstreamAnswer> {
  return cache.get(path, { caller: 'pod', signal, onOutcome });
}

function outcomes(): { list: TokenOutcome[]; on: (o: TokenOutcome) => void } {
  const list: TokenOutcome[] = [];
  return { list, on: (o) => list.push(o) };
}

t.test('a long-lived token is cached and its expires_in counts down', async (t) => {
  const c = clock();
  const original = tokenBody(T0 / 1000 + 3600);
  const source = new ImmediateSource(answer(original));
  const cache = cacheOn(source, { clock: c });
  const o = outcomes();

  const first = await ask(cache, PATH, undefined, o.on);
  t.equal(first.body.toString(), original, 'the first answer is relayed as received');
  t.equal(source.count, 1);
  t.equal(cache.size, 1);

  c.advance(100_500);
  const second = await ask(cache, PATH, undefined, o.on);
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
  const third = JSON.parse((await ask(cache, PATH, undefined, o.on)).body.toString()) as Record<string, unknown>;
  t.equal(third.expires_in, String(3600 - 2101));
  t.equal(source.count, 1);

  const other = await ask(cache, PATH.replace('vault', 'storage'), undefined, o.on);
  t.equal(source.count, 2, 'another path is another entry');
  t.equal(other.body.toString(), original);
  t.same(o.list, ['miss', 'hit', 'hit', 'miss']);
});

t.test('a token without expires_in gets one; a numeric expires_on works', async (t) => {
  const c = clock();
  const body = JSON.stringify({ access_token: 'x', expires_on: T0 / 1000 + 7200, resource: 'r', token_type: 'Bearer' });
  const cache = cacheOn(new ImmediateSource(answer(body)), { clock: c });
  await ask(cache, PATH, undefined);
  c.advance(1000);
  const hit = JSON.parse((await ask(cache, PATH, undefined)).body.toString()) as Record<string, unknown>;
  t.same(Object.keys(hit), ['access_token', 'expires_on', 'resource', 'token_type', 'expires_in']);
  t.equal(hit.expires_on, T0 / 1000 + 7200, 'kept as a number');
  t.equal(hit.expires_in, '7199');
});

t.test('the refresh margin', async (t) => {
  const c = clock();
  const source = new ImmediateSource(answer(tokenBody(T0 / 1000 + 3600)));
  const cache = cacheOn(source, { clock: c });
  const o = outcomes();
  await ask(cache, PATH, undefined, o.on);
  c.advance(3600_000 - MARGIN - 1000);
  await ask(cache, PATH, undefined, o.on);
  t.equal(source.count, 1, 'a second more than the margin left: still a hit');
  c.advance(1000);
  await ask(cache, PATH, undefined, o.on);
  t.equal(source.count, 2, 'exactly the margin left: fetched anew');
  t.same(o.list, ['miss', 'hit', 'miss']);

  // the second fetch brought the same (now near-expiry) token: it is not kept
  await ask(cache, PATH, undefined, o.on);
  t.equal(source.count, 3, 'a near-expiry answer is not cached');
  t.equal(cache.size, 0);

  const short = new ImmediateSource(answer(tokenBody(T0 / 1000 + 600)));
  const shortCache = cacheOn(short, { clock: clock() });
  await ask(shortCache, PATH, undefined);
  await ask(shortCache, PATH, undefined);
  t.equal(short.count, 2, 'a token 10 minutes from expiry is never cached with the default 15-minute margin');

  const custom = new ImmediateSource(answer(tokenBody(T0 / 1000 + 600)));
  const customCache = cacheOn(custom, { clock: clock(), refreshMarginMs: 60_000 });
  await ask(customCache, PATH, undefined);
  await ask(customCache, PATH, undefined);
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
    const cache = cacheOn(source, { clock: clock() });
    const o = outcomes();
    const got1 = await ask(cache, PATH, undefined, o.on);
    const got2 = await ask(cache, PATH, undefined, o.on);
    t.equal(source.count, 2, `${label}: fetched again`);
    t.same(o.list, ['miss', 'miss'], `${label}: two misses`);
    t.equal(cache.size, 0, `${label}: nothing held`);
    t.equal(got1, a, `${label}: relayed untouched`);
    t.equal(got2, a);
  }
});

t.test('concurrent gets share one fetch', async (t) => {
  const source = new FakeSource();
  const cache = cacheOn(source, { clock: clock() });
  const o = outcomes();
  const ps = [ask(cache, PATH, undefined, o.on), ask(cache, PATH, new AbortController().signal, o.on), ask(cache, PATH, undefined, o.on)];
  t.equal(source.calls.length, 1, 'one upstream request');
  t.same(o.list, ['miss', 'shared', 'shared']);
  t.equal(source.last.path, PATH);
  t.equal(source.last.signal?.aborted, false, 'the source gets a signal of its own');
  const a = answer(tokenBody(T0 / 1000 + 3600));
  source.last.resolve(a);
  const got = await Promise.all(ps);
  t.ok(got.every((g) => g === a), 'every waiter gets the answer');
  await ask(cache, PATH, undefined, o.on);
  t.same(o.list, ['miss', 'shared', 'shared', 'hit'], 'and then it is cached');
  t.equal(source.calls.length, 1);
});

t.test('when every waiter hangs up, the upstream request is cancelled', async (t) => {
  const source = new FakeSource();
  const cache = cacheOn(source, { clock: clock() });
  const c1 = new AbortController();
  const c2 = new AbortController();
  const p1 = ask(cache, PATH, c1.signal);
  const p2 = ask(cache, PATH, c2.signal);
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
  const p3 = ask(cache, PATH, undefined, o.on);
  t.same(o.list, ['miss']);
  t.equal(source.calls.length, 2);
  source.last.resolve(answer('{}'));
  t.same((await p3).body.toString(), '{}');
});

t.test('an already-aborted signal', async (t) => {
  const source = new FakeSource();
  const cache = cacheOn(source, { clock: clock() });
  const c = new AbortController();
  c.abort();
  await t.rejects(ask(cache, PATH, c.signal), { name: 'UpstreamFailure', kind: 'aborted' });
  t.ok(source.calls.every((call) => call.signal?.aborted === true), 'nothing is left running upstream for it');
});

t.test('one waiter hangs up, the other still gets the answer', async (t) => {
  const source = new FakeSource();
  const cache = cacheOn(source, { clock: clock() });
  const leaving = new AbortController();
  const staying = new AbortController();
  const p1 = ask(cache, PATH, leaving.signal);
  const p2 = ask(cache, PATH, staying.signal);
  leaving.abort();
  await t.rejects(p1, { name: 'UpstreamFailure', kind: 'aborted' });
  const a = answer(tokenBody(T0 / 1000 + 3600));
  source.last.resolve(a);
  t.equal(await p2, a);
  t.equal(source.last.signal!.aborted, false, 'the source was not cancelled');
  t.equal(cache.size, 1, 'and the answer is cached');

  // a waiter without a signal keeps the request alive too
  const s2 = new FakeSource();
  const cache2 = cacheOn(s2, { clock: clock() });
  const withSignal = new AbortController();
  const q1 = ask(cache2, PATH, withSignal.signal);
  const q2 = ask(cache2, PATH, undefined);
  withSignal.abort();
  await t.rejects(q1, { name: 'UpstreamFailure', kind: 'aborted' });
  t.equal(s2.last.signal!.aborted, false, 'a signal-less waiter is still there');
  const b = answer('{"x":1}');
  s2.last.resolve(b);
  t.equal(await q2, b);
});

t.test('a rejected fetch rejects every waiter and is not cached', async (t) => {
  const source = new FakeSource();
  const cache = cacheOn(source, { clock: clock() });
  const failure = new UpstreamFailure('invalid', 'answer too large');
  const ps = [ask(cache, PATH, undefined), ask(cache, PATH, new AbortController().signal), ask(cache, PATH, undefined)];
  source.last.reject(failure);
  for (const p of ps) await t.rejects(p, failure);
  t.equal(cache.size, 0);
  const o = outcomes();
  const next = ask(cache, PATH, undefined, o.on);
  t.same(o.list, ['miss'], 'the failed flight is not joined');
  t.equal(source.calls.length, 2);
  source.last.resolve(answer(tokenBody(T0 / 1000 + 3600)));
  t.equal((await next).status, 200);
});

t.test('a fetch that rejects after every waiter left leaves no unhandled rejection', async (t) => {
  const source = new FakeSource();
  source.rejectOnAbort = false;
  const cache = cacheOn(source, { clock: clock() });
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown): void => { unhandled.push(err); };
  process.on('unhandledRejection', onUnhandled);
  t.teardown(() => { process.off('unhandledRejection', onUnhandled); });
  const c = new AbortController();
  const p = ask(cache, PATH, c.signal);
  c.abort();
  await t.rejects(p, { name: 'UpstreamFailure', kind: 'aborted' });
  source.last.reject(new UpstreamFailure('aborted', 'late'));
  await new Promise((r) => setTimeout(r, 20));
  t.same(unhandled, []);
});

t.test('a request after every waiter left does not join the cancelled flight', async (t) => {
  const source = new FakeSource();
  source.rejectOnAbort = false; // the cancelled request settles a little later, as a real one does
  const cache = cacheOn(source, { clock: clock() });
  const c = new AbortController();
  const p1 = ask(cache, PATH, c.signal);
  c.abort();
  await t.rejects(p1, { name: 'UpstreamFailure', kind: 'aborted' });
  const cancelled = source.last;
  t.equal(cancelled.signal!.aborted, true);

  const o = outcomes();
  const p2 = ask(cache, PATH, new AbortController().signal, o.on);
  const fresh = source.calls.length === 2;
  t.same(o.list, ['miss'], 'a fresh request');
  cancelled.reject(new UpstreamFailure('aborted', 'cancelled'));
  if (fresh) source.last.resolve(answer('{}'));
  const r = await p2.then(() => 'answered', (err: unknown) => (err instanceof UpstreamFailure ? err.kind : 'other'));
  t.equal(r, 'answered', 'the new request is answered');
});

t.test('maxEntries bounds the cache', async (t) => {
  const source = new ImmediateSource(answer(tokenBody(T0 / 1000 + 3600)));
  const cache = cacheOn(source, { clock: clock(), maxEntries: 2 });
  for (let i = 0; i < 5; i++) await ask(cache, `${PATH}&client_id=${i}`, undefined);
  t.equal(cache.size, 2);
  t.equal(source.count, 5);
  const o = outcomes();
  await ask(cache, `${PATH}&client_id=4`, undefined, o.on);
  await ask(cache, `${PATH}&client_id=3`, undefined, o.on);
  await ask(cache, `${PATH}&client_id=0`, undefined, o.on);
  t.same(o.list, ['hit', 'hit', 'miss'], 'the least recently used went first');
  t.equal(cache.size, 2);
  cache.clear();
  t.equal(cache.size, 0, 'clear empties it');
  await ask(cache, `${PATH}&client_id=4`, undefined, o.on);
  t.equal(o.list.at(-1), 'miss');
});

/** A scheduler with IMDS's budget under the cache, on the fake clock. */
function pacedCache(source: TokenSource, c: FakeClock, o: TokenCacheOptions = {}): { cache: TokenCache; scheduler: UpstreamScheduler } {
  const scheduler = new UpstreamScheduler({ transport: source, maxRps: 19, maxConcurrency: 4, clock: c });
  return { scheduler, cache: new TokenCache(scheduler, { clock: c, ...o }) };
}

t.test('a client told to come back finds its token in the cache', async (t) => {
  const c = clock();
  const source = new FakeSource();
  const { cache } = pacedCache(source, c, { waitMs: 1_000 });
  const first = ask(cache, PATH, new AbortController().signal);
  c.advance(1_000);
  const err = await first.then(() => undefined, (e: unknown) => e as UpstreamFailure);
  t.equal(err?.kind, 'queued', 'after its bound the client is answered, not held');
  t.ok((err?.retryAfterSec ?? 0) >= 1, 'with a Retry-After');
  t.equal(source.last.signal?.aborted, false, 'the fetch goes on');
  source.last.resolve(answer(tokenBody(T0 / 1000 + 3600)));
  await new Promise((r) => setImmediate(r));
  const o = outcomes();
  t.equal((await ask(cache, PATH, undefined, o.on)).status, 200);
  t.same(o.list, ['hit'], 'the retry is a cache hit');
  t.equal(source.calls.length, 1);
});

t.test('refresh-ahead renews tokens pods keep using, in the background, before they stop being served', async (t) => {
  const c = clock();
  const lifetime = 24 * 3600_000;
  let expiresOn = T0 + lifetime;
  const source = new ImmediateSource();
  source.answers.push(answer(tokenBody(expiresOn / 1000)));
  const refreshes: string[] = [];
  const { cache, scheduler } = pacedCache(source, c, { onRefresh: (o) => refreshes.push(o), sweepMs: 30_000 });
  const used = `${PATH}&client_id=used`;
  const idle = `${PATH}&client_id=idle`;
  const early = `${PATH}&client_id=early`;
  await ask(cache, used);
  await ask(cache, idle);
  await ask(cache, early);
  t.equal(source.count, 3);
  const servedUntil = expiresOn - MARGIN;
  // msal-node comes back at half the token's life; `early` is only used in its first half
  c.advance(3600_000);
  await ask(cache, early);
  c.advance((servedUntil - T0) / 2);
  t.equal((await ask(cache, used)).status, 200);
  // IMDS now hands out a later token
  expiresOn += 12 * 3600_000;
  source.answers.length = 0;
  source.answers.push(answer(tokenBody(expiresOn / 1000)));
  c.advance(servedUntil - c.now() - 6 * 60_000);
  t.equal(source.count, 3, 'nothing is refreshed more than 5 minutes before its end');
  c.advance(60_000);
  await new Promise((r) => setImmediate(r));
  t.equal(source.count, 4, 'one refresh: only the token used in the second half of its life');
  t.same(refreshes, ['renewed']);
  t.same(scheduler.queued, { foreground: 0, background: 0 });
  c.advance(5 * 60_000);
  const o = outcomes();
  const renewed = JSON.parse((await ask(cache, used, undefined, o.on)).body.toString()) as Record<string, unknown>;
  t.same(o.list, ['hit'], 'past the old token\'s end the pod is still served from the cache');
  t.equal(renewed.expires_on, String(expiresOn / 1000), 'the renewed token');
  await ask(cache, idle, undefined, o.on);
  await ask(cache, early, undefined, o.on);
  t.same(o.list, ['hit', 'miss', 'miss'], 'idle entries expired and were fetched when asked again');
});

t.test('refresh-ahead: IMDS giving the same token again settles it; a failure is counted', async (t) => {
  const c = clock();
  const expiresOn = T0 + 3 * 3600_000;
  const source = new ImmediateSource(answer(tokenBody(expiresOn / 1000)));
  const refreshes: string[] = [];
  const { cache } = pacedCache(source, c, { onRefresh: (o) => refreshes.push(o) });
  await ask(cache, PATH);
  c.advance(2 * 3600_000);
  await ask(cache, PATH);
  c.advance(expiresOn - MARGIN - c.now() - 60_000);
  await new Promise((r) => setImmediate(r));
  t.same(refreshes, ['unchanged']);
  c.advance(59_000);
  await new Promise((r) => setImmediate(r));
  t.equal(source.count, 2, 'not asked again for the same token');

  const failing = new ImmediateSource(answer(tokenBody(expiresOn / 1000)), answer('{"error":"invalid_request","error_description":"Identity not found"}', 400));
  const failed: string[] = [];
  const c2 = clock();
  const p = pacedCache(failing, c2, { onRefresh: (o) => failed.push(o) });
  await ask(p.cache, PATH);
  c2.advance(2 * 3600_000);
  await ask(p.cache, PATH);
  c2.advance(expiresOn - MARGIN - c2.now() - 60_000);
  await new Promise((r) => setImmediate(r));
  t.same(failed, ['failed'], 'a final 400 on refresh: counted, and the held token is served until its end');
  const o = outcomes();
  await ask(p.cache, PATH, undefined, o.on);
  t.same(o.list, ['hit']);
});

t.test('per-owner share: a caller past its share evicts its own oldest entry, nobody else\'s', async (t) => {
  const c = clock();
  const source = new ImmediateSource(answer(tokenBody(T0 / 1000 + 3600)));
  const cache = cacheOn(source, { clock: c, maxEntries: 8, maxEntriesPerOwner: 3 });
  await cache.get(`${PATH}&victim`, { caller: 'pod:victim' });
  for (let i = 0; i < 20; i++) await cache.get(`${PATH}&r${i}`, { caller: 'pod:attacker' });
  t.equal(cache.size, 4, 'the attacker holds 3, the victim 1');
  const o = outcomes();
  await cache.get(`${PATH}&victim`, { caller: 'pod:victim', onOutcome: o.on });
  await cache.get(`${PATH}&r19`, { caller: 'pod:attacker', onOutcome: o.on });
  await cache.get(`${PATH}&r16`, { caller: 'pod:attacker', onOutcome: o.on });
  t.same(o.list, ['hit', 'hit', 'miss'], 'the victim\'s token and the attacker\'s newest stay; its older ones went');
  t.equal(source.count, 22);
});

t.test('an entry larger than maxEntryBytes is served but not kept', async (t) => {
  const c = clock();
  const big = tokenBody(T0 / 1000 + 3600, { pad: 'x'.repeat(9_000) });
  const source = new ImmediateSource(answer(big));
  const cache = cacheOn(source, { clock: c });
  const first = await ask(cache, PATH);
  t.equal(first.body.toString('utf8'), big, 'served as received');
  t.equal(cache.size, 0, 'not cached: the default bound is 8 KiB');
  await ask(cache, PATH);
  t.equal(source.count, 2, 'fetched again');
});
