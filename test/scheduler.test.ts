// The IMDS budget's rules, on a fake clock and a fake IMDS: rate and concurrency never
// exceeded, fairness across pods, FIFO within one, retries and giving up, Retry-After from
// the queue, hang-ups leaving the queue, bounds, and background work only when nobody waits.
import t from 'tap';
import { UpstreamFailure, type UpstreamAnswer } from '../src/upstream/imds-client.ts';
import { MAX_ATTEMPTS, parseRetryAfter, planRetry } from '../src/upstream/retry-policy.ts';
import { UpstreamScheduler, fetchPaced, refusedFailure, type Priority, type SchedulerObserver, type TokenTransport } from '../src/upstream/scheduler.ts';
import { FakeClock, settle } from './helpers/fake-clock.ts';

interface Start { path: string; at: number; signal: AbortSignal }

/** IMDS on the fake clock: answers each request after `latencyMs` with what `answer` says. */
class FakeImds implements TokenTransport {
  readonly starts: Start[] = [];
  inFlight = 0;
  maxInFlight = 0;
  latencyMs = 20;
  answer: (path: string, attempt: number) => UpstreamAnswer | 'hang' = () => ok();
  readonly #clock: FakeClock;
  constructor(clock: FakeClock) {
    this.#clock = clock;
  }
  fetch(_m: 'GET', path: string, signal?: AbortSignal): Promise<UpstreamAnswer> {
    this.starts.push({ path, at: this.#clock.now(), signal: signal! });
    const attempt = this.starts.filter((s) => s.path === path).length;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    return new Promise((resolve, reject) => {
      const done = (): void => { this.inFlight--; };
      signal?.addEventListener('abort', () => { done(); reject(new UpstreamFailure('aborted', 'cancelled')); }, { once: true });
      const a = this.answer(path, attempt);
      if (a === 'hang') return;
      this.#clock.timer(() => { if (!signal?.aborted) { done(); resolve(a); } }, this.latencyMs);
    });
  }
  pathsStarted(): string[] {
    return this.starts.map((s) => s.path);
  }
}

function ok(): UpstreamAnswer {
  return { status: 200, contentType: 'application/json', retryAfter: undefined, body: Buffer.from('{}') };
}
function status(code: number, retryAfter?: string): UpstreamAnswer {
  return { status: code, contentType: 'application/json', retryAfter, body: Buffer.from(`{"code":${code}}`) };
}

class Recorder implements SchedulerObserver {
  readonly events: string[] = [];
  started(priority: Priority, retry: boolean): void { this.events.push(`start ${priority}${retry ? ' retry' : ''}`); }
  answered(s: number | string): void { this.events.push(`answer ${s}`); }
  retried(cause: string): void { this.events.push(`retry ${cause}`); }
}

function setup(o: { maxRps?: number; maxConcurrency?: number; maxQueue?: number; maxQueuePerCaller?: number } = {}) {
  const clock = new FakeClock();
  const imds = new FakeImds(clock);
  const observer = new Recorder();
  const scheduler = new UpstreamScheduler({ transport: imds, clock, observer, ...o });
  /** Runs the clock forward in small steps, letting answers and their callbacks through. */
  async function run(ms: number, step = 5): Promise<void> {
    for (let i = 0; i < ms; i += step) {
      clock.advance(step);
      await settle();
    }
  }
  return { clock, imds, scheduler, observer, run };
}

t.test('the rate and concurrency bounds are never exceeded, whatever the burst', async (t) => {
  const { imds, scheduler, run } = setup({ maxRps: 19, maxConcurrency: 4 });
  imds.latencyMs = 20;
  const answers: Array<Promise<UpstreamAnswer>> = [];
  for (let i = 0; i < 200; i++) answers.push(fetchPaced(scheduler, `/t?resource=${i}`, `pod-${i % 50}`, undefined, 60_000));
  await run(12_000);
  const settled = await Promise.all(answers.map((p) => p.then((a) => a.status, () => 0)));
  t.equal(settled.filter((s) => s === 200).length, 200, 'every fetch answered');
  t.equal(imds.starts.length, 200, 'one request each');
  t.ok(imds.maxInFlight <= 4, `at most 4 at IMDS at once (saw ${imds.maxInFlight})`);
  t.equal(imds.maxInFlight, 4, 'and the concurrency is used');
  let worst = 0;
  for (let i = 0; i < imds.starts.length; i++) {
    const inWindow = imds.starts.filter((s) => s.at > imds.starts[i]!.at - 1000 && s.at <= imds.starts[i]!.at).length;
    worst = Math.max(worst, inWindow);
  }
  t.equal(worst, 19, 'never more than 19 starts in any sliding second, and the rate is used');
  const last = imds.starts.at(-1)!.at - imds.starts[0]!.at;
  // A slot is held until a second after its answer (20 ms here): 19 starts per 1.02 s.
  t.ok(last >= 10_000 && last < 11_000, `200 starts at 19/s take about 10.7 s (${last} ms)`);
});

t.test('the rate bound holds at IMDS even when requests leave late and answers are read late', async (t) => {
  const { clock, run } = setup();
  // A loaded event loop: each request reaches IMDS 0-300 ms after the scheduler started it,
  // and is answered 20 ms after that.
  const admitted: number[] = [];
  let n = 0;
  const lagging: TokenTransport = {
    fetch: () => new Promise((resolve) => {
      const lag = (n++ * 137) % 300;
      clock.timer(() => {
        admitted.push(clock.now());
        clock.timer(() => resolve(ok()), 20);
      }, lag);
    }),
  };
  const s2 = new UpstreamScheduler({ transport: lagging, clock, maxRps: 19, maxConcurrency: 4 });
  const ps = Array.from({ length: 120 }, (_, i) => fetchPaced(s2, `/r${i}`, `pod-${i % 30}`, undefined, 60_000));
  await run(15_000);
  await Promise.all(ps);
  let worst = 0;
  for (const at of admitted) worst = Math.max(worst, admitted.filter((x) => x > at - 1000 && x <= at).length);
  t.equal(admitted.length, 120);
  t.ok(worst <= 19, `no second at IMDS saw more than 19 (worst ${worst})`);
});

t.test('fair across pods, first in first out within a pod', async (t) => {
  const { imds, scheduler, run } = setup({ maxRps: 1000, maxConcurrency: 1 });
  const ps: Array<Promise<unknown>> = [];
  for (let i = 0; i < 10; i++) ps.push(fetchPaced(scheduler, `/a${i}`, 'attacker', undefined, 60_000));
  ps.push(fetchPaced(scheduler, '/v0', 'victim', undefined, 60_000), fetchPaced(scheduler, '/v1', 'victim', undefined, 60_000));
  ps.push(fetchPaced(scheduler, '/w0', 'other', undefined, 60_000));
  await run(1_000, 5);
  await Promise.all(ps);
  const order = imds.pathsStarted();
  t.same(order.filter((p) => p.startsWith('/a')), Array.from({ length: 10 }, (_, i) => `/a${i}`), 'one pod\'s fetches in the order asked');
  t.same(order.filter((p) => p.startsWith('/v')), ['/v0', '/v1'], 'the other pod\'s too');
  t.ok(order.indexOf('/v0') <= 2 && order.indexOf('/w0') <= 3, `a pod arriving after a flood of 10 waits about one turn: ${order.join(' ')}`);
  t.ok(order.indexOf('/v1') <= 5, 'and its second fetch one round later, not after the flood');
});

t.test('a fetch two pods wait for moves up to the earlier place', async (t) => {
  const { imds, scheduler, run } = setup({ maxRps: 1000, maxConcurrency: 1 });
  const ps: Array<Promise<unknown>> = [];
  for (let i = 0; i < 6; i++) ps.push(fetchPaced(scheduler, `/a${i}`, 'a', undefined, 60_000));
  const shared = scheduler.submit('/shared', 'a');
  if (typeof shared === 'string') throw new Error(shared);
  ps.push(scheduler.wait(shared, undefined, 60_000));
  scheduler.join(shared, 'b');
  ps.push(scheduler.wait(shared, undefined, 60_000));
  await run(500, 5);
  await Promise.all(ps);
  t.ok(imds.pathsStarted().indexOf('/shared') <= 2, `b's turn serves it: ${imds.pathsStarted().join(' ')}`);
  t.equal(imds.pathsStarted().filter((p) => p === '/shared').length, 1, 'fetched once');
});

t.test('429, 5xx, 404 and 410 are retried inside the budget; another 4xx is final', async (t) => {
  for (const [code, cause] of [[429, '429'], [500, '5xx'], [503, '5xx'], [404, '404'], [410, '410']] as const) {
    const { imds, scheduler, observer, run } = setup({ maxRps: 1000, maxConcurrency: 4 });
    imds.answer = (_p, attempt) => (attempt === 1 ? status(code) : ok());
    const p = fetchPaced(scheduler, '/x', 'pod', undefined, 60_000);
    await run(2_000);
    t.equal((await p).status, 200, `${code}: the pod gets the retry's answer`);
    t.equal(imds.starts.length, 2, `${code}: asked twice`);
    t.ok(imds.starts[1]!.at - imds.starts[0]!.at >= 500, `${code}: after a backoff`);
    t.same(observer.events, ['start foreground', `answer ${code}`, `retry ${cause}`, 'start foreground retry', 'answer 200']);
  }
  const { imds, scheduler, run } = setup();
  imds.answer = () => status(400);
  const p = fetchPaced(scheduler, '/x', 'pod', undefined, 60_000);
  await run(3_000);
  t.equal((await p).status, 400, 'Identity not found is relayed');
  t.equal(imds.starts.length, 1, 'and never retried');
});

t.test('IMDS\'s Retry-After holds every start, not only the throttled one', async (t) => {
  const { clock, imds, scheduler, run } = setup({ maxRps: 1000, maxConcurrency: 1 });
  imds.answer = (path, attempt) => (path === '/x' && attempt === 1 ? status(429, '3') : ok());
  const t0 = clock.now();
  const x = fetchPaced(scheduler, '/x', 'pod-1', undefined, 60_000);
  await run(50);
  const y = fetchPaced(scheduler, '/y', 'pod-2', undefined, 60_000);
  await run(4_000);
  await Promise.all([x, y]);
  const later = imds.starts.slice(1);
  t.ok(later.every((s) => s.at >= t0 + 3_000), `nothing starts for 3 s after the 429: ${later.map((s) => s.at - t0).join(', ')}`);
  t.same(new Set(later.map((s) => s.path)), new Set(['/x', '/y']));
});

t.test('giving up: after the last attempt the last answer is relayed; with nobody waiting, retries stop', async (t) => {
  const { imds, scheduler, run } = setup({ maxRps: 1000 });
  imds.answer = () => status(500);
  const p = fetchPaced(scheduler, '/x', 'pod', undefined, 60_000);
  await run(20_000, 20);
  const a = await p;
  t.equal(a.status, 500, 'the last 500 is relayed');
  t.equal(imds.starts.length, MAX_ATTEMPTS, `${MAX_ATTEMPTS} attempts`);
  const gaps = imds.starts.slice(1).map((s, i) => s.at - imds.starts[i]!.at - 20);
  t.same(gaps.map((g) => Math.round(g / 100) * 100), [500, 1000, 2000, 4000, 8000], 'exponential backoff');

  const s2 = setup({ maxRps: 1000 });
  s2.imds.answer = () => status(503);
  const c = new AbortController();
  const q = fetchPaced(s2.scheduler, '/x', 'pod', c.signal, 60_000);
  await s2.run(100);
  c.abort();
  await t.rejects(q, { name: 'UpstreamFailure', kind: 'aborted' });
  await s2.run(10_000, 20);
  t.equal(s2.imds.starts.length, 1, 'the client hung up during the backoff: no retry for nobody');
  t.same(s2.scheduler.queued, { foreground: 0, background: 0 });
});

t.test('a client waits at most its bound, then learns from its place when to come back; the fetch stays', async (t) => {
  const { imds, scheduler, run } = setup({ maxRps: 10, maxConcurrency: 4 });
  const waits = Array.from({ length: 60 }, (_, i) => fetchPaced(scheduler, `/r${i}`, `pod-${i}`, undefined, 2_000)
    .then(() => 0, (e: UpstreamFailure) => { t.equal(e.kind, 'queued'); return e.retryAfterSec!; }));
  await run(2_100);
  const retryAfter = await Promise.all(waits);
  const answered = retryAfter.filter((r) => r === 0).length;
  t.ok(answered >= 19 && answered <= 21, `about 2 s at 10/s answered within the bound (${answered})`);
  const told = retryAfter.filter((r) => r > 0);
  t.same(told, [...told].sort((a, b) => a - b), 'later places are told later times');
  t.ok(new Set(told).size >= 4, `spread, not all equal: ${[...new Set(told)].join(',')}`);
  t.ok(told[0]! >= 1 && told[0]! <= 2, `the first one waiting: under a second away, plus one (${told[0]})`);
  const last = Math.ceil(39 / 10) + 1;
  t.ok(told.at(-1)! >= last && told.at(-1)! <= last + 1, `the last: its 39 predecessors at 10/s, plus one (${told.at(-1)})`);
  await run(5_000);
  t.equal(imds.starts.length, 60, 'the deferred fetches went on: the retries will find them done');
});

t.test('a client that hangs up leaves the queue', async (t) => {
  const { imds, scheduler, run } = setup({ maxRps: 1000, maxConcurrency: 1 });
  imds.answer = (p) => (p === '/first' ? 'hang' : ok());
  const first = new AbortController();
  const leaving = new AbortController();
  const a = fetchPaced(scheduler, '/first', 'p1', first.signal, 60_000);
  const b = fetchPaced(scheduler, '/leaving', 'p2', leaving.signal, 60_000);
  const c = fetchPaced(scheduler, '/staying', 'p3', undefined, 60_000);
  t.same(scheduler.queued, { foreground: 2, background: 0 });
  leaving.abort();
  await t.rejects(b, { name: 'UpstreamFailure', kind: 'aborted' });
  t.same(scheduler.queued, { foreground: 1, background: 0 }, 'out of the queue at once');
  first.abort();
  await t.rejects(a, { name: 'UpstreamFailure', kind: 'aborted' });
  t.equal(imds.starts[0]!.signal.aborted, true, 'the running one is cancelled at IMDS');
  await run(100);
  t.equal((await c).status, 200);
  t.same(imds.pathsStarted(), ['/first', '/staying'], 'the one that left never reached IMDS');
});

t.test('the queue and each pod\'s share of it are bounded', async (t) => {
  const { scheduler } = setup({ maxRps: 1, maxConcurrency: 1, maxQueue: 5, maxQueuePerCaller: 2 });
  const attacker = [0, 1, 2].map((i) => scheduler.submit(`/a${i}`, 'attacker'));
  t.equal(attacker[2], 'caller_full', 'a pod over its share is refused');
  const f = refusedFailure(scheduler, 'caller_full', 'attacker');
  t.equal(f.kind, 'share_exceeded');
  t.ok(f.retryAfterSec! >= 1, 'with a Retry-After');
  t.type(scheduler.submit('/v', 'victim'), 'object', 'another pod still gets in');
  t.type(scheduler.submit('/w', 'other'), 'object');
  t.type(scheduler.submit('/x', 'more'), 'object');
  t.equal(scheduler.submit('/y', 'late'), 'full', 'the whole queue is bounded too');
  t.equal(refusedFailure(scheduler, 'full', 'late').kind, 'busy');
  t.equal(refusedFailure(scheduler, 'full', 'late').retryAfterSec, Math.ceil(5 / 1) + 1, 'come back when the queue has drained');
});

t.test('background refreshes run only when no pod waits, and a pod that needs one takes it over', async (t) => {
  const { imds, scheduler, observer, run } = setup({ maxRps: 1000, maxConcurrency: 1 });
  const bg = scheduler.submit('/refresh', '', 'background', Date.now() + 1e12);
  const fg = [0, 1, 2].map((i) => fetchPaced(scheduler, `/pod${i}`, `pod-${i}`, undefined, 60_000));
  await run(200);
  await Promise.all(fg);
  t.equal(imds.pathsStarted()[0], '/refresh', 'an idle budget starts it at once');
  const more = [3, 4].map((i) => fetchPaced(scheduler, `/pod${i}`, `pod-${i}`, undefined, 60_000));
  const bg2 = scheduler.submit('/refresh2', '', 'background', Number.MAX_SAFE_INTEGER);
  const bg3 = scheduler.submit('/refresh3', '', 'background', Number.MAX_SAFE_INTEGER);
  if (typeof bg3 === 'string' || typeof bg2 === 'string' || typeof bg === 'string') throw new Error('refused');
  scheduler.join(bg3, 'pod-9'); // a pod asks for what a refresh was fetching
  const joined = scheduler.wait(bg3, undefined, 60_000);
  await run(300);
  await Promise.all([...more, joined, bg2.promise]);
  const after = imds.pathsStarted().slice(4);
  t.same(after, ['/pod3', '/pod4', '/refresh3', '/refresh2'], 'pods first, the joined refresh as a pod\'s fetch, the other refresh last');
  t.ok(observer.events.includes('start background'));
});

t.test('Retry-After parsing and the retry plan', async (t) => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  t.equal(parseRetryAfter('3', now), 3000);
  t.equal(parseRetryAfter(' 0 ', now), 0);
  t.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:05 GMT', now), 5000);
  t.equal(parseRetryAfter('Wed, 31 Dec 2025 00:00:05 GMT', now), 0, 'a date in the past: now');
  for (const bad of [undefined, '', '-1', '1.5', 'soon', '1e3', '12345678901']) t.equal(parseRetryAfter(bad, now), undefined, `ignored: ${bad}`);
  t.same(planRetry(status(429, '7'), 1, now), { delayMs: 7000, cause: '429' }, 'IMDS\'s own wait wins when longer');
  t.same(planRetry(status(429, '0'), 3, now), { delayMs: 2000, cause: '429' }, 'the backoff when longer');
  t.same(planRetry(status(429, '99999'), 1, now), { delayMs: 30_000, cause: '429' }, 'capped');
  t.equal(planRetry(status(500), MAX_ATTEMPTS, now), undefined, 'no attempt after the last');
  for (const final of [200, 201, 400, 401, 403, 408, 413]) t.equal(planRetry(status(final), 1, now), undefined, `${final} is final`);
  t.equal(planRetry(new UpstreamFailure('timeout', 'x'), 1, now), undefined, 'a timeout is not retried');
});
