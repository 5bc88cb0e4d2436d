// The fail-closed defaults end to end, in network namespaces, with the managed-mode manifest's
// own command line: a wildcard listener still DNATs to 127.0.0.1; a node without iptables, or
// --manage-iptables=false, keeps the daemon up but never lets it say ready, and /readyz says why.
import t from 'tap';
import { NOT_INTERCEPTING } from '../src/probes/readiness.ts';
import { netnsUnavailable } from './netns/netns.ts';
import { E2E, sleep, type DaemonRun } from './e2e/environment.ts';
import { CHAIN, configOf, grantedThroughDnat, launchFor, READY_TIMEOUT_MS, removeRules, withDaemon } from './e2e/upstream-launch.ts';
import { UPSTREAM_ARG_SETS } from './fixtures/upstream-nmi-args.ts';

const unavailable = await netnsUnavailable();
t.setTimeout(600_000);

t.test('fail-closed defaults, end to end', { skip: unavailable ?? false }, async (t) => {
  const env = await E2E.start();
  t.teardown(() => env.destroy());
  const base = UPSTREAM_ARG_SETS.find((s) => s.name === 'deploy/infra/managed-mode-deployment.yaml')!;

  /** /readyz once the cluster state has synced (bounded). */
  const settledReadyz = async (run: DaemonRun): Promise<{ status: number; body: string }> => {
    const deadline = performance.now() + READY_TIMEOUT_MS;
    let r = await env.readyz(run);
    while ((r.status === 0 || r.body.includes('cluster state not synced')) && performance.now() < deadline) {
      await sleep(100);
      r = await env.readyz(run);
    }
    return r;
  };

  await t.test('--nmi-listen-address=0.0.0.0: the listener binds the wildcard, the DNAT targets 127.0.0.1', async (t) => {
    await removeRules(env);
    const launch = launchFor(env, base, ['--nmi-listen-address=0.0.0.0']);
    await withDaemon(t, env, launch, async (run) => {
      await env.waitDaemonReady(run, READY_TIMEOUT_MS);
      t.same(run.rulesAtFirstReady, CHAIN, 'DNAT to 127.0.0.1:2579, never to 0.0.0.0');
      const listening = env.runLog(run).findLast((l) => l.msg === 'podid-nmi listening');
      t.equal(listening?.listen, '0.0.0.0:2579', 'the listener is on the wildcard');
      await grantedThroughDnat(t, env, configOf(launch).userAgent, 'wildcard listener');
    });
  });

  await t.test('no iptables on the node: stays up, logs, retries, and /readyz says why', async (t) => {
    await removeRules(env);
    // /usr/bin:/bin hold ip and curl but no iptables-* binaries (those are in /usr/sbin).
    await withDaemon(t, env, launchFor(env, base, ['--ipt-update-interval-sec=1'], { PATH: '/usr/bin:/bin' }), async (run) => {
      await env.waitDaemonLog(run, (l) => l.msg === 'podid-nmi listening', 'listening', READY_TIMEOUT_MS);
      const errors = (): number => env.runLog(run).filter((l) => String(l.msg).startsWith('interception rules check failed') && l.level === 50).length;
      const deadline = performance.now() + 30_000;
      while (errors() < 3 && run.proc.running && performance.now() < deadline) await sleep(200);
      t.ok(errors() >= 3, `each failed check is logged as an error and retried (${errors()} so far)`);
      t.ok(run.proc.running, 'still running: it never exits for it');
      const readyz = await settledReadyz(run);
      t.equal(readyz.status, 503);
      t.match(readyz.body, /^not ready: interception rules not installed \(retried every --ipt-update-interval-sec\): .*iptables-(nft|legacy).*could not run \(ENOENT\)/,
        'the reason, with the failing command');
      const metrics = await env.node.exec('curl', ['-s', '--max-time', '2', 'http://127.0.0.1:9090/metrics'], { allowFail: true, timeoutMs: 5_000 });
      const failures = [...metrics.stdout.matchAll(/^podid_nmi_iptables_failures_total\{[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
      t.ok(failures >= 3, `counted in podid_nmi_iptables_failures_total (${failures})`);
      t.same(await env.chainRules(), [], 'and indeed there are no rules');
    });
  });

  await t.test('--manage-iptables=false: says so at start, installs nothing, never ready', async (t) => {
    await removeRules(env);
    await withDaemon(t, env, launchFor(env, base, ['--manage-iptables=false']), async (run) => {
      await env.waitDaemonLog(run, (l) => l.msg === 'podid-nmi listening', 'listening', READY_TIMEOUT_MS);
      const said = env.runLog(run).filter((l) => l.msg === `${NOT_INTERCEPTING}; /readyz stays 503`);
      t.equal(said.length, 1, 'one warning at start');
      t.equal(said[0]?.level, 40, 'at warn level');
      t.same(await settledReadyz(run), { status: 503, body: `not ready: ${NOT_INTERCEPTING}\n` }, 'synced, but not ready, and why');
      t.same(await env.chainRules(), [], 'no rules');
    });
  });
});
