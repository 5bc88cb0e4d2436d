// hostNetwork interception: hostNetwork pods share the node's network namespace, so their
// packets to the metadata address leave through OUTPUT, never PREROUTING, and NMI's chain
// never saw them. This chain DNATs them too, selected by the socket's cgroup: only sockets in
// kubelet's pod cgroups, so kubelet and the other node components outside kubepods keep
// their direct access, and never the daemon's own pod, which must reach IMDS itself.
import { quoteWord } from './rule-meaning.ts';
import type { RuleTarget } from './rules.ts';

export const HOST_CHAIN = 'aad-metadata-host';

export interface HostRuleInput {
  /** kubepods roots that exist, relative to the cgroup2 root (e.g. `kubepods.slice`). */
  kubepods: readonly string[];
  /** The daemon's own pod cgroup when it lies under kubepods (relative, no leading slash). */
  ownPodPath: string | undefined;
  /**
   * Other daemon pods' cgroups excluded by the chain now and still alive: during a rolling
   * update the old daemon and the new one each keep the other's exclusion, so neither rewrites
   * the chain against the other, and the old one still reaches IMDS for what it is finishing.
   */
  peerPodPaths?: readonly string[];
}

/**
 * The chain's rules as `iptables -t nat -S aad-metadata-host` prints them: a path is bare when
 * it holds only [A-Za-z0-9_-] (`kubepods`, cgroupfs) and quoted otherwise (`"kubepods.slice"`).
 */
export function desiredHostRules(t: RuleTarget, input: HostRuleInput): string[] {
  const rules: string[] = [];
  // Sorted, so that two daemons keeping the same exclusions write the same chain.
  const excluded = new Set([...(input.peerPodPaths ?? []), ...(input.ownPodPath === undefined ? [] : [input.ownPodPath])]);
  for (const path of [...excluded].sort()) rules.push(`-A ${HOST_CHAIN} -m cgroup --path ${quoteWord(path)} -j RETURN`);
  for (const root of input.kubepods) {
    rules.push(`-A ${HOST_CHAIN} -d ${t.metadataIp}/32 -p tcp -m tcp --dport ${t.metadataPort} -m cgroup --path ${quoteWord(root)} -j DNAT --to-destination ${t.targetIp}:${t.targetPort}`);
  }
  rules.push(`-A ${HOST_CHAIN} -j RETURN`);
  return rules;
}

const EXCLUSION = new RegExp(`^-A ${HOST_CHAIN} -m cgroup --path (?:"([^"]+)"|(\\S+)) -j RETURN$`);

/** The cgroup paths the chain's RETURN rules exclude, as `iptables -S` printed them. */
export function excludedPaths(chain: readonly string[] | null): string[] {
  const out: string[] = [];
  for (const line of chain ?? []) {
    const m = EXCLUSION.exec(line);
    if (m !== null) out.push(m[1] ?? m[2]!);
  }
  return out;
}
