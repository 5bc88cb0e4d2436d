// Runs one external command (iptables, conntrack, sysctl) without a shell, optionally behind a
// prefix such as `ip netns exec <ns>` so that tests act inside their own network namespace.
import { execFile } from 'node:child_process';

export interface CommandResult {
  stdout: string;
  stderr: string;
  /** Exit status; null when the process could not be started or was killed. */
  code: number | null;
}

export class CommandError extends Error {
  override name = 'CommandError';
  readonly argv: readonly string[];
  readonly result: CommandResult;
  constructor(argv: readonly string[], result: CommandResult, reason: string) {
    const detail = result.stderr.trim() || result.stdout.trim();
    super(`${argv.join(' ')}: ${reason}${detail ? `: ${detail}` : ''}`);
    this.argv = argv;
    this.result = result;
  }
}

export interface RunOptions {
  /** Written to the command's stdin (iptables-restore). */
  input?: string;
  /** Exit codes that are not failures (conntrack -D exits 1 when nothing matched). */
  okCodes?: readonly number[];
}

export type CommandRunner = (cmd: string, args: readonly string[], opts?: RunOptions) => Promise<CommandResult>;

// iptables waits up to 5 s for the xtables lock (-w 5); the timeout leaves room for that
// plus a slow nft transaction on a node with a large kube-proxy ruleset.
const DEFAULT_TIMEOUT_MS = 15_000;
const MAX_OUTPUT = 16 * 1024 * 1024;

export function commandRunner(prefix: readonly string[] = [], timeoutMs = DEFAULT_TIMEOUT_MS): CommandRunner {
  return (cmd, args, opts = {}) => new Promise((resolve, reject) => {
    const argv = [...prefix, cmd, ...args];
    const [file, ...rest] = argv as [string, ...string[]];
    const child = execFile(file, rest, {
      timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT, encoding: 'utf8',
      // LC_ALL=C keeps messages stable for the logs whatever the node's locale.
      env: { ...process.env, LC_ALL: 'C' },
    }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      const result: CommandResult = { stdout, stderr, code };
      if (code === 0 || (code !== null && opts.okCodes?.includes(code))) return resolve(result);
      const reason = err?.killed ? `killed after ${timeoutMs} ms`
        : code === null ? `could not run (${String((err as NodeJS.ErrnoException | null)?.code ?? err?.message)})`
        : `exit ${code}`;
      reject(new CommandError(argv, result, reason));
    });
    // A command that exits before reading its stdin makes the write fail with EPIPE;
    // the exit status reported above is the error that matters.
    child.stdin?.on('error', () => {});
    child.stdin?.end(opts.input ?? '');
  });
}
