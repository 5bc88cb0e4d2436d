// Reads the chains the daemon keeps, as `iptables -S` prints them, for the check loop and for
// cleanup-iptables alike.
import type { BackendBinaries } from './backend.ts';
import { HOST_CHAIN } from './host-rules.ts';
import { GUARD_CHAIN } from './localnet-guard.ts';
import { appendLines, CHAIN } from './rules.ts';
import type { NatState, Table } from './rules.ts';
import { CommandError } from './run-command.ts';
import type { CommandRunner } from './run-command.ts';

// Bounded wait for the xtables lock that kube-proxy and kubelet share with us.
export const WAIT = ['-w', '5'];

export async function readNatState(run: CommandRunner, bin: BackendBinaries): Promise<NatState> {
  const prerouting = appendLines((await run(bin.iptables, [...WAIT, '-t', 'nat', '-S', 'PREROUTING'])).stdout, 'PREROUTING');
  return { chain: await readChain(run, bin, CHAIN), prerouting };
}

/** The hostNetwork chain and OUTPUT, in the same shape (`prerouting` holds OUTPUT's lines). */
export async function readHostState(run: CommandRunner, bin: BackendBinaries): Promise<NatState> {
  const output = appendLines((await run(bin.iptables, [...WAIT, '-t', 'nat', '-S', 'OUTPUT'])).stdout, 'OUTPUT');
  return { chain: await readChain(run, bin, HOST_CHAIN), prerouting: output };
}

/** The guard chain and filter INPUT, in the same shape (`prerouting` holds INPUT's lines). */
export async function readGuardState(run: CommandRunner, bin: BackendBinaries): Promise<NatState> {
  const input = appendLines((await run(bin.iptables, [...WAIT, '-t', 'filter', '-S', 'INPUT'])).stdout, 'INPUT');
  return { chain: await readChain(run, bin, GUARD_CHAIN, 'filter'), prerouting: input };
}

export async function readChain(run: CommandRunner, bin: BackendBinaries, chain: string, table: Table = 'nat'): Promise<string[] | null> {
  try {
    const listing = await run(bin.iptables, [...WAIT, '-t', table, '-S', chain]);
    return appendLines(listing.stdout, chain);
  } catch (err) {
    // Exit 1 is how both flavours report a missing chain (nft's message even says
    // "incompatible"). Anything else that is wrong makes the rewrite fail and is reported there.
    if (err instanceof CommandError && err.result.code === 1) return null;
    throw err;
  }
}
