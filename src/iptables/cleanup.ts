// `nmi cleanup-iptables`: undoes what the daemon changed on the node, for an uninstall
// (docs/node-changes.md).
import type { Logger } from 'pino';
import { binariesFor, detectBackend } from './backend.ts';
import type { Backend } from './backend.ts';
import { HOST_CHAIN } from './host-rules.ts';
import { GUARD_CHAIN, recordsOwnership } from './localnet-guard.ts';
import { readGuardState, readHostState, readNatState, WAIT } from './read-rules.ts';
import { sysctlViaCommand, sysctlViaProc } from './route-localnet.ts';
import type { SysctlAccess } from './route-localnet.ts';
import { CHAIN, isJump, restoreInput } from './rules.ts';
import { commandRunner } from './run-command.ts';
import type { CommandRunner } from './run-command.ts';

export interface CleanupOptions {
  log: Logger;
  /** Prepended to every command, e.g. ['ip', 'netns', 'exec', 'podid-test-x']. */
  commandPrefix?: string[];
  /** Default: detected, as the daemon does. */
  backend?: Backend;
  /** Runs every command (tests' fake iptables). Default: `commandRunner(commandPrefix)`. */
  run?: CommandRunner;
  /** Where route_localnet is read and written. Default: like InterceptionRules. */
  sysctl?: SysctlAccess;
}

export interface CleanupResult {
  backend: Backend;
  /** The chains removed (with their jumps). */
  removed: string[];
  /**
   * turned_off: podid-nmi had turned it on (its guard chain said so) and set it back to 0;
   * left_on: it was on but not turned on by podid-nmi (kube-proxy's, say); already_off;
   * not_turned_off: podid-nmi's, but writing 0 failed (the guard stays); unknown: no record.
   */
  routeLocalnet: 'turned_off' | 'left_on' | 'already_off' | 'not_turned_off' | 'unknown';
  error: string | null;
}

/**
 * Undoes what the daemon changed on the node, for an uninstall: route_localnet back to 0 when
 * the daemon turned it on (before the guard goes, so the loopback is never open), then the
 * chains and their jumps in one iptables-restore. Rejects when iptables fails; a sysctl that
 * cannot be written back keeps the guard and is reported in the result.
 */
export async function cleanupInterception(opts: CleanupOptions): Promise<CleanupResult> {
  const log = opts.log.child({ component: 'iptables' });
  const run = opts.run ?? commandRunner(opts.commandPrefix);
  const sysctl = opts.sysctl ?? (opts.commandPrefix?.length || opts.run ? sysctlViaCommand(run) : sysctlViaProc());
  const backend = opts.backend ?? (await detectBackend(run)).backend;
  const bin = binariesFor(backend);
  const state = await readNatState(run, bin);
  const host = await readHostState(run, bin);
  const guard = await readGuardState(run, bin);
  const ours = recordsOwnership(guard.chain);
  let routeLocalnet: CleanupResult['routeLocalnet'] = 'unknown';
  let error: string | null = null;
  try {
    const value = await sysctl.read();
    if (value !== '1') {
      routeLocalnet = 'already_off';
    } else if (!ours) {
      routeLocalnet = 'left_on';
    } else {
      await sysctl.disable();
      const after = await sysctl.read();
      if (after !== '0') throw new Error(`net.ipv4.conf.all.route_localnet is still ${after} after writing 0`);
      routeLocalnet = 'turned_off';
    }
  } catch (err) {
    error = err instanceof Error ? err.message : String(err);
    routeLocalnet = ours ? 'not_turned_off' : 'unknown';
  }
  // The guard goes only once nothing needs it from us: a route_localnet podid-nmi turned on and
  // could not turn off keeps its guard (the loopback stays closed to neighbours).
  const removeGuard = routeLocalnet !== 'not_turned_off';
  const jumps = state.prerouting.filter((l) => isJump(l));
  const hostJumps = host.prerouting.filter((l) => isJump(l, HOST_CHAIN));
  const guardJumps = removeGuard ? guard.prerouting.filter((l) => isJump(l, GUARD_CHAIN)) : [];
  const removed: string[] = [];
  // iptables-restore parses the quoting of `-S` lines, so foreign jumps with comments go too.
  const nat = [...jumps, ...hostJumps].map((jump) => `-D${jump.slice(2)}`);
  if (state.chain !== null) { nat.push(`:${CHAIN} - [0:0]`, `-X ${CHAIN}`); removed.push(CHAIN); }
  if (host.chain !== null) { nat.push(`:${HOST_CHAIN} - [0:0]`, `-X ${HOST_CHAIN}`); removed.push(HOST_CHAIN); }
  const filter = guardJumps.map((jump) => `-D${jump.slice(2)}`);
  if (removeGuard && guard.chain !== null) { filter.push(`:${GUARD_CHAIN} - [0:0]`, `-X ${GUARD_CHAIN}`); removed.push(GUARD_CHAIN); }
  if (nat.length > 0 || filter.length > 0) {
    const input = (nat.length > 0 ? restoreInput(nat) : '') + (filter.length > 0 ? restoreInput(filter, 'filter') : '');
    await run(bin.restore, [...WAIT, '--noflush'], { input });
  }
  const result: CleanupResult = { backend, removed, routeLocalnet, error };
  if (removed.length === 0 && jumps.length + hostJumps.length + guardJumps.length === 0) {
    log.info({ ...result }, 'no interception rules to remove');
  } else {
    log.warn({ ...result, removedJumps: [...jumps, ...hostJumps, ...guardJumps] },
      'interception rules removed: pods on this node now reach the metadata endpoint directly');
  }
  if (routeLocalnet === 'not_turned_off') {
    log.error({ err: error }, 'podid-nmi had turned net.ipv4.conf.all.route_localnet on and could not turn it off: its guard chain '
      + `${GUARD_CHAIN} stays; set the sysctl to 0 and run cleanup-iptables again (the container needs a writable /proc/sys)`);
  }
  return result;
}
