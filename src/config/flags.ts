// The command line of aad-pod-identity NMI v1.8.17 (pflag, plus klog's Go flags), spelled and
// parsed as NMI did: case-sensitive names, `--flag=value`, `--flag value` for non-bools, a bare
// bool for true, `--bool=false`, `-v=5` / `-v 5` / `-v5`, and every long flag also as `-flag`
// (klog's Go flags, and our own flags as they always were). One table drives parsing, defaults,
// environment fallbacks and --help; NMI flags without a meaning here are in nmi-compat.ts.
import { LOG_LEVELS } from '../observability/logger.ts';
import { IGNORED_FLAGS, ignoredFlagsWarning } from './nmi-compat.ts';
import { ENTRA_FLAGS } from './entra-flags.ts';

export { IGNORED_FLAGS } from './nmi-compat.ts';

export type FlagType = 'string' | 'int' | 'uint' | 'bool';

export interface FlagSpec {
  readonly name: string;
  readonly type: FlagType;
  readonly default: string | number | boolean;
  readonly help: string;
  readonly env?: string;
  readonly choices?: readonly string[];
  /** Lower-cases the value before checking choices (NMI lower-cases --operation-mode). */
  readonly caseInsensitive?: boolean;
  readonly min?: number;
  readonly max?: number;
  /** One-letter form (`-v 5`, `-v=5`, `-v5`), as pflag gives klog's `v`. */
  readonly shorthand?: string;
  /** A flag of NMI v1.8.17, spelled as NMI spells it. */
  readonly nmi?: true;
}

const PORT = { min: 0, max: 65535 } as const;
const INT32 = { min: -2147483648, max: 2147483647 } as const;

