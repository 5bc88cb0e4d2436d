// `nmi explain` must say what the live daemon answers: every pod of a varied state, with and
// without an identity named, in both --cluster-state and --kubeconfig form. And its interface:
// flags, the JSON shape, exit codes 0 / 1 / 2.
import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments, type Document } from 'yaml';
import { runExplain, type Explanation } from '../src/explain/explain.ts';
import { DeployedFlagsError, flagsOfDaemonSet } from '../src/explain/deployed-flags.ts';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { stringify } from 'yaml';
import { FakeApiServer, type Obj, type ResourceName } from './fake-apiserver/fake-apiserver.ts';
import { assignedIdentity, binding, identity, pod as podObj } from './fake-apiserver/fixtures.ts';
import { META } from './helpers/http.ts';
import { IDS, startStack, STATE_YAML, TOKEN, type Stack } from './helpers/stack.ts';

const doc = (kind: string, ns: string, name: string, spec: string, extra = '') => `apiVersion: aadpodidentity.k8s.io/v1
kind: ${kind}
metadata: {name: ${name}, namespace: ${ns}${extra}}
spec: ${spec}`;
const pod = (ip: string, ns: string, name: string, labels: string, more = '') => `apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: ${ns}, uid: u-${name}, labels: {${labels}}}
spec: {nodeName: node-1${more}}
status: {phase: Running, podIPs: [{ip: ${ip}}]}`;

/** STATE_YAML (bound, unlabelled, excepted, conflicting, other-node and finished pods) and every other refusal. */
const VARIED = [
  STATE_YAML,
  pod('127.0.0.30', 'lab', 'nobinding', 'aadpodidbinding: nothing-selects-me'),
  pod('127.0.0.31', 'lab', 'noidentity', 'aadpodidbinding: ghost'),
  pod('127.0.0.32', 'lab', 'sp', 'aadpodidbinding: sp'),
  pod('127.0.0.33', 'lab', 'noids', 'aadpodidbinding: empty'),
  pod('127.0.0.34', 'lab', 'two', 'aadpodidbinding: two'),
  pod('127.0.0.35', 'lab', 'hostnet', 'aadpodidbinding: two', ', hostNetwork: true'),
  pod('127.0.0.36', 'shop', 'excepted-too', 'component: AGENT, aadpodidbinding: orders'),
  doc('AzureIdentityBinding', 'lab', 'ghost', '{azureIdentity: missing, selector: ghost}'),
  doc('AzureIdentity', 'lab', 'sp', '{type: 1, clientID: 44444444-4444-4444-8444-444444444444, tenantID: t}'),
  doc('AzureIdentityBinding', 'lab', 'sp', '{azureIdentity: sp, selector: sp}'),
  doc('AzureIdentity', 'lab', 'empty', '{type: 0}'),
  doc('AzureIdentityBinding', 'lab', 'empty', '{azureIdentity: empty, selector: empty}'),
  doc('AzureIdentity', 'lab', 'reader', `{type: 0, clientID: ${IDS.reader!.clientID}, resourceID: ${IDS.reader!.resourceID}}`),
  doc('AzureIdentity', 'lab', 'writer', `{type: 0, clientID: ${IDS.writer!.clientID}, resourceID: ${IDS.writer!.resourceID}}`),
  doc('AzureIdentityBinding', 'lab', 'two-a', '{azureIdentity: writer, selector: two}'),
  doc('AzureIdentityBinding', 'lab', 'two-b', '{azureIdentity: reader, selector: two}'),
  doc('AzurePodIdentityException', 'shop', 'agents', '{podLabels: {component: agent}}'),
].join('\n---\n');

const VARIANTS: Array<[string, string[], string]> = [
  ['no identity named', [], ''],
  ['reader by client id', ['--client-id', IDS.reader!.clientID], `&client_id=${IDS.reader!.clientID}`],
  ['writer by client id', ['--client-id', IDS.writer!.clientID], `&client_id=${IDS.writer!.clientID}`],
  ['reader by resource id', ['--msi-res-id', IDS.reader!.resourceID], `&msi_res_id=${IDS.reader!.resourceID}`],
];

