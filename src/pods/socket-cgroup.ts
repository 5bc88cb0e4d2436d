// The cgroup of a TCP client socket in the daemon's network namespace, read through sock_diag
// with `ss --cgroup` (iproute2). The kernel records the cgroup when the socket is created, so
// the answer names the process that opened the connection, whatever source address it used.
// A process spawn is the cost (a few ms on an idle node, far more on a loaded one; see
// bench/host-network.bench.ts, which also shows a /proc scan is no cheaper), so lookups are
// batched: one `ss` at a time answers every lookup that was waiting when it started, the
// waiting room is bounded (beyond it: busy), each run has a hard timeout, and callers keep
// the answer for the life of the connection.
import { commandRunner, type CommandRunner } from '../iptables/run-command.ts';

export type SocketCgroup =
  | { readonly kind: 'cgroup'; readonly path: string }
  /** busy: waiting room full; failed: ss failed or timed out; missing: no such socket; ambiguous: several. */
  | { readonly kind: 'unavailable'; readonly why: 'busy' | 'failed' | 'missing' | 'ambiguous' };

export interface SocketCgroupOptions {
  /** Put in front of `ss` (tests: a failing or slow wrapper). */
  commandPrefix?: readonly string[];
  /** Lookups waiting for the next batch; more are refused as busy. */
  maxQueued?: number;
  timeoutMs?: number;
}

interface Waiting {
  readonly key: string;
  readonly port: number;
  readonly resolve: (r: SocketCgroup) => void;
}

const FAILED: SocketCgroup = { kind: 'unavailable', why: 'failed' };
const MISSING: SocketCgroup = { kind: 'unavailable', why: 'missing' };

export class SocketCgroupReader {
  readonly #run: CommandRunner;
  readonly #maxQueued: number;
  #waiting: Waiting[] = [];
  #running = 0;

  constructor(opts: SocketCgroupOptions = {}) {
    this.#run = commandRunner(opts.commandPrefix, opts.timeoutMs ?? 1000);
    this.#maxQueued = opts.maxQueued ?? 256;
  }

  /** Lookups waiting or in the running batch. */
  get pending(): number {
    return this.#running + this.#waiting.length;
  }

  /** The cgroup of the socket whose local end is `ip`:`port` (the listener's remote end). */
  lookup(ip: string, port: number): Promise<SocketCgroup> {
    if (this.#waiting.length >= this.#maxQueued) return Promise.resolve({ kind: 'unavailable', why: 'busy' });
    return new Promise((resolve) => {
      this.#waiting.push({ key: endpointKey(ip, port), port, resolve });
      if (this.#running === 0) this.#next();
    });
  }

  #next(): void {
    const batch = this.#waiting;
    if (batch.length === 0) return;
    this.#waiting = [];
    this.#running = batch.length;
    const ports = [...new Set(batch.map((w) => w.port))];
    const filter = ['(', ...ports.flatMap((p, i) => (i === 0 ? ['sport', '=', `:${p}`] : ['or', 'sport', '=', `:${p}`])), ')'];
    this.#run('ss', ['-tHn', '--cgroup', 'state', 'connected', ...filter]).then(
      (r) => {
        const found = parseSsCgroups(r.stdout);
        for (const w of batch) w.resolve(found.get(w.key) ?? MISSING);
      },
      () => { for (const w of batch) w.resolve(FAILED); },
    ).finally(() => {
      this.#running = 0;
      this.#next();
    });
  }
}

/** `ip:port` as the listener sees its peer (IPv4-mapped IPv6 folded to IPv4). */
export function endpointKey(ip: string, port: number): string {
  return `${ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip}:${port}`;
}

/**
 * The cgroup of each local endpoint in `ss -tHn --cgroup` output. Two sockets on one local
 * address and port in different cgroups are ambiguous; a path ss could not resolve
 * (`unreachable:<id>`) is a failure.
 */
export function parseSsCgroups(stdout: string): Map<string, SocketCgroup> {
  const out = new Map<string, SocketCgroup>();
  for (const line of stdout.split('\n')) {
    const tokens = line.trim().split(/\s+/);
    const at = tokens.findIndex((tok) => tok.startsWith('cgroup:'));
    if (at < 2) continue;
    const local = parseEndpoint(tokens[at - 2]!);
    if (local === undefined) continue;
    // Paths are printed raw; a cgroup name with spaces continues past this token.
    const path = line.slice(line.indexOf(' cgroup:') + ' cgroup:'.length).trimEnd();
    const key = endpointKey(local.ip, local.port);
    const seen = out.get(key);
    const now: SocketCgroup = path.startsWith('/') ? { kind: 'cgroup', path } : FAILED;
    if (seen === undefined) out.set(key, now);
    else if (seen.kind !== 'cgroup' || now.kind !== 'cgroup' || seen.path !== now.path) out.set(key, { kind: 'unavailable', why: 'ambiguous' });
  }
  return out;
}

function parseEndpoint(text: string): { ip: string; port: number } | undefined {
  const colon = text.lastIndexOf(':');
  if (colon <= 0) return undefined;
  const port = Number(text.slice(colon + 1));
  let ip = text.slice(0, colon);
  if (ip.startsWith('[') && ip.endsWith(']')) ip = ip.slice(1, -1);
  // ss appends %iface to addresses bound to a device.
  const pct = ip.indexOf('%');
  if (pct !== -1) ip = ip.slice(0, pct);
  return Number.isInteger(port) ? { ip, port } : undefined;
}
