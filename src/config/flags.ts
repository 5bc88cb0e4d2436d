// The command line, Go-style as NMI's was (`--flag=value`, `--flag value`, `-flag`, bare
// `--flag` for true), so the old chart's args work unchanged. One table drives parsing,
// defaults, environment fallbacks and --help.
import { LOG_LEVELS } from '../observability/logger.ts';

export type FlagType = 'string' | 'int' | 'bool';

export interface FlagSpec {
  readonly name: string;
  readonly type: FlagType;
  readonly default: string | number | boolean;
  readonly help: string;
  readonly env?: string;
  readonly choices?: readonly string[];
  readonly min?: number;
  readonly max?: number;
}

const PORT = { min: 0, max: 65535 } as const;

export const FLAGS: readonly FlagSpec[] = [
  { name: 'node', type: 'string', default: '', env: 'NODE_NAME', help: 'Name of this node; only its pods are watched' },
  { name: 'nmi-listen-address', type: 'string', default: '127.0.0.1', help: 'Address the interception listener binds (the DNAT target)' },
  { name: 'nmi-port', type: 'int', default: 2579, ...PORT, help: 'Port of the interception listener' },
  { name: 'metadata-ip', type: 'string', default: '169.254.169.254', help: 'Address of the metadata service pods call, and where answers come from' },
  { name: 'metadata-port', type: 'int', default: 80, ...PORT, help: 'Port of the metadata service' },
  { name: 'http-probe-port', type: 'int', default: 8085, ...PORT, help: 'Port for /healthz and /readyz' },
  { name: 'prometheus-port', type: 'int', default: 9090, ...PORT, help: 'Port for /metrics' },
  { name: 'probe-listen-address', type: 'string', default: '0.0.0.0', help: 'Address the probe and metrics servers bind' },
  { name: 'operation-mode', type: 'string', default: 'standard', choices: ['managed', 'standard'], help: 'standard: MIC assigns identities (AzureAssignedIdentity); managed: identities are assigned to nodes out of band' },
  { name: 'forceNamespaced', type: 'bool', default: false, env: 'FORCENAMESPACED', help: 'Match bindings and identities in the pod\'s namespace only (always so in managed mode)' },
  { name: 'block-instance-metadata', type: 'bool', default: false, help: 'Refuse /metadata/instance with 403' },
  { name: 'metadata-header-required', type: 'bool', default: true, help: 'Refuse token requests without "Metadata: true"' },
  { name: 'ipt-update-interval-sec', type: 'int', default: 60, min: 1, max: 3600, help: 'Seconds between checks that repair the NAT rules' },
  { name: 'manage-iptables', type: 'bool', default: false, help: 'Install and keep the DNAT rules for the metadata address (the DaemonSet turns it on)' },
  { name: 'enable-conntrack-deletion', type: 'bool', default: false, help: 'Delete conntrack entries to the metadata address after installing the rules' },
  { name: 'cluster-state', type: 'string', default: '', help: 'YAML file of Pods, AzureIdentities, bindings and exceptions (instead of the Kubernetes API)' },
  { name: 'kubeconfig', type: 'string', default: '', env: 'KUBECONFIG', help: 'kubeconfig for the Kubernetes API; in-cluster configuration when empty' },
  { name: 'assignment-wait-ms', type: 'int', default: 5000, min: 0, max: 30000, help: 'Standard mode: how long a token request waits for MIC to assign the pod\'s identity before a retryable 503' },
  { name: 'pod-wait-ms', type: 'int', default: 2000, min: 0, max: 30000, help: 'How long a token request waits for its pod to appear, or for cluster state to load after a start' },
  { name: 'upstream-connect-timeout-ms', type: 'int', default: 1000, min: 1, max: 60000, help: 'Connect timeout to the metadata service' },
  { name: 'upstream-timeout-ms', type: 'int', default: 10000, min: 1, max: 120000, help: 'Timeout for the metadata service\'s answer' },
  { name: 'token-cache', type: 'bool', default: true, help: 'Keep granted tokens until 15 minutes before expiry and share concurrent fetches' },
  { name: 'max-connections', type: 'int', default: 1024, min: 1, max: 65535, help: 'Concurrent connections the listener accepts' },
  { name: 'shutdown-grace-ms', type: 'int', default: 5000, min: 0, max: 60000, help: 'How long in-flight requests may finish after SIGTERM' },
  { name: 'log-format', type: 'string', default: 'text', choices: ['text', 'json'], help: 'Log format' },
  { name: 'log-level', type: 'string', default: 'info', choices: LOG_LEVELS, help: 'Log level' },
  { name: 'help', type: 'bool', default: false, help: 'Print this help' },
];