const PLURAL: Record<string, ResourceName> = {
  AzureAssignedIdentity: 'azureassignedidentities',
  Pod: 'pods', AzureIdentity: 'azureidentities', AzureIdentityBinding: 'azureidentitybindings', AzurePodIdentityException: 'azurepodidentityexceptions',
};

const objects = (parseAllDocuments(VARIED) as Document[]).map((d) => d.toJS() as Obj);

interface PodRef { ref: string; ip: string }

function podsOf(objs: readonly Obj[]): PodRef[] {
  return objs.filter((o) => o.kind === 'Pod').map((o) => {
    const meta = o.metadata as Obj;
    const ip = ((o.status as Obj).podIPs as Array<{ ip: string }>)[0]!.ip;
    return { ref: `${String(meta.namespace)}/${String(meta.name)}`, ip };
  });
}

const pods = podsOf(objects);
const MANAGED = ['--operation-mode', 'managed'];

/** A state file of its own (startStack's testdir is rewritten by each stack of the same test). */
function stateFile(t: Test, yaml: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'explain-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'state.yaml'), yaml);
  return join(dir, 'state.yaml');
}

async function explainJson(args: string[]): Promise<{ code: number; out: Explanation; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runExplain([...args, '--output', 'json'], { stdout: (s) => { stdout += s; }, stderr: (s) => { stderr += s; }, env: {} });
  return { code, out: JSON.parse(stdout || 'null') as Explanation, stderr };
}

/** Every pod, every variant: explain and the daemon's answer (and its own log of the decision) agree. */
async function agree(t: Test, s: Stack, source: string[], variants = VARIANTS, among: readonly PodRef[] = pods): Promise<Set<string>> {
  const seen = new Set<string>();
  for (const p of among) {
    for (const [what, flags, query] of variants) {
      const before = s.logs.length;
      const answer = await s.ask(`${TOKEN}${query}`, { from: p.ip, headers: META });
      const { code, out } = await explainJson([...source, '--node', 'node-1', '--pod', p.ref, '--resource', 'https://vault.azure.net', ...flags]);
      const label = `${p.ref}, ${what}`;
      const reason = answer.headers['x-podid-nmi-reason'];
      if (reason !== undefined) {
        t.same([out.decision, out.reason, out.status, code], ['refused', reason, answer.status, 1], `${label}: refused alike`);
      } else {
        const logged = s.logs.slice(before).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.decision !== undefined);
        t.same([out.decision, out.reason, out.identity, code], [logged?.decision, null, logged?.identity ?? null, 0], `${label}: decided alike`);
        if (answer.status === 200 && out.clientID !== null) t.equal(answer.json?.client_id, out.clientID, `${label}: the token is for the client id explain names`);
      }
      seen.add(out.reason ?? out.decision);
    }
  }
  return seen;
}

const MANAGED_OUTCOMES = ['granted', 'passed_through', 'pod_unlabeled', 'binding_missing', 'identity_missing', 'secret_reference_missing',
  'identity_incomplete', 'identity_not_bound', 'pod_ip_conflict', 'pod_unknown'];

t.test('--cluster-state: explain agrees with the daemon on every pod and request', async (t) => {
  const s = await startStack(t, { stateYaml: VARIED, flags: ['--token-cache=false'] });
  const seen = await agree(t, s, ['--cluster-state', stateFile(t, VARIED), ...MANAGED]);
  t.same([...seen].sort(), [...MANAGED_OUTCOMES].sort(), 'every outcome of managed mode was compared');
});

t.test('--kubeconfig: explain agrees with the daemon reading the same API server', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  for (const o of objects) api.create(PLURAL[String(o.kind)]!, o);
  const s = await startStack(t, { kubeconfig: api.kubeconfig(), flags: ['--token-cache=false', '--pod-events=false'] });
  await s.daemon.state.whenReady(AbortSignal.timeout(10_000));
  // Each run lists the API afresh; two request shapes per pod keep it short (the decision code is the file form's).
  const seen = await agree(t, s, ['--kubeconfig', api.kubeconfig(), ...MANAGED], [VARIANTS[0]!, VARIANTS[2]!]);
  t.same([...seen].sort(), [...MANAGED_OUTCOMES].sort(), 'every outcome of managed mode was compared');
});

