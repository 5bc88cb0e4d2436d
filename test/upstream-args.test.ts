// aad-pod-identity v1.8.17's own command lines (test/fixtures/upstream-nmi-args.ts): each one
// parses to the configuration NMI would have run with, names its meaningless flags once, and
// starts the daemon. Every NMI flag is accepted as NMI spells it. When the upstream repository
// is at hand (AAD_POD_IDENTITY_REPO, default the mirror path), the transcription itself is
// checked against its files.
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { toDaemonConfig, type DaemonConfig } from '../src/config/daemon-config.ts';
import { FLAGS, IGNORED_FLAGS, parseFlags } from '../src/config/flags.ts';
import { VERSION } from '../src/config/version.ts';
import {
  CHART_TEMPLATE_FLAGS, containerCommandLine, expandKubeletVars, NMI_FLAGS, sampleValue, UPSTREAM_ARG_SETS,
  type UpstreamArgSet,
} from './fixtures/upstream-nmi-args.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
// Nine daemon starts (two at a time) besides the parsing tests.
t.setTimeout(600_000);
const NODE = { nodeName: 'aks-nodepool1-12345678-vmss000000', nodeIp: '10.240.0.4' };
/** What kubelet adds to every container's environment in a cluster. */
const IN_CLUSTER = { KUBERNETES_SERVICE_HOST: '10.0.0.1', KUBERNETES_SERVICE_PORT: '443' };

const BASE: Partial<DaemonConfig> = {
  node: NODE.nodeName, listenAddress: '127.0.0.1', listenPort: 2579, metadataIp: '169.254.169.254', metadataPort: 80,
  probePort: 8085, metricsPort: 9090, blockInstanceMetadata: false, metadataHeaderRequired: true, iptUpdateIntervalSec: 60,
  manageIptables: true, conntrackFlush: false, clusterStateFile: '', kubeconfig: '', logFormat: 'text', logLevel: 'info',
  operationMode: 'standard', forceNamespaced: false, assignmentWaitMs: 5000, userAgent: `podid-nmi/${VERSION}`,
};
const KNOBS_IGNORED = ['MICNamespace', 'enableScaleFeatures', 'allow-network-plugin-kubenet', 'kubelet-config', 'set-retry-after-header'];

/** What NMI would have run with, per set, and the flags that mean nothing here (in order). */
const EXPECTED: Record<string, { config: Partial<DaemonConfig>; ignored: string[] }> = {
  'deploy/infra/deployment.yaml': { config: {}, ignored: ['enableScaleFeatures'] },
  'deploy/infra/deployment-rbac.yaml': { config: {}, ignored: ['enableScaleFeatures'] },
  'deploy/infra/managed-mode-deployment.yaml': { config: { operationMode: 'managed', forceNamespaced: true }, ignored: ['enableScaleFeatures'] },
  'deploy/infra/noazurejson/deployment.yaml': { config: {}, ignored: ['enableScaleFeatures'] },
  'deploy/infra/noazurejson/deployment-rbac.yaml': { config: {}, ignored: ['enableScaleFeatures'] },
  'chart/defaults': { config: {}, ignored: ['enableScaleFeatures', 'kubelet-config'] },
  'chart/managed-every-knob': {
    config: {
      probePort: 8086, iptUpdateIntervalSec: 30, metricsPort: 9091, blockInstanceMetadata: true, metadataHeaderRequired: false,
      logFormat: 'json', logLevel: 'debug', operationMode: 'managed', forceNamespaced: true, conntrackFlush: true,
      // min(5000, 8 attempts x 2 s)
      assignmentWaitMs: 5000, userAgent: `podid-nmi/${VERSION} contoso-ops/1.0`,
    },
    ignored: KNOBS_IGNORED,
  },
  'chart/standard-every-knob': {
    config: {
      probePort: 8087, iptUpdateIntervalSec: 15, metricsPort: 9092, blockInstanceMetadata: true, metadataHeaderRequired: true,
      logFormat: 'text', logLevel: 'trace', operationMode: 'standard', forceNamespaced: true, conntrackFlush: true,
      // min(5000, 3 attempts x 1 s): the NMI flags shorten the wait
      assignmentWaitMs: 3000, userAgent: `podid-nmi/${VERSION} fabrikam/2.3`,
    },
    ignored: KNOBS_IGNORED,
  },
  'chart/old-image-tag': { config: {}, ignored: ['host-ip', 'enableScaleFeatures'] },
};

t.test('kubelet\'s $(VAR) expansion', async (t) => {
  const env = { NODE_NAME: 'n1', EMPTY: '' };
  t.equal(expandKubeletVars('--node=$(NODE_NAME)', env), '--node=n1');
  t.equal(expandKubeletVars('--x=$(EMPTY)', env), '--x=');
  t.equal(expandKubeletVars('--x=$(MISSING)', env), '--x=$(MISSING)', 'an undefined variable stays as written');
  t.equal(expandKubeletVars('--x=$$(NODE_NAME)', env), '--x=$(NODE_NAME)', '$$ escapes');
  t.equal(expandKubeletVars('$(NODE_NAME)-$(NODE_NAME)', env), 'n1-n1');
});

