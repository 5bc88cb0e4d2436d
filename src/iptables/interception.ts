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
import { CHAIN, desiredChainRules, isJump, planChain, restoreInput } from './rules.ts';
import type { NatState } from './rules.ts';
import { desiredGuardRules, GUARD_CHAIN, recordsOwnership } from './localnet-guard.ts';
import { HOST_CHAIN } from './host-rules.ts';
import { hostRuleInput, livePeerExclusions, type HostNetworkOptions } from './host-cgroups.ts';
import { desiredHostRules, excludedPaths } from './host-rules.ts';
import { sameRules } from './rule-meaning.ts';
import { commandRunner } from './run-command.ts';
import { readGuardState, readHostState, readNatState, WAIT } from './read-rules.ts';
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
  /** Told each part's status after every check it was part of (Events on the node observe it). */
  onPart?: (part: 'hostNetwork' | 'localnetGuard', status: PartStatus) => void;
}

/** A part of the rules that is kept on its own: its failure never stops the others. */
export interface PartStatus {
  installed: boolean;
  error: string | null;
}

export interface InterceptionStatus {
  backend: Backend;
  /** The last check found or left the pod-network rules (aad-metadata) in place. */
  rulesInstalled: boolean;
  /** route_localnet is 1; null when the target is not a loopback address (not needed). */
  routeLocalnet: boolean | null;
  /** The route_localnet guard (filter PODID-NMI-LOCALNET); null when route_localnet is not relied on. */
  localnetGuard: PartStatus | null;
  /** The hostNetwork chain (aad-metadata-host); null without --intercept-host-network. */
  hostNetwork: PartStatus | null;
  lastSuccess: Date | null;
  lastError: string | null;
}

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
  #hostEverInstalled = false;
  /** The daemon turned route_localnet on (now or in an earlier run: the guard chain records it). */
  #ownsSysctl = false;
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
    this.#metrics = interceptionMetrics(opts.registry, { guard: this.#sysctl !== null, host: opts.hostNetwork !== undefined });
    this.#status = {
      backend, rulesInstalled: false, routeLocalnet: this.#sysctl ? false : null,
      localnetGuard: this.#sysctl ? { installed: false, error: 'not checked yet' } : null,
      hostNetwork: opts.hostNetwork ? { installed: false, error: 'not checked yet' } : null,
      lastSuccess: null, lastError: null,
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
    const s = this.#status;
    return { ...s, localnetGuard: s.localnetGuard && { ...s.localnetGuard }, hostNetwork: s.hostNetwork && { ...s.hostNetwork } };
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

  // The pod-network side (chain, guard, sysctl) and the hostNetwork side are kept apart: a
  // host side that cannot be installed (no kubepods cgroup, a cgroup v1 node, a failing cgroup
  // match) is reported and retried, and never keeps the pod side from being installed.
  async #checkOnce(): Promise<'ok' | 'repaired'> {
    if (this.#stopped) throw new InterceptionStopped();
    let podRepaired = false;
    let podError: unknown;
    try {
      podRepaired = await this.#ensurePodSide();
      this.#status.rulesInstalled = true;
      this.#status.lastSuccess = new Date();
      this.#status.lastError = null;
      this.#metrics.installed.set(1);
      this.#metrics.lastSuccess.set(Date.now() / 1000);
    } catch (err) {
      if (err instanceof InterceptionStopped) {
        this.#log.debug('check given up: stopping');
        throw err;
      }
      podError = err;
      const operation = err instanceof StepError ? err.operation : 'check';
      this.#status.rulesInstalled = false;
      this.#status.lastError = err instanceof Error ? err.message : String(err);
      this.#metrics.installed.set(0);
      this.#metrics.failures.inc({ operation });
      this.#log.error({ err, operation, backend: this.#backend, retryInSec: this.#opts.intervalSec },
        'interception rules check failed; pods may not be intercepted until the next check succeeds');
    }
    const hostRepaired = await this.#ensureHostSide();
    if (podError !== undefined) throw podError;
    // Not gated by stop(): it only makes the rules just written apply to open connections.
    if ((podRepaired || hostRepaired) && this.#opts.conntrackFlush) await this.#flushConntrack();
    return podRepaired || hostRepaired ? 'repaired' : 'ok';
  }

  /**
   * The pod chain and, when the DNAT goes to a loopback address, the route_localnet guard, in
   * one iptables-restore (filter first); then route_localnet, which is turned on only once the
   * guard is in place. Rejects when the pod chain cannot be kept; a guard that cannot be
   * installed is reported (status, metric, log) and leaves the sysctl as it was.
   */
  async #ensurePodSide(): Promise<boolean> {
    const sysctl = this.#sysctl;
    const read = async (): Promise<{ pod: NatState; guard: NatState | undefined }> => ({
      pod: await readNatState(this.#run, this.#bin),
      guard: sysctl ? await readGuardState(this.#run, this.#bin) : undefined,
    });
    const before = await step('read_rules', read);
    let localnet: string | undefined;
    if (sysctl) {
      if (recordsOwnership(before.guard!.chain)) this.#ownsSysctl = true;
      try {
        localnet = await sysctl.read();
      } catch (err) {
        this.#metrics.failures.inc({ operation: 'route_localnet' });
        this.#log.error({ err }, 'could not read net.ipv4.conf.all.route_localnet');
      }
      // Recorded before the sysctl is written: a crash in between still leaves the record.
      if (localnet === '0') this.#ownsSysctl = true;
    }
    const planFor = (state: { pod: NatState; guard: NatState | undefined }) => ({
      pod: planChain({ chain: CHAIN, hook: 'PREROUTING' }, state.pod.chain, state.pod.prerouting, this.#desired),
      guard: state.guard === undefined ? { drift: [], lines: [] }
        : planChain({ chain: GUARD_CHAIN, hook: 'INPUT' }, state.guard.chain, state.guard.prerouting, desiredGuardRules(this.#ownsSysctl)),
    });
    const plan = planFor(before);
    let guardError: string | null = null;
    if (plan.pod.lines.length > 0 || plan.guard.lines.length > 0) {
      const input = (plan.guard.lines.length > 0 ? restoreInput(plan.guard.lines, 'filter') : '')
        + (plan.pod.lines.length > 0 ? restoreInput(plan.pod.lines) : '');
      this.#beforeWrite();
      try {
        await this.#run(this.#bin.restore, [...WAIT, '--noflush'], { input });
      } catch (err) {
        // Without the guard the pod chain still goes in: with route_localnet off its DNAT
        // blocks pods (fail closed), which is better than letting them reach IMDS.
        if (plan.guard.lines.length === 0) throw new StepError('write_rules', err);
        guardError = err instanceof Error ? err.message : String(err);
        if (plan.pod.lines.length > 0) await step('write_rules', () => this.#run(this.#bin.restore, [...WAIT, '--noflush'], { input: restoreInput(plan.pod.lines) }));
      }
    }
    let after = plan.pod.lines.length > 0 || plan.guard.lines.length > 0 ? await step('verify_rules', read) : before;
    let left = planFor(after);
    // Two daemons of a rolling update may repair the same drift at once (a duplicate jump, a
    // delete of a line the other removed first): read again and redo, rather than report it.
    for (let attempt = 2; attempt <= WRITE_ATTEMPTS && left.pod.lines.length !== 0; attempt++) {
      await jitter();
      this.#beforeWrite();
      const lines = left.pod.lines;
      await this.#run(this.#bin.restore, [...WAIT, '--noflush'], { input: restoreInput(lines) }).catch(() => undefined);
      after = await step('verify_rules', read);
      left = planFor(after);
    }
    if (left.pod.lines.length !== 0) {
      // iptables printing the rules differently from NMI's form would otherwise rewrite
      // the chain on every tick without anyone noticing.
      throw new StepError('verify_rules', new Error(
        `rules still differ after rewriting them (${left.pod.drift.join(', ')}): found=${JSON.stringify(after.pod)} desired=${JSON.stringify(this.#desired)}`));
    }
    if (sysctl) {
      if (guardError === null && left.guard.lines.length !== 0) {
        guardError = `guard still differs after rewriting it (${left.guard.drift.join(', ')}): found=${JSON.stringify(after.guard)}`;
      }
      this.#status.localnetGuard = { installed: guardError === null, error: guardError };
      this.#opts.onPart?.('localnetGuard', { ...this.#status.localnetGuard });
      this.#metrics.guardInstalled?.set(guardError === null ? 1 : 0);
    }
    let localnetRepaired = false;
    if (guardError !== null) {
      this.#metrics.failures.inc({ operation: 'localnet_guard' });
      this.#status.routeLocalnet = localnet === '1';
      this.#log.error({ err: guardError, routeLocalnet: localnet },
        'the route_localnet guard could not be installed: route_localnet is left as it was (not turned on), so pods\' metadata traffic '
        + 'DNATed to the loopback listener is dropped if it is 0 (fail closed)');
    } else if (sysctl) {
      localnetRepaired = await this.#ensureRouteLocalnet();
    }
    const repaired = plan.pod.lines.length > 0 || (plan.guard.lines.length > 0 && guardError === null);
    if (!repaired) {
      this.#everInstalled = true;
      return localnetRepaired;
    }
    const drift = [...plan.pod.drift, ...(guardError === null ? plan.guard.drift.map((d) => `guard_${d}`) : [])];
    for (const reason of drift) this.#metrics.repairs.inc({ reason });
    const fresh = !this.#everInstalled && before.pod.chain === null && !before.pod.prerouting.some((l) => isJump(l))
      && (before.guard === undefined || before.guard.chain === null);
    this.#everInstalled = true;
    const rules = sysctl ? [...desiredGuardRules(this.#ownsSysctl), ...this.#desired] : this.#desired;
    if (fresh) {
      this.#log.info({ backend: this.#backend, rules }, 'interception rules installed');
    } else {
      this.#log.warn({ backend: this.#backend, drift, found: before, rules }, 'interception rules had drifted and were repaired');
    }
    return true;
  }

  /** Returns whether it had to set the value. A failure is reported but does not stop the rules. */
  async #ensureRouteLocalnet(): Promise<boolean> {
    const sysctl = this.#sysctl!;
    try {
      const result = await ensureRouteLocalnet({
        read: () => sysctl.read(),
        enable: () => { this.#beforeWrite(); return sysctl.enable(); },
      });
      this.#status.routeLocalnet = true;
      if (result === 'already') return false;
      this.#metrics.repairs.inc({ reason: 'route_localnet' });
      this.#log.info('set net.ipv4.conf.all.route_localnet=1 so that DNAT to the loopback listener works (the guard chain '
        + `${GUARD_CHAIN} keeps neighbours off the node's loopback and records that podid-nmi turned it on)`);
      return true;
    } catch (err) {
      if (err instanceof InterceptionStopped) throw err;
      this.#status.routeLocalnet = false;
      this.#metrics.failures.inc({ operation: 'route_localnet' });
      this.#log.error({ err }, ROUTE_LOCALNET_HELP);
      return false;
    }
  }

  /** The hostNetwork chain; never rejects but for stop(): its failures are reported and retried. */
  async #ensureHostSide(): Promise<boolean> {
    const host = this.#opts.hostNetwork;
    if (host === undefined) return false;
    try {
      // Which kubepods roots exist and where the daemon's own pod is are read on every pass:
      // a node whose kubelet starts after us, or a new pod of ours, changes them.
      const input = await step('host_cgroups', () => hostRuleInput(host));
      const spec = { chain: HOST_CHAIN, hook: 'OUTPUT' } as const;
      const before = await step('read_host_rules', () => readHostState(this.#run, this.#bin));
      // During a rolling update the old and the new daemon each keep the other's exclusion.
      const desired = desiredHostRules(this.#opts, {
        ...input,
        peerPodPaths: await step('host_cgroups', () => livePeerExclusions(host, excludedPaths(before.chain), input.ownPodPath)),
      });
      const plan = planChain(spec, before.chain, before.prerouting, desired);
      // Only which daemon pods are excluded changed (a rolling update's daemons coming and going):
      // no pod's interception changed, so it is neither drift nor a reason to flush conntrack.
      const exclusionsOnly = plan.drift.length === 1 && plan.drift[0] === 'chain_changed' && sameDnat(before.chain ?? [], desired);
      if (plan.lines.length > 0) {
        let lines = plan.lines;
        let after = before;
        let left = plan;
        for (let attempt = 1; attempt <= WRITE_ATTEMPTS; attempt++) {
          this.#beforeWrite();
          // Two daemons of a rolling update may repair the same drift at once: a write that fails
          // or is undone because the other moved first is read again and redone, not reported.
          const wrote = await step('write_host_rules', () => this.#run(this.#bin.restore, [...WAIT, '--noflush'], { input: restoreInput(lines) }))
            .then(() => undefined, (err: unknown) => err);
          after = await step('verify_host_rules', () => readHostState(this.#run, this.#bin));
          left = planChain(spec, after.chain, after.prerouting, desired);
          if (left.lines.length === 0) break;
          if (attempt === WRITE_ATTEMPTS && wrote !== undefined) throw wrote;
          if (attempt < WRITE_ATTEMPTS) await jitter();
          lines = left.lines;
        }
        if (left.lines.length !== 0) {
          throw new StepError('verify_host_rules', new Error(
            `rules still differ after rewriting them (${left.drift.join(', ')}): found=${JSON.stringify(after)} desired=${JSON.stringify(desired)}`));
        }
      }
      if (plan.lines.length > 0 && exclusionsOnly) {
        this.#log.info({ excluded: excludedPaths(desired), before: excludedPaths(before.chain) },
          'hostNetwork chain: the daemon pods excluded from interception changed');
      } else if (plan.lines.length > 0) {
        const drift = plan.drift.map((d) => `host_${d}`);
        for (const reason of drift) this.#metrics.repairs.inc({ reason });
        if (!this.#hostEverInstalled && before.chain === null) {
          this.#log.info({ backend: this.#backend, part: 'hostNetwork', rules: desired }, 'interception rules installed');
        } else {
          this.#log.warn({ backend: this.#backend, part: 'hostNetwork', drift, found: before, rules: desired },
            'interception rules had drifted and were repaired');
        }
      }
      this.#hostEverInstalled = true;
      if (this.#status.hostNetwork?.installed === false && this.#status.hostNetwork.error !== 'not checked yet') {
        this.#log.info('hostNetwork interception rules in place again');
      }
      this.#status.hostNetwork = { installed: true, error: null };
      this.#opts.onPart?.('hostNetwork', { installed: true, error: null });
      this.#metrics.hostInstalled?.set(1);
      return plan.lines.length > 0 && !exclusionsOnly;
    } catch (err) {
      if (err instanceof InterceptionStopped) throw err;
      const operation = err instanceof StepError ? err.operation : 'host_rules';
      const message = err instanceof Error ? err.message : String(err);
      this.#status.hostNetwork = { installed: false, error: message };
      this.#opts.onPart?.('hostNetwork', { installed: false, error: message });
      this.#metrics.hostInstalled?.set(0);
      this.#metrics.failures.inc({ operation });
      this.#log.error({ err, operation, backend: this.#backend, retryInSec: this.#opts.intervalSec },
        'hostNetwork interception rules could not be kept: hostNetwork pods are not intercepted; pod-network interception is unaffected');
      return false;
    }
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

/** Same rules but for the RETURN exclusions of daemon pods, compared by meaning. */
function sameDnat(a: readonly string[], b: readonly string[]): boolean {
  const rest = (lines: readonly string[]): string[] => lines.filter((l) => excludedPaths([l]).length === 0);
  return sameRules(rest(a), rest(b));
}

/** A short random pause, so that two daemons repairing the same drift stop colliding. */
function jitter(): Promise<void> {
  return new Promise((r) => setTimeout(r, 20 + Math.random() * 180));
}
