// The rules NMI installs, kept byte for byte (as `iptables -S` prints them) so that a node
// migrating from aad-pod-identity finds the same chain, and the pure logic that compares
// what is installed with what should be (by meaning: rule-meaning.ts) and writes the
// iptables-restore input that fixes it.
import { ruleMeaning, ruleWords, sameRules } from './rule-meaning.ts';

export const CHAIN = 'aad-metadata';
export const JUMP_RULE = `-A PREROUTING -j ${CHAIN}`;

export interface RuleTarget {
  metadataIp: string;
  metadataPort: number;
  targetIp: string;
  targetPort: number;
}

/** The chain's rules in `iptables -t nat -S aad-metadata` form, without the `-N` line. */
export function desiredChainRules(t: RuleTarget): string[] {
  return [
    `-A ${CHAIN} ! -s 127.0.0.1/32 -d ${t.metadataIp}/32 -p tcp -m tcp --dport ${t.metadataPort} -j DNAT --to-destination ${t.targetIp}:${t.targetPort}`,
    `-A ${CHAIN} -j RETURN`,
  ];
}

export interface NatState {
  /** `-A aad-metadata …` lines in order; null when the chain does not exist. */
  chain: string[] | null;
  /** `-A PREROUTING …` lines in order. */
  prerouting: string[];
}

/** The `-A <chain>` lines of an `iptables -S` listing, as printed (quoted comments keep their spacing). */
export function appendLines(listing: string, chain: string): string[] {
  const out: string[] = [];
  for (const raw of listing.split('\n')) {
    const line = raw.trim();
    if (line.startsWith(`-A ${chain} `)) out.push(line);
  }
  return out;
}

/** Whether a PREROUTING rule sends packets to our chain (with or without extra matches). */
export function isJump(line: string, chain: string = CHAIN): boolean {
  const tokens = ruleWords(line);
  for (let i = 0; i < tokens.length - 1; i++) {
    if ((tokens[i] === '-j' || tokens[i] === '-g' || tokens[i] === '--jump' || tokens[i] === '--goto') && tokens[i + 1] === chain) return true;
  }
  return false;
}

export type Drift = 'chain_missing' | 'chain_changed' | 'jump_missing' | 'jump_duplicate' | 'jump_misplaced';

export type Table = 'nat' | 'filter';

export interface RepairPlan {
  drift: Drift[];
  /** Input for `iptables-restore --noflush`; null when nothing needs fixing. */
  restoreInput: string | null;
}

// One iptables-restore transaction rewrites the chain and the jump atomically: the
// `:aad-metadata` line flushes the chain in the same commit that refills it, and duplicate
// jumps are removed in the same commit that inserts the one at position 1, so no packet ever
// sees an empty chain or a missing jump (a "flush, then add" sequence would fail open).
export function planRepair(state: NatState, desired: readonly string[]): RepairPlan {
  const plan = planChain({ chain: CHAIN, hook: 'PREROUTING' }, state.chain, state.prerouting, desired);
  return { drift: plan.drift, restoreInput: plan.lines.length === 0 ? null : restoreInput(plan.lines) };
}

/** A chain of ours and the built-in chain that jumps to it at position 1. */
export interface ChainSpec {
  chain: string;
  hook: 'PREROUTING' | 'OUTPUT' | 'INPUT';
}

/** The restore lines (without `*nat`/`COMMIT`) that put `desired` in `spec.chain` and its jump first in `spec.hook`. */
export function planChain(spec: ChainSpec, chain: string[] | null, hook: string[], desired: readonly string[]): { drift: Drift[]; lines: string[] } {
  const drift: Drift[] = [];
  const rewriteChain = chain === null || !sameRules(chain, desired);
  if (chain === null) drift.push('chain_missing');
  else if (rewriteChain) drift.push('chain_changed');

  const jumps = hook.filter((line) => isJump(line, spec.chain));
  const jumpOk = jumps.length === 1 && hook[0] !== undefined && ruleMeaning(hook[0]) === ruleMeaning(`-A ${spec.hook} -j ${spec.chain}`);
  if (jumps.length === 0) drift.push('jump_missing');
  else if (jumps.length > 1) drift.push('jump_duplicate');
  else if (!jumpOk) drift.push('jump_misplaced');

  const lines: string[] = [];
  if (rewriteChain) lines.push(`:${spec.chain} - [0:0]`, ...desired);
  if (!jumpOk) {
    for (const jump of jumps) lines.push(`-D${jump.slice(2)}`);
    lines.push(`-I ${spec.hook} 1 -j ${spec.chain}`);
  }
  return { drift, lines };
}

export function restoreInput(lines: readonly string[], table: Table = 'nat'): string {
  return [`*${table}`, ...lines, 'COMMIT', ''].join('\n');
}
