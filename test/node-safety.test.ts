// What the daemon leaves on a node, without a namespace: rules compared by meaning (the forms
// both iptables flavours really print, captured here), the route_localnet guard and its
// ownership record, cleanup, and a hostNetwork side that fails without taking the pod side down.
// The fake iptables (test/helpers/fake-iptables.ts) runs nothing on the machine.
import t from 'tap';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import { cleanupInterception, InterceptionRules } from '../src/iptables/index.ts';
import type { InterceptionOptions } from '../src/iptables/index.ts';
import { ruleMeaning, ruleWords, sameRules } from '../src/iptables/rule-meaning.ts';
import { desiredChainRules, planChain } from '../src/iptables/rules.ts';
import { desiredHostRules, HOST_CHAIN } from '../src/iptables/host-rules.ts';
import { cgroup2Root, hostRuleInput } from '../src/iptables/host-cgroups.ts';
import { desiredGuardRules, GUARD_CHAIN, GUARD_RULE, OWNER_MARKER, recordsOwnership } from '../src/iptables/localnet-guard.ts';
import { readiness } from '../src/probes/readiness.ts';
import { FakeIptables, isWrite } from './helpers/fake-iptables.ts';

const TARGET = { metadataIp: '169.254.169.254', metadataPort: 80, targetIp: '127.0.0.1', targetPort: 2579 };
const FIXTURE = readFileSync(new URL('./fixtures/iptables-printed-1.8.9.txt', import.meta.url), 'utf8');
const CAPTURED_ROOT = /R=(podid-test-c\d+)/.exec(FIXTURE)![1]!;

interface LogLine { level: number; msg: string; [key: string]: unknown }
function captureLog(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  return { log: pino({ level: 'debug' }, { write: (s: string) => { lines.push(JSON.parse(s) as LogLine); } }), lines };
}

/** One flavour's `-S <chain>` lines from the captured fixture. */
function printed(flavour: 'nft' | 'legacy', chain: string): string[] {
  const section = FIXTURE.split(/^=== /m).find((s) => s.startsWith(flavour))!;
  const listing = section.slice(0, section.indexOf('--- save'));
  return listing.split('\n').filter((l) => l.startsWith(`-A ${chain} `));
}

t.test('rule meaning: quoting, option order, long names, masks, the implicit -m tcp', async (t) => {
  t.same(ruleWords('-A C -m comment --comment "a \\"b\\" c" -j RETURN'), ['-A', 'C', '-m', 'comment', '--comment', 'a "b" c', '-j', 'RETURN']);
  const dnat = desiredChainRules(TARGET)[0]!;
  const same = [
    '-A aad-metadata -d 169.254.169.254/32 ! -s 127.0.0.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:2579',
    '-A aad-metadata ! -s 127.0.0.1 -d 169.254.169.254 -p tcp --dport 80 -j DNAT --to-destination 127.0.0.1:2579',
    '--append aad-metadata ! --source 127.0.0.1/32 --destination 169.254.169.254/32 --protocol TCP --dport 80 --jump DNAT --to-destination 127.0.0.1:2579',
  ];
  for (const line of same) t.equal(ruleMeaning(line), ruleMeaning(dnat), line);
  const different = [
    '-A aad-metadata -s 127.0.0.1/32 -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:2579',
    '-A aad-metadata ! -s 127.0.0.1/32 -d 169.254.169.254/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 127.0.0.1:2579',
    '-A aad-metadata ! -s 127.0.0.1/32 -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:2580',
    '-A aad-metadata ! -s 127.0.0.1/32 -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j ACCEPT',
    '-A other ! -s 127.0.0.1/32 -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:2579',
  ];
  for (const line of different) t.not(ruleMeaning(line), ruleMeaning(dnat), `differs: ${line}`);
  t.equal(ruleMeaning('-A H -m cgroup --path kubepods -j RETURN'), ruleMeaning('-A H -m cgroup --path "kubepods" -j RETURN'), 'bare and quoted path');
  t.not(ruleMeaning('-A H -m cgroup --path kubepods -j RETURN'), ruleMeaning('-A H -m cgroup --path "kubepods.slice" -j RETURN'));
  t.not(ruleMeaning(GUARD_RULE), ruleMeaning(GUARD_RULE.replace('! --ctstate', '--ctstate')), 'a negation is meaning');
});