export const FLAGS: readonly FlagSpec[] = [
  { name: 'node', nmi: true, type: 'string', default: '', env: 'NODE_NAME', help: 'Name of this node; only its pods are watched' },
  { name: 'nmi-listen-address', nmi: true, type: 'string', default: '127.0.0.1', help: 'Address the interception listener binds; the DNAT targets it, or 127.0.0.1 when it is 0.0.0.0 or ::' },
  { name: 'nmi-port', nmi: true, type: 'int', default: 2579, ...PORT, help: 'Port of the interception listener' },
  { name: 'metadata-ip', nmi: true, type: 'string', default: '169.254.169.254', help: 'Address of the metadata service pods call, and where answers come from' },
  { name: 'metadata-port', nmi: true, type: 'int', default: 80, ...PORT, help: 'Port of the metadata service' },
  { name: 'http-probe-port', nmi: true, type: 'int', default: 8085, ...PORT, help: 'Port for /healthz and /readyz' },
  { name: 'prometheus-port', nmi: true, type: 'int', default: 9090, ...PORT, help: 'Port for /metrics' },
  { name: 'probe-listen-address', type: 'string', default: '0.0.0.0', help: 'Address the probe and metrics servers bind' },
  { name: 'operation-mode', nmi: true, type: 'string', default: 'standard', choices: ['managed', 'standard'], caseInsensitive: true, help: 'standard: MIC assigns identities (AzureAssignedIdentity); managed: identities are assigned to nodes out of band' },
  { name: 'forceNamespaced', nmi: true, type: 'bool', default: false, help: 'Standard mode: only identities of the pod\'s own namespace (also when env FORCENAMESPACED is "true"); managed mode is always namespaced, whatever this says' },
  { name: 'retry-attempts-for-created', nmi: true, type: 'int', default: 16, min: 0, max: 10000, help: 'Standard mode: with --find-identity-retry-interval, caps how long a request waits for MIC (attempts x interval)' },
  { name: 'retry-attempts-for-assigned', nmi: true, type: 'int', default: 4, min: 0, max: 10000, help: 'Accepted as NMI\'s; the wait is bounded by --retry-attempts-for-created alone' },
  { name: 'find-identity-retry-interval', nmi: true, type: 'int', default: 5, min: 0, max: 3600, help: 'Standard mode: seconds; with --retry-attempts-for-created, caps how long a request waits for MIC' },
  { name: 'assignment-wait-ms', type: 'int', default: 5000, min: 0, max: 30000, help: 'Standard mode: how long a token request waits for MIC before 503 + Retry-After (never longer than the NMI retry flags allow)' },
  { name: 'block-instance-metadata', nmi: true, type: 'bool', default: false, help: 'Refuse /metadata/instance with 403' },
  { name: 'metadata-header-required', nmi: true, type: 'bool', default: true, help: 'Refuse token requests without "Metadata: true"' },
  { name: 'ipt-update-interval-sec', nmi: true, type: 'int', default: 60, min: 1, max: 3600, help: 'Seconds between checks that repair the NAT rules' },
  { name: 'manage-iptables', type: 'bool', default: true, help: 'Install and keep the DNAT rules for the metadata address; with false nothing is intercepted and /readyz stays 503' },
  { name: 'interception', type: 'string', default: 'iptables', choices: ['iptables', 'external'], help: 'iptables: the daemon installs and repairs the DNAT rules (as --manage-iptables); external: something else (a Cilium Local Redirect Policy, a mesh) sends pods\' metadata traffic here, no rules are installed, and the daemon is ready once synced' },
  { name: 'admin-socket', type: 'string', default: '', help: 'Unix socket for `nmi status` (HTTP, mode 0600); empty: none. The DaemonSet uses /var/run/podid-nmi/admin.sock' },
  { name: 'enable-conntrack-deletion', nmi: true, type: 'bool', default: false, help: 'Delete conntrack entries to the metadata address after installing the rules' },
  { name: 'cluster-state', type: 'string', default: '', help: 'YAML file of Pods, AzureIdentities, bindings and exceptions (instead of the Kubernetes API)' },
  { name: 'kubeconfig', type: 'string', default: '', env: 'KUBECONFIG', help: 'kubeconfig for the Kubernetes API; in-cluster configuration when empty' },
  { name: 'pod-wait-ms', type: 'int', default: 2000, min: 0, max: 30000, help: 'How long a token request waits for its pod to appear, or for cluster state to load after a start' },
  { name: 'upstream-connect-timeout-ms', type: 'int', default: 1000, min: 1, max: 60000, help: 'Connect timeout to the metadata service' },
  { name: 'upstream-timeout-ms', type: 'int', default: 10000, min: 1, max: 120000, help: 'Timeout for the metadata service\'s answer' },
  { name: 'imds-max-rps', type: 'int', default: 19, min: 1, max: 1000, help: 'Token requests started towards IMDS per second, at most (IMDS allows 20 per VM, shared with node agents)' },
  { name: 'imds-max-concurrency', type: 'int', default: 4, min: 1, max: 100, help: 'Token requests at IMDS at once, at most (IMDS allows 5 per VM)' },
  { name: 'imds-max-queue', type: 'int', default: 1024, min: 1, max: 65535, help: 'Distinct token fetches waiting for the IMDS budget; beyond it 429 upstream_busy' },
  { name: 'imds-max-queue-per-pod', type: 'int', default: 16, min: 1, max: 65535, help: 'Token fetches one pod may have waiting; beyond it 429 upstream_share_exceeded' },
  { name: 'token-wait-ms', type: 'int', default: 8000, min: 100, max: 60000, help: 'Bound on a token request\'s time queued plus at IMDS; then 429 with a Retry-After from its place in the queue' },
  { name: 'max-state-staleness', type: 'int', default: 0, min: 0, max: 86400, help: 'Seconds without confirmation from the Kubernetes API after which token requests get a retryable 503 instead of a decision from old state (0: off)' },
  { name: 'pod-events', type: 'bool', default: true, help: 'Write Warning Events on pods for refusals a person can act on (with the Kubernetes API only)' },
  { name: 'memory-saver', type: 'bool', default: false, help: 'Once cluster state is ready, switch V8 to its memory saver mode: about 5 MiB less RSS under load, for 30 to 60% more CPU per request (docs/performance.md, Memory)' },
  { name: 'token-cache', type: 'bool', default: true, help: 'Keep granted tokens until 15 minutes before expiry and share concurrent fetches' },
  { name: 'max-connections', type: 'int', default: 1024, min: 1, max: 65535, help: 'Concurrent connections the listener accepts' },
  { name: 'max-connections-per-pod', type: 'int', default: 32, min: 1, max: 65535, help: 'Connections one pod (or one address no pod holds) may hold at once; addresses with no pod share a quarter of --max-connections' },
  { name: 'max-requests-per-pod', type: 'int', default: 16, min: 1, max: 65535, help: 'Requests one pod (or one address no pod holds) may have in flight; beyond, 429 with Retry-After' },
  { name: 'shutdown-grace-ms', type: 'int', default: 5000, min: 0, max: 60000, help: 'How long in-flight requests may finish after SIGTERM' },
  { name: 'intercept-host-network', type: 'bool', default: false, help: 'Also intercept hostNetwork pods (OUTPUT rules by socket cgroup) and attribute connections from the node\'s own addresses by socket cgroup' },
  { name: 'cgroup-root', type: 'string', default: '/sys/fs/cgroup', help: 'Where cgroup v2 is mounted (the node\'s hierarchy, in the node\'s cgroup namespace)' },
  { name: 'kubepods-cgroup-parent', type: 'string', default: '', help: 'The cgroup, relative to the cgroup root, that holds kubelet\'s kubepods (kubelet --cgroup-root with the cgroupfs driver); empty for the top' },
  { name: 'attest-pod-sockets', type: 'bool', default: false, help: 'Grant a pod-network caller only when the pod holding its source address holds its socket (read from the node\'s /proc and kubelet\'s pod cgroups): closes pod IP spoofing on bridge networks (docs/attestation.md)' },
  { name: 'proc-root', type: 'string', default: '/proc', help: 'The node\'s /proc, for --attest-pod-sockets (the daemon needs the node\'s PID namespace: hostPID)' },
  { name: 'host-token-callers', type: 'string', default: 'kube-system/app=csi-secrets-store-provider-azure', help: 'Pods allowed to call /host/token: namespace/label=value[,label=value], several separated by ";"; empty allows none' },
  { name: 'remove-node-taint', type: 'string', default: '', help: 'Taint key to remove from this node once the daemon is ready (rules installed, state synced)' },
  ...ENTRA_FLAGS,
  { name: 'custom-user-agent', nmi: true, type: 'string', default: '', help: 'Appended to the User-Agent of requests to the metadata service and the Kubernetes API' },
  { name: 'log-format', nmi: true, type: 'string', default: 'text', choices: ['text', 'json'], help: 'Log format' },
  { name: 'log-level', type: 'string', default: 'info', choices: LOG_LEVELS, help: 'Log level (wins over -v)' },
  { name: 'v', nmi: true, shorthand: 'v', type: 'int', default: 0, ...INT32, help: 'klog verbosity, when --log-level is not given: 0-3 info, 4-5 debug, 6 and more trace' },
  { name: 'version', nmi: true, type: 'bool', default: false, help: 'Print the version and exit' },
  { name: 'help', type: 'bool', default: false, help: 'Print this help' },
];

