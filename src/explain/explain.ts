// `nmi explain`: what the daemon would answer a pod's token request, step by step, without
// sending one. It runs the daemon's own code on the same cluster state: the pod lookup by
// address (lookupPodNow), the request parser (parseTokenRequest), the policy from the same
// flags (policyFor) and the decision the handler makes (decideAwaitingAssignment, i.e.
// decideToken with its exception step), so the two cannot disagree. Only the waits and the
// IMDS call are left out: a grant is reported as the 200 IMDS gives when the identity is on
// this node's VM, and 'pending' as the 503 the daemon gives when MIC does not assign in time.
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { BINDING_LABEL } from '../cluster/objects.ts';
import type { PodInfo } from '../cluster/objects.ts';
import type { IndexedClusterState } from '../cluster/indexed-state.ts';
import { FlagError, flagHelp, parseFlags, type FlagSpec } from '../config/flags.ts';
import { exceptionFor, policyFor, type DecisionPolicy, type TokenDecision } from '../decision/decide.ts';
import { REFUSALS, type Reason } from '../decision/reasons.ts';
import { parseTokenRequest, type TokenRequest } from '../decision/token-request.ts';
import { decideAwaitingAssignment } from '../listener/await-assignment.ts';
import { lookupPodNow } from '../pods/pod-lookup.ts';
import { DAEMONSET_SELECTOR, DeployedFlagsError, type DeployedFlags } from './deployed-flags.ts';
import { ENTRA_FLAGS, entraPolicy } from '../config/entra-flags.ts';
import { describeCredential } from '../decision/token-source.ts';

export const EXPLAIN_FLAGS: readonly FlagSpec[] = [
  { name: 'cluster-state', type: 'string', default: '', help: 'YAML file of the cluster objects (as the daemon\'s --cluster-state)' },
  { name: 'kubeconfig', type: 'string', default: '', env: 'KUBECONFIG', help: 'kubeconfig of the Kubernetes API; in-cluster configuration when neither is given' },
  { name: 'node', type: 'string', default: '', env: 'NODE_NAME', help: 'the node whose daemon is asked' },
  { name: 'pod', type: 'string', default: '', help: 'NAMESPACE/NAME of the calling pod' },
  { name: 'client-id', type: 'string', default: '', help: 'the client_id the pod asks for' },
  { name: 'msi-res-id', type: 'string', default: '', help: 'the msi_res_id the pod asks for' },
  { name: 'resource', type: 'string', default: 'https://management.azure.com/', help: 'the token audience asked for' },
  { name: 'operation-mode', type: 'string', default: 'standard', choices: ['managed', 'standard'], caseInsensitive: true, help: 'the daemon\'s --operation-mode; when not given, the deployed DaemonSet\'s (with the Kubernetes API), else standard' },
  { name: 'forceNamespaced', type: 'bool', default: false, help: 'the daemon\'s --forceNamespaced, also on when env FORCENAMESPACED is "true" (managed mode is always namespaced); when not given, the deployed DaemonSet\'s' },
  { name: 'daemonset', type: 'string', default: '', help: `NAMESPACE/NAME of the deployed DaemonSet whose flags to use when not given here (default: the one labelled ${DAEMONSET_SELECTOR})` },
  ...ENTRA_FLAGS,
  { name: 'output', type: 'string', default: 'text', choices: ['text', 'json'], help: 'text for people, json for scripts' },
  { name: 'timeout-seconds', type: 'int', default: 30, min: 1, max: 600, help: 'how long to wait for the Kubernetes API to list the state' },
  { name: 'help', type: 'bool', default: false, help: 'print this help' },
];

export const EXPLAIN_USAGE = 'nmi explain (--cluster-state FILE | --kubeconfig FILE | in-cluster) --node NODE --pod NAMESPACE/NAME '
  + '[--client-id ID | --msi-res-id ID] [--resource R] [--operation-mode managed|standard] [--forceNamespaced] [--daemonset NAMESPACE/NAME] [--output text|json]';

export interface Step {
  readonly step: string;
  readonly detail: string;
}

