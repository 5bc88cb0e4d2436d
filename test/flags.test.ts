import t from 'tap';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FLAGS, FlagError, flagHelp, IGNORED_FLAGS, parseFlags, type FlagValues } from '../src/config/flags.ts';
import { toDaemonConfig } from '../src/config/daemon-config.ts';
import { VERSION } from '../src/config/version.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const STATE = ['--cluster-state=/etc/state.yaml'];

function values(argv: string[], env: NodeJS.ProcessEnv = {}): FlagValues {
  return parseFlags(argv, env).values;
}

t.test('defaults', async (t) => {
  const parsed = parseFlags([]);
  for (const spec of FLAGS) t.equal(parsed.values[spec.name], spec.default, `${spec.name} defaults`);
  t.equal(parsed.given.size, 0);
  t.same(parsed.warnings, []);
  t.same(parsed.positionals, []);
});

t.test('flag spellings', async (t) => {
  t.equal(values(['--node=n1']).node, 'n1', '--flag=value');
  t.equal(values(['--node', 'n1']).node, 'n1', '--flag value');
  t.equal(values(['-node=n1']).node, 'n1', '-flag=value');
  t.equal(values(['-node', 'n1']).node, 'n1', '-flag value');
  t.equal(values(['--node=a=b']).node, 'a=b', 'value split at the first =');
  t.equal(values(['--node=']).node, '', 'an empty value');
  t.equal(values(['--node', '--nmi-port=1']).node, '--nmi-port=1', 'a separate value is taken as it is, as Go does');
  t.equal(values(['--nmi-port=80'])['nmi-port'], 80, 'int as a number');
  t.equal(values(['--nmi-port', '8080'])['nmi-port'], 8080);
  t.equal(values(['--node=a', '--node=b']).node, 'b', 'the last one wins');
  t.equal(values(['--manage-iptables'])['manage-iptables'], true, 'a bare bool is true');
  t.equal(values(['-manage-iptables'])['manage-iptables'], true);
  t.equal(values(['--token-cache=false'])['token-cache'], false, '--flag=false');
  t.equal(values(['--help']).help, true);

  const parsed = parseFlags(['--manage-iptables', 'false', 'extra', '-', '--node=n', '--', '--bogus', '-x']);
  t.equal(parsed.values['manage-iptables'], true, 'a bool takes no separate value');
  t.same(parsed.positionals, ['false', 'extra', '-', '--bogus', '-x'], 'positionals, everything after --');
  t.equal(parsed.values.node, 'n', 'parsing goes on after a positional');
  t.same([...parsed.given].sort(), ['manage-iptables', 'node']);
});

t.test('Go bool spellings', async (t) => {
  for (const s of ['1', 't', 'T', 'true', 'TRUE', 'True']) t.equal(values([`--block-instance-metadata=${s}`])['block-instance-metadata'], true, s);
  for (const s of ['0', 'f', 'F', 'false', 'FALSE', 'False']) t.equal(values([`--token-cache=${s}`])['token-cache'], false, s);
  for (const s of ['', 'yes', 'no', 'on', 'tRUE', 'fAlse', '2', ' true', 'true ']) {
    t.throws(() => parseFlags([`--token-cache=${s}`]), { name: 'FlagError', message: `flag --token-cache: invalid boolean ${JSON.stringify(s)}` },
      JSON.stringify(s));
  }
});

t.test('int errors name the flag', async (t) => {
  for (const s of ['abc', '', '1.5', '8o', ' 80', '80 ', '+80', '1e3', '--1']) {
    t.throws(() => parseFlags([`--nmi-port=${s}`]), { name: 'FlagError', message: `flag --nmi-port: invalid integer ${JSON.stringify(s)}` },
      JSON.stringify(s));
  }
  t.throws(() => parseFlags(['--nmi-port=65536']), { name: 'FlagError', message: 'flag --nmi-port: 65536 is outside 0..65535' });
  t.throws(() => parseFlags(['--metadata-port=-1']), { name: 'FlagError', message: /^flag --metadata-port: -1 is outside 0\.\.65535$/ });
  t.throws(() => parseFlags(['--ipt-update-interval-sec=0']), { message: /^flag --ipt-update-interval-sec: 0 is outside 1\.\.3600$/ });
  t.throws(() => parseFlags(['--pod-wait-ms', '30001']), { message: /^flag --pod-wait-ms: 30001 is outside 0\.\.30000$/ });
  t.throws(() => parseFlags(['--max-connections=99999999999999999999999']), { message: /^flag --max-connections: .* is outside 1\.\.65535$/ });
  t.equal(values(['--nmi-port=0'])['nmi-port'], 0, 'the bounds themselves are allowed');
  t.equal(values(['--nmi-port=65535'])['nmi-port'], 65535);
  t.equal(values(['--pod-wait-ms=007'])['pod-wait-ms'], 7, 'leading zeros are decimal');
});