t.test('every upstream set parses to the configuration NMI would have had, and names its ignored flags once', async (t) => {
  t.same(UPSTREAM_ARG_SETS.map((s) => s.name).sort(), Object.keys(EXPECTED).sort(), 'an expectation for every set');
  for (const set of UPSTREAM_ARG_SETS) {
    const { argv, env } = containerCommandLine(set, NODE);
    const parsed = parseFlags(argv, env);
    t.same(parsed.positionals, [], `${set.name}: no stray argument`);
    const config = toDaemonConfig(parsed.values, { ...env, ...IN_CLUSTER }, parsed.given);
    const want = EXPECTED[set.name]!;
    t.strictSame(pick(config, { ...BASE, ...want.config }), { ...BASE, ...want.config }, `${set.name}: configuration`);
    t.equal(config.operationMode, set.mode, `${set.name}: ${set.mode} mode`);
    t.same(parsed.ignored, want.ignored, `${set.name}: ignored flags`);
    if (want.ignored.length === 0) {
      t.same(parsed.warnings, [], `${set.name}: no warning`);
    } else {
      t.equal(parsed.warnings.length, 1, `${set.name}: one warning line`);
      for (const name of want.ignored) t.equal(parsed.warnings[0]!.split(`--${name} (`).length - 1, 1, `${set.name}: --${name} named once`);
    }
  }
});

function pick<T extends object>(from: T, like: Partial<T>): Partial<T> {
  return Object.fromEntries(Object.keys(like).map((k) => [k, from[k as keyof T]])) as Partial<T>;
}

t.test('every NMI flag is accepted as NMI spells it, and is either honoured or ignored', async (t) => {
  const honoured = new Map(FLAGS.filter((f) => f.nmi === true).map((f) => [f.name, f]));
  for (const { name, type } of NMI_FLAGS) {
    const spec = honoured.get(name);
    t.ok(spec !== undefined || IGNORED_FLAGS.has(name), `--${name} is known`);
    t.notOk(spec !== undefined && IGNORED_FLAGS.has(name), `--${name} is not both honoured and ignored`);
    const value = spec === undefined ? sampleValue(type) : spec.type === 'bool' ? 'true' : spec.choices?.[0] ?? String(spec.default);
    const forms = [[`--${name}=${value}`], [`-${name}=${value}`]];
    if (type === 'bool') forms.push([`--${name}`], [`-${name}`], [`--${name}=false`]);
    else forms.push([`--${name}`, value], [`-${name}`, value]);
    for (const argv of forms) {
      const parsed = parseFlags(argv);
      t.same(parsed.positionals, [], `${argv.join(' ')}: accepted`);
      if (spec === undefined) t.same(parsed.ignored, [name], `${argv.join(' ')}: ignored with a warning`);
      else t.ok(parsed.given.has(name) && parsed.warnings.length === 0, `${argv.join(' ')}: honoured`);
    }
    if (name !== name.toLowerCase() || name !== name.toUpperCase()) {
      const other = name === name.toLowerCase() ? name.toUpperCase() : name.toLowerCase();
      t.throws(() => parseFlags([`--${other}=${value}`]), { message: `unknown flag --${other}` }, `--${other}: names are case-sensitive, as pflag`);
    }
  }
  const nmiNames = new Set(NMI_FLAGS.map((f) => f.name));
  for (const name of honoured.keys()) t.ok(nmiNames.has(name), `--${name} is marked an NMI flag and is one`);
  t.ok(IGNORED_FLAGS.has('host-ip'), 'the old chart\'s --host-ip too');
});

t.test('the chart knob sets together render every flag the chart template can', async (t) => {
  const rendered = new Set(UPSTREAM_ARG_SETS.filter((s) => s.name.startsWith('chart/'))
    .flatMap((s) => s.args.map((a) => /^--?([^=]+)/.exec(a)?.[1] ?? a)));
  for (const name of CHART_TEMPLATE_FLAGS) t.ok(rendered.has(name), `--${name} is in a chart set`);
  const nmiNames = new Set([...NMI_FLAGS.map((f) => f.name), 'host-ip']);
  for (const name of rendered) t.ok(nmiNames.has(name), `--${name} (rendered) is an NMI flag`);
});

// ---- the transcription against aad-pod-identity's own files ----

const REPO = process.env.AAD_POD_IDENTITY_REPO ?? '/work/.mirror/Azure+aad-pod-identity/repo';
const noRepo = existsSync(REPO) ? false : `aad-pod-identity repository not at ${REPO} (set AAD_POD_IDENTITY_REPO)`;
const git = promisify(execFile);
const show = async (path: string): Promise<string> => (await git('git', ['-C', REPO, 'show', `v1.8.17:${path}`], { maxBuffer: 8 << 20 })).stdout;

interface Container { name: string; args?: string[]; env?: Array<{ name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }> }

