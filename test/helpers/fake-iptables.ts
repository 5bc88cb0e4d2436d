// An in-process stand-in for iptables, sysctl and conntrack, answering the commands
// InterceptionRules runs from a small model of the nat table. It lets a test stop a command
// half-way (hold) to reach interleavings that real iptables only hits by chance, and it runs
// nothing on the machine: no namespace, no root needed.
import { CHAIN, desiredChainRules, JUMP_RULE } from '../../src/iptables/rules.ts';
import { GUARD_CHAIN } from '../../src/iptables/localnet-guard.ts';
import type { RuleTarget } from '../../src/iptables/rules.ts';
import { CommandError } from '../../src/iptables/run-command.ts';
import type { CommandResult, CommandRunner, RunOptions } from '../../src/iptables/run-command.ts';

export interface FakeCall {
  argv: string[];
  input?: string;
  /** Calls made so far, this one included: a clock to say what happened after what. */
  seq: number;
}

export interface Hold {
  /** Resolves when a matching command has started and is waiting. */
  reached: Promise<FakeCall>;
  /** Lets it go on; its answer is computed from the state at that moment. */
  release(): void;
}

/** Whether a call writes (rules, sysctl, conntrack) rather than reads. */
export function isWrite(call: FakeCall): boolean {
  const [cmd, ...args] = call.argv;
  return cmd!.endsWith('-restore') || (cmd === 'sysctl' && args.includes('-w')) || cmd === 'conntrack';
}

export class FakeIptables {
  /** `-A aad-metadata …` lines; null: no chain. */
  chain: string[] | null = null;
  prerouting: string[] = [];
  /** filter: `-A PODID-NMI-LOCALNET …` lines as last written; null: no chain. */
  guard: string[] | null = null;
  input: string[] = [];
  /** A restore that touches the filter table fails (e.g. no conntrack match on the node). */
  failFilter = false;
  /** A restore that writes the hostNetwork chain fails (e.g. the cgroup match refuses a path). */
  failHost = false;
  routeLocalnet = '0';
  readonly calls: FakeCall[] = [];
  readonly #desired: string[];
  readonly #holds: { match: (argv: string[]) => boolean; hold: Hold; gate: Promise<void>; hit: (c: FakeCall) => void }[] = [];

  constructor(target: RuleTarget) {
    this.#desired = desiredChainRules(target);
  }

