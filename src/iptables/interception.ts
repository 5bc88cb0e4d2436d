// Keeps pods' metadata traffic pointed at the daemon: installs NMI's nat rules, re-checks them
// every intervalSec and repairs drift. It never removes them on its own: when the daemon
// stops, pods keep being DNATed to a closed port instead of reaching IMDS with every identity
// of the node (NMI deleted its rules on shutdown, which failed open).
import { isIPv4 } from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { binariesFor, detectBackend } from './backend.ts';
import type { Backend, BackendBinaries } from './backend.ts';
import { flushMetadataConntrack } from './conntrack.ts';
import { interceptionMetrics } from './metrics.ts';
import type { InterceptionMetrics } from './metrics.ts';
import { ensureRouteLocalnet, ROUTE_LOCALNET_HELP, sysctlViaCommand, sysctlViaProc } from './route-localnet.ts';
import type { SysctlAccess } from './route-localnet.ts';
import { appendLines, CHAIN, desiredChainRules, isJump, planChain, restoreInput } from './rules.ts';
import type { NatState } from './rules.ts';
import { HOST_CHAIN } from './host-rules.ts';
import { hostRuleInput, livePeerExclusions, type HostNetworkOptions } from './host-cgroups.ts';
import { desiredHostRules, excludedPaths } from './host-rules.ts';
import { CommandError, commandRunner } from './run-command.ts';
import type { CommandRunner } from './run-command.ts';

export interface InterceptionOptions {
  /** What pods call (169.254.169.254:80). */
  metadataIp: string;
  metadataPort: number;
  /** The daemon's listener, the DNAT destination (127.0.0.1:2579). */
  targetIp: string;
  targetPort: number;
  /** Drift re-check period; fractions allowed (tests). */
  intervalSec: number;
  /** Delete conntrack entries to the metadata address after (re)installing the rules. */
  conntrackFlush: boolean;
  log: Logger;
  /** Receives podid_nmi_iptables_* metrics. */
  registry: Registry;
  /** Prepended to every command, e.g. ['ip', 'netns', 'exec', 'podid-test-x']. */
  commandPrefix?: string[];
  /** Default: detected at start, as kube-proxy's images do. */
  backend?: Backend;
  /** Runs every command, sysctl included (tests' fake iptables). Default: `commandRunner(commandPrefix)`. */
  run?: CommandRunner;
  /** --intercept-host-network: also DNAT hostNetwork pods' traffic (OUTPUT, by socket cgroup). */
  hostNetwork?: HostNetworkOptions;
}

export type CleanupOptions = Pick<InterceptionOptions, 'log' | 'commandPrefix' | 'backend'>;

export interface InterceptionStatus {
  backend: Backend;
  /** The last check found or left the rules in place. */
  rulesInstalled: boolean;
  /** route_localnet is 1; null when the target is not a loopback address (not needed). */
  routeLocalnet: boolean | null;
  lastSuccess: Date | null;
  lastError: string | null;
}

// Bounded wait for the xtables lock that kube-proxy and kubelet share with us.
const WAIT = ['-w', '5'];
/** Write-and-verify rounds per pass before a difference is reported. */
const WRITE_ATTEMPTS = 3;

