// The flags the deployed daemon runs with, read from its DaemonSet, so that `nmi explain`
// answers as that daemon does instead of with the defaults (standard mode, NMI's default, while
// our DaemonSet runs managed mode). The container's args are parsed by the daemon's own flag
// table, with the container's literal env for $(VAR) and the flags' env fallbacks.
import type { KubeHttp } from '../cluster/kube-http.ts';
import { FlagError, parseFlags } from '../config/flags.ts';
import type { OperationMode } from '../decision/decide.ts';
import { entraPolicy } from '../config/entra-flags.ts';
import type { EntraPolicy } from '../decision/token-source.ts';

/** The label daemonset/daemonset.yaml puts on the DaemonSet. */
export const DAEMONSET_SELECTOR = 'app.kubernetes.io/name=podid-nmi';

/** Settings that change a decision. */
export interface DeployedFlags {
  operationMode: OperationMode;
  forceNamespaced: boolean;
  /** Its token source, authority, tenant and Secret rule (--token-source and friends). */
  entra: EntraPolicy;
  /** `DaemonSet <ns>/<name> (container <c>)`. */
  from: string;
}

export class DeployedFlagsError extends Error {
  override name = 'DeployedFlagsError';
}

interface Container { name?: string; command?: unknown[]; args?: unknown[]; env?: Array<{ name?: string; value?: unknown }> }
interface DaemonSetLike { metadata?: { name?: string; namespace?: string }; spec?: { template?: { spec?: { containers?: Container[] } } } }

/** Kubernetes' $(VAR) expansion in args: defined vars are replaced, $$ escapes, the rest stays as written. */
function expand(arg: string, env: Record<string, string>): string {
  return arg.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name: string | undefined) => (name === undefined ? '$' : env[name] ?? m));
}

/** The daemon's decision settings from a DaemonSet object; pure, for tests. */
export function flagsOfDaemonSet(obj: unknown): DeployedFlags {
  const ds = obj as DaemonSetLike;
  const ref = `${ds.metadata?.namespace ?? '?'}/${ds.metadata?.name ?? '?'}`;
  const containers = ds.spec?.template?.spec?.containers ?? [];
  const c = containers.find((x) => x.name === 'nmi') ?? (containers.length === 1 ? containers[0] : undefined);
  if (c === undefined) throw new DeployedFlagsError(`DaemonSet ${ref} has no container named nmi (and more than one container)`);
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) if (typeof e.name === 'string' && typeof e.value === 'string') env[e.name] = e.value;
  // The image's entrypoint is the CLI, so the flags are the args; a `command` of its own (nmi ...) may hold some too.
  const words = [...(c.command ?? []), ...(c.args ?? [])].map((w) => expand(String(w), env));
  const first = words.findIndex((w) => w.startsWith('-'));
  let values;
  try {
    values = parseFlags(first === -1 ? [] : words.slice(first), env).values;
  } catch (err) {
    if (err instanceof FlagError) throw new DeployedFlagsError(`DaemonSet ${ref}, container ${c.name ?? '?'}: ${err.message}`);
    throw err;
  }
  return {
    operationMode: values['operation-mode'] === 'managed' ? 'managed' : 'standard',
    // The daemon's own rule (config/daemon-config.ts): the flag, or env FORCENAMESPACED exactly "true".
    forceNamespaced: values.forceNamespaced === true || env.FORCENAMESPACED === 'true',
    entra: deployedEntra(values, ref),
    from: `DaemonSet ${ref} (container ${c.name ?? '?'})`,
  };
}

/**
 * The named DaemonSet, or the one labelled DAEMONSET_SELECTOR in any namespace. undefined when
 * none is labelled so (the caller then says it used the defaults); several is an error, since
 * picking one could explain for the wrong daemon.
 */
export async function deployedFlags(http: KubeHttp, named: { namespace: string; name: string } | undefined, timeoutMs: number): Promise<DeployedFlags | undefined> {
  if (named !== undefined) {
    return flagsOfDaemonSet(await http.getJson(`/apis/apps/v1/namespaces/${encodeURIComponent(named.namespace)}/daemonsets/${encodeURIComponent(named.name)}`, {}, timeoutMs));
  }
  const items: unknown[] = [];
  await http.getList('/apis/apps/v1/daemonsets', { labelSelector: DAEMONSET_SELECTOR }, timeoutMs, (item) => items.push(item));
  if (items.length === 0) return undefined;
  if (items.length > 1) {
    const names = items.map((i) => `${(i as DaemonSetLike).metadata?.namespace}/${(i as DaemonSetLike).metadata?.name}`).join(', ');
    throw new DeployedFlagsError(`several DaemonSets are labelled ${DAEMONSET_SELECTOR} (${names}): name one with --daemonset NAMESPACE/NAME`);
  }
  return flagsOfDaemonSet(items[0]);
}

function deployedEntra(values: Parameters<typeof entraPolicy>[0], ref: string): EntraPolicy {
  try {
    return entraPolicy(values);
  } catch (err) {
    if (err instanceof FlagError) throw new DeployedFlagsError(`DaemonSet ${ref}: ${err.message}`);
    throw err;
  }
}