t.test('unknown flags and missing values', async (t) => {
  for (const [argv, message] of [
    [['--bogus'], 'unknown flag --bogus'],
    [['--bogus=1'], 'unknown flag --bogus'],
    [['-bogus'], 'unknown flag --bogus'],
    [['---node=x'], 'unknown flag ---node'],
    [['--Node=x'], 'unknown flag --Node'],
    [['--forcenamespaced'], 'unknown flag --forcenamespaced'],
    [['--node=ok', '--nope', 'v'], 'unknown flag --nope'],
    [['--node'], 'flag --node needs a value'],
    [['--nmi-port'], 'flag --nmi-port needs a value'],
    [['--manage-iptables', '--log-format'], 'flag --log-format needs a value'],
    [['--v'], 'flag --v needs a value'],
  ] as const) {
    t.throws(() => parseFlags(argv), { name: 'FlagError', message }, argv.join(' '));
  }
  t.throws(() => parseFlags(['--bogus']), FlagError);
});

t.test('environment fallbacks', async (t) => {
  const env = { NODE_NAME: 'env-node', KUBECONFIG: '/env/kubeconfig', FORCENAMESPACED: 'true' };
  const fromEnv = parseFlags([], env);
  t.equal(fromEnv.values.node, 'env-node');
  t.equal(fromEnv.values.kubeconfig, '/env/kubeconfig');
  t.equal(fromEnv.values.forceNamespaced, false, 'FORCENAMESPACED is not the flag\'s value: toDaemonConfig applies NMI\'s rule');
  t.same([...fromEnv.given].sort(), ['kubeconfig', 'node'], 'env counts as given');

  const overridden = parseFlags(['--node=flag-node', '--kubeconfig', '/flag/kc'], env);
  t.equal(overridden.values.node, 'flag-node', 'the flag wins over NODE_NAME');
  t.equal(overridden.values.kubeconfig, '/flag/kc', 'the flag wins over KUBECONFIG');

  const empty = parseFlags([], { NODE_NAME: '' });
  t.equal(empty.values.node, '', 'an empty variable is not a value');
  t.equal(empty.values.forceNamespaced, false, 'NMI\'s default');
  t.equal(empty.given.size, 0);
  t.equal(values([], { NMI_PORT: '1', nmi_port: '1', node: 'x' }).node, '', 'only the declared variables are read');
});

t.test('forceNamespaced: NMI\'s rule, flag || FORCENAMESPACED === "true"', async (t) => {
  const force = (argv: string[], env: NodeJS.ProcessEnv): boolean => toDaemonConfig(values([...STATE, ...argv], env), env).forceNamespaced;
  t.equal(force([], {}), false, 'NMI\'s default');
  t.equal(force([], { FORCENAMESPACED: 'true' }), true, 'env "true"');
  t.equal(force(['--forceNamespaced'], {}), true, 'bare flag');
  t.equal(force(['--forceNamespaced=false'], { FORCENAMESPACED: 'true' }), true, 'the env can only turn it on, as in NMI');
  t.equal(force(['--forceNamespaced'], { FORCENAMESPACED: 'false' }), true, 'the chart\'s "false" does not turn the flag off');
  for (const other of ['false', 'True', 'TRUE', '1', 't', 'yes', 'maybe', '', ' true']) {
    t.equal(force([], { FORCENAMESPACED: other }), false, `env ${JSON.stringify(other)} is simply not "true", never an error`);
  }
});