/** Standard mode: MIC's AAIs Assigned, Created (pending), legacy, stale, of another namespace; bindings MIC would follow; none. */
function standardObjects(): Obj[] {
  const withKind = (kind: string, apiVersion: string, o: Obj): Obj => ({ apiVersion, kind, ...o });
  const aad = 'aadpodidentity.k8s.io/v1';
  const reader = identity({ name: 'reader', namespace: 'shop', ...IDS.reader! });
  const writer = identity({ name: 'writer', namespace: 'shop', ...IDS.writer! });
  const far = identity({ name: 'far', namespace: 'platform', ...IDS.agent! });
  const pods: Array<[string, string, Record<string, string>]> = [
    ['orders', '127.0.0.40', { aadpodidbinding: 'orders' }], ['legacy', '127.0.0.41', { aadpodidbinding: 'legacy' }],
    ['moved', '127.0.0.42', { aadpodidbinding: 'moved' }], ['creating', '127.0.0.43', { aadpodidbinding: 'creating' }],
    ['newcomer', '127.0.0.44', { aadpodidbinding: 'newcomer' }], ['far-user', '127.0.0.45', { aadpodidbinding: 'far' }],
    ['both', '127.0.0.46', { aadpodidbinding: 'both' }], ['plain', '127.0.0.47', {}], ['lost', '127.0.0.48', { aadpodidbinding: 'nobody' }],
  ];
  const aai = (p: string, id: Obj, selector: string, state?: string, node = 'node-1') =>
    withKind('AzureAssignedIdentity', aad, assignedIdentity({ pod: p, podNamespace: 'shop', identity: id, selector, node, ...(state !== undefined ? { state } : {}) }));
  return [
    ...pods.map(([name, ip, labels]) => withKind('Pod', 'v1', podObj({ name, namespace: 'shop', ip, labels, node: 'node-1', uid: `u-${name}` }))),
    ...[reader, writer, far].map((o) => withKind('AzureIdentity', aad, o)),
    withKind('AzureIdentityBinding', aad, binding({ name: 'newcomer', namespace: 'shop', azureIdentity: 'reader', selector: 'newcomer' })),
    aai('orders', reader, 'orders'), aai('legacy', reader, 'legacy', ''), aai('moved', reader, 'moved', 'Assigned', 'node-2'),
    aai('creating', writer, 'creating', 'Created'), aai('far-user', far, 'far'), aai('both', writer, 'both'), aai('both', reader, 'both'),
  ];
}

t.test('standard mode: explain agrees with the daemon on AAIs, pending assignments and forceNamespaced, in both forms', async (t) => {
  const objs = standardObjects();
  const among = podsOf(objs);
  const yaml = objs.map((o) => stringify(o)).join('---\n');
  const file = stateFile(t, yaml);
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  for (const o of objs) api.create(PLURAL[String(o.kind)]!, o);
  for (const forceNamespaced of ['false', 'true']) {
    // A zero wait: the daemon answers 'pending' at once, as explain reports it.
    const mode = ['--operation-mode=standard', `--forceNamespaced=${forceNamespaced}`];
    const fromFile = await startStack(t, { stateYaml: yaml, flags: ['--token-cache=false', ...mode, '--assignment-wait-ms=0'] });
    const seen = await agree(t, fromFile, ['--cluster-state', file, '--operation-mode', 'standard', `--forceNamespaced=${forceNamespaced}`], VARIANTS, among);
    for (const outcome of ['granted', 'assignment_pending', 'binding_missing', 'identity_not_bound', 'pod_unlabeled']) t.ok(seen.has(outcome), `forceNamespaced=${forceNamespaced}: ${outcome} compared`);
    t.equal(seen.has('identity_missing') || seen.has('binding_missing'), true);
  }
  const fromApi = await startStack(t, { kubeconfig: api.kubeconfig(), flags: ['--token-cache=false', '--pod-events=false', '--operation-mode=standard', '--assignment-wait-ms=0'] });
  await fromApi.daemon.state.whenReady(AbortSignal.timeout(10_000));
  const seen = await agree(t, fromApi, ['--kubeconfig', api.kubeconfig(), '--operation-mode', 'standard'], [VARIANTS[0]!, VARIANTS[2]!], among);
  for (const outcome of ['granted', 'assignment_pending', 'binding_missing', 'pod_unlabeled']) t.ok(seen.has(outcome), `from the API: ${outcome} compared`);
  const pending = await explainJson(['--cluster-state', file, '--node', 'node-1', '--pod', 'shop/creating']);
  t.match(pending, { code: 1, out: { decision: 'refused', reason: 'assignment_pending', status: 503 } }, 'standard is the default mode, as the daemon\'s');
});