for (const flavour of ['nft', 'legacy'] as const) {
  t.test(`every rule the daemon writes equals what iptables-${flavour} printed back for it (captured)`, async (t) => {
    t.same(printed(flavour, 'aad-metadata').length, 2);
    t.ok(sameRules(printed(flavour, 'aad-metadata'), desiredChainRules(TARGET)), 'pod chain');
    t.ok(sameRules(printed(flavour, GUARD_CHAIN).slice(0, 2), desiredGuardRules(true)), 'the guard and its ownership record');
    const host = printed(flavour, HOST_CHAIN);
    t.match(host.join('\n'), new RegExp(`--path ${CAPTURED_ROOT} -j DNAT`), 'iptables printed the path bare');
    t.match(host.join('\n'), /--path "podid-test-c\d+\/kubepods.slice"/, 'and quoted the path with a dot and a slash');
    const own = `${CAPTURED_ROOT}/kubepods/besteffort/pod1234_x`;
    const desired = desiredHostRules(TARGET, { kubepods: [`${CAPTURED_ROOT}/kubepods.slice`, CAPTURED_ROOT], ownPodPath: own });
    t.ok(sameRules(host, desired), 'hostNetwork chain, a bare (cgroupfs-like) root included');
    t.same(planChain({ chain: HOST_CHAIN, hook: 'OUTPUT' }, host, printed(flavour, 'OUTPUT'), desired), { drift: [], lines: [] },
      'no drift: the chain is not rewritten on every check');
    t.same(planChain({ chain: GUARD_CHAIN, hook: 'INPUT' }, [GUARD_RULE, OWNER_MARKER], printed(flavour, 'INPUT'), desiredGuardRules(true)),
      { drift: [], lines: [] }, 'the guard jump as printed is first in INPUT');
    t.ok(recordsOwnership(printed(flavour, GUARD_CHAIN)), 'the marker comment, printed quoted, is found');
  });
}

t.test('desired host rules print a cgroupfs root bare and a systemd one quoted', async (t) => {
  const rules = desiredHostRules(TARGET, { kubepods: ['kubepods.slice', 'kubepods'], ownPodPath: 'kubepods/besteffort/podx' });
  t.match(rules[0], /--path "kubepods\/besteffort\/podx" -j RETURN$/);
  t.match(rules[1], /--path "kubepods.slice" -j DNAT/);
  t.match(rules[2], /--path kubepods -j DNAT/);
});

function options(fake: FakeIptables, registry: Registry, log: Logger, extra: Partial<InterceptionOptions> = {}): InterceptionOptions {
  return { ...TARGET, intervalSec: 3600, conntrackFlush: false, log, registry, run: fake.run, backend: 'nft', ...extra };
}

async function metric(registry: Registry, name: string): Promise<number | undefined> {
  const m = registry.getSingleMetric(name);
  return m === undefined ? undefined : (await m.get()).values[0]?.value;
}