class StepError extends Error {
  override name = 'StepError';
  readonly operation: string;
  constructor(operation: string, cause: unknown) {
    super(`${operation}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.operation = operation;
  }
}

/** A pass given up because stop() was called: not a failure, nothing was written by it. */
export class InterceptionStopped extends Error {
  override name = 'InterceptionStopped';
  constructor() {
    super('interception rules are stopped: no more checks or repairs');
  }
}

async function step<T>(operation: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new StepError(operation, err);
  }
}

async function readNatState(run: CommandRunner, bin: BackendBinaries): Promise<NatState> {
  const prerouting = appendLines((await run(bin.iptables, [...WAIT, '-t', 'nat', '-S', 'PREROUTING'])).stdout, 'PREROUTING');
  return { chain: await readChain(run, bin, CHAIN), prerouting };
}

/** The hostNetwork chain and OUTPUT, in the same shape (`prerouting` holds OUTPUT's lines). */
async function readHostState(run: CommandRunner, bin: BackendBinaries): Promise<NatState> {
  const output = appendLines((await run(bin.iptables, [...WAIT, '-t', 'nat', '-S', 'OUTPUT'])).stdout, 'OUTPUT');
  return { chain: await readChain(run, bin, HOST_CHAIN), prerouting: output };
}

async function readChain(run: CommandRunner, bin: BackendBinaries, chain: string): Promise<string[] | null> {
  try {
    const listing = await run(bin.iptables, [...WAIT, '-t', 'nat', '-S', chain]);
    return appendLines(listing.stdout, chain);
  } catch (err) {
    // Exit 1 is how both flavours report a missing chain (nft's message even says
    // "incompatible"). Anything else that is wrong makes the rewrite fail and is reported there.
    if (err instanceof CommandError && err.result.code === 1) return null;
    throw err;
  }
}

function validate(opts: InterceptionOptions): void {
  for (const key of ['metadataIp', 'targetIp'] as const) {
    if (!isIPv4(opts[key])) throw new TypeError(`${key} must be an IPv4 address, got ${JSON.stringify(opts[key])}`);
  }
  for (const key of ['metadataPort', 'targetPort'] as const) {
    const port = opts[key];
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new TypeError(`${key} must be a port number, got ${port}`);
  }
  if (!Number.isFinite(opts.intervalSec) || opts.intervalSec <= 0) {
    throw new TypeError(`intervalSec must be a positive number, got ${opts.intervalSec}`);
  }
}

export class InterceptionRules {
  readonly #opts: InterceptionOptions;
  readonly #log: Logger;
  readonly #run: CommandRunner;
  readonly #backend: Backend;
  readonly #bin: BackendBinaries;
  readonly #sysctl: SysctlAccess | null;
  readonly #desired: string[];
  readonly #metrics: InterceptionMetrics;
  #queue: Promise<unknown> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #stopping: Promise<void> | undefined;
  #everInstalled = false;
  #status: InterceptionStatus;

  private constructor(opts: InterceptionOptions, run: CommandRunner, backend: Backend) {
    this.#opts = opts;
    this.#log = opts.log.child({ component: 'iptables' });
    this.#run = run;
    this.#backend = backend;
    this.#bin = binariesFor(backend);
    // Only a loopback target needs route_localnet. Through a prefix or a given runner the value
    // must be read where the commands run; otherwise /proc/sys/net is the daemon's own namespace.
    this.#sysctl = !opts.targetIp.startsWith('127.') ? null
      : opts.commandPrefix?.length || opts.run ? sysctlViaCommand(run) : sysctlViaProc();
    this.#desired = desiredChainRules(opts);
    this.#metrics = interceptionMetrics(opts.registry);
    this.#status = {
      backend, rulesInstalled: false, routeLocalnet: this.#sysctl ? false : null, lastSuccess: null, lastError: null,
    };
  }

  /**
   * Installs the rules and starts the re-check loop. A failing first check does not reject:
   * it is logged, counted and retried every intervalSec (see `status` for readiness).
   */
  static async start(opts: InterceptionOptions): Promise<InterceptionRules> {
    validate(opts);
    const run = opts.run ?? commandRunner(opts.commandPrefix);
    let backend = opts.backend;
    if (backend === undefined) {
      const detected = await detectBackend(run);
      opts.log.info({ component: 'iptables', backend: detected.backend, reason: detected.reason }, 'iptables backend detected');
      backend = detected.backend;
    }
    const rules = new InterceptionRules(opts, run, backend);
    await rules.check().catch(() => {});
    if (rules.#status.rulesInstalled) {
      rules.#log.info({ backend, intervalSec: opts.intervalSec, routeLocalnet: rules.#status.routeLocalnet },
        'interception rules in place');
    }
    rules.#schedule();
    return rules;
  }

  get backend(): Backend {
    return this.#backend;
  }

  get status(): InterceptionStatus {
    return { ...this.#status };
  }

  /** One check-and-repair pass; rejects (after logging and counting) when iptables fails. */
  check(): Promise<'ok' | 'repaired'> {
    const pass = this.#queue.then(() => this.#checkOnce());
    this.#queue = pass.catch(() => {});
    return pass;
  }

  /**
   * Stops the loop and leaves the rules in place (fail closed). Resolves once the pass that
   * was running has ended: it finishes the command under way but starts no write after it,
   * so nothing puts the rules back once this has resolved (a `cleanup` can follow safely).
   */
  stop(): Promise<void> {
    if (this.#stopping) return this.#stopping;
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#stopping = this.#queue.then(() => {});
    return this.#stopping;
  }

  /** Called before every write: a pass that is running when stop() comes gives up here. */
  #beforeWrite(): void {
    if (this.#stopped) throw new InterceptionStopped();
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.check().catch(() => {}).finally(() => this.#schedule());
    }, this.#opts.intervalSec * 1000);
    // The listener keeps the daemon alive; this timer alone must not.
    this.#timer.unref();
  }

  async #checkOnce(): Promise<'ok' | 'repaired'> {
    if (this.#stopped) throw new InterceptionStopped();
    try {
      const localnetRepaired = await this.#ensureRouteLocalnet();
      const rulesRepaired = await this.#ensureRules();
      this.#status.rulesInstalled = true;
      this.#status.lastSuccess = new Date();
      this.#status.lastError = null;
      this.#metrics.installed.set(1);
      this.#metrics.lastSuccess.set(Date.now() / 1000);
      // Not gated by stop(): it only makes the rules just written apply to open connections.
      if (rulesRepaired && this.#opts.conntrackFlush) await this.#flushConntrack();
      return localnetRepaired || rulesRepaired ? 'repaired' : 'ok';
    } catch (err) {
      if (err instanceof InterceptionStopped) {
        this.#log.debug('check given up: stopping');
        throw err;
      }
      const operation = err instanceof StepError ? err.operation : 'check';
      this.#status.rulesInstalled = false;
      this.#status.lastError = err instanceof Error ? err.message : String(err);
      this.#metrics.installed.set(0);
      this.#metrics.failures.inc({ operation });
      this.#log.error({ err, operation, backend: this.#backend, retryInSec: this.#opts.intervalSec },
        'interception rules check failed; pods may not be intercepted until the next check succeeds');
      throw err;
    }
  }

  /** Returns whether it had to set the value. A failure is reported but does not stop the rules. */
  async #ensureRouteLocalnet(): Promise<boolean> {
    if (!this.#sysctl) return false;
    const sysctl = this.#sysctl;
    try {
      const result = await ensureRouteLocalnet({
        read: () => sysctl.read(),
        enable: () => { this.#beforeWrite(); return sysctl.enable(); },
      });
      this.#status.routeLocalnet = true;
      if (result === 'already') return false;
      this.#metrics.repairs.inc({ reason: 'route_localnet' });
      this.#log.info('set net.ipv4.conf.all.route_localnet=1 so that DNAT to the loopback listener works');
      return true;
    } catch (err) {
      if (err instanceof InterceptionStopped) throw err;
      this.#status.routeLocalnet = false;
      this.#metrics.failures.inc({ operation: 'route_localnet' });
      this.#log.error({ err }, ROUTE_LOCALNET_HELP);
      return false;
    }
  }

  async #ensureRules(): Promise<boolean> {
    // Which kubepods roots exist and where the daemon's own pod is are read on every pass:
    // a node whose kubelet starts after us, or a new pod of ours, changes them.
    const hostNetwork = this.#opts.hostNetwork;
    const hostInput = hostNetwork === undefined ? undefined : await step('host_cgroups', () => hostRuleInput(hostNetwork));
    const read = async (): Promise<{ pod: NatState; host: NatState | undefined }> => ({
      pod: await readNatState(this.#run, this.#bin),
      host: hostInput === undefined ? undefined : await readHostState(this.#run, this.#bin),
    });
    const before = await step('read_rules', read);
    const hostDesired = hostInput === undefined || hostNetwork === undefined ? undefined : desiredHostRules(this.#opts, {
      ...hostInput,
      peerPodPaths: await step('host_cgroups', () => livePeerExclusions(hostNetwork, excludedPaths(before.host?.chain ?? null), hostInput.ownPodPath)),
    });
    const planFor = (state: { pod: NatState; host: NatState | undefined }): { drift: string[]; lines: string[] } => {
      const pod = planChain({ chain: CHAIN, hook: 'PREROUTING' }, state.pod.chain, state.pod.prerouting, this.#desired);
      if (state.host === undefined || hostDesired === undefined) return pod;
      const host = planChain({ chain: HOST_CHAIN, hook: 'OUTPUT' }, state.host.chain, state.host.prerouting, hostDesired);
      return { drift: [...pod.drift, ...host.drift.map((d) => `host_${d}`)], lines: [...pod.lines, ...host.lines] };
    };
    const plan = planFor(before);
    if (plan.lines.length === 0) {
      this.#everInstalled = true;
      return false;
    }
    // Both chains in one transaction: no moment where one is new and the other stale.
    let lines = plan.lines;
    let after = before;
    let left = plan;
    for (let attempt = 1; attempt <= WRITE_ATTEMPTS; attempt++) {
      const input = restoreInput(lines);
      this.#beforeWrite();
      // Two daemons of a rolling update may repair the same drift at once: a write that fails
      // or is undone because the other moved first is read again and redone, not reported.
      const wrote = await step('write_rules', () => this.#run(this.#bin.restore, [...WAIT, '--noflush'], { input }))
        .then(() => undefined, (err: unknown) => err);
      after = await step('verify_rules', read);
      left = planFor(after);
      if (left.lines.length === 0) break;
      if (attempt === WRITE_ATTEMPTS && wrote !== undefined) throw wrote;
      if (attempt < WRITE_ATTEMPTS) await new Promise((r) => setTimeout(r, 20 + Math.random() * 180));
      lines = left.lines;
    }
    if (left.lines.length !== 0) {
      // iptables printing the rules differently from NMI's form would otherwise rewrite
      // the chain on every tick without anyone noticing.
      throw new StepError('verify_rules', new Error(
        `rules still differ after rewriting them (${left.drift.join(', ')}): found=${JSON.stringify(after)} ` +
        `desired=${JSON.stringify({ pod: this.#desired, host: hostDesired })}`));
    }
    // Only which daemon pods are excluded changed (a rolling update's daemons coming and going):
    // no pod's interception changed, so it is neither drift nor a reason to flush conntrack.
    const exclusionsOnly = plan.drift.length === 1 && plan.drift[0] === 'host_chain_changed'
      && sameDnat(before.host?.chain ?? [], hostDesired ?? []);
    if (exclusionsOnly) {
      this.#everInstalled = true;
      this.#log.info({ excluded: excludedPaths(hostDesired ?? null), before: excludedPaths(before.host?.chain ?? null) },
        'hostNetwork chain: the daemon pods excluded from interception changed');
      return false;
    }
    for (const reason of plan.drift) this.#metrics.repairs.inc({ reason });
    const fresh = !this.#everInstalled && before.pod.chain === null && !before.pod.prerouting.some((l) => isJump(l))
      && (before.host === undefined || before.host.chain === null);
    this.#everInstalled = true;
    const rules = hostDesired === undefined ? this.#desired : [...this.#desired, ...hostDesired];
    if (fresh) {
      this.#log.info({ backend: this.#backend, rules }, 'interception rules installed');
    } else {
      this.#log.warn({ backend: this.#backend, drift: plan.drift, found: before, rules },
        'interception rules had drifted and were repaired');
    }
    return true;
  }

  async #flushConntrack(): Promise<void> {
    try {
      const deleted = await flushMetadataConntrack(this.#run, this.#opts.metadataIp, this.#opts.metadataPort);
      if (deleted > 0) this.#log.info({ deleted }, 'deleted conntrack entries to the metadata address');
    } catch (err) {
      // Only connections opened before the rules existed escape; they end on their own.
      this.#metrics.failures.inc({ operation: 'conntrack' });
      this.#log.warn({ err }, 'could not delete conntrack entries to the metadata address');
    }
  }
}

/** Removes the jump(s) and the chain, for uninstall. Rejects when iptables fails. */
export async function cleanupInterception(opts: CleanupOptions): Promise<void> {
  const log = opts.log.child({ component: 'iptables' });
  const run = commandRunner(opts.commandPrefix);
  const backend = opts.backend ?? (await detectBackend(run)).backend;
  const bin = binariesFor(backend);
  const state = await readNatState(run, bin);
  const host = await readHostState(run, bin);
  const jumps = state.prerouting.filter((l) => isJump(l));
  const hostJumps = host.prerouting.filter((l) => isJump(l, HOST_CHAIN));
  if (state.chain === null && jumps.length === 0 && host.chain === null && hostJumps.length === 0) {
    log.info({ backend }, 'no interception rules to remove');
    return;
  }
  // iptables-restore parses the quoting of `-S` lines, so foreign jumps with comments go too.
  const lines = [...jumps, ...hostJumps].map((jump) => `-D${jump.slice(2)}`);
  if (state.chain !== null) lines.push(`:${CHAIN} - [0:0]`, `-X ${CHAIN}`);
  if (host.chain !== null) lines.push(`:${HOST_CHAIN} - [0:0]`, `-X ${HOST_CHAIN}`);
  await run(bin.restore, [...WAIT, '--noflush'], { input: restoreInput(lines) });
  log.warn({ backend, removed: { jumps, chain: state.chain, hostJumps, hostChain: host.chain } },
    'interception rules removed: pods on this node now reach the metadata endpoint directly');
}

/** Same rules but for the RETURN exclusions of daemon pods. */
function sameDnat(a: readonly string[], b: readonly string[]): boolean {
  const rest = (lines: readonly string[]): string => lines.filter((l) => excludedPaths([l]).length === 0).join('\n');
  return rest(a) === rest(b);
}