t.test('the JSON shape and exit codes', async (t) => {
  const file = stateFile(t, VARIED);
  const base = ['--cluster-state', file, '--node', 'node-1', ...MANAGED];
  const granted = await explainJson([...base, '--pod', 'shop/orders']);
  t.equal(granted.code, 0);
  t.same(Object.keys(granted.out), ['decision', 'reason', 'status', 'identity', 'clientID', 'tokenSource', 'credential', 'steps', 'flags']);
  t.same(granted.out.flags, { operationMode: 'managed', forceNamespaced: true, from: 'the command line and the daemon\'s defaults' }, 'a state file has no DaemonSet to read; managed mode is always namespaced');
  t.match(granted.out, { decision: 'granted', reason: null, status: 200, identity: 'shop/reader', clientID: IDS.reader!.clientID, tokenSource: 'imds' });
  t.ok(granted.out.steps.every((s) => typeof s.step === 'string' && typeof s.detail === 'string'));
  const passed = await explainJson([...base, '--pod', 'kube-system/agent', '--client-id', IDS.agent!.clientID]);
  t.equal(passed.code, 0);
  t.match(passed.out, { decision: 'passed_through', reason: null, status: 200, identity: null, clientID: IDS.agent!.clientID });
  const refused = await explainJson([...base, '--pod', 'shop/web']);
  t.equal(refused.code, 1);
  t.match(refused.out, { decision: 'refused', reason: 'pod_unlabeled', status: 400, identity: null, clientID: null });
  for (const [args, message] of [
    [['--pod', 'shop'], /--pod: give NAMESPACE\/NAME/],
    [['--pod', 'shop/orders', '--client-id', 'a', '--msi-res-id', 'b'], /not both/],
    [['--pod', 'shop/orders', '--output', 'yaml'], /is not one of text, json/],
    [['--pod', 'shop/orders', '--bogus'], /unknown flag --bogus/],
    [['--pod', 'shop/orders', '--client-id', 'x\u0001'], /parameter_invalid/],
    [['--pod', 'shop/orders', '--kubeconfig', '/kc'], /not both/],
  ] as Array<[string[], RegExp]>) {
    let out = '';
    let err = '';
    const code = await runExplain([...base, ...args], { stdout: (x) => { out += x; }, stderr: (x) => { err += x; }, env: {} });
    t.equal(code, 2, `${args.join(' ')}: exit 2`);
    t.match(err, message);
    t.equal(out, '', 'nothing on stdout');
  }
  const missing = await runExplain(['--cluster-state', `${file}.nope`, '--node', 'node-1', '--pod', 'a/b'], { stdout: () => {}, stderr: () => {}, env: {} });
  t.equal(missing, 2, 'an unreadable state file is bad input');
  let err = '';
  t.equal(await runExplain(['--node', 'node-1', '--pod', 'a/b'], { stdout: () => {}, stderr: (x) => { err += x; }, env: {} }), 2);
  t.match(err, /no cluster state/);
});

