// aad-pod-identity v1.8.17's own command lines, end to end in network namespaces: the daemon
// started with exactly the args and env of an upstream manifest or chart rendering (plus, after
// them, only what this environment needs: its kubeconfig and JSON logs for the harness) becomes
// ready, installs NMI's rules, and pod A gets its token through the DNAT. Nothing touches the
// root namespace.
import t from 'tap';
import { netnsUnavailable } from './netns/netns.ts';
import { E2E } from './e2e/environment.ts';
import { CHAIN, configOf, grantedThroughDnat, launchFor, READY_TIMEOUT_MS, removeRules, withDaemon } from './e2e/upstream-launch.ts';
import { UPSTREAM_ARG_SETS } from './fixtures/upstream-nmi-args.ts';

/**
 * Standard-mode sets (MIC's AzureAssignedIdentity) are not run yet: standard mode is being
 * built. When it lands, seed the fake API server with AAIs for pod A and empty this list; the
 * test below then runs them like the managed ones.
 */
export const PENDING_STANDARD_MODE_SETS: readonly string[] = [
  'deploy/infra/deployment.yaml',
  'deploy/infra/deployment-rbac.yaml',
  'deploy/infra/noazurejson/deployment.yaml',
  'deploy/infra/noazurejson/deployment-rbac.yaml',
  'chart/defaults',
  'chart/standard-every-knob',
  'chart/old-image-tag',
];

const unavailable = await netnsUnavailable();
t.setTimeout(600_000);

t.test('aad-pod-identity v1.8.17\'s own NMI command lines, end to end', { skip: unavailable ?? false }, async (t) => {
  const env = await E2E.start();
  t.teardown(() => env.destroy());

  const run = UPSTREAM_ARG_SETS.filter((s) => !PENDING_STANDARD_MODE_SETS.includes(s.name));
  const pending = UPSTREAM_ARG_SETS.filter((s) => PENDING_STANDARD_MODE_SETS.includes(s.name));
  t.same(run.map((s) => s.mode), run.map(() => 'managed'), 'every set that runs is a managed-mode one');
  t.same(pending.map((s) => s.mode), pending.map(() => 'standard'), 'only standard-mode sets are pending');
  t.same(PENDING_STANDARD_MODE_SETS.filter((n) => !UPSTREAM_ARG_SETS.some((s) => s.name === n)), [], 'every pending name is a set');
  t.ok(run.length >= 2, 'the managed manifest and the managed chart rendering run');
  t.comment(`not run (standard mode pending): ${pending.map((s) => s.name).join(', ')}`);

  for (const set of run) {
    await t.test(set.name, async (t) => {
      await removeRules(env);
      t.same(await env.chainRules(), [], 'no rules before the start');
      const launch = launchFor(env, set);
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
    });
  }
  for (const set of pending) {
    await t.test(set.name, { todo: 'standard mode (AzureAssignedIdentity) is pending: listed in PENDING_STANDARD_MODE_SETS' }, async () => {});
  }
});