t.test('the guard goes in with the NAT rules, before route_localnet is turned on, and records who turned it on', async (t) => {
  const fake = new FakeIptables(TARGET);
  const registry = new Registry();
  const rules = await InterceptionRules.start(options(fake, registry, pino({ level: 'silent' })));
  t.teardown(() => rules.stop());
  const restore = fake.calls.find((c) => c.argv[0]!.endsWith('-restore'))!;
  t.match(restore.input, /^\*filter\n:PODID-NMI-LOCALNET - \[0:0\]\n.*DROP\n.*RETURN\n-I INPUT 1 -j PODID-NMI-LOCALNET\nCOMMIT\n\*nat\n/s,
    'one iptables-restore: the guard (filter) first, then the NAT rules');
  const sysctlWrite = fake.calls.find((c) => c.argv[0] === 'sysctl' && c.argv.includes('-w'))!;
  t.ok(restore.seq < sysctlWrite.seq, 'the sysctl is written after the guard');
  t.ok(recordsOwnership(fake.guard), 'the guard chain records that the daemon turned it on');
  t.equal(fake.routeLocalnet, '1');
  t.match(rules.status, { rulesInstalled: true, routeLocalnet: true, localnetGuard: { installed: true, error: null }, hostNetwork: null });
  t.equal(await metric(registry, 'podid_nmi_iptables_localnet_guard_installed'), 1);
  t.equal(registry.getSingleMetric('podid_nmi_iptables_host_rules_installed'), undefined, 'no host gauge without --intercept-host-network');

  // Drift: someone deletes the guard's jump; the next check puts it back first in INPUT.
  fake.input = ['-A INPUT -j KUBE-FIREWALL'];
  t.equal(await rules.check(), 'repaired');
  t.same(fake.input, ['-A INPUT -j PODID-NMI-LOCALNET', '-A INPUT -j KUBE-FIREWALL']);
  t.ok(recordsOwnership(fake.guard), 'the record survives the repair');
  t.equal(await rules.check(), 'ok', 'and then nothing drifts');
});

t.test('a restart remembers the daemon turned route_localnet on; a sysctl already on is not ours', async (t) => {
  const fake = new FakeIptables(TARGET);
  const first = await InterceptionRules.start(options(fake, new Registry(), pino({ level: 'silent' })));
  await first.stop();
  const second = await InterceptionRules.start(options(fake, new Registry(), pino({ level: 'silent' })));
  await second.stop();
  t.ok(recordsOwnership(fake.guard), 'the second run, finding the sysctl on, keeps the record');

  const kubeProxyNode = new FakeIptables(TARGET);
  kubeProxyNode.routeLocalnet = '1';
  const rules = await InterceptionRules.start(options(kubeProxyNode, new Registry(), pino({ level: 'silent' })));
  await rules.stop();
  t.same(kubeProxyNode.guard, [GUARD_RULE], 'guard installed, no ownership record');
  t.notOk(kubeProxyNode.calls.some((c) => c.argv[0] === 'sysctl' && c.argv.includes('-w')), 'the sysctl was not written');
});

t.test('no guard, no route_localnet: the pod chain still goes in (fail closed) and readiness says why', async (t) => {
  const fake = new FakeIptables(TARGET);
  fake.failFilter = true;
  const registry = new Registry();
  const { log, lines } = captureLog();
  const rules = await InterceptionRules.start(options(fake, registry, log));
  t.teardown(() => rules.stop());
  t.ok(fake.installed, 'the DNAT is in place: pods reach no IMDS around the daemon');
  t.equal(fake.guard, null);
  t.equal(fake.routeLocalnet, '0', 'route_localnet left off');
  t.notOk(fake.calls.some((c) => c.argv[0] === 'sysctl' && c.argv.includes('-w')), 'never written');
  t.match(rules.status, { rulesInstalled: true, routeLocalnet: false, localnetGuard: { installed: false, error: /conntrack/ } });
  t.equal(await metric(registry, 'podid_nmi_iptables_localnet_guard_installed'), 0);
  t.ok(lines.some((l) => l.level === 50 && /route_localnet guard could not be installed/.test(l.msg)), 'logged as an error');
  const r = readiness({ closing: false, stateReady: true, manageIptables: true, interception: rules.status });
  t.match(r, { ready: false, reasons: [/^route_localnet guard \(filter chain PODID-NMI-LOCALNET\) not installed, so route_localnet is not turned on: .*conntrack/] });
  fake.failFilter = false;
  t.equal(await rules.check(), 'repaired', 'installed once it can be');
  t.equal(fake.routeLocalnet, '1');
  t.ok(readiness({ closing: false, stateReady: true, manageIptables: true, interception: rules.status }).ready);
});

