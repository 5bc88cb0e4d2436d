// The end-to-end run of aad-pod-identity v1.8.17's own command lines, as data: every set of
// test/fixtures/upstream-nmi-args.ts runs in one of the e2e-upstream-*.test.ts files (split so
// that tap runs them side by side), or is listed in PENDING_SETS, which the run reports as TODO.
// Nothing is skipped silently: a test checks that every set is claimed by exactly one file.
import t, { type Test } from 'tap';
import { netnsUnavailable } from '../netns/netns.ts';
import { UPSTREAM_ARG_SETS, type UpstreamArgSet } from '../fixtures/upstream-nmi-args.ts';
import { E2E } from './environment.ts';
import { CHAIN, configOf, grantedThroughDnat, launchFor, READY_TIMEOUT_MS, removeRules, withDaemon } from './upstream-launch.ts';

/** Which file runs which sets (the names of test/fixtures/upstream-nmi-args.ts). */
export const E2E_SET_GROUPS = {
  managed: ['deploy/infra/managed-mode-deployment.yaml', 'chart/managed-every-knob'],
  'standard-manifests': ['deploy/infra/deployment.yaml', 'deploy/infra/deployment-rbac.yaml', 'deploy/infra/noazurejson/deployment.yaml', 'deploy/infra/noazurejson/deployment-rbac.yaml'],
  'standard-chart': ['chart/defaults', 'chart/standard-every-knob', 'chart/old-image-tag'],
} as const satisfies Record<string, readonly string[]>;

const unavailable = await netnsUnavailable();

/** Sets listed here are reported as TODO instead of run (none: both modes run). */
export const PENDING_SETS: ReadonlyArray<{ name: string; why: string }> = [];

export function runUpstreamSets(group: keyof typeof E2E_SET_GROUPS): void {
  const names: readonly string[] = E2E_SET_GROUPS[group];
  const sets = names.map((n) => UPSTREAM_ARG_SETS.find((s) => s.name === n)!);
  t.setTimeout(600_000);

  t.test('every upstream set is claimed by exactly one e2e file or is pending', async (t) => {
    const claimed = [...Object.values(E2E_SET_GROUPS).flat(), ...PENDING_SETS.map((p) => p.name)];
    t.same([...claimed].sort(), UPSTREAM_ARG_SETS.map((s) => s.name).sort(), 'each set once, in a group or pending');
    t.ok(sets.every((s) => s !== undefined), `${group}: every name is a set`);
  });

  t.test(`aad-pod-identity v1.8.17's own NMI command lines, end to end (${group})`, { skip: unavailable ?? false }, async (t) => {
    const env = await E2E.start();
    t.teardown(() => env.destroy());
    for (const set of sets) {
      const pending = PENDING_SETS.find((p) => p.name === set.name);
      if (pending !== undefined) {
        await t.test(set.name, { todo: pending.why }, async () => {});
        continue;
      }
      await t.test(`${set.name} (${set.mode} mode)`, async (t) => runOne(t, env, set));
    }
  });
}

async function runOne(t: Test, env: E2E, set: UpstreamArgSet): Promise<void> {
  await removeRules(env);
  t.same(await env.chainRules(), [], 'no rules before the start');
  const launch = launchFor(env, set);
  t.equal(configOf(launch).operationMode, set.mode, `the daemon runs in ${set.mode} mode`);
  await withDaemon(t, env, launch, async (run) => {
    await env.waitDaemonReady(run, READY_TIMEOUT_MS);
    t.same(run.rulesAtFirstReady, CHAIN, 'NMI\'s chain was in place when /readyz first said 200');
    const prerouting = (await env.iptables('-S', 'PREROUTING')).stdout.split('\n').filter((l) => l.startsWith('-A'));
    t.equal(prerouting[0], '-A PREROUTING -j aad-metadata', 'jump at position 1 of PREROUTING');
    t.same(await env.readyz(run), { status: 200, body: 'ready\n' }, '/readyz: 200 ready');
    const warnings = env.runLog(run).filter((l) => String(l.msg).startsWith('flags accepted for compatibility'));
    t.equal(warnings.length, 1, 'one warning line for the ignored flags');
    await grantedThroughDnat(t, env, configOf(launch).userAgent, set.name);
  });
}
