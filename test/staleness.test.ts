// A silent API server is noticed: per-resource state age, a stale gauge and a warning within
// probe interval + timeout + threshold; with --max-state-staleness, token decisions turn into a
// retryable 503 until the API answers again. Time is scaled down here; the defaults are checked
// to add up to about 30 s.
import t from 'tap';
import { DEFAULT_FRESHNESS } from '../src/cluster/freshness.ts';
import { toDaemonConfig } from '../src/config/daemon-config.ts';
import { FlagError, parseFlags } from '../src/config/flags.ts';
import { REFUSALS } from '../src/decision/reasons.ts';
import { eventually, metric, sleep, startHarness } from './fake-apiserver/harness.ts';
import { META } from './helpers/http.ts';
import { IDS, seededApi, startStack, TOKEN } from './helpers/stack.ts';

// Scaled down, with room for a loaded machine: a probe may take its whole timeout and still confirm in time.
const FAST_FRESHNESS = { probeIntervalMs: 200, probeTimeoutMs: 1_000, staleAfterS: 2 };
const RESOURCES = ['pods', 'azureidentities', 'azureidentitybindings', 'azurepodidentityexceptions'];

t.test('the defaults detect a silent API server within about 30 s', async (t) => {
  const worst = DEFAULT_FRESHNESS.probeIntervalMs + DEFAULT_FRESHNESS.probeTimeoutMs + DEFAULT_FRESHNESS.staleAfterS * 1000;
  t.ok(worst <= 30_000, `last confirmation + ${worst} ms at worst`);
  t.ok(DEFAULT_FRESHNESS.staleAfterS * 1000 > DEFAULT_FRESHNESS.probeIntervalMs + DEFAULT_FRESHNESS.probeTimeoutMs / 2, 'a healthy, quiet API is never called stale');
});

t.test('--max-state-staleness: 0 is off, a limit tighter than the probe cycle is refused', async (t) => {
  const cfg = (v: string) => toDaemonConfig(parseFlags(['--cluster-state=x', `--max-state-staleness=${v}`]).values);
  t.equal(cfg('0').maxStateStalenessS, 0);
  t.equal(cfg('60').maxStateStalenessS, 60);
  t.throws(() => cfg('5'), new FlagError('flag --max-state-staleness: 5 is below 20; use 0 (off) or at least 20 seconds'));
  t.throws(() => cfg('-1'), { message: /outside 0\.\.86400/ });
});

t.test('a hanging API server shows as stale state within the cycle, and as fresh once it answers', async (t) => {
  const h = await startHarness({ source: { freshness: FAST_FRESHNESS } });
  t.teardown(() => h.close());
  // Longer than staleAfterS without a single event: only the probe can keep the state fresh.
  // On a loaded machine a probe may come late, so the check waits (bounded) for a confirmation;
  // without one the ages only grow and the wait fails.
  await sleep(2_500);
  const ages = () => Promise.all(RESOURCES.map((resource) => metric(h.registry, 'podid_nmi_state_age_seconds', { resource })));
  let confirmed: { ages: number[]; stale: number } = { ages: [], stale: 1 };
  await eventually(async () => {
    confirmed = { ages: await ages(), stale: await metric(h.registry, 'podid_nmi_state_stale', {}) };
    return confirmed.ages.every((age) => age < 2);
  }, 'every resource confirmed by the probe');
  t.equal(confirmed.stale, 0, 'a quiet but answering API keeps the state fresh');
  for (const [i, age] of confirmed.ages.entries()) t.ok(age < 2, `${RESOURCES[i]} confirmed by the probe`);
  const before = h.logs.length;
  h.api.hang();
  await eventually(() => h.logs.slice(before).some((r) => r.level === 40 && r.msg.startsWith('cluster state is stale')), 'stale warning');
  t.equal(await metric(h.registry, 'podid_nmi_state_stale', {}), 1);
  for (const resource of RESOURCES) t.ok(await metric(h.registry, 'podid_nmi_state_age_seconds', { resource }) > 2, `${resource} age grows`);
  t.ok((h.state.freshness?.ageSeconds() ?? 0) > 2);
  const hung = h.logs.length;
  h.api.unhang();
  await eventually(() => h.logs.slice(hung).some((r) => r.msg === 'cluster state confirmed by the Kubernetes API again'), 'recovery logged');
  t.equal(await metric(h.registry, 'podid_nmi_state_stale', {}), 0);
});



t.test('with --max-state-staleness, token decisions are refused with a retryable 503 while stale, and served again after', async (t) => {
  const api = await seededApi(t);
  const s = await startStack(t, {
    kubeconfig: api.kubeconfig(), flags: ['--token-cache=false', '--pod-events=false'],
    configure: (c) => { c.maxStateStalenessS = 2; }, daemon: { freshness: FAST_FRESHNESS },
  });
  await s.daemon.state.whenReady(AbortSignal.timeout(10_000));
  t.equal((await s.ask(TOKEN, { from: '127.0.0.10', headers: META })).status, 200, 'granted while fresh');
  api.hang();
  let a = await s.ask(TOKEN, { from: '127.0.0.10', headers: META });
  for (let i = 0; i < 300 && a.status === 200; i++) {
    await sleep(50);
    a = await s.ask(TOKEN, { from: '127.0.0.10', headers: META });
  }
  const spec = REFUSALS.state_stale;
  t.equal(a.status, 503, 'refused once stale');
  t.same(a.json, { error: spec.error, error_description: spec.description, reason: 'state_stale' });
  t.equal(a.headers['retry-after'], '2');
  t.equal(a.headers['x-podid-nmi-reason'], 'state_stale');
  t.equal((await s.ask(TOKEN, { from: '127.0.0.11', headers: META })).json?.reason, 'state_stale', 'refusals from old state are not final either');
  t.equal((await s.ask('/metadata/instance?api-version=2021-02-01', { from: '127.0.0.10', headers: META })).status, 200, 'other routes do not depend on cluster state');
  t.match(await s.metrics(), /podid_nmi_requests_total\{route="token",decision="refused",status="503",reason="state_stale"\} [1-9]/);
  api.unhang();
  let b = await s.ask(TOKEN, { from: '127.0.0.10', headers: META });
  for (let i = 0; i < 300 && b.status !== 200; i++) {
    await sleep(50);
    b = await s.ask(TOKEN, { from: '127.0.0.10', headers: META });
  }
  t.equal(b.status, 200, 'granted again once the API answers');
  t.equal(b.json?.client_id, IDS.reader!.clientID);
});

t.test('without the flag (the default), a stale state is reported but still decided from', async (t) => {
  const api = await seededApi(t);
  const s = await startStack(t, { kubeconfig: api.kubeconfig(), flags: ['--token-cache=false', '--pod-events=false'], daemon: { freshness: FAST_FRESHNESS } });
  await s.daemon.state.whenReady(AbortSignal.timeout(10_000));
  api.hang();
  await eventually(() => s.logs.some((l) => l.includes('cluster state is stale')), 'stale warning');
  t.match(await s.metrics(), /podid_nmi_state_stale 1/);
  t.equal((await s.ask(TOKEN, { from: '127.0.0.10', headers: META })).status, 200, 'still granted (fail open on staleness is the default trade-off)');
  api.unhang();
});