export type FlagValues = Record<string, string | number | boolean>;

export class FlagError extends Error {
  override name = 'FlagError';
}

export interface ParsedFlags {
  values: FlagValues;
  /** Names given on the command line or through their environment variable. */
  given: Set<string>;
  /** NMI flags without a meaning here that were given, each once, in order of first appearance. */
  ignored: string[];
  /** At most one line: the ignored flags, named once each, and why. */
  warnings: string[];
  positionals: string[];
}

interface Resolved {
  name: string;
  raw: string | undefined;
  spec: FlagSpec | undefined;
  type: FlagType;
}

/** The flag an argument names; an unknown one is an error, as in pflag. */
function resolve(arg: string, byName: ReadonlyMap<string, FlagSpec>, byShorthand: ReadonlyMap<string, FlagSpec>): Resolved {
  const double = arg.startsWith('--');
  const body = double ? arg.slice(2) : arg.slice(1);
  const eq = body.indexOf('=');
  const name = eq === -1 ? body : body.slice(0, eq);
  const raw = eq === -1 ? undefined : body.slice(eq + 1);
  const spec = byName.get(name);
  const ignored = IGNORED_FLAGS.get(name);
  if (spec !== undefined) return { name, raw, spec, type: spec.type };
  if (ignored !== undefined) return { name, raw, spec: undefined, type: ignored.type };
  // pflag shorthand with its value attached: `-v5`.
  const short = double ? undefined : byShorthand.get(name.charAt(0));
  if (short !== undefined && raw === undefined && name.length > 1) return { name: short.name, raw: name.slice(1), spec: short, type: short.type };
  throw new FlagError(`unknown flag --${name}`);
}

