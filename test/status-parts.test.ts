// The parts of `nmi status` on their own: the recent-problems table (bounded, keyed by message,
// nothing a pod sent kept), the logger that feeds it, IMDS health from request outcomes, and
// the health verdict.
import t from 'tap';
import { Writable } from 'node:stream';
import { createLogger } from '../src/observability/logger.ts';
import type { RequestOutcome } from '../src/observability/request-outcome.ts';
import { assessHealth, type NodeStatus } from '../src/status/node-status.ts';
import { noteProblems, RecentProblems } from '../src/status/recent-problems.ts';
import { statusText } from '../src/status/status-cli.ts';
import { UpstreamHealth } from '../src/status/upstream-health.ts';

t.test('a flood of one warning is one entry with its count; distinct messages beyond the bound evict the least recent', async (t) => {
  let now = 1_000_000;
  const p = new RecentProblems({ maxEntries: 3, windowMs: 60_000, now: () => now });
  p.note('error', 'iptables', 'interception rules check failed', 'write_rules: Permission denied');
  for (let i = 0; i < 10_000; i++) p.note('warn', null, 'refusal log lines suppressed for this caller', null);
  const flood = p.recent();
  t.equal(flood.length, 2, 'the iptables error survives a flood of another warning');
  t.match(flood[0], { level: 'warn', message: 'refusal log lines suppressed for this caller', count: 10_000 });
  t.match(flood[1], { level: 'error', component: 'iptables', detail: 'write_rules: Permission denied', count: 1 });
  now += 1;
  p.note('warn', 'informers', 'a', null);
  p.note('warn', 'informers', 'b', null);
  t.same(p.recent().map((e) => e.message), ['b', 'a', 'refusal log lines suppressed for this caller'], 'the least recently seen went first');
  now += 61_000;
  t.same(p.recent(), [], 'nothing older than the window is shown');
  p.note('warn', 'informers', 'a', null);
  t.match(p.recent(), [{ message: 'a', count: 1 }], 'an entry seen again after the window starts over');
});

t.test('details are one line and bounded', async (t) => {
  const p = new RecentProblems();
  p.note('error', null, 'm', `line one\nline two\u2028${'x'.repeat(1000)}`);
  const d = p.recent()[0]!.detail!;
  t.notMatch(d, /[\n\u2028]/);
  t.match(d, /^line one line two xxx/);
  t.match(d, /… \(\d+ more\)$/);
  t.ok(d.length < 340);
});

t.test('the logger notes warn, error and fatal from every child, writes every line as before, and keeps no field', async (t) => {
  const lines: string[] = [];
  const sink = new Writable({ write(chunk: Buffer, _e, done) { lines.push(chunk.toString()); done(); } });
  const p = new RecentProblems();
  const log = noteProblems(createLogger('json', 'info', sink), p);
  const iptables = log.child({ component: 'iptables' });
  const deeper = iptables.child({ pass: 3 });
  log.info('started');
  iptables.error({ err: new Error('xtables lock held') }, 'interception rules check failed');
  deeper.warn({ resource: 'https://attacker.example/\u202e' }, 'token request failed upstream');
  log.warn('plain message');
  t.equal(lines.length, 4, 'every line is still written');
  t.match(JSON.parse(lines[1]!), { level: 50, component: 'iptables', msg: 'interception rules check failed', err: { message: 'xtables lock held' } });
  const recent = p.recent();
  t.same(recent.map((e) => [e.level, e.component, e.message, e.detail]), [
    ['warn', null, 'plain message', null],
    ['warn', 'iptables', 'token request failed upstream', null],
    ['error', 'iptables', 'interception rules check failed', 'xtables lock held'],
  ]);
  t.notMatch(JSON.stringify(recent), /attacker/, 'what a pod sent, in the fields, is not kept');
});

const outcome = (result: number | 'timeout' | 'unreachable', cache?: 'hit' | 'miss'): RequestOutcome =>
  ({ route: 'token', status: 200, reason: undefined, seconds: 0.01, cache, upstream: { result, seconds: 0.01 } });

t.test('IMDS health: failures are transport errors, 5xx and 429; cache hits are not calls; failing until the next success', async (t) => {
  let now = 10_000_000;
  const h = new UpstreamHealth({ windowMs: 5 * 60_000, now: () => now });
  h.finished(outcome(200));
  h.finished(outcome(400));
  h.finished({ route: 'token', status: 403, reason: 'identity_not_bound', seconds: 0 });
  t.match(h.view(), { answered: 2, failed: 0, failing: false, lastFailure: null });
  now += 1000;
  h.finished(outcome('timeout'));
  h.finished(outcome(503));
  h.finished(outcome(200, 'hit'));
  h.finished(outcome(429));
  t.match(h.view(), { answered: 2, failed: 3, failing: true, lastFailure: { result: '429' } }, 'a cache hit does not hide a failing IMDS');
  now += 1000;
  h.finished(outcome(200));
  t.match(h.view(), { answered: 3, failed: 3, failing: false });
  now += 1000;
  h.finished(outcome('unreachable'));
  t.equal(h.view().failing, true);
  now += 6 * 60_000;
  t.match(h.view(), { answered: 0, failed: 0, failing: false }, 'an old failure is no longer failing');
  const entraGrant = { kind: 'grant', source: { kind: 'workload-identity' } } as unknown as RequestOutcome['decision'];
  h.finished({ ...outcome(503), decision: entraGrant });
  t.match(h.view(), { answered: 0, failed: 0, failing: false }, 'an Entra-sourced grant\'s answer is not IMDS\'s');
  const imdsGrant = { kind: 'grant', source: { kind: 'imds' } } as unknown as RequestOutcome['decision'];
  h.finished({ ...outcome(503), decision: imdsGrant });
  t.match(h.view(), { answered: 0, failed: 1, failing: true }, 'an IMDS-sourced grant\'s is');
});