t.test('cleanup: route_localnet back to 0 only when the daemon turned it on, before the guard goes', async (t) => {
  const fake = new FakeIptables(TARGET);
  const rules = await InterceptionRules.start(options(fake, new Registry(), pino({ level: 'silent' })));
  await rules.stop();
  const from = fake.calls.length;
  const result = await cleanupInterception({ log: pino({ level: 'silent' }), run: fake.run, backend: 'nft' });
  t.same(result, { backend: 'nft', removed: ['aad-metadata', GUARD_CHAIN], routeLocalnet: 'turned_off', error: null });
  t.equal(fake.routeLocalnet, '0');
  t.equal(fake.guard, null);
  t.same(fake.input, []);
  t.equal(fake.chain, null);
  const writes = fake.calls.slice(from).filter(isWrite).map((c) => c.argv[0]);
  t.same(writes, ['sysctl', 'iptables-nft-restore'], 'the sysctl first, then the chains');

  const kubeProxyNode = new FakeIptables(TARGET);
  kubeProxyNode.routeLocalnet = '1';
  await (await InterceptionRules.start(options(kubeProxyNode, new Registry(), pino({ level: 'silent' })))).stop();
  const other = await cleanupInterception({ log: pino({ level: 'silent' }), run: kubeProxyNode.run, backend: 'nft' });
  t.equal(other.routeLocalnet, 'left_on', 'not ours: left on');
  t.equal(kubeProxyNode.routeLocalnet, '1');

  const again = await cleanupInterception({ log: pino({ level: 'silent' }), run: fake.run, backend: 'nft' });
  t.same(again, { backend: 'nft', removed: [], routeLocalnet: 'already_off', error: null }, 'a second run has nothing to do');
});

t.test('cleanup that cannot turn route_localnet off keeps the guard', async (t) => {
  const fake = new FakeIptables(TARGET);
  await (await InterceptionRules.start(options(fake, new Registry(), pino({ level: 'silent' })))).stop();
  const sysctl = { read: async () => '1', enable: async () => {}, disable: async () => { throw new Error('EROFS: read-only file system'); } };
  const result = await cleanupInterception({ log: pino({ level: 'silent' }), run: fake.run, backend: 'nft', sysctl });
  t.same(result, { backend: 'nft', removed: ['aad-metadata'], routeLocalnet: 'not_turned_off', error: 'EROFS: read-only file system' });
  t.same(fake.guard, [GUARD_RULE, OWNER_MARKER], 'the guard and its record stay');
});

t.test('a hostNetwork side that cannot be installed never takes the pod side down', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'podid-cg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cases: Array<[string, () => void, RegExp]> = [
    ['a cgroup v1-only node', () => {}, /no cgroup v2 hierarchy at .* nor at .*unified.*cgroup v1-only node.*matches cgroup v2 paths only/],
    ['a hybrid node with kubepods only in v1', () => {
      mkdirSync(join(dir, 'unified'), { recursive: true });
      writeFileSync(join(dir, 'unified', 'cgroup.controllers'), '');
      mkdirSync(join(dir, 'cpu', 'kubepods'), { recursive: true });
    }, /kubelet's pod cgroups are in the cgroup v1 hierarchy only .*cpu\/kubepods.*hostNetwork interception cannot work/],
    ['no kubepods at all (wrong --cgroup-root)', () => rmSync(join(dir, 'cpu'), { recursive: true }),
      /neither kubepods.slice nor kubepods exists under .*unified: wrong --cgroup-root/],
  ];
  for (const [what, arrange, error] of cases) {
    arrange();
    const fake = new FakeIptables(TARGET);
    const registry = new Registry();
    const { log, lines } = captureLog();
    const rules = await InterceptionRules.start(options(fake, registry, log, { hostNetwork: { cgroupRoot: dir, cgroupParent: '', ownCgroup: '/' } }));
    await rules.stop();
    t.ok(fake.installed, `${what}: the pod chain is installed`);
    t.equal(fake.routeLocalnet, '1', `${what}: and works`);
    t.match(rules.status, { rulesInstalled: true, lastError: null, hostNetwork: { installed: false, error } }, what);
    t.equal(await metric(registry, 'podid_nmi_iptables_host_rules_installed'), 0, `${what}: metric`);
    t.ok(lines.some((l) => l.level === 50 && /pod-network interception is unaffected/.test(l.msg)), `${what}: logged`);
    const r = readiness({ closing: false, stateReady: true, manageIptables: true, interception: rules.status });
    t.match(r, { ready: false, reasons: [/^hostNetwork interception not in place \(pod-network interception is, and pods are served\)/] }, `${what}: readiness says what is missing`);
  }
  // Once kubepods appears under the v2 hierarchy found at <root>/unified, the host side is installed.
  mkdirSync(join(dir, 'unified', 'kubepods'));
  t.equal(await cgroup2Root(dir), join(dir, 'unified'), 'the v2 hierarchy of a hybrid node is found by itself');
  t.same(await hostRuleInput({ cgroupRoot: dir, cgroupParent: '', ownCgroup: '/' }), { kubepods: ['kubepods'], ownPodPath: undefined });
});