export function parseFlags(argv: readonly string[], env: NodeJS.ProcessEnv = {}, specs: readonly FlagSpec[] = FLAGS): ParsedFlags {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const byShorthand = new Map(specs.filter((s) => s.shorthand !== undefined).map((s) => [s.shorthand!, s]));
  const values: FlagValues = {};
  const given = new Set<string>();
  const ignored: string[] = [];
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
    const { name, spec, type, raw: attached } = resolve(arg, byName, byShorthand);
    let raw = attached;
    if (raw === undefined && type !== 'bool') {
      if (i + 1 >= argv.length) throw new FlagError(`flag --${name} needs a value`);
      raw = argv[++i]!;
    }
    if (spec === undefined) {
      // Checked as NMI would have (a bad value stopped it), then dropped.
      convert({ name, type, default: '', help: '' }, raw ?? 'true', `flag --${name}`);
      if (!ignored.includes(name)) ignored.push(name);
      continue;
    }
    values[name] = convert(spec, raw ?? 'true', `flag --${name}`);
    given.add(name);
  }
  const warning = ignoredFlagsWarning(ignored);
  return { values, given, ignored, warnings: warning === undefined ? [] : [warning], positionals };
}

function convert(spec: FlagSpec, raw: string, where: string): string | number | boolean {
  switch (spec.type) {
    case 'bool': {
      // Go's strconv.ParseBool
      if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(raw)) return true;
      if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(raw)) return false;
      throw new FlagError(`${where}: invalid boolean ${JSON.stringify(raw)}`);
    }
    case 'int':
    case 'uint': {
      const pattern = spec.type === 'uint' ? /^\d+$/ : /^-?\d+$/;
      if (!pattern.test(raw)) throw new FlagError(`${where}: invalid ${spec.type === 'uint' ? 'unsigned ' : ''}integer ${JSON.stringify(raw)}`);
      const n = Number(raw);
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) {
        throw new FlagError(`${where}: ${n} is outside ${spec.min ?? '-inf'}..${spec.max ?? 'inf'}`);
      }
      return n;
    }
    case 'string': {
      const value = spec.caseInsensitive === true ? raw.toLowerCase() : raw;
      if (spec.choices !== undefined && !spec.choices.includes(value)) {
        throw new FlagError(`${where}: ${JSON.stringify(raw)} is not one of ${spec.choices.join(', ')}`);
      }
      return value;
    }
  }
}

export function flagHelp(specs: readonly FlagSpec[] = FLAGS): string {
  const lines = specs.map((s) => {
    const def = s.type === 'bool' ? String(s.default) : JSON.stringify(s.default);
    const env = s.env === undefined ? '' : `, env ${s.env}`;
    const short = s.shorthand === undefined ? '' : `-${s.shorthand}, `;
    return `  ${short}--${s.name}${s.type === 'bool' ? '' : ` ${s.type}`}\n      ${s.help} (default ${def}${env})`;
  });
  const ignored = [...IGNORED_FLAGS.keys()].map((n) => `--${n}`).join(' ');
  return `${lines.join('\n')}\n\nAccepted for compatibility with aad-pod-identity NMI and ignored (named in one warning at start):\n  ${wrap(ignored, 90).join('\n  ')}`;
}

function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      out.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') out.push(line);
  return out;
}
