// An in-process stand-in for iptables, sysctl and conntrack, answering the commands
// InterceptionRules runs from a small model of the nat table. It lets a test stop a command
// half-way (hold) to reach interleavings that real iptables only hits by chance, and it runs
// nothing on the machine: no namespace, no root needed.
import { CHAIN, desiredChainRules, JUMP_RULE } from '../../src/iptables/rules.ts';
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
      if (args.includes('-w')) this.routeLocalnet = '1';
      return ok(`${this.routeLocalnet}\n`);
    }
    if (cmd === 'conntrack') return ok('', 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n');
    if (cmd!.endsWith('-restore')) {
      // Whatever the plan, its result is the desired layout (the real planner is tested
      // against real iptables in iptables.test.ts).
      if (!opts.input?.includes('COMMIT')) throw new CommandError(argv, { stdout: '', stderr: 'no COMMIT', code: 2 }, 'exit 2');
      if (opts.input.includes(`:${CHAIN} `)) this.chain = [...this.#desired];
      this.prerouting = [JUMP_RULE, ...this.prerouting.filter((l) => l !== JUMP_RULE)];
      return ok();
    }
    const listed = args[args.indexOf('-S') + 1];
    if (listed === 'PREROUTING') return ok(['-P PREROUTING ACCEPT', ...this.prerouting, ''].join('\n'));
    if (listed === 'OUTPUT') return ok('-P OUTPUT ACCEPT\n');
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