t.test('node Events: a Warning when a part cannot be kept, a Normal when it is back, nothing on every check', async (t) => {
  const { NodeEvents } = await import('../src/events/node-events.ts');
  const written: Array<Record<string, unknown>> = [];
  const sink = { create: async (ns: string, e: Record<string, unknown>) => { written.push({ ns, ...e }); return 'ok' as const; }, patch: async () => 'ok' as const, close: async () => {} };
  const events = new NodeEvents({ sink, node: 'node-1', log: pino({ level: 'silent' }) });
  events.observe('localnetGuard', { installed: true, error: null });
  events.observe('hostNetwork', { installed: false, error: 'neither kubepods.slice nor kubepods exists under /sys/fs/cgroup' });
  events.observe('hostNetwork', { installed: false, error: 'neither kubepods.slice nor kubepods exists under /sys/fs/cgroup' });
  events.observe('hostNetwork', { installed: true, error: null });
  events.observe('hostNetwork', { installed: true, error: null });
  events.observe('localnetGuard', { installed: false, error: 'x'.repeat(5000) });
  await events.close();
  t.same(written.map((e) => [e.ns, e.type, e.reason]), [
    ['default', 'Warning', 'HostNetworkInterceptionFailed'],
    ['default', 'Normal', 'HostNetworkInterceptionRestored'],
    ['default', 'Warning', 'LocalnetGuardFailed'],
  ], 'a first success writes nothing; each change writes one');
  t.match(written[0], { involvedObject: { kind: 'Node', name: 'node-1', uid: 'node-1' },
    message: 'hostNetwork interception (chain aad-metadata-host) could not be kept; pod-network interception is unaffected: neither kubepods.slice nor kubepods exists under /sys/fs/cgroup' });
  t.equal(String(written[2]!.message).length, 1024, 'messages are bounded');
});

t.test('a failing -m cgroup write fails the hostNetwork side alone', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'podid-cg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'cgroup.controllers'), '');
  mkdirSync(join(dir, 'kubepods'));
  const fake = new FakeIptables(TARGET);
  fake.failHost = true;
  const registry = new Registry();
  const rules = await InterceptionRules.start(options(fake, registry, pino({ level: 'silent' }), { hostNetwork: { cgroupRoot: dir, cgroupParent: '', ownCgroup: '/' } }));
  await rules.stop();
  t.ok(fake.installed, 'the pod chain is installed');
  t.match(rules.status, { rulesInstalled: true, hostNetwork: { installed: false, error: /^write_host_rules: .*cgroup/ } });
  const restores = fake.calls.filter((c) => c.argv[0]!.endsWith('-restore'));
  t.equal(restores.length, 4, 'separate transactions: the pod side once, then the host side, written three times (two daemons of a rollout may race) before it is reported');
  t.ok(restores.slice(1).every((c) => /aad-metadata-host/.test(c.input ?? '')), 'the retries carry the host chain only');
  t.notMatch(restores[0]!.input, /aad-metadata-host/, 'the pod side does not carry the host chain');
  t.equal(await metric(registry, 'podid_nmi_iptables_host_rules_installed'), 0);
});