t.test('through the real command line: text for people, exit status from the decision', async (t) => {
  const file = stateFile(t, VARIED);
  const run = (...args: string[]) => spawnSync(process.execPath, ['src/cli.ts', 'explain', '--cluster-state', file, '--node', 'node-1', '--operation-mode=managed', ...args], { encoding: 'utf8', timeout: 30_000 });
  const granted = run('--pod', 'shop/orders');
  t.equal(granted.status, 0);
  t.match(granted.stdout, /answer: 200 granted as shop\/reader \(client id 11111111-1111-4111-8111-111111111111\)/);
  t.match(granted.stdout, /4\. label: aadpodidbinding=orders/);
  const refused = run('--pod', 'shop/orders', '--client-id', IDS.writer!.clientID, '--output', 'json');
  t.equal(refused.status, 1);
  t.equal(refused.stdout.trim().split('\n').length, 1, 'one JSON object on stdout');
  t.match(JSON.parse(refused.stdout), { decision: 'refused', reason: 'identity_not_bound', status: 403 });
  const bad = run('--pod', 'nope');
  t.equal(bad.status, 2);
});

/** The DaemonSet as shipped (daemonset/daemonset.yaml), with its args changed by `edit`. */
function shippedDaemonSet(edit: (args: string[], env: Array<{ name: string; value?: string }>) => void = () => {}): Obj {
  const ds = parse(readFileSync(new URL('../daemonset/daemonset.yaml', import.meta.url), 'utf8')) as Obj;
  const c = ((((ds.spec as Obj).template as Obj).spec as Obj).containers as Array<{ name: string; args: string[]; env: Array<{ name: string; value?: string }> }>)[0]!;
  edit(c.args, c.env);
  return ds;
}

t.test('the deployed DaemonSet\'s flags: read from its container, as the daemon parses them', async (t) => {
  t.same(flagsOfDaemonSet(shippedDaemonSet()), {
    operationMode: 'managed', forceNamespaced: true, from: 'DaemonSet kube-system/podid-nmi (container nmi)',
    entra: { tokenSource: 'imds', authorityHost: 'https://login.microsoftonline.com/', tenantID: '', allowCrossNamespaceSecrets: false },
  }, 'the shipped DaemonSet: managed, namespaced, tokens from IMDS');
  const federated = shippedDaemonSet((args, env) => {
    args.push('--token-source=workload-identity', '--allow-cross-namespace-secrets');
    env.push({ name: 'AZURE_TENANT_ID', value: 'contoso.onmicrosoft.com' });
  });
  t.match(flagsOfDaemonSet(federated).entra, { tokenSource: 'workload-identity', tenantID: 'contoso.onmicrosoft.com', allowCrossNamespaceSecrets: true },
    'the token source, tenant (env) and Secret rule of the deployed daemon');
  const insecure = shippedDaemonSet((args) => { args.push('--authority-host=http://login.example.com/'); });
  t.throws(() => flagsOfDaemonSet(insecure), /DaemonSet kube-system\/podid-nmi: flag --authority-host: .* is not an https URL/);
  const standard = shippedDaemonSet((args) => { args.splice(args.indexOf('--operation-mode=managed'), 2, '--operation-mode', 'Standard'); });
  t.match(flagsOfDaemonSet(standard), { operationMode: 'standard', forceNamespaced: false }, 'NMI\'s spellings, case-insensitive mode, flag removed');
  const chart = shippedDaemonSet((args, env) => {
    args.splice(args.indexOf('--operation-mode=managed'), 2, '--operation-mode=$(MODE)');
    env.push({ name: 'MODE', value: 'standard' }, { name: 'FORCENAMESPACED', value: 'true' });
  });
  t.match(flagsOfDaemonSet(chart), { operationMode: 'standard', forceNamespaced: true }, '$(VAR) from the container env, and the chart\'s FORCENAMESPACED');
  const unknown = shippedDaemonSet((args) => { args.push('--flag-from-the-future=1'); });
  t.throws(() => flagsOfDaemonSet(unknown), new DeployedFlagsError('DaemonSet kube-system/podid-nmi, container nmi: unknown flag --flag-from-the-future'));
  t.throws(() => flagsOfDaemonSet({ metadata: { namespace: 'a', name: 'b' }, spec: { template: { spec: { containers: [{ name: 'x' }, { name: 'y' }] } } } }),
    /DaemonSet a\/b has no container named nmi/);
});