t.test('the fixture matches aad-pod-identity v1.8.17\'s files', { skip: noRepo }, async (t) => {
  for (const set of UPSTREAM_ARG_SETS.filter((s) => s.name.startsWith('deploy/'))) {
    const docs = parseAllDocuments(await show(set.name)).map((d) => d.toJS() as { kind?: string; spec?: { template?: { spec?: { containers?: Container[] } } } });
    const nmi = docs.filter((d) => d?.kind === 'DaemonSet').flatMap((d) => d.spec?.template?.spec?.containers ?? []).find((c) => c.name === 'nmi');
    t.ok(nmi, `${set.name}: has the nmi container`);
    t.same(nmi?.args, set.args, `${set.name}: args`);
    t.same(nmi?.env?.map((e) => [e.name, e.value !== undefined ? { value: e.value } : { fieldRef: e.valueFrom?.fieldRef?.fieldPath }]), set.env, `${set.name}: env`);
  }
  const template = await show('charts/aad-pod-identity/templates/nmi-daemonset.yaml');
  const argsBlock = template.slice(template.indexOf('args:'), template.indexOf('env:'));
  const templateFlags = [...argsBlock.matchAll(/^\s*- "?--?([A-Za-z_-]+)=/gm), ...argsBlock.matchAll(/^\s*- "?--?([A-Za-z_-]+)"?$/gm)].map((m) => m[1]);
  t.same([...new Set(templateFlags)].sort(), [...CHART_TEMPLATE_FLAGS].sort(), 'every flag the chart template renders');
  const values = await show('charts/aad-pod-identity/values.yaml');
  t.match(values, /^operationMode: "standard"$/m, 'chart default: standard mode');
  t.match(values, /^forceNamespaced: "false"$/m, 'chart default: FORCENAMESPACED "false"');
  t.match(values, /^ {2}probePort: "8085"$/m);
  t.match(values, /^ {2}kubeletConfig: "\/etc\/default\/kubelet"$/m);
  const main = await show('cmd/nmi/main.go');
  const pflags = [...main.matchAll(/pflag\.(Bool|String|Int)\("([^"]+)"/g)].map((m) => m[2]!);
  t.same(pflags.sort(), NMI_FLAGS.filter((f) => f.from === 'cmd/nmi/main.go').map((f) => f.name).sort(), 'cmd/nmi/main.go\'s pflag list');
  t.match(await show('version/version.go'), /flag\.String\("custom-user-agent"/);
  t.match(await show('pkg/log/options.go'), /logFormatFlagName = "log-format"/);
  t.match(main, /\*forceNamespaced = \*forceNamespaced \|\| "true" == os\.Getenv\("FORCENAMESPACED"\)/, 'NMI\'s FORCENAMESPACED rule');
  t.match(main, /\*operationMode = strings\.ToLower\(\*operationMode\)/, 'NMI lower-cases --operation-mode');
});

// ---- the process, with each set ----

interface Started { code: number | null; out: string; listening: boolean }

/** Starts `node src/cli.ts` with the set's command line plus a state file, waits until it listens, then stops it. */
function runSet(set: UpstreamArgSet, stateFile: string): Promise<Started> {
  const { argv, env } = containerCommandLine(set, { ...NODE, nodeName: 'demo-node' });
  // After the upstream flags: a state file instead of the API, never the machine's iptables,
  // free ports, and an upstream on loopback (no request is made anyway).
  const extra = [`--cluster-state=${stateFile}`, '--manage-iptables=false', '--nmi-port=0', '--http-probe-port=0', '--prometheus-port=0',
    '--probe-listen-address=127.0.0.1', '--metadata-ip=127.0.0.1'];
  const childEnv: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, ...env };
  return new Promise((resolve) => {
    const child = spawn(`${ROOT}node_modules/.bin/node`, [`${ROOT}src/cli.ts`, ...argv, ...extra], { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let listening = false;
    // Bounds sized for a loaded machine: a start, then a stop.
    let timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    const on = (d: Buffer): void => {
      out += d.toString();
      if (!listening && out.includes('podid-nmi listening')) {
        listening = true;
        // Up and serving: a clean stop must follow.
        clearTimeout(timer);
        timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
        child.kill('SIGTERM');
      }
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, listening });
    });
  });
}

t.test('`node src/cli.ts <upstream args>` starts and stays up with each set', async (t) => {
  const stateFile = `${ROOT}daemonset/examples/cluster-state.yaml`;
  // Two at a time: the machine is shared.
  const queue = [...UPSTREAM_ARG_SETS];
  const results = new Map<string, Started>();
  await Promise.all([0, 1].map(async () => {
    for (let set = queue.shift(); set !== undefined; set = queue.shift()) results.set(set.name, await runSet(set, stateFile));
  }));
  for (const set of UPSTREAM_ARG_SETS) {
    const r = results.get(set.name)!;
    t.ok(r.listening, `${set.name}: listening (${r.code === 2 ? `exit 2: ${r.out.trim()}` : 'started'})`);
    t.equal(r.code, 0, `${set.name}: stopped cleanly by SIGTERM`);
    t.equal(r.out.split('flags accepted for compatibility with aad-pod-identity NMI and ignored').length - 1, 1, `${set.name}: one warning line`);
    t.match(r.out, /not intercepting: started with --manage-iptables=false/, `${set.name}: says it intercepts nothing`);
  }
});
