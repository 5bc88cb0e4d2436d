// Picks the iptables flavour the node already uses. Rules added with the other flavour would
// live in a different kernel subsystem, so a "position 1" jump would not run before
// kube-proxy's rules. Same decision as kube-proxy's images (kubernetes-sigs/iptables-wrappers):
// kubelet's hint chains first, then whichever flavour holds more rules, nft by default.
import type { CommandRunner } from './run-command.ts';

export type Backend = 'nft' | 'legacy';

export interface BackendBinaries {
  iptables: string;
  restore: string;
}

export function binariesFor(backend: Backend): BackendBinaries {
  return { iptables: `iptables-${backend}`, restore: `iptables-${backend}-restore` };
}

export interface Detection {
  backend: Backend;
  reason: string;
}

const KUBELET_HINT = /^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)\b/m;

async function output(run: CommandRunner, cmd: string, args: string[]): Promise<string> {
  // Every probe is best effort, as in the wrapper: a missing binary or table counts as empty.
  try {
    return (await run(cmd, args)).stdout;
  } catch {
    return '';
  }
}

function ruleCount(save: string): number {
  let n = 0;
  for (const line of save.split('\n')) if (line.startsWith('-')) n++;
  return n;
}

export async function detectBackend(run: CommandRunner): Promise<Detection> {
  for (const cmd of ['iptables-nft-save', 'ip6tables-nft-save']) {
    if (KUBELET_HINT.test(await output(run, cmd, ['-t', 'mangle']))) {
      return { backend: 'nft', reason: `kubelet hint chain found by ${cmd}` };
    }
  }
  // No `-t mangle` for legacy: asking for a table makes the legacy kernel module create it.
  const legacy = [await output(run, 'iptables-legacy-save', []), await output(run, 'ip6tables-legacy-save', [])];
  if (legacy.some((save) => KUBELET_HINT.test(save))) {
    return { backend: 'legacy', reason: 'kubelet hint chain found by iptables-legacy-save' };
  }
  const legacyRules = legacy.reduce((n, save) => n + ruleCount(save), 0);
  const nftRules = ruleCount(await output(run, 'iptables-nft-save', [])) + ruleCount(await output(run, 'ip6tables-nft-save', []));
  return legacyRules > nftRules
    ? { backend: 'legacy', reason: `legacy holds more rules (${legacyRules} vs ${nftRules})` }
    : { backend: 'nft', reason: `nft holds at least as many rules (${nftRules} vs ${legacyRules})` };
}
