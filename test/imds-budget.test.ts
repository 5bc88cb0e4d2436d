// The IMDS budget over HTTP, daemon and emulator on loopback: a client that waited its bound
// is told when to come back and its retry is a cache hit; the queue and each pod's share of it
// are bounded with clear 429s; a pod flooding distinct resources does not take token service
// from another pod; on shutdown every waiting request gets a retryable 503, never a reset.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { REFUSALS, type Reason } from '../src/decision/reasons.ts';
import { startImdsEmulator } from '../src/emulator/imds-emulator.ts';
import { eventually } from './helpers/eventually.ts';
import { ask, META, type Answer } from './helpers/http.ts';
import { IDS, STATE_YAML, startStack, type Stack } from './helpers/stack.ts';

/** A refusal whose Retry-After is computed from the queue: at least the reason's floor. */
function refused(t: Test, a: Answer, reason: Reason, what: string): void {
  const spec = REFUSALS[reason];
  t.equal(a.status, spec.status, `${what}: status`);
  t.same(a.json, { error: spec.error, error_description: spec.description, reason }, `${what}: body`);
  t.equal(a.headers['x-podid-nmi-reason'], reason, `${what}: reason header`);
  t.ok(Number(a.headers['retry-after']) >= ('retryAfter' in spec ? spec.retryAfter : 1), `${what}: Retry-After ${a.headers['retry-after']}`);
}

/** The excepted pod (127.0.0.12) passes its own selector through: one distinct token per resource. */
const resourceToken = (i: number | string) =>
  `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fr${i}.example&client_id=${IDS.agent!.clientID}`;
const VICTIM_TOKEN = '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net';
const tokenUrls = (s: Stack) => s.emulator.requests.map((r) => r.url).filter((u) => u.includes('/oauth2/token'));

/** Bounded generously (a loaded machine is slow), named by the condition's own text. */
const waitFor = (cond: () => boolean | Promise<boolean>): Promise<number> => eventually(cond, cond.toString());

t.test('a client that waited its bound gets 429 with a Retry-After from its place; its retry is a cache hit', async (t) => {
  const s = await startStack(t, { flags: ['--imds-max-rps=1', '--token-wait-ms=300'] });
  const answers = await Promise.all([0, 1, 2].map((i) => s.ask(resourceToken(i), { from: '127.0.0.12', headers: META })));
  const statuses = answers.map((a) => a.status).sort();
  t.same(statuses, [200, 429, 429], 'one start a second: the first is answered, two wait past their bound');
  const deferred = answers.filter((a) => a.status === 429);
  for (const a of deferred) refused(t, a, 'upstream_queued', 'deferred');
  const after = deferred.map((a) => Number(a.headers['retry-after'])).sort();
  t.ok(after[1]! > after[0]!, `the later place is told a later time: ${after.join(', ')}`);
  await waitFor(() => tokenUrls(s).length === 3);
  const again = await Promise.all([0, 1, 2].map((i) => s.ask(resourceToken(i), { from: '127.0.0.12', headers: META })));
  t.same(again.map((a) => a.status), [200, 200, 200], 'coming back, every one gets its token');
  t.equal(tokenUrls(s).length, 3, 'from the cache: the fetches stayed queued and IMDS was asked once each');
  const metrics = await s.metrics();
  t.match(metrics, /podid_nmi_requests_total\{route="token",decision="passed_through",status="429",reason="upstream_queued"\} 2/);
  t.match(metrics, /podid_nmi_imds_starts_total\{priority="foreground",attempt="first"\} 3/);
  t.match(metrics, /podid_nmi_imds_queue_seconds_count\{priority="foreground"\} 3/);
  t.match(metrics, /podid_nmi_imds_answers_total\{status="200"\} 3/);
  t.match(metrics, /podid_nmi_imds_queue_length\{priority="foreground"\} 0/);
  t.match(metrics, /podid_nmi_imds_in_flight 0/);
});

t.test('a full queue answers 429 upstream_busy with Retry-After', async (t) => {
  const s = await startStack(t, { flags: ['--imds-max-rps=1', '--imds-max-queue=2', '--token-wait-ms=4000'] });
  const answers = await Promise.all([0, 1, 2, 3, 4].map((i) => s.ask(resourceToken(i), { from: '127.0.0.12', headers: META })));
  const busy = answers.filter((a) => a.status === 429);
  t.equal(busy.length, 2, 'one at IMDS, two queued, two refused');
  for (const a of busy) refused(t, a, 'upstream_busy', 'queue full');
  t.equal(answers.filter((a) => a.status === 200).length, 3, 'the queued ones are answered within their bound');
});