/** NMI flags that mean nothing here: accepted with a warning so old charts still start. */
export const IGNORED_FLAGS: ReadonlyMap<string, FlagType> = new Map([
  ['retry-attempts-for-created', 'int'],
  ['retry-attempts-for-assigned', 'int'],
  ['find-identity-retry-interval', 'int'],
  ['enable-scale-features', 'bool'],
  ['kubelet-config', 'string'],
  ['allow-network-plugin-kubenet', 'bool'],
  ['set-retry-after-header', 'bool'],
  ['enable-profile', 'bool'],
  ['cloud-config', 'string'],
  ['v', 'int'],
  ['logtostderr', 'bool'],
  ['alsologtostderr', 'bool'],
  ['log-flush-frequency', 'string'],
]);

export type FlagValues = Record<string, string | number | boolean>;

export class FlagError extends Error {
  override name = 'FlagError';
}

export interface ParsedFlags {
  values: FlagValues;
  /** Names given on the command line or through their environment variable. */
  given: Set<string>;
  warnings: string[];
  positionals: string[];
}

export function parseFlags(argv: readonly string[], env: NodeJS.ProcessEnv = {}, specs: readonly FlagSpec[] = FLAGS): ParsedFlags {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const values: FlagValues = {};
  const given = new Set<string>();
  const warnings: string[] = [];
  const positionals: string[] = [];
  for (const spec of specs) {
    values[spec.name] = spec.default;
    const fromEnv = spec.env === undefined ? undefined : env[spec.env];
    if (fromEnv !== undefined && fromEnv !== '') {
      values[spec.name] = convert(spec, fromEnv, `environment variable ${spec.env}`);
      given.add(spec.name);
    }
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    const body = arg.startsWith('--') ? arg.slice(2) : arg.slice(1);
    const eq = body.indexOf('=');
    const name = eq === -1 ? body : body.slice(0, eq);
    let raw: string | undefined = eq === -1 ? undefined : body.slice(eq + 1);
    const spec = byName.get(name);
    const ignoredType = IGNORED_FLAGS.get(name);
    const type = spec?.type ?? ignoredType;
    if (type === undefined) throw new FlagError(`unknown flag --${name}`);
    if (raw === undefined && type !== 'bool') {
      if (i + 1 >= argv.length) throw new FlagError(`flag --${name} needs a value`);
      raw = argv[++i]!;
    }
    if (spec === undefined) {
      warnings.push(`flag --${name} is accepted for compatibility with aad-pod-identity NMI and ignored`);
      continue;
    }
    values[name] = convert(spec, raw ?? 'true', `flag --${name}`);
    given.add(name);
  }
  return { values, given, warnings, positionals };
}

function convert(spec: FlagSpec, raw: string, where: string): string | number | boolean {
  switch (spec.type) {
    case 'bool': {
      // Go's strconv.ParseBool
      if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(raw)) return true;
      if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(raw)) return false;
      throw new FlagError(`${where}: invalid boolean ${JSON.stringify(raw)}`);
    }
    case 'int': {
      if (!/^-?\d+$/.test(raw)) throw new FlagError(`${where}: invalid integer ${JSON.stringify(raw)}`);
      const n = Number(raw);
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) {
        throw new FlagError(`${where}: ${n} is outside ${spec.min ?? '-inf'}..${spec.max ?? 'inf'}`);
      }
      return n;
    }
    case 'string':
      if (spec.choices !== undefined && !spec.choices.includes(raw)) {
        throw new FlagError(`${where}: ${JSON.stringify(raw)} is not one of ${spec.choices.join(', ')}`);
      }
      return raw;
  }
}

export function flagHelp(specs: readonly FlagSpec[] = FLAGS): string {
  const lines = specs.map((s) => {
    const def = s.type === 'bool' ? String(s.default) : JSON.stringify(s.default);
    const env = s.env === undefined ? '' : `, env ${s.env}`;
    return `  --${s.name}${s.type === 'bool' ? '' : ` ${s.type}`}\n      ${s.help} (default ${def}${env})`;
  });
  return lines.join('\n');
}