export interface Explanation {
  decision: 'granted' | 'passed_through' | 'refused';
  reason: Reason | null;
  status: number;
  identity: string | null;
  clientID: string | null;
  /** Granted: imds, client-secret, client-certificate or workload-identity; null otherwise. */
  tokenSource: string | null;
  /** Granted: where the credential is (a Secret's name, a service account), never its value. */
  credential: string | null;
  steps: Step[];
  /** The daemon settings the answer was decided with, and where they came from. */
  flags: { operationMode: string; forceNamespaced: boolean; from: string };
}

export interface ExplainIo {
  stdout(text: string): void;
  stderr(text: string): void;
  env: NodeJS.ProcessEnv;
}

/** Exit status: 0 granted or passed through, 1 refused, 2 bad input. */
export async function runExplain(argv: readonly string[], io: ExplainIo): Promise<number> {
  let input: ExplainInput;
  try {
    const parsed = parseFlags(argv, io.env, EXPLAIN_FLAGS);
    if (parsed.values.help === true) {
      io.stdout(`Usage: ${EXPLAIN_USAGE}\n\nExit status: 0 granted or passed through, 1 refused, 2 bad input.\n\nFlags:\n${flagHelp(EXPLAIN_FLAGS)}\n`);
      return 0;
    }
    input = toInput(parsed.values, parsed.positionals, io.env, parsed.given);
  } catch (err) {
    if (err instanceof FlagError) {
      io.stderr(`nmi explain: ${err.message}\nUsage: ${EXPLAIN_USAGE}\n`);
      return 2;
    }
    throw err;
  }
  let result: Explanation;
  try {
    await resolveFlags(input);
    result = await explain(input);
  } catch (err) {
    if (err instanceof ExplainInputError || err instanceof DeployedFlagsError) {
      io.stderr(`nmi explain: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  io.stdout(input.output === 'json' ? `${JSON.stringify(result)}\n` : text(input, result));
  return result.decision === 'refused' ? 1 : 0;
}

class ExplainInputError extends Error {}

interface ExplainInput {
  clusterState: string;
  kubeconfig: string;
  node: string;
  namespace: string;
  name: string;
  request: TokenRequest;
  policy: DecisionPolicy;
  /** Where the policy's settings came from (flagsFrom), and which were given here. */
  flagsFrom: string;
  given: { mode: boolean; forceNamespaced: boolean; entra: boolean };
  daemonset: { namespace: string; name: string } | undefined;
  output: 'text' | 'json';
  timeoutMs: number;
}

function toInput(v: Record<string, string | number | boolean>, positionals: string[], env: NodeJS.ProcessEnv, given: ReadonlySet<string>): ExplainInput {
  if (positionals.length > 0) throw new FlagError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const clusterState = String(v['cluster-state']);
  const kubeconfig = String(v.kubeconfig);
  if (clusterState !== '' && kubeconfig !== '') throw new FlagError('give --cluster-state or --kubeconfig, not both');
  if (clusterState === '' && kubeconfig === '' && (env.KUBERNETES_SERVICE_HOST ?? '') === '') {
    throw new FlagError('no cluster state: give --cluster-state FILE or --kubeconfig FILE, or run in a cluster');
  }
  const node = String(v.node);
  if (node === '') throw new FlagError('flag --node is required');
  const pod = /^([^/\s]+)\/([^/\s]+)$/.exec(String(v.pod));
  if (pod === null) throw new FlagError('flag --pod: give NAMESPACE/NAME');
  const clientId = String(v['client-id']);
  const resId = String(v['msi-res-id']);
  if (clientId !== '' && resId !== '') throw new FlagError('give --client-id or --msi-res-id, not both');
  // The daemon's own parser, so a value it would refuse is refused here too.
  const params = new Map([['api-version', '2018-02-01'], ['resource', String(v.resource)]]);
  if (clientId !== '') params.set('client_id', clientId);
  if (resId !== '') params.set('msi_res_id', resId);
  const request = parseTokenRequest(params);
  if (typeof request === 'string') throw new FlagError(`the request is one the daemon refuses before any lookup: ${request} (${REFUSALS[request].description})`);
  const ds = String(v.daemonset);
  const dsRef = /^([^/\s]+)\/([^/\s]+)$/.exec(ds);
  if (ds !== '' && dsRef === null) throw new FlagError('flag --daemonset: give NAMESPACE/NAME');
  if (ds !== '' && clusterState !== '') throw new FlagError('flag --daemonset needs the Kubernetes API, not --cluster-state');
  const givenHere = {
    mode: given.has('operation-mode'), forceNamespaced: given.has('forceNamespaced') || env.FORCENAMESPACED !== undefined,
    entra: ENTRA_FLAGS.some((f) => given.has(f.name) || (f.env !== undefined && env[f.env] !== undefined)),
  };
  return {
    clusterState, kubeconfig, node, namespace: pod[1]!, name: pod[2]!, request,
    // The daemon's own reading of these two (config/daemon-config.ts).
    policy: policyFor(v['operation-mode'] === 'standard' ? 'standard' : 'managed', v.forceNamespaced === true || env.FORCENAMESPACED === 'true', entraPolicy(v)),
    flagsFrom: givenHere.mode && givenHere.forceNamespaced ? 'the command line'
      : givenHere.mode || givenHere.forceNamespaced ? 'the command line and the daemon\'s defaults' : 'the daemon\'s defaults',
    given: givenHere,
    daemonset: dsRef === null ? undefined : { namespace: dsRef[1]!, name: dsRef[2]! },
    output: v.output as 'text' | 'json', timeoutMs: Number(v['timeout-seconds']) * 1000,
  };
}

/**
 * Settings not given on the command line are the deployed daemon's: read from its DaemonSet
 * (--daemonset, or the one labelled so) when explain reads the Kubernetes API. A named
 * DaemonSet that cannot be read, or several labelled ones, is bad input; none labelled, or no
 * right to list them, falls back to the daemon's defaults, and the answer says so.
 */
async function resolveFlags(input: ExplainInput): Promise<void> {
  if (input.clusterState !== '' || (input.given.mode && input.given.forceNamespaced)) return;
  const { loadKubeConfig } = await import('../cluster/kube-config.ts');
  const { KubeHttp } = await import('../cluster/kube-http.ts');
  const { deployedFlags } = await import('./deployed-flags.ts');
  let http;
  try {
    http = new KubeHttp(await loadKubeConfig(input.kubeconfig === '' ? undefined : input.kubeconfig));
  } catch (err) {
    throw new ExplainInputError((err as Error).message);
  }
  let found: DeployedFlags | undefined;
  try {
    found = await deployedFlags(http, input.daemonset, input.timeoutMs);
  } catch (err) {
    if (err instanceof DeployedFlagsError || input.daemonset !== undefined) throw new DeployedFlagsError((err as Error).message);
    input.flagsFrom = `the daemon's defaults: the DaemonSets labelled ${DAEMONSET_SELECTOR} could not be listed (${(err as Error).message})`;
    return;
  } finally {
    await http.close();
  }
  if (found === undefined) {
    input.flagsFrom = `the daemon's defaults: no DaemonSet is labelled ${DAEMONSET_SELECTOR} (name one with --daemonset)`;
    return;
  }
  input.policy = policyFor(input.given.mode ? input.policy.mode : found.operationMode,
    input.given.forceNamespaced ? input.policy.forceNamespaced : found.forceNamespaced,
    input.given.entra ? input.policy.entra : found.entra);
  input.flagsFrom = input.given.mode || input.given.forceNamespaced || input.given.entra ? `${found.from}, and the command line` : found.from;
}

async function loadState(input: ExplainInput): Promise<{ state: IndexedClusterState; source: string }> {
  if (input.clusterState !== '') {
    const { FileClusterState, StateFileError } = await import('../cluster/file-source.ts');
    try {
      return { state: await FileClusterState.load(input.clusterState, input.node), source: input.clusterState };
    } catch (err) {
      if (err instanceof StateFileError) throw new ExplainInputError(err.message);
      throw err;
    }
  }
  const { InformerClusterState } = await import('../cluster/informer-source.ts');
  try {
    const state = await InformerClusterState.start({
      kubeconfig: input.kubeconfig === '' ? undefined : input.kubeconfig, nodeName: input.node,
      assignedIdentities: input.policy.mode === 'standard', log: pino({ level: 'silent' }), registry: new Registry(),
    });
    return { state, source: `the Kubernetes API (${input.kubeconfig === '' ? 'in-cluster' : input.kubeconfig})` };
  } catch (err) {
    throw new ExplainInputError((err as Error).message);
  }
}

export async function explain(input: ExplainInput): Promise<Explanation> {
  const flags = { operationMode: input.policy.mode, forceNamespaced: input.policy.forceNamespaced, from: input.flagsFrom };
  return { ...await decideFor(input), flags };
}

async function decideFor(input: ExplainInput): Promise<Omit<Explanation, 'flags'>> {
  const { state, source } = await loadState(input);
  try {
    const steps: Step[] = [];
    const ready = await state.whenReady(AbortSignal.timeout(input.timeoutMs)).then(() => true, () => false);
    if (!ready) {
      steps.push({ step: 'state', detail: `${source} did not list within ${input.timeoutMs / 1000} s` });
      return refused('state_not_ready', steps);
    }
    const c = state.counts();
    steps.push({ step: 'state', detail: `${source}: ${c.pods} live pods on node ${input.node}, ${c.identities} AzureIdentities, ${c.bindings} bindings, ${c.exceptions} exceptions` });
    const pod = [...state.index.livePods()].find((p) => p.namespace === input.namespace && p.name === input.name);
    if (pod === undefined) {
      steps.push({ step: 'pod', detail: `no live (Pending or Running, not hostNetwork, with an IP) pod ${input.namespace}/${input.name} on node ${input.node}: its address is not in the daemon's index` });
      return refused('pod_unknown', steps);
    }
    const ip = pod.ips[0]!;
    const found = lookupPodNow(state, ip);
    if (found?.kind !== 'pod') {
      const holders = state.podsAt(ip).map((p) => `${p.namespace}/${p.name}`).join(', ');
      steps.push({ step: 'pod', detail: `${ip} is claimed by several live pods (${holders}); the daemon refuses until one is gone` });
      return refused(found?.reason ?? 'pod_unknown', steps);
    }
    steps.push({ step: 'pod', detail: `a request from ${ip} is from ${pod.namespace}/${pod.name} (uid ${pod.uid}, ${pod.phase})` });
    steps.push(...context(pod, state, input.request, input.policy));
    // The handler's own call; a zero wait reports 'pending' instead of waiting for MIC.
    const decision = await decideAwaitingAssignment(state, pod, input.request, input.policy, 0, AbortSignal.timeout(1_000));
    return fromDecision(decision, steps);
  } finally {
    await state.close();
  }
}

/** What the decision looks at, read from the same view; the verdict itself is decideToken's. */
function context(pod: PodInfo, state: IndexedClusterState, request: TokenRequest, policy: DecisionPolicy): Step[] {
  const steps: Step[] = [];
  const exception = exceptionFor(pod, state.exceptionsIn(pod.namespace));
  steps.push({ step: 'exception', detail: exception === undefined
    ? `no AzurePodIdentityException in namespace ${pod.namespace} matches the pod's labels`
    : `AzurePodIdentityException ${exception.namespace}/${exception.name} matches a label of the pod: the request goes to IMDS as the pod names it` });
  if (exception !== undefined) return steps;
  const label = pod.labels[BINDING_LABEL];
  steps.push({ step: 'label', detail: label === undefined || label === '' ? `the pod has no ${BINDING_LABEL} label` : `${BINDING_LABEL}=${label}` });
  if (label === undefined || label === '') return steps;
  const anyNamespace = policy.mode === 'standard' && !policy.forceNamespaced;
  const bindings = anyNamespace ? state.bindingsSelecting(label) : state.bindingsFor(pod.namespace, label);
  steps.push({ step: 'bindings', detail: bindings.length === 0
    ? `no AzureIdentityBinding ${anyNamespace ? 'in any namespace' : `in namespace ${pod.namespace}`} has selector ${JSON.stringify(label)}`
    : bindings.map((b) => `${b.namespace}/${b.name} -> AzureIdentity ${b.azureIdentity}`).join('; ') });
  for (const b of bindings) {
    const id = state.identity(b.namespace, b.azureIdentity);
    steps.push({ step: 'identity', detail: id === undefined
      ? `AzureIdentity ${b.namespace}/${b.azureIdentity} does not exist`
      : `${id.namespace}/${id.name}: type ${id.type}, clientID ${id.clientID || '(none)'}, resourceID ${id.resourceID || '(none)'}` });
  }
  if (policy.mode === 'standard') {
    const aais = state.assignedTo(pod.namespace, pod.name);
    steps.push({ step: 'assigned', detail: aais.length === 0
      ? 'MIC has made no AzureAssignedIdentity for this pod'
      : aais.map((a) => `${a.namespace}/${a.name}: ${a.identity.namespace}/${a.identity.name} on node ${a.nodeName}, ${a.state || 'no status (counted as Assigned)'}`).join('; ') });
  }
  steps.push({ step: 'request', detail: request.selector === undefined
    ? 'the pod names no identity: the bound identity whose name sorts first is used'
    : `the pod asks for ${request.selector.name} ${request.selector.value}` });
  return steps;
}

function fromDecision(d: TokenDecision, steps: Step[]): Omit<Explanation, 'flags'> {
  switch (d.kind) {
    case 'grant': {
      const id = d.identity;
      steps.push({ step: 'decision', detail: `granted: AzureIdentity ${id.namespace}/${id.name} through ${d.via.kind} ${d.via.namespace}/${d.via.name}` });
      const credential = describeCredential(d.source);
      steps.push({ step: 'upstream', detail: d.source.kind === 'imds'
        ? `IMDS is asked with ${d.upstream.name}=${d.upstream.value}; the pod gets IMDS's answer (200 when the identity is assigned to this node's VM or scale set)`
        : `Entra ID (${d.source.authority}${d.source.tenantID}/oauth2/v2.0/token) is asked for client ${d.source.clientID} with the ${credential}; never IMDS. The pod gets the token in IMDS's shape, or Entra's error` });
      return { decision: 'granted', reason: null, status: 200, identity: `${id.namespace}/${id.name}`, clientID: id.clientID || null, tokenSource: d.source.kind, credential, steps };
    }
    case 'pass-through': {
      steps.push({ step: 'decision', detail: `passed through (exception ${d.exception.name})` });
      steps.push({ step: 'upstream', detail: d.upstream === undefined
        ? 'IMDS is asked with no identity named: its answer is relayed (IMDS picks the only identity, or refuses when there are several)'
        : `IMDS is asked with ${d.upstream.name}=${d.upstream.value}; its answer is relayed` });
      return { decision: 'passed_through', reason: null, status: 200, identity: null, clientID: d.upstream?.name === 'client_id' ? d.upstream.value : null, tokenSource: 'imds', credential: null, steps };
    }
    case 'refuse':
      return refused(d.reason, steps);
    case 'pending':
      steps.push({ step: 'wait', detail: 'MIC is expected to assign an identity: the daemon waits up to --assignment-wait-ms for it, decides again if it comes, else answers:' });
      return refused('assignment_pending', steps);
    default: {
      const never: never = d;
      throw new Error(`unknown decision ${JSON.stringify(never)}`);
    }
  }
}

function refused(reason: Reason, steps: Step[]): Omit<Explanation, 'flags'> {
  const spec = REFUSALS[reason];
  steps.push({ step: 'decision', detail: `refused: ${reason}, ${spec.status} "${spec.description}"` });
  return { decision: 'refused', reason, status: spec.status, identity: null, clientID: null, tokenSource: null, credential: null, steps };
}

function text(input: ExplainInput, r: Explanation): string {
  const lines = [`${input.namespace}/${input.name} on node ${input.node} (${input.policy.mode} mode${input.policy.forceNamespaced ? ', namespaced' : ''}), token for ${input.request.resource}:`,
    `  flags: --operation-mode=${r.flags.operationMode} --forceNamespaced=${r.flags.forceNamespaced}, from ${r.flags.from}`];
  r.steps.forEach((s, i) => lines.push(`  ${i + 1}. ${s.step}: ${s.detail}`));
  const who = r.identity !== null ? ` as ${r.identity}` : '';
  const client = r.clientID !== null ? ` (client id ${r.clientID})` : '';
  const source = r.tokenSource !== null && r.decision === 'granted' ? `, from ${r.tokenSource}` : '';
  lines.push(`answer: ${r.status} ${r.decision}${r.reason !== null ? ` (${r.reason})` : ''}${who}${client}${source}`);
  return `${lines.join('\n')}\n`;
}