t.test('ignored NMI flags are checked as NMI did, then named once in one warning line', async (t) => {
  const parsed = parseFlags([
    '--enableScaleFeatures=true', '--kubelet-config', '/etc/default/kubelet', '--logtostderr', '--MICNamespace=aad',
    '-alsologtostderr', '--cloud-config=/etc/kubernetes/azure.json', '--node=n1', 'pos', '--enableScaleFeatures=false',
    '-log_dir', '/var/log', '--vmodule=server=5', '-v=2',
  ]);
  t.equal(parsed.values.node, 'n1');
  t.same(parsed.positionals, ['pos'], 'the separate values of ignored non-bool flags are consumed');
  const names = ['enableScaleFeatures', 'kubelet-config', 'logtostderr', 'MICNamespace', 'alsologtostderr', 'cloud-config', 'log_dir', 'vmodule'];
  t.same(parsed.ignored, names, 'each named once, in order of first appearance');
  t.equal(parsed.warnings.length, 1, 'one warning line');
  const warning = parsed.warnings[0]!;
  for (const n of names) t.equal(warning.split(`--${n} (`).length - 1, 1, `--${n} named exactly once`);
  t.match(warning, /--MICNamespace \(MIC's pods pass through by the `mic` AzurePodIdentityException .*not by namespace and a ReplicaSet-name prefix, which any pod could take\)/);
  t.notMatch(warning, /--v[ (]/, '-v is honoured, not ignored');
  for (const n of names) t.notOk(n in parsed.values, `${n} has no value`);
  t.same([...parsed.given].sort(), ['node', 'v']);

  for (const [name, { type }] of IGNORED_FLAGS) {
    const argv = type === 'bool' ? [`--${name}`] : [`--${name}`, '7'];
    t.same(parseFlags(argv).ignored, [name], `${argv.join(' ')} is accepted`);
    t.same(parseFlags([`-${name}=${type === 'bool' ? 'false' : '7'}`]).ignored, [name], `-${name}= is accepted (Go flag form)`);
    if (type === 'bool') {
      t.throws(() => parseFlags([`--${name}=yes`]), { name: 'FlagError', message: `flag --${name}: invalid boolean "yes"` }, 'a bad bool stops it, as it stopped NMI');
    }
    if (type === 'uint') {
      t.throws(() => parseFlags([`--${name}=-1`]), { name: 'FlagError', message: `flag --${name}: invalid unsigned integer "-1"` });
    }
  }
  t.same(parseFlags(['--node=n']).warnings, [], 'no warning when none is given');
  for (const wrong of ['enable-scale-features', 'enable-profile', 'micnamespace', 'enablescalefeatures', 'log-dir']) {
    t.throws(() => parseFlags([`--${wrong}`]), { name: 'FlagError', message: `unknown flag --${wrong}` }, `--${wrong} is not NMI's spelling`);
  }
});

t.test('-v: klog verbosity, in pflag\'s forms, sets the log level unless --log-level is given', async (t) => {
  for (const argv of [['-v=5'], ['-v', '5'], ['-v5'], ['--v=5'], ['--v', '5']]) {
    const parsed = parseFlags([...STATE, ...argv]);
    t.equal(parsed.values.v, 5, argv.join(' '));
    t.same(parsed.warnings, [], `${argv.join(' ')}: no warning`);
  }
  const level = (argv: string[]): string => {
    const parsed = parseFlags([...STATE, ...argv]);
    return toDaemonConfig(parsed.values, {}, parsed.given).logLevel;
  };
  t.equal(level([]), 'info');
  for (const [v, want] of [[0, 'info'], [3, 'info'], [4, 'debug'], [5, 'debug'], [6, 'trace'], [10, 'trace'], [-1, 'info']] as const) {
    t.equal(level([`-v=${v}`]), want, `-v=${v} is ${want}`);
  }
  t.equal(level(['-v=6', '--log-level=warn']), 'warn', '--log-level wins');
  t.equal(level(['--log-level=error', '-v', '5']), 'error', 'whatever the order');
  t.throws(() => parseFlags(['-v=x']), { name: 'FlagError', message: 'flag --v: invalid integer "x"' });
  t.throws(() => parseFlags(['-vx']), { name: 'FlagError', message: 'flag --v: invalid integer "x"' });
  t.throws(() => parseFlags(['-v']), { name: 'FlagError', message: 'flag --v needs a value' });
  t.throws(() => parseFlags(['--v5']), { name: 'FlagError', message: 'unknown flag --v5' }, 'no shorthand after --, as pflag');
});

t.test('choices', async (t) => {
  t.throws(() => parseFlags(['--log-format=xml']), { name: 'FlagError', message: 'flag --log-format: "xml" is not one of text, json' });
  t.throws(() => parseFlags(['--log-level', 'verbose']), { name: 'FlagError', message: /^flag --log-level: "verbose" is not one of / });
  t.throws(() => parseFlags(['--operation-mode=managedx']), { name: 'FlagError', message: 'flag --operation-mode: "managedx" is not one of managed, standard' });
  for (const mode of ['Managed', 'MANAGED', 'managed']) t.equal(values([`--operation-mode=${mode}`])['operation-mode'], 'managed', `${mode}: lower-cased, as NMI`);
  t.equal(values(['--operation-mode', 'Standard'])['operation-mode'], 'standard');
  t.equal(values([])['operation-mode'], 'standard', 'NMI\'s default');
  t.equal(values(['--log-format=json'])['log-format'], 'json');
  t.equal(values(['--log-level=silent'])['log-level'], 'silent');
});

t.test('toDaemonConfig: a full configuration', async (t) => {
  const config = toDaemonConfig(values([
    '--cluster-state=/s.yaml', '--node=n1', '--nmi-listen-address=::1', '--nmi-port=1', '--metadata-ip=127.0.0.2', '--metadata-port=2',
    '--http-probe-port=3', '--prometheus-port=4', '--probe-listen-address=127.0.0.1', '--block-instance-metadata',
    '--metadata-header-required=false', '--ipt-update-interval-sec=5', '--manage-iptables', '--enable-conntrack-deletion',
    '--pod-wait-ms=6', '--upstream-connect-timeout-ms=7', '--upstream-timeout-ms=8', '--token-cache=false', '--max-connections=9',
    '--shutdown-grace-ms=10', '--log-format=json', '--log-level=debug', '--kubeconfig=/kc',
    '--intercept-host-network', '--cgroup-root=/host/cgroup', '--kubepods-cgroup-parent=kubelet', '--host-token-callers=ops/app=v,tier=x;kube-system/app=csi',
    '--operation-mode=Managed', '--forceNamespaced', '--assignment-wait-ms=11', '--find-identity-retry-interval=12',
    '--custom-user-agent=team/1.0 (x)', '--max-state-staleness=45', '--pod-events=false', '--memory-saver',
    '--imds-max-rps=11', '--imds-max-concurrency=12', '--imds-max-queue=13', '--imds-max-queue-per-pod=14', '--token-wait-ms=1500',
    '--attest-pod-sockets', '--proc-root=/host/proc',
  ]));
  t.strictSame(config, {
    node: 'n1', listenAddress: '::1', listenPort: 1, metadataIp: '127.0.0.2', metadataPort: 2, probePort: 3, metricsPort: 4,
    probeListenAddress: '127.0.0.1', blockInstanceMetadata: true, metadataHeaderRequired: false, iptUpdateIntervalSec: 5,
    manageIptables: true, conntrackFlush: true, clusterStateFile: '/s.yaml', kubeconfig: '/kc', podWaitMs: 6,
    maxStateStalenessS: 45, podEvents: false, memorySaver: true,
    upstreamConnectTimeoutMs: 7, upstreamTimeoutMs: 8, tokenCache: false, maxConnections: 9, maxConnectionsPerPod: 32, maxRequestsPerPod: 16, shutdownGraceMs: 10,
    logFormat: 'json', logLevel: 'debug', operationMode: 'managed', forceNamespaced: true, assignmentWaitMs: 11,
    userAgent: `podid-nmi/${VERSION} team/1.0 (x)`,
    interceptHostNetwork: true, cgroupRoot: '/host/cgroup', kubepodsCgroupParent: 'kubelet', removeNodeTaint: '',
    hostTokenCallers: [{ namespace: 'ops', labels: [['app', 'v'], ['tier', 'x']] }, { namespace: 'kube-system', labels: [['app', 'csi']] }],
    imdsMaxRps: 11, imdsMaxConcurrency: 12, imdsMaxQueue: 13, imdsMaxQueuePerPod: 14, tokenWaitMs: 1500,
    interception: 'iptables', adminSocket: '',
    attestPodSockets: true, procRoot: '/host/proc',
    entra: { tokenSource: 'imds', authorityHost: 'https://login.microsoftonline.com/', tenantID: '', allowCrossNamespaceSecrets: false },
  });
  const defaults = toDaemonConfig(values(STATE));
  const entra = toDaemonConfig(values([...STATE, '--token-source=workload-identity', '--authority-host=http://127.0.0.9:81', '--allow-cross-namespace-secrets']), {}).entra;
  t.same(entra, { tokenSource: 'workload-identity', authorityHost: 'http://127.0.0.9:81/', tenantID: '', allowCrossNamespaceSecrets: true }, 'Entra flags; a loopback http authority, normalised');
  const fromEnv = parseFlags([...STATE], { AZURE_AUTHORITY_HOST: 'https://login.chinacloudapi.cn', AZURE_TENANT_ID: 'contoso.onmicrosoft.com' });
  t.same(toDaemonConfig(fromEnv.values).entra, { tokenSource: 'imds', authorityHost: 'https://login.chinacloudapi.cn/', tenantID: 'contoso.onmicrosoft.com', allowCrossNamespaceSecrets: false }, 'AZURE_AUTHORITY_HOST and AZURE_TENANT_ID');
  for (const bad of ['http://login.example.com/', 'https://user:pw@login.example.com/', 'https://login.example.com/?x=1', 'not a url']) {
    t.throws(() => toDaemonConfig(values([...STATE, `--authority-host=${bad}`])), /flag --authority-host: .* is not an https URL/, `--authority-host ${bad} refused`);
  }
  t.equal(defaults.listenAddress, '127.0.0.1');
  t.equal(defaults.listenPort, 2579);
  t.equal(defaults.metadataIp, '169.254.169.254');
  t.equal(defaults.metadataHeaderRequired, true);
  t.equal(defaults.tokenCache, true);
  t.equal(defaults.memorySaver, false, 'V8 memory saver mode only when asked: it costs the request path');
  t.equal(defaults.blockInstanceMetadata, false);
  t.equal(defaults.manageIptables, true, 'interception on by default, as NMI');
  t.equal(defaults.interception, 'iptables');
  t.equal(defaults.adminSocket, '', 'no admin socket unless asked: a daemon on a developer machine writes nothing under /var/run');
  t.equal(defaults.operationMode, 'standard', 'NMI\'s default mode');
  t.equal(defaults.forceNamespaced, false);
  t.equal(defaults.assignmentWaitMs, 5000);
  t.equal(defaults.userAgent, `podid-nmi/${VERSION}`);
  t.equal(defaults.logLevel, 'info');
  t.equal(defaults.node, '', 'no node needed with a state file');
  t.equal(defaults.logFormat, 'text');
  t.equal(defaults.interceptHostNetwork, false);
  t.equal(defaults.cgroupRoot, '/sys/fs/cgroup');
  t.same(defaults.hostTokenCallers, [{ namespace: 'kube-system', labels: [['app', 'csi-secrets-store-provider-azure']] }], 'the CSI provider by default');
  t.equal(defaults.removeNodeTaint, '');
  t.same([defaults.attestPodSockets, defaults.procRoot], [false, '/proc'], 'attestation off unless asked (the DaemonSet asks)');
  t.equal(toDaemonConfig(values(['--kubeconfig=/kc', '--node=n', '--remove-node-taint=k'])).removeNodeTaint, 'k');
  t.same([defaults.imdsMaxRps, defaults.imdsMaxConcurrency], [19, 4], 'just under IMDS\'s 20 a second and 5 at once');
  t.same([defaults.imdsMaxQueue, defaults.imdsMaxQueuePerPod, defaults.tokenWaitMs], [1024, 16, 8000]);
  t.throws(() => parseFlags(['--imds-max-rps=0']), { name: 'FlagError', message: 'flag --imds-max-rps: 0 is outside 1..1000' });
  t.throws(() => parseFlags(['--token-wait-ms=50']), { name: 'FlagError', message: 'flag --token-wait-ms: 50 is outside 100..60000' });
});

t.test('toDaemonConfig: refusals', async (t) => {
  t.doesNotThrow(() => toDaemonConfig(values([...STATE, '--operation-mode=standard', '--forceNamespaced=false'])), 'standard mode, not namespaced');
  t.doesNotThrow(() => toDaemonConfig(values(STATE, { FORCENAMESPACED: 'false' }), { FORCENAMESPACED: 'false' }), 'the chart\'s env');
  for (const bad of ['a\nb', 'a\rb', 'x\u0000', 'caf\u00e9', 'del\u007f']) {
    t.throws(() => toDaemonConfig(values([...STATE, `--custom-user-agent=${bad}`])),
      { name: 'FlagError', message: `flag --custom-user-agent: ${JSON.stringify(bad)} has characters a header cannot carry` }, JSON.stringify(bad));
  }
  t.throws(() => toDaemonConfig(values([...STATE, '--remove-node-taint=k'])),
    { name: 'FlagError', message: 'flag --remove-node-taint needs the Kubernetes API, not --cluster-state' });
  t.throws(() => toDaemonConfig(values([...STATE, '--host-token-callers=kube-system/app!=x'])),
    { name: 'FlagError', message: /^flag --host-token-callers: "kube-system\/app!=x": "app!=x" is not label=value$/ });
  const standard = toDaemonConfig(values([...STATE, '--operation-mode=standard', '--forceNamespaced=false']));
  t.equal(standard.operationMode, 'standard');
  t.equal(standard.forceNamespaced, false);
  t.equal(standard.assignmentWaitMs, 5000);
  t.equal(toDaemonConfig(values([...STATE, '--forceNamespaced=true', '--operation-mode=managed'])).operationMode, 'managed');

  t.throws(() => toDaemonConfig(values([]), {}), { name: 'FlagError', message: /^no cluster state: give --cluster-state FILE or --kubeconfig FILE/ });
  t.throws(() => toDaemonConfig(values(['--node=n1']), {}), { message: /^no cluster state/ }, 'a node alone is not a source');
  t.throws(() => toDaemonConfig(values(['--kubeconfig=/kc'])), { name: 'FlagError', message: 'flag --node (or NODE_NAME) is required with the Kubernetes API' });
  t.throws(() => toDaemonConfig(values([]), { KUBERNETES_SERVICE_HOST: '10.96.0.1' }), { message: /^flag --node/ }, 'in cluster without a node');
  t.equal(toDaemonConfig(values(['--kubeconfig=/kc'], { NODE_NAME: 'n1' })).node, 'n1');
  t.equal(toDaemonConfig(values([], { NODE_NAME: 'n1' }), { KUBERNETES_SERVICE_HOST: '10.96.0.1' }).kubeconfig, '', 'in-cluster');
  t.equal(toDaemonConfig(values([], { KUBECONFIG: '/kc', NODE_NAME: 'n' })).kubeconfig, '/kc', 'KUBECONFIG is a source');

  for (const name of ['nmi-listen-address', 'metadata-ip', 'probe-listen-address']) {
    for (const bad of ['localhost', '', '1.2.3', '256.1.1.1', '[::1]', '10.0.0.1:80', ' 127.0.0.1']) {
      t.throws(() => toDaemonConfig(values([...STATE, `--${name}=${bad}`])),
        { name: 'FlagError', message: `flag --${name}: ${JSON.stringify(bad)} is not an IP address` }, `--${name}=${bad}`);
    }
    t.doesNotThrow(() => toDaemonConfig(values([...STATE, `--${name}=fd00::1`])), `--${name} takes IPv6`);
  }
});

t.test('flagHelp', async (t) => {
  const help = flagHelp();
  for (const spec of FLAGS) {
    t.match(help, new RegExp(`^  (-${spec.shorthand ?? 'X'}, )?--${spec.name}( |$)`, 'm'), `--${spec.name}`);
    if (spec.env !== undefined) t.match(help, `env ${spec.env}`);
  }
  t.match(help, '--nmi-port int', 'types of non-bool flags');
  t.match(help, '(default 2579)');
  t.match(help, '  -v, --v int');
  t.match(help, /managed mode is always namespaced, whatever this says/);
  const [flagsSection = '', ignoredSection = ''] = help.split('Accepted for compatibility with aad-pod-identity NMI and ignored');
  for (const name of IGNORED_FLAGS.keys()) {
    t.match(ignoredSection, new RegExp(`(^| )--${name}( |$)`, 'm'), `ignored --${name} is listed as ignored`);
    t.notMatch(flagsSection, new RegExp(`--${name}\\b`), `ignored --${name} is not listed as a flag`);
  }
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[]): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['KUBERNETES_SERVICE_HOST', 'KUBERNETES_SERVICE_PORT', 'NODE_NAME', 'KUBECONFIG', 'FORCENAMESPACED', 'NODE_OPTIONS']) delete env[k];
  // Loopback and ephemeral ports first, in case a start got further than intended; the tested flags come after.
  const safe = ['--manage-iptables=false', '--nmi-port=0', '--http-probe-port=0', '--prometheus-port=0', '--probe-listen-address=127.0.0.1', '--metadata-ip=127.0.0.1'];
  return new Promise((resolve) => {
    execFile(join(ROOT, 'node_modules/.bin/node'), ['src/cli.ts', ...safe, ...args], { cwd: ROOT, env, timeout: 60_000, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
        resolve({ code, stdout, stderr });
      });
  });
}

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '');
}

