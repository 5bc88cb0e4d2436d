// What the hostNetwork rules need from the cgroup hierarchy: which kubepods roots exist (the
// cgroup match refuses a path that does not) and the daemon's own pod cgroup, to exclude.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { kubepodsRoots, podCgroupOf } from '../pods/kubelet-cgroup.ts';
import type { HostRuleInput } from './host-rules.ts';

export interface HostNetworkOptions {
  /** Where cgroup v2 is mounted (--cgroup-root). */
  cgroupRoot: string;
  /** Where kubelet's kubepods root sits below it ('' for the top). */
  cgroupParent: string;
  /** The daemon's own cgroup as /proc/self/cgroup's `0::` line names it. */
  ownCgroup: string;
}

/** Paths go into the rules quoted; keep them to what kubelet and systemd produce. */
const SAFE_PATH = /^[A-Za-z0-9_.@:\/-]*$/;

const V1_ONLY = 'hostNetwork interception cannot work on this node: iptables\' cgroup match (-m cgroup --path) matches '
  + 'cgroup v2 paths only; pod-network interception is unaffected';

/**
 * The cgroup v2 hierarchy: --cgroup-root itself, or on a hybrid node (v1 controllers at
 * /sys/fs/cgroup) the v2 hierarchy systemd mounts at <root>/unified.
 */
export async function cgroup2Root(root: string): Promise<string> {
  if (await exists(join(root, 'cgroup.controllers'))) return root;
  const unified = join(root, 'unified');
  if (await exists(join(unified, 'cgroup.controllers'))) return unified;
  throw new Error(`no cgroup v2 hierarchy at ${root} nor at ${unified} (a cgroup v1-only node, or a wrong --cgroup-root): ${V1_ONLY}`);
}

export async function hostRuleInput(o: HostNetworkOptions): Promise<HostRuleInput> {
  if (!SAFE_PATH.test(o.cgroupParent)) throw new Error(`cgroup parent ${JSON.stringify(o.cgroupParent)} has characters kubelet never uses`);
  const v2 = await cgroup2Root(o.cgroupRoot);
  const roots = kubepodsRoots(o.cgroupParent);
  const kubepods: string[] = [];
  for (const root of [roots.systemd, roots.cgroupfs]) {
    if (await isDir(join(v2, root))) kubepods.push(root);
  }
  if (kubepods.length === 0) {
    // A hybrid node whose kubelet (cgroupfs driver) made its pod cgroups in the v1 controllers only.
    if (v2 !== o.cgroupRoot) {
      for (const controller of ['cpu', 'memory', 'pids', 'systemd']) {
        for (const root of [roots.systemd, roots.cgroupfs]) {
          const v1 = join(o.cgroupRoot, controller, root);
          if (await isDir(v1)) throw new Error(`kubelet's pod cgroups are in the cgroup v1 hierarchy only (${v1}, none under ${v2}): ${V1_ONLY}`);
        }
      }
    }
    throw new Error(`neither ${roots.systemd} nor ${roots.cgroupfs} exists under ${v2}: wrong --cgroup-root or --kubepods-cgroup-parent, `
      + 'or the daemon runs in a private cgroup namespace (it needs the node\'s, see the DaemonSet); pod-network interception is unaffected');
  }
  const own = podCgroupOf(o.ownCgroup, o.cgroupParent);
  const ownPath = trim(o.ownCgroup);
  if (own === undefined && kubepods.some((root) => ownPath === root || ownPath.startsWith(`${root}/`))) {
    // Inside kubepods but in no pod: no rule could exclude the daemon without excluding others.
    throw new Error(`the daemon's cgroup ${o.ownCgroup} is under kubepods but in no pod cgroup; cannot exclude it from interception`);
  }
  if (own !== undefined && !SAFE_PATH.test(own.podPath)) throw new Error(`own pod cgroup ${JSON.stringify(own.podPath)} cannot be written into a rule`);
  return { kubepods, ownPodPath: own?.podPath };
}

/** At most this many other daemon pods are kept excluded (a rolling update needs one). */
export const MAX_PEER_EXCLUSIONS = 4;

/**
 * Of the exclusions found in the chain, those of other pods whose cgroup still exists: the
 * previous daemon of a rolling update until kubelet removes its pod. Only whole pod cgroups
 * under kubepods count; a stale or foreign line is dropped at the next rewrite.
 */
export async function livePeerExclusions(o: HostNetworkOptions, found: readonly string[], own: string | undefined): Promise<string[]> {
  const peers: string[] = [];
  const v2 = found.length === 0 ? o.cgroupRoot : await cgroup2Root(o.cgroupRoot);
  for (const path of found) {
    if (peers.length === MAX_PEER_EXCLUSIONS) break;
    if (path === own || peers.includes(path) || !SAFE_PATH.test(path)) continue;
    if (podCgroupOf(path, o.cgroupParent)?.podPath !== path) continue;
    if (await isDir(join(v2, path))) peers.push(path);
  }
  return peers;
}

/** The `0::<path>` line of /proc/self/cgroup (cgroup v2), or '' when there is none. */
export function ownCgroupFrom(procSelfCgroup: string): string {
  for (const line of procSelfCgroup.split('\n')) if (line.startsWith('0::')) return line.slice(3);
  return '';
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

function trim(path: string): string {
  return path.replace(/^\/+|\/+$/g, '');
}
