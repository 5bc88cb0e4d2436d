// The cgroup of a TCP client socket in the daemon's network namespace, read through sock_diag
// with `ss --cgroup` (iproute2). The kernel records the cgroup when the socket is created, so
// the answer names the process that opened the connection, whatever source address it used.
// One `ss` costs a process spawn (about 3 ms here; `bench/socket-cgroup.bench.ts` compares it
// with a /proc scan, which is far dearer), so: few at a time, a bounded queue, a hard
// timeout, and the caller keeps the answer for the life of the connection.
import { isIPv6 } from 'node:net';
import { commandRunner, type CommandRunner } from '../iptables/run-command.ts';

export type SocketCgroup =
  | { readonly kind: 'cgroup'; readonly path: string }
  /** busy: queue full; failed: ss failed or timed out; missing: no such socket; ambiguous: several. */
  | { readonly kind: 'unavailable'; readonly why: 'busy' | 'failed' | 'missing' | 'ambiguous' };

export interface SocketCgroupOptions {
  /** Commands run behind it (tests: nothing; the daemon already runs in the node's namespace). */
  commandPrefix?: readonly string[];
  maxConcurrent?: number;
  maxQueued?: number;
  timeoutMs?: number;
}

export class SocketCgroupReader {
  readonly #run: CommandRunner;
  readonly #maxConcurrent: number;
  readonly #maxQueued: number;
  readonly #queue: Array<() => void> = [];
  #active = 0;

  constructor(opts: SocketCgroupOptions = {}) {
    this.#run = commandRunner(opts.commandPrefix, opts.timeoutMs ?? 1000);
    this.#maxConcurrent = opts.maxConcurrent ?? 4;
    this.#maxQueued = opts.maxQueued ?? 128;
  }

  get pending(): number {
    return this.#active + this.#queue.length;
  }

  /** The cgroup of the socket whose local end is `ip`:`port` (the listener's remote end). */
  async lookup(ip: string, port: number): Promise<SocketCgroup> {
    if (this.#active >= this.#maxConcurrent) {
      if (this.#queue.length >= this.#maxQueued) return { kind: 'unavailable', why: 'busy' };
      await new Promise<void>((resolve) => this.#queue.push(resolve));
    } else {
      this.#active++;
    }
    try {
      const src = isIPv6(ip) ? `[${ip}]` : ip;
      const r = await this.#run('ss', ['-tHn', '--cgroup', 'state', 'connected', 'src', src, 'sport', '=', `:${port}`]);
      return parseSsCgroups(r.stdout);
    } catch {
      return { kind: 'unavailable', why: 'failed' };
    } finally {
      const next = this.#queue.shift();
      if (next !== undefined) next();
      else this.#active--;
    }
  }
}

/** The one cgroup `ss -tHn --cgroup` printed; two sockets on one source address:port in different cgroups is ambiguous. */
export function parseSsCgroups(stdout: string): SocketCgroup {
  let found: string | undefined;
  for (const line of stdout.split('\n')) {
    const at = line.indexOf(' cgroup:');
    if (at === -1) continue;
    const path = line.slice(at + ' cgroup:'.length).trimEnd();
    // ss prints unreachable:<id> when the id is not under the cgroup2 mount it found.
    if (!path.startsWith('/')) return { kind: 'unavailable', why: 'failed' };
    if (found !== undefined && found !== path) return { kind: 'unavailable', why: 'ambiguous' };
    found = path;
  }
  return found === undefined ? { kind: 'unavailable', why: 'missing' } : { kind: 'cgroup', path: found };
}