function base(): Omit<NodeStatus, 'health' | 'problems'> {
  return {
    version: '0', node: 'n', pid: 1, uptimeSeconds: 5, readiness: { ready: true, reasons: [] }, mode: { operation: 'managed', forceNamespaced: true },
    interception: { mode: 'iptables', backend: 'nft', rulesInstalled: true, hostNetworkRules: true, routeLocalnet: true, localnetGuard: null, hostNetwork: { installed: true, error: null }, lastCheck: 'x', lastError: null, repairs: {}, failures: {} },
    attribution: { sourceIp: true, socketCgroup: true, socketCgroupLookupsPending: 0, strategies: { attestation: 'available' } },
    state: { source: 'kubernetes', synced: true, stale: false, maxStalenessSeconds: 0, resources: [{ resource: 'pods', synced: true, ageSeconds: 31.5, errors: 2 }], counts: { pods: 1 } },
    budgets: [{ source: 'imds', limits: {}, inFlight: 0, queued: {}, windowSeconds: 300, answered: 0, failed: 0, lastSuccess: null, lastFailure: null, failing: false }],
    tokenCache: { enabled: true, entries: 0 },
    errors: { windowSeconds: 600, entries: [] },
  };
}

t.test('the health verdict', async (t) => {
  t.same(assessHealth(base()), { health: 'ok', problems: [] });
  t.same(assessHealth({ ...base(), readiness: { ready: false, reasons: ['cluster state not synced yet'] }, state: { ...base().state, stale: true } }),
    { health: 'not_ready', problems: ['cluster state not synced yet'] }, 'not ready wins');
  t.same(assessHealth({ ...base(), state: { ...base().state, stale: true } }).problems, ['cluster state is stale: the Kubernetes API last confirmed it 32 s ago']);
  const entra = { ...base().budgets[0]!, source: 'entra', failing: true, failed: 2, answered: 1, lastFailure: { at: 't', result: '500' } };
  t.same(assessHealth({ ...base(), budgets: [base().budgets[0]!, entra] }),
    { health: 'degraded', problems: ['entra is failing: last call 500 at t (2 of 3 calls failed in 300 s)'] }, 'a budget registered by another token source counts');
  t.equal(assessHealth({ ...base(), interception: { ...base().interception, lastError: 'read_rules: lock' } }).health, 'degraded');
  t.equal(assessHealth({ ...base(), interception: { ...base().interception, mode: 'external', lastError: null, rulesInstalled: null } }).health, 'ok');
});

t.test('the text form shows registered strategies and every resource', async (t) => {
  const s: NodeStatus = { ...base(), health: 'ok', problems: [] };
  const text = statusText(s);
  t.match(text, /^podid-nmi 0 on node n \(pid 1, up 5 s\): OK\n/);
  t.match(text, /callers      source IP; socket cgroup for hostNetwork pods \(0 lookups pending\); attestation available/);
  t.match(text, /interception iptables \(nft\), rules in place, with the hostNetwork chain, route_localnet 1/);
  t.match(text, /pods\s+synced, confirmed 31\.5 s ago, 2 errors/);
});

t.test('the text form names a missing route_localnet guard or hostNetwork chain, with why', async (t) => {
  const i = base().interception;
  const s: NodeStatus = {
    ...base(), health: 'not_ready', problems: [],
    interception: { ...i, localnetGuard: { installed: false, error: 'iptables-restore: no filter table' }, hostNetwork: { installed: false, error: 'neither kubepods.slice nor kubepods exists' } },
  };
  const text = statusText(s);
  t.match(text, /interception iptables \(nft\), rules in place, HOSTNETWORK CHAIN NOT IN PLACE, ROUTE_LOCALNET GUARD NOT IN PLACE, route_localnet 1/);
  t.match(text, /hostNetwork chain: neither kubepods\.slice nor kubepods exists/);
  t.match(text, /route_localnet guard: iptables-restore: no filter table/);
  const guarded = statusText({ ...s, interception: { ...i, localnetGuard: { installed: true, error: null } } });
  t.match(guarded, /with the hostNetwork chain, route_localnet guard in place, route_localnet 1/);
  t.notMatch(guarded, /route_localnet guard:/);
});
