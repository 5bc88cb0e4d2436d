// The guard that must come with net.ipv4.conf.all.route_localnet=1 (CVE-2020-8558). With the
// sysctl on, the kernel no longer drops packets to 127.0.0.0/8 that arrive from outside, so a
// neighbour (a pod, or a host on the node's network) can reach whatever listens on the node's
// loopback: kubelet's and the runtime's local ports, debug endpoints. kube-proxy in iptables
// mode installs this same rule with the sysctl; nodes without it (kube-proxy in nftables or
// IPVS mode, Cilium's replacement) have neither, and the daemon sets the sysctl for its DNAT to
// 127.0.0.1. The rule drops such packets unless conntrack says they were DNATed there (pods'
// metadata traffic) or belong to such a connection.
//
// Whether the daemon turned the sysctl on is recorded in the node itself, as a comment rule at
// the end of this chain: it lives in the node's network namespace (where the sysctl lives), needs
// no hostPath, survives the daemon's restarts and upgrades, and dies with the namespace. cleanup-
// iptables reads it to decide whether to turn the sysctl back off.
import { ruleWords } from './rule-meaning.ts';

export const GUARD_CHAIN = 'PODID-NMI-LOCALNET';
export const GUARD_COMMENT = 'podid-nmi: block incoming localnet connections';
export const GUARD_RULE = `-A ${GUARD_CHAIN} ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "${GUARD_COMMENT}" `
  + '-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP';
export const OWNER_COMMENT = 'podid-nmi turned route_localnet on';
/** Matches nothing it does not return from: a marker, not a filter. */
export const OWNER_MARKER = `-A ${GUARD_CHAIN} -m comment --comment "${OWNER_COMMENT}" -j RETURN`;

/** The chain as `iptables -t filter -S PODID-NMI-LOCALNET` prints it. */
export function desiredGuardRules(ownsSysctl: boolean): string[] {
  return ownsSysctl ? [GUARD_RULE, OWNER_MARKER] : [GUARD_RULE];
}

/** Whether the chain records that the daemon turned route_localnet on. */
export function recordsOwnership(chain: readonly string[] | null): boolean {
  return chain !== null && chain.some((line) => {
    const words = ruleWords(line);
    const at = words.indexOf('--comment');
    return at !== -1 && words[at + 1] === OWNER_COMMENT;
  });
}
