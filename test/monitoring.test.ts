// daemonset/monitoring/: a kustomize Component that builds onto the base (and is not in the
// base), rules that promtool accepts, a dashboard whose queries parse, and every series they
// read exposed by a live daemon.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { Registry } from 'prom-client';
import { parseAllDocuments, stringify, type Document } from 'yaml';
import { interceptionMetrics } from '../src/iptables/metrics.ts';
import { FakeApiServer, type Obj, type ResourceName } from './fake-apiserver/fake-apiserver.ts';
import { META } from './helpers/http.ts';
import { dashboard, dashboardExprs, exposedNames, metricNames, ruleExprs, ruleGroups } from './helpers/monitoring.ts';
import { IDS, startStack, STATE_YAML, TOKEN } from './helpers/stack.ts';

const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const noKubectl = has('kubectl') ? false : 'kubectl (Debian kubernetes-client) is not installed';
const noPromtool = has('promtool') ? false : 'promtool (Debian prometheus) is not installed';

const ROOT = new URL('../', import.meta.url).pathname;

function kustomize(dir: string): Obj[] {
  const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 60_000 });
  return (parseAllDocuments(out) as Document[]).map((d) => d.toJS() as Obj).filter(Boolean);
}

t.test('the component builds onto the base with kubectl kustomize, and is off by default', { skip: noKubectl }, async (t) => {
  const base = kustomize(`${ROOT}daemonset`);
  t.notOk(base.some((o) => ['PodMonitor', 'PrometheusRule'].includes(String(o.kind))), 'the base installs no monitoring objects');
  const dir = t.testdir({});
  const rel = (p: string) => require_relative(dir, `${ROOT}${p}`);
  writeFileSync(`${dir}/kustomization.yaml`, stringify({ resources: [rel('daemonset')], components: [rel('daemonset/monitoring')] }));
  const all = kustomize(dir);
  const kind = (k: string) => all.filter((o) => o.kind === k);
  t.equal(kind('PodMonitor').length, 1);
  t.equal(kind('PrometheusRule').length, 1);
  t.equal(kind('DaemonSet').length, 1, 'the base is still there');
  const ds = kind('DaemonSet')[0]!;
  const pm = kind('PodMonitor')[0]!;
  const template = ((ds.spec as Obj).template as Obj);
  const podLabels = (template.metadata as Obj).labels as Record<string, string>;
  const wanted = ((pm.spec as Obj).selector as Obj).matchLabels as Record<string, string>;
  t.ok(Object.entries(wanted).every(([k, v]) => podLabels[k] === v), 'the PodMonitor selects the DaemonSet\'s pods');
  t.same((pm.metadata as Obj).namespace, (ds.metadata as Obj).namespace);
  const container = ((template.spec as Obj).containers as Obj[])[0]!;
  const endpoint = (((pm.spec as Obj).podMetricsEndpoints as Obj[])[0]!);
  // No declared ports (they would be hostPorts and block the rollout's surge pod): the
  // endpoint names none and its address is the pod's IP with the daemon's --prometheus-port.
  t.equal(container.ports, undefined, 'the DaemonSet declares no ports');
  t.equal(endpoint.port, undefined, 'so the endpoint names no port');
  const metricsPort = (container.args as string[]).find((a) => a.startsWith('--prometheus-port='))?.split('=')[1];
  t.match((endpoint.relabelings as Obj[]).find((r) => r.targetLabel === '__address__'),
    { sourceLabels: ['__meta_kubernetes_pod_ip'], regex: '(.+)', replacement: `$1:${metricsPort}` }, `scrapes the pod's IP at ${metricsPort}`);
  t.equal(((template.metadata as Obj).annotations as Obj)['prometheus.io/port'], metricsPort, 'and annotation-based scrapers find the same port');
  const cm = kind('ConfigMap').find((c) => (c.metadata as Obj).name === 'podid-nmi-dashboard');
  t.ok(cm, 'the dashboard ConfigMap');
  t.same(JSON.parse(String((cm!.data as Obj)['podid-nmi-dashboard.json'])), await dashboard(), 'holding the dashboard JSON');
  t.equal(((cm!.metadata as Obj).labels as Obj).grafana_dashboard, '1');
});

/** Node's path.relative, spelled here to keep the imports short. */
function require_relative(from: string, to: string): string {
  const a = from.split('/').filter(Boolean);
  const b = to.split('/').filter(Boolean);
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return [...a.slice(i).map(() => '..'), ...b.slice(i)].join('/');
}

