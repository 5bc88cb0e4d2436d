// The small pieces behind the hostile-pod defences, each on its own: shares, cooldown, log
// escaping, the refusal-log limiter, and when a terminating pod lets go of its address.
import { Writable } from 'node:stream';
import t from 'tap';
import { toPodInfo } from '../src/cluster/convert.ts';
import { Cooldown } from '../src/listener/cooldown.ts';
import { Shares } from '../src/listener/shares.ts';
import { createLogger } from '../src/observability/logger.ts';
import { MAX_LOGGED_VALUE, safeForLog } from '../src/observability/log-safe.ts';
import { RefusalLog } from '../src/observability/refusal-log.ts';

t.test('shares: a cap per caller, and one over all strangers', async (t) => {
  const shares = new Shares({ perCaller: 2, strangers: 3 });
  const pod = { key: 'pod:a', known: true };
  const r1 = shares.take(pod);
  const r2 = shares.take(pod);
  t.ok(r1 && r2);
  t.equal(shares.take(pod), undefined, 'the pod is at its share');
  r1!();
  r1!();
  t.equal(shares.held('pod:a'), 1, 'a release counts once');
  t.ok(shares.take(pod), 'room again after a release');
  const s1 = shares.take({ key: 'ip:1', known: false });
  const s2 = shares.take({ key: 'ip:2', known: false });
  const s3 = shares.take({ key: 'ip:3', known: false });
  t.ok(s1 && s2 && s3);
  t.equal(shares.take({ key: 'ip:4', known: false }), undefined, 'strangers together are at their share');
  t.ok(shares.take({ key: 'pod:b', known: true }), 'pods are not');
  s2!();
  t.ok(shares.take({ key: 'ip:4', known: false }));
});

t.test('cooldown: active until it runs out; bounded', async (t) => {
  let now = 0;
  const c = new Cooldown(1_000, { maxCallers: 2, now: () => now });
  c.start('a');
  t.ok(c.active('a'));
  t.notOk(c.active('b'));
  now = 999;
  t.ok(c.active('a'));
  now = 1_000;
  t.notOk(c.active('a'), 'over after its time');
  c.start('a');
  c.start('b');
  c.start('c');
  t.notOk(c.active('a'), 'the oldest is forgotten when full');
  t.ok(c.active('b') && c.active('c'));
});

t.test('safeForLog: control, bidi, zero-width, separators and BOM escaped; long values cut', async (t) => {
  t.equal(safeForLog('https://vault.azure.net'), 'https://vault.azure.net', 'ordinary values unchanged');
  t.equal(safeForLog('a\r\nb\u0000c\u007f\u0085'), 'a\\u{000d}\\u{000a}b\\u{0000}c\\u{007f}\\u{0085}');
  for (const c of ['\u061c', '\u200b', '\u200c', '\u200d', '\u200e', '\u200f', '\u2028', '\u2029', '\u202a', '\u202e', '\u2060', '\u2066', '\u2069', '\ufeff']) {
    t.equal(safeForLog(`x${c}y`), `x\\u{${c.charCodeAt(0).toString(16).padStart(4, '0')}}y`, `U+${c.charCodeAt(0).toString(16)}`);
  }
  t.equal(safeForLog('é中🙂'), 'é中🙂', 'other text is left alone');
  const long = safeForLog('x'.repeat(1000));
  t.equal(long, `${'x'.repeat(MAX_LOGGED_VALUE)}…(+${1000 - MAX_LOGGED_VALUE})`);
  t.equal(safeForLog('\u202e'.repeat(100), 20).startsWith('\\u{202e}\\u{202e}'), true);
  t.ok(safeForLog('\u202e'.repeat(100), 20).length < 40, 'the bound counts the escaped text');
});

t.test('refusal log: a few lines per caller per window, then a count of the rest', async (t) => {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({ write(chunk: Buffer, _e, done) { for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>); done(); } });
  let now = 0;
  const log = new RefusalLog(createLogger('json', 'info', sink), { perWindow: 3, windowMs: 1_000, maxCallers: 2, now: () => now });
  t.teardown(() => log.close());
  for (let i = 0; i < 10; i++) log.write('pod:a', { pod: 'ns/a', uid: 'a', reason: 'pod_unlabeled', i }, 'token request refused');
  log.write('pod:b', { pod: 'ns/b', reason: 'binding_missing' }, 'token request refused');
  t.equal(lines.filter((l) => l.pod === 'ns/a').length, 3, 'three lines for a');
  t.equal(lines.filter((l) => l.pod === 'ns/b').length, 1, 'b is not silenced by a');
  now = 1_000;
  log.write('pod:a', { pod: 'ns/a', uid: 'a', reason: 'pod_unlabeled' }, 'token request refused');
  t.match(lines.at(-2), { pod: 'ns/a', uid: 'a', reason: 'pod_unlabeled', suppressed: 7, msg: 'refusal log lines suppressed for this caller' }, 'the count, at the next window');
  t.match(lines.at(-1), { pod: 'ns/a', msg: 'token request refused' }, 'then the new window\'s line');
  for (let i = 0; i < 5; i++) log.write('pod:b', { pod: 'ns/b', reason: 'binding_missing' }, 'token request refused');
  log.write('pod:a', { pod: 'ns/a', uid: 'a', reason: 'pod_unlabeled' }, 'token request refused');
  log.write('pod:c', { pod: 'ns/c', reason: 'pod_unlabeled' }, 'token request refused');
  t.match(lines.find((l) => l.pod === 'ns/b' && l.suppressed !== undefined), { suppressed: 2 }, 'the least recent caller, forgotten for room, has its count written first');
  now = 5_000;
  log.flush();
  t.notOk(lines.some((l) => l.pod === 'ns/c' && l.suppressed !== undefined), 'nothing to report for a caller that was never silenced');
});

t.test('convert: a terminating pod whose containers have all stopped holds no address', async (t) => {
  const pod = (meta: Record<string, unknown>, status: Record<string, unknown>) =>
    toPodInfo({ metadata: { name: 'p', namespace: 'ns', uid: 'u', ...meta }, status: { phase: 'Running', podIPs: [{ ip: '10.0.0.1' }], ...status } });
  const stopped = { state: { terminated: { exitCode: 0 } } };
  const running = { state: { running: {} } };
  const deleted = { deletionTimestamp: '2026-12-01T00:00:00Z' };
  t.same(pod(deleted, { containerStatuses: [stopped, stopped] }).ips, [], 'deleted and every container stopped');
  t.same(pod(deleted, { initContainerStatuses: [stopped], containerStatuses: [stopped], ephemeralContainerStatuses: [stopped] }).ips, []);
  t.same(pod(deleted, { containerStatuses: [stopped, running] }).ips, ['10.0.0.1'], 'one container still running');
  t.same(pod(deleted, { initContainerStatuses: [running], containerStatuses: [{ state: { waiting: {} } }] }).ips, ['10.0.0.1'], 'still starting');
  t.same(pod(deleted, {}).ips, ['10.0.0.1'], 'no statuses yet: nothing says it stopped');
  t.same(pod({}, { containerStatuses: [stopped] }).ips, ['10.0.0.1'], 'not deleted: phase decides, as before');
  t.throws(() => pod(deleted, { containerStatuses: 'x' }), { name: 'ConversionError' });
});