  /** The rules as InterceptionRules installs them. */
  get installed(): boolean {
    return JSON.stringify(this.chain) === JSON.stringify(this.#desired) && this.prerouting[0] === JUMP_RULE;
  }

  /** Drift: someone deleted the chain and its jump. */
  wipe(): void {
    this.chain = null;
    this.prerouting = this.prerouting.filter((l) => l !== JUMP_RULE);
  }

  /** The next command whose argv matches waits until released. */
  hold(match: (argv: string[]) => boolean): Hold {
    let release!: () => void;
    let hit!: (c: FakeCall) => void;
    const gate = new Promise<void>((r) => { release = r; });
    const reached = new Promise<FakeCall>((r) => { hit = r; });
    const hold: Hold = { reached, release };
    this.#holds.push({ match, hold, gate, hit });
    return hold;
  }

  readonly run: CommandRunner = async (cmd: string, args: readonly string[], opts: RunOptions = {}) => {
    const argv = [cmd, ...args];
    const call: FakeCall = { argv, input: opts.input, seq: this.calls.length + 1 };
    this.calls.push(call);
    const i = this.#holds.findIndex((h) => h.match(argv));
    if (i >= 0) {
      const [h] = this.#holds.splice(i, 1);
      h!.hit(call);
      await h!.gate;
    }
    return this.#answer(argv, opts);
  };

  #answer(argv: string[], opts: RunOptions): CommandResult {
    const ok = (stdout = '', stderr = ''): CommandResult => ({ stdout, stderr, code: 0 });
    const [cmd, ...args] = argv;
    if (cmd === 'sysctl') {
      const w = args.indexOf('-w');
      if (w !== -1) this.routeLocalnet = args[w + 1]!.split('=')[1]!;
      return ok(`${this.routeLocalnet}\n`);
    }
    if (cmd === 'conntrack') return ok('', 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n');
    if (cmd!.endsWith('-restore')) {
      // Whatever the plan, its result is the desired layout (the real planner is tested
      // against real iptables in iptables.test.ts).
      if (!opts.input?.includes('COMMIT')) throw new CommandError(argv, { stdout: '', stderr: 'no COMMIT', code: 2 }, 'exit 2');
      const [filter, nat] = sections(opts.input);
      if (this.failHost && opts.input.includes(':aad-metadata-host ')) {
        throw new CommandError(argv, { stdout: '', stderr: 'iptables-restore: line 3 failed: cgroup: No such file or directory', code: 1 }, 'exit 1');
      }
      if (filter !== undefined) {
        if (this.failFilter) throw new CommandError(argv, { stdout: '', stderr: 'Couldn\'t load match `conntrack\'', code: 2 }, 'exit 2');
        const jump = `-A INPUT -j ${GUARD_CHAIN}`;
        if (filter.includes(`-X ${GUARD_CHAIN}`)) {
          this.guard = null;
          this.input = this.input.filter((l) => l !== jump);
        } else {
          if (filter.includes(`:${GUARD_CHAIN} - [0:0]`)) this.guard = filter.filter((l) => l.startsWith(`-A ${GUARD_CHAIN} `));
          if (filter.includes(`-I INPUT 1 -j ${GUARD_CHAIN}`)) this.input = [jump, ...this.input.filter((l) => l !== jump)];
        }
      }
      if (nat !== undefined) {
        if (nat.includes(`-X ${CHAIN}`)) {
          this.chain = null;
          this.prerouting = this.prerouting.filter((l) => l !== JUMP_RULE);
        } else {
          if (nat.includes(`:${CHAIN} - [0:0]`)) this.chain = [...this.#desired];
          this.prerouting = [JUMP_RULE, ...this.prerouting.filter((l) => l !== JUMP_RULE)];
        }
      }
      return ok();
    }
    const listed = args[args.indexOf('-S') + 1];
    if (listed === 'PREROUTING') return ok(['-P PREROUTING ACCEPT', ...this.prerouting, ''].join('\n'));
    if (listed === 'OUTPUT') return ok('-P OUTPUT ACCEPT\n');
    if (listed === 'aad-metadata-host') {
      throw new CommandError(argv, { stdout: '', stderr: 'iptables: chain \'aad-metadata-host\' does not exist', code: 1 }, 'exit 1');
    }
    if (listed === 'INPUT') return ok(['-P INPUT ACCEPT', ...this.input, ''].join('\n'));
    if (listed === GUARD_CHAIN) {
      if (this.guard === null) {
        throw new CommandError(argv, { stdout: '', stderr: `iptables: chain '${GUARD_CHAIN}' does not exist`, code: 1 }, 'exit 1');
      }
      return ok([`-N ${GUARD_CHAIN}`, ...this.guard, ''].join('\n'));
    }
    if (listed === CHAIN) {
      if (this.chain === null) {
        throw new CommandError(argv, { stdout: '', stderr: `iptables: chain '${CHAIN}' does not exist`, code: 1 }, 'exit 1');
      }
      return ok([`-N ${CHAIN}`, ...this.chain, ''].join('\n'));
    }
    throw new CommandError(argv, { stdout: '', stderr: 'unexpected command in the fake', code: 2 }, 'exit 2');
  }
}

/** `iptables -S PREROUTING`: the first read of every pass. */
export const firstRead = (argv: string[]): boolean => argv.includes('-S') && argv.includes('PREROUTING');

/** The lines of the `*filter` and `*nat` sections of an iptables-restore input. */
function sections(input: string): [string[] | undefined, string[] | undefined] {
  const out: Record<string, string[]> = {};
  let table: string | undefined;
  for (const line of input.split('\n')) {
    if (line.startsWith('*')) out[(table = line.slice(1))] = [];
    else if (line === 'COMMIT') table = undefined;
    else if (table !== undefined) out[table]!.push(line);
  }
  return [out.filter, out.nat];
}