t.test('promtool accepts the rules, and every dashboard query parses', { skip: noPromtool }, async (t) => {
  const dir = t.testdir({});
  writeFileSync(`${dir}/rules.yaml`, stringify(await ruleGroups()));
  const rules = spawnSync('promtool', ['check', 'rules', `${dir}/rules.yaml`], { encoding: 'utf8' });
  t.equal(rules.status, 0, rules.stdout + rules.stderr);
  t.match(rules.stdout, /SUCCESS: 14 rules found/);
  const exprs = await dashboardExprs();
  writeFileSync(`${dir}/dashboard.yaml`, stringify({ groups: [{ name: 'dashboard', rules: exprs.map((expr, i) => ({ record: `dashboard:query_${i}`, expr })) }] }));
  const queries = spawnSync('promtool', ['check', 'rules', `${dir}/dashboard.yaml`], { encoding: 'utf8' });
  t.equal(queries.status, 0, queries.stdout + queries.stderr);
});

t.test('the alerts the issue asks for, each with a runbook in docs/operations.md', async (t) => {
  const alerts = (await ruleGroups()).groups.flatMap((g) => g.rules).filter((r) => r.alert !== undefined);
  const names = alerts.map((a) => a.alert!);
  for (const wanted of ['PodIdNmiNotReady', 'PodIdNmiInterceptionRulesMissing', 'PodIdNmiInterceptionRepairFailing', 'PodIdNmiStateStale',
    'PodIdNmiInformerFailing', 'PodIdNmiImdsErrors', 'PodIdNmiImdsThrottled', 'PodIdNmiRefusalsSpiking', 'PodIdNmiLatencyBudgetBurning']) {
    t.ok(names.includes(wanted), wanted);
  }
  const { readFile } = await import('node:fs/promises');
  const readme = await readFile(`${ROOT}docs/operations.md`, 'utf8');
  for (const a of alerts) {
    const anchor = a.annotations?.runbook_url?.replace(/^docs\/operations\.md#/, '') ?? '';
    t.ok(readme.split('\n').some((l) => /^#{3,4} /.test(l) && l.replace(/^#+ /, '').replaceAll('`', '').toLowerCase() === anchor), `${a.alert}: docs/operations.md has a runbook section #${anchor}`);
  }
});

const PLURAL: Record<string, ResourceName> = {
  Pod: 'pods', AzureIdentity: 'azureidentities', AzureIdentityBinding: 'azureidentitybindings', AzurePodIdentityException: 'azurepodidentityexceptions',
};

t.test('every series the rules and the dashboard read is exposed by a live daemon', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  for (const doc of parseAllDocuments(STATE_YAML) as Document[]) {
    const obj = doc.toJS() as Obj;
    api.create(PLURAL[String(obj.kind)]!, obj);
  }
  const s = await startStack(t, { kubeconfig: api.kubeconfig(), daemon: { defaultMetrics: true } });
  await s.daemon.state.whenReady(AbortSignal.timeout(10_000));
  // Traffic that fills every labelled series: grants (miss, then hit), a refusal, a proxied route, an IMDS error, a pod wait.
  await s.ask(TOKEN, { from: '127.0.0.10', headers: META });
  await s.ask(TOKEN, { from: '127.0.0.10', headers: META });
  await s.ask(`${TOKEN}&client_id=${IDS.writer!.clientID}`, { from: '127.0.0.10', headers: META });
  await s.ask('/metadata/instance?api-version=2021-02-01', { from: '127.0.0.10', headers: META });
  s.emulator.setFault({ kind: 'status', status: 500, body: '{}' }, { times: 1 });
  await s.ask(TOKEN, { from: '127.0.0.13', headers: META });
  await s.ask(TOKEN, { from: '127.0.0.99', headers: META });
  const exposed = exposedNames(await s.metrics());
  // The iptables series exist only with --manage-iptables (which needs a network namespace):
  // here they come from the code that registers them; test/e2e.test.ts reads them from a live daemon.
  for (const name of exposedNames(await interceptionMetricsText())) exposed.add(name);
  const used = metricNames([...await ruleExprs(), ...await dashboardExprs()]);
  used.delete('up');
  t.ok(used.size > 20, `${used.size} series used`);
  const missing = [...used].filter((n) => !exposed.has(n));
  t.same(missing, [], 'every series used is exposed');
});

async function interceptionMetricsText(): Promise<string> {
  const registry = new Registry();
  const m = interceptionMetrics(registry, { guard: true, host: true });
  m.lastSuccess.set(1);
  m.installed.set(1);
  return registry.metrics();
}