t.test('explain takes the mode and flags of the DaemonSet in the cluster when not given, and says which it used', async (t) => {
  const objs = standardObjects();
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  for (const o of objs) api.create(PLURAL[String(o.kind)]!, o);
  const base = ['--kubeconfig', api.kubeconfig(), '--node', 'node-1', '--pod', 'shop/creating'];
  // No DaemonSet yet: the defaults (standard), and the answer says so.
  const none = await explainJson(base);
  t.match(none.out, { reason: 'assignment_pending', flags: { operationMode: 'standard', from: /^the daemon's defaults: no DaemonSet is labelled app\.kubernetes\.io\/name=podid-nmi/ } });
  // The shipped DaemonSet runs managed mode: the pod MIC has not served yet is decided from its bindings.
  api.create('daemonsets', shippedDaemonSet());
  const managed = await explainJson(base);
  t.match(managed, { code: 1, out: { reason: 'binding_missing', flags: { operationMode: 'managed', forceNamespaced: true, from: 'DaemonSet kube-system/podid-nmi (container nmi)' } } },
    'managed mode, from the DaemonSet found by its label');
  const override = await explainJson([...base, '--operation-mode', 'standard']);
  t.match(override.out, { reason: 'assignment_pending', flags: { operationMode: 'standard', forceNamespaced: true, from: 'DaemonSet kube-system/podid-nmi (container nmi), and the command line' } },
    'a flag given here wins; the other still comes from the DaemonSet');
  const both = await explainJson([...base, '--operation-mode', 'standard', '--forceNamespaced=false']);
  t.same(both.out.flags, { operationMode: 'standard', forceNamespaced: false, from: 'the command line' });
  // A second, labelled DaemonSet: which one is meant must be said.
  const other = shippedDaemonSet((args) => { args.splice(args.indexOf('--operation-mode=managed'), 1, '--operation-mode=standard'); });
  (other.metadata as Obj).namespace = 'podid-canary';
  api.create('daemonsets', other);
  const several = await explainJson(base);
  t.equal(several.code, 2);
  t.match(several.stderr, /several DaemonSets are labelled app\.kubernetes\.io\/name=podid-nmi \(kube-system\/podid-nmi, podid-canary\/podid-nmi\): name one with --daemonset NAMESPACE\/NAME/);
  const named = await explainJson([...base, '--daemonset', 'podid-canary/podid-nmi']);
  t.match(named.out, { reason: 'assignment_pending', flags: { operationMode: 'standard', forceNamespaced: true, from: 'DaemonSet podid-canary/podid-nmi (container nmi)' } });
  const missing = await explainJson([...base, '--daemonset', 'kube-system/nope']);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /nope/);
  let err = '';
  t.equal(await runExplain(['--cluster-state', '/x', '--node', 'n', '--pod', 'a/b', '--daemonset', 'a/b'], { stdout: () => {}, stderr: (x) => { err += x; }, env: {} }), 2);
  t.match(err, /--daemonset needs the Kubernetes API/);
  // Text output names where the flags came from.
  // Spawned, not spawnSync: the fake API server answering it runs in this process.
  const child = spawn(process.execPath, ['src/cli.ts', 'explain', ...base, '--daemonset', 'kube-system/podid-nmi'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  t.equal(await new Promise((resolve) => child.once('exit', resolve)), 1, 'refused: exit 1');
  t.match(stdout, /^shop\/creating on node node-1 \(managed mode, namespaced\), token for https:\/\/management\.azure\.com\/:\n  flags: --operation-mode=managed --forceNamespaced=true, from DaemonSet kube-system\/podid-nmi \(container nmi\)\n/);
});