t.test('CLI', async (t) => {
  const dir = t.testdir({
    'bad.yaml': 'kind: Pod\nmetadata: {name: p}\n---\nkind: Deployment\nmetadata: {name: d}\n',
    'broken.yaml': 'kind: Pod\nmetadata: {name: p}\n---\nkind: [\n',
  });

  const bogus = await cli(['--bogus']);
  t.equal(bogus.code, 2, '--bogus exits 2');
  t.same(lines(bogus.stderr), ['nmi: unknown flag --bogus'], 'one line naming it');

  const port = await cli(['--nmi-port=abc']);
  t.equal(port.code, 2);
  t.same(lines(port.stderr), ['nmi: flag --nmi-port: invalid integer "abc"']);

  const missing = await cli(['--cluster-state=/nonexistent/state.yaml']);
  t.equal(missing.code, 2, 'a missing state file exits 2');
  t.equal(lines(missing.stderr).length, 1);
  t.match(missing.stderr, /^nmi: \/nonexistent\/state\.yaml: ENOENT\n$/);

  const bad = join(dir, 'bad.yaml');
  const badRun = await cli([`--cluster-state=${bad}`]);
  t.equal(badRun.code, 2);
  t.same(lines(badRun.stderr), [`nmi: ${bad}: document 2: unsupported kind "Deployment"`]);

  const broken = join(dir, 'broken.yaml');
  const brokenRun = await cli([`--cluster-state=${broken}`]);
  t.equal(brokenRun.code, 2);
  t.equal(lines(brokenRun.stderr).length, 1);
  t.match(brokenRun.stderr, `nmi: ${broken}: document 2: `);

  const positional = await cli(['--cluster-state=/nonexistent', 'extra']);
  t.equal(positional.code, 2);
  t.same(lines(positional.stderr), ['nmi: unexpected argument "extra"']);

  for (const argv of [['--version', '--node=x', '--enableScaleFeatures=true'], ['-version']]) {
    const version = await cli(argv);
    t.equal(version.code, 0, `${argv.join(' ')} exits 0`);
    t.equal(version.stdout, `${VERSION}\n`, 'prints the version');
    t.equal(version.stderr, '');
  }
  const badVersion = await cli(['--version', '--bogus']);
  t.equal(badVersion.code, 2, 'flags are checked first, as pflag.Parse before NMI\'s --version');

  const standard = await cli(['--cluster-state=/nonexistent', '--operation-mode=standard']);
  t.equal(standard.code, 2);
  t.match(standard.stderr, /^nmi: \/nonexistent: ENOENT/, 'standard mode is accepted; the missing file is what stops it');

  const noSource = await cli([]);
  t.equal(noSource.code, 2, 'no cluster state at all');
  t.match(noSource.stderr, /^nmi: no cluster state/);

  const help = await cli(['--help']);
  t.equal(help.code, 0, '--help exits 0');
  t.equal(help.stderr, '');
  t.match(help.stdout, /^Usage:/);
  for (const spec of FLAGS) t.match(help.stdout, `--${spec.name}`, `help lists --${spec.name}`);
});

t.test('--interception: iptables (the default), external (no rules), and --manage-iptables=false kept as never-intercepting', async (t) => {
  const cfg = (...flags: string[]) => toDaemonConfig(parseFlags([...STATE, ...flags]).values);
  t.match(cfg(), { interception: 'iptables', manageIptables: true });
  t.match(cfg('--interception=iptables'), { interception: 'iptables', manageIptables: true });
  t.match(cfg('--manage-iptables=false'), { interception: 'none', manageIptables: false });
  t.match(cfg('--interception=external'), { interception: 'external', manageIptables: false }, 'external installs no rules');
  t.match(cfg('--interception=external', '--manage-iptables=false'), { interception: 'external', manageIptables: false }, 'external says something else redirects');
  t.match(cfg('--interception=iptables', '--manage-iptables=false'), { interception: 'none', manageIptables: false });
  t.throws(() => cfg('--interception=cilium'), { message: /--interception.*"cilium"/ });
  t.equal(cfg('--admin-socket=/run/x.sock').adminSocket, '/run/x.sock');
});