t.test('a pod flooding distinct resources gets 429 over its share; another pod keeps getting its token', async (t) => {
  const s = await startStack(t, { flags: ['--imds-max-rps=2', '--imds-max-queue-per-pod=4', '--token-wait-ms=8000'] });
  const flood = Array.from({ length: 30 }, (_, i) => s.ask(resourceToken(i), { from: '127.0.0.12', headers: META }));
  // The flood is in: one at IMDS, four queued, the rest refused at once.
  const refusedSoFar = async () => Number(/podid_nmi_requests_total\{[^}]*reason="upstream_share_exceeded"\} (\d+)/.exec(await s.metrics())?.[1] ?? 0);
  await waitFor(async () => (await refusedSoFar()) >= 20);
  const seenBefore = tokenUrls(s).length;
  const victim = await s.ask(VICTIM_TOKEN, { from: '127.0.0.10', headers: META });
  t.equal(victim.status, 200, 'the victim gets its token');
  t.equal(victim.json?.client_id, IDS.reader!.clientID);
  const order = tokenUrls(s).slice(seenBefore);
  const victimAt = order.findIndex((u) => !u.includes('example'));
  t.ok(victimAt >= 0 && victimAt <= 1, `at most one of the flood's fetches went before it: ${victimAt}`);
  const answers = await Promise.all(flood);
  const over = answers.filter((a) => a.status === 429);
  const served = answers.filter((a) => a.status === 200);
  t.ok(over.length >= 20, `the attacker is refused beyond its share (${over.length} of 30)`);
  for (const a of over) refused(t, a, 'upstream_share_exceeded', 'over its share');
  t.equal(served.length, 30 - over.length, `and served within it (${served.length})`);
  t.equal(tokenUrls(s).length, served.length + 1, 'refused requests never reached IMDS');
});

t.test('other routes are not starved by token traffic: they have their own connections and no queue', async (t) => {
  const s = await startStack(t, { flags: ['--token-wait-ms=8000'] });
  s.emulator.setFault({ kind: 'slow', delayMs: 20_000 });
  const hung = Array.from({ length: 12 }, (_, i) => s.ask(resourceToken(i), { from: '127.0.0.12', headers: META, timeoutMs: 30_000 }).catch(() => undefined));
  await waitFor(() => tokenUrls(s).length === 4);
  const instance = await s.ask('/metadata/instance/compute?api-version=2021-02-01', { from: '127.0.0.10', headers: META, timeoutMs: 10_000 });
  t.equal(instance.status, 200, 'instance metadata answered while every token connection waits on IMDS');
  t.equal(tokenUrls(s).length, 4, 'and token requests stayed within their concurrency');
  await s.daemon.close();
  await Promise.all(hung);
});

t.test('on shutdown, waiting and in-flight token requests get 503 with Retry-After, never a reset', async (t) => {
  const s = await startStack(t, { flags: ['--shutdown-grace-ms=1000', '--token-wait-ms=8000'] });
  s.emulator.setFault({ kind: 'slow', delayMs: 20_000 });
  const asks = [
    ...[0, 1, 2, 3, 4, 5].map((i) => s.ask(resourceToken(i), { from: '127.0.0.12', headers: META })),
    s.ask(VICTIM_TOKEN, { from: '127.0.0.10', headers: META }),
  ].map((p) => p.then((a) => a, (e: Error) => e));
  await waitFor(() => tokenUrls(s).length === 4);
  const closing = s.daemon.close();
  const answers = await Promise.all(asks);
  await closing;
  for (const a of answers) {
    if (a instanceof Error) {
      t.fail(`a client saw ${a.message}`);
      continue;
    }
    refused(t, a, 'shutting_down', 'drained');
    t.equal(a.headers.connection, 'close', 'and the connection closes cleanly');
  }
  t.equal(answers.length, 7);
});

t.test('SIGTERM to the daemon process: every waiting client gets its 503, then the process exits 0', async (t) => {
  const emulator = await startImdsEmulator({ identities: Object.values(IDS), rateLimit: false });
  t.teardown(() => emulator.close());
  emulator.setFault({ kind: 'slow', delayMs: 20_000 });
  const dir = t.testdir({ 'state.yaml': STATE_YAML });
  const root = fileURLToPath(new URL('..', import.meta.url));
  const daemon = spawn(process.execPath, [`${root}src/cli.ts`, `--cluster-state=${dir}/state.yaml`, '--node=node-1', '--manage-iptables=false', '--nmi-port=0',
    '--http-probe-port=0', '--prometheus-port=0', '--probe-listen-address=127.0.0.1', '--metadata-ip=127.0.0.1',
    `--metadata-port=${emulator.port}`, '--log-format=json', '--shutdown-grace-ms=1500', '--operation-mode=managed'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { daemon.kill('SIGKILL'); });
  let out = '';
  daemon.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  daemon.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  // A Node process start: over 20 s at load average 20.
  await eventually(() => out.includes('podid-nmi listening'), 'the daemon listening', 90_000);
  const port = Number(/"listen":"127\.0\.0\.1:(\d+)"/.exec(out)?.[1]);
  const asks = [
    ...[0, 1, 2, 3, 4, 5].map((i) => ask(port, resourceToken(i), { from: '127.0.0.12', headers: META })),
    ask(port, VICTIM_TOKEN, { from: '127.0.0.10', headers: META }),
  ].map((p) => p.then((a) => a, (e: Error) => e));
  await waitFor(() => emulator.requests.length === 4);
  const exited = new Promise<number | null>((resolve) => daemon.once('exit', resolve));
  daemon.kill('SIGTERM');
  const answers = await Promise.all(asks);
  for (const a of answers) {
    if (a instanceof Error) t.fail(`a client saw ${a.message}`);
    else refused(t, a, 'shutting_down', 'SIGTERM');
  }
  t.equal(await exited, 0, 'the process exits 0 once the answers are out');
});
