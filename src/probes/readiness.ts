// Whether the daemon may say ready, and if not, why in words an operator can act on. Ready
// means pods' metadata traffic reaches this daemon AND it can decide: rules that are not in
// place, or not managed at all, are never reported as ready.
import type { InterceptionStatus } from '../iptables/index.ts';

export type Readiness = { readonly ready: true } | { readonly ready: false; readonly reasons: readonly string[] };

export interface ReadinessInputs {
  closing: boolean;
  stateReady: boolean;
  manageIptables: boolean;
  /** --interception=external: something else redirects; nothing here can see whether it does. */
  externalInterception?: boolean;
  /** undefined until the first rule check has run. */
  interception: InterceptionStatus | undefined;
  /** --attest-pod-sockets: why the host's /proc or cgroups cannot be read, if so. */
  attestation?: string | undefined;
  /** false while a rolling update's previous daemon still serves the port alone (undefined: listening). */
  listening?: boolean;
}

export const NOT_INTERCEPTING = 'not intercepting: started with --manage-iptables=false, so nothing here redirects pods\' '
  + 'metadata traffic to this daemon (tokens are still answered on its listener)';

export const EXTERNAL_INTERCEPTION = 'interception is external (--interception=external): no rules are installed here, and '
  + 'nothing here checks that pods\' metadata traffic is redirected to this daemon; it reports ready once cluster state is synced';

export function readiness(i: ReadinessInputs): Readiness {
  const reasons: string[] = [];
  if (i.closing) reasons.push('shutting down');
  if (i.externalInterception === true) {
    // Ready once synced: the redirect is another component's, and its own health to report.
  } else if (!i.manageIptables) {
    reasons.push(NOT_INTERCEPTING);
  } else if (i.interception === undefined) {
    reasons.push('interception rules not checked yet');
  } else if (!i.interception.rulesInstalled) {
    reasons.push(`interception rules not installed (retried every --ipt-update-interval-sec): ${i.interception.lastError ?? 'not checked yet'}`);
  } else {
    const { localnetGuard, hostNetwork, routeLocalnet } = i.interception;
    if (localnetGuard?.installed === false) {
      reasons.push(`route_localnet guard (filter chain PODID-NMI-LOCALNET) not installed, so route_localnet is not turned on: ${localnetGuard.error ?? 'not checked yet'}`);
    } else if (routeLocalnet === false) {
      // With route_localnet 0 a DNAT to 127.0.0.1 is dropped: the rules exist but intercept into nothing.
      reasons.push('net.ipv4.conf.all.route_localnet is 0 and could not be set: the DNAT to 127.0.0.1 is dropped by the kernel');
    }
    // Not ready, although pods on the pod network are intercepted and served: what
    // --intercept-host-network protects (hostNetwork pods) is not, so the startup taint stays
    // and a rollout stops here (docs/node-changes.md, "Readiness").
    if (hostNetwork?.installed === false) {
      reasons.push(`hostNetwork interception not in place (pod-network interception is, and pods are served): ${hostNetwork.error ?? 'not checked yet'}`);
    }
  }
  // Never a silent fallback to source addresses alone: pods are refused, and this says why.
  if (i.attestation !== undefined) reasons.push(i.attestation);
  if (!i.stateReady) reasons.push('cluster state not synced yet');
  if (i.listening === false) reasons.push('not listening yet: the previous daemon serves the port until this one has synced');
  return reasons.length === 0 ? { ready: true } : { ready: false, reasons };
}

/** The /readyz body. */
export function readinessText(r: Readiness): string {
  return r.ready ? 'ready\n' : `not ready: ${r.reasons.join('; ')}\n`;
}
