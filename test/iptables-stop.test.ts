// stop() against a check that is already running: it waits for it, and nothing is written
// once it has been called (except the conntrack flush that completes a write already made).
// Otherwise a repair can put the rules back after `cleanup` removed them. The fake iptables
// holds a command half-way, so each interleaving is reached on purpose, not by timing.
import t, { type Test } from 'tap';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { InterceptionRules } from '../src/iptables/index.ts';
import type { InterceptionOptions } from '../src/iptables/index.ts';
import { FakeIptables, isWrite } from './helpers/fake-iptables.ts';
import type { FakeCall } from './helpers/fake-iptables.ts';

const TARGET = { metadataIp: '169.254.169.254', metadataPort: 80, targetIp: '127.0.0.1', targetPort: 2579 };
const BOUND_MS = 20_000;

/** Rejects instead of hanging when what the test waits for never happens. */
function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${BOUND_MS} ms`)), BOUND_MS);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Lets every callback already due run (pending commands, microtasks, timers at 0). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

function tracked(p: Promise<unknown>): { settled: () => boolean; done: Promise<unknown> } {
  let settled = false;
  const done = p.finally(() => { settled = true; });
  return { settled: () => settled, done };
}

async function failures(registry: Registry): Promise<number> {
  const { values } = await registry.getSingleMetric('podid_nmi_iptables_failures_total')!.get();
  return values.reduce((n, v) => n + v.value, 0);
}

async function started(t: Test, intervalSec: number): Promise<{ rules: InterceptionRules; fake: FakeIptables; registry: Registry }> {
  const fake = new FakeIptables(TARGET);
  const registry = new Registry();
  const opts: InterceptionOptions = {
    ...TARGET, intervalSec, conntrackFlush: true, log: pino({ level: 'silent' }), registry, run: fake.run, backend: 'nft',
  };
  const rules = await InterceptionRules.start(opts);
  t.teardown(() => rules.stop());
  t.ok(fake.installed, 'installed at start');
  t.equal(fake.routeLocalnet, '1');
  return { rules, fake, registry };
}

const argvOf = (calls: FakeCall[]): string[] => calls.map((c) => c.argv.join(' '));

const HOLD_POINTS = {
  'the route_localnet read (after the rules read)': (argv: string[]) => argv[0] === 'sysctl' && argv.includes('-n'),
  'the rules read': (argv: string[]) => argv.includes('-S') && argv.includes('PREROUTING'),
};

for (const [where, match] of Object.entries(HOLD_POINTS)) {
  t.test(`stop() during the loop's pass, held at ${where}: waits for it, writes nothing`, async (t) => {
    // A short interval: the loop, not the test, runs the pass being stopped.
    const { rules, fake, registry } = await started(t, 0.02);
    const held = fake.hold(match);
    await within(held.reached, 'the loop reaching the held command');
    // The drift the pass would repair if it went on: both route_localnet and the rules.
    fake.wipe();
    fake.routeLocalnet = '0';
    const stopCalledAt = fake.calls.length;
    const stopping = tracked(Promise.resolve(rules.stop()));
    await settle();
    t.equal(stopping.settled(), false, 'stop() has not resolved while the pass is running');
    held.release();
    await within(stopping.done, 'stop() resolving after the pass');

    const resolvedAt = fake.calls.length;
    // A negative check: ten intervals in which the loop, or the abandoned pass, would have run.
    await new Promise((r) => setTimeout(r, 200));
    t.same(argvOf(fake.calls.slice(resolvedAt)), [], 'no command at all after stop() resolved');
    t.same(argvOf(fake.calls.slice(stopCalledAt).filter(isWrite)), [], 'nothing written once stop() was called');
    t.equal(fake.installed, false, 'the rules were not put back');
    t.equal(fake.routeLocalnet, '0', 'route_localnet was not set again');
    t.equal(await failures(registry), 0, 'an abandoned pass is not a failure');
    t.match(rules.status, { rulesInstalled: true, lastError: null }, 'status still tells the last finished pass');
  });
}

t.test('stop() during a rules write: the write and its conntrack flush finish before stop() resolves', async (t) => {
  const { rules, fake, registry } = await started(t, 3600);
  fake.wipe();
  const held = fake.hold((argv) => argv[0]!.endsWith('-restore'));
  const pass = tracked(rules.check());
  const write = await within(held.reached, 'the repair reaching its write');
  const stopping = tracked(Promise.resolve(rules.stop()));
  await settle();
  t.equal(stopping.settled(), false, 'stop() waits for a write it cannot take back');
  held.release();
  await within(stopping.done, 'stop() resolving after the write');
  t.equal(pass.settled(), true, 'the pass ended before stop() resolved');
  t.equal(await pass.done, 'repaired', 'the write made is verified and reported');
  t.ok(fake.installed);
  const afterWrite = fake.calls.filter((c) => c.seq > write.seq);
  t.same(afterWrite.filter(isWrite).map((c) => c.argv[0]), ['conntrack'],
    'only the conntrack flush follows: it makes the rules just written apply to open connections');
  t.equal(await failures(registry), 0);
  const resolvedAt = fake.calls.length;
  await t.rejects(rules.check(), { name: 'InterceptionStopped' }, 'check() after stop() is refused');
  t.equal(fake.calls.length, resolvedAt, '... without running anything');
});

t.test('a pass queued behind the running one is dropped by stop(); stop() twice is fine', async (t) => {
  const { rules, fake, registry } = await started(t, 3600);
  const held = fake.hold(HOLD_POINTS['the rules read']);
  const first = tracked(rules.check());
  await within(held.reached, 'the first pass reaching its read');
  fake.wipe();
  const second = rules.check();
  const stopping = tracked(Promise.resolve(rules.stop()));
  const again = tracked(Promise.resolve(rules.stop()));
  held.release();
  await within(Promise.all([stopping.done, again.done]), 'both stop() calls resolving');
  await t.rejects(first.done, { name: 'InterceptionStopped' }, 'the running pass gives up before writing');
  await t.rejects(second, { name: 'InterceptionStopped' }, 'the queued pass never starts');
  t.same(argvOf(fake.calls.filter(isWrite).slice(-1)), ['conntrack -D -d 169.254.169.254 -p tcp --dport 80'],
    'the last write is the start-up install');
  t.equal(fake.installed, false);
  t.equal(await failures(registry), 0);
});
