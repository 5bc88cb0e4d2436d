// Socket attestation, the caller strategy for pod-network callers when a source address alone
// cannot be trusted (bridge CNIs, where a pod with CAP_NET_RAW can answer ARP for another
// pod's IP and send from it). The pod the IP index names must itself hold the connection:
// one of its processes (kubelet's pod cgroup under --cgroup-root, read through cgroup.procs)
// lives in a network namespace whose TCP table (`<proc-root>/<pid>/net/tcp`, `tcp6`) has an
// ESTABLISHED socket from the connection's remote address and port to the metadata address.
// A spoofer's socket lives in its own namespace, never in its victim's, so it finds nothing.
//
// Only ESTABLISHED counts: when the daemon closes a keep-alive connection first, the pod's
// socket may linger in CLOSE_WAIT, and a spoofer reusing that address and port would
// otherwise be vouched for by it. The client's socket is ESTABLISHED before its first byte
// is sent, so a real caller is always found. Only the metadata address counts as the remote
// end (see docs/attestation.md): clients call 169.254.169.254 and the DNAT happens on the
// node, after the pod's socket was made.
//
// The verdict is kept for the connection's life; a pod with no process found yet is looked
// for again within --pod-wait-ms, as a pod not yet in the index is waited for.
import { readdir, readFile, readlink } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import type { PodInfo } from '../cluster/objects.ts';
import { kubepodsRoots, podCgroupPaths } from './kubelet-cgroup.ts';
import { sourceIp } from './pod-lookup.ts';
import { fileHolds, socketNeedles, type Endpoint, type SocketNeedles } from './proc-net-tcp.ts';

/** `no_socket`: the pod's namespaces hold no such socket; `no_process`: none of the pod's processes could be read. */
export type AttestationVerdict = 'attested' | 'no_socket' | 'no_process';

export interface SocketAttestationOptions {
  /** The node's /proc (the daemon runs with hostPID: true), --proc-root. */
  procRoot: string;
  /** The node's cgroup hierarchy, --cgroup-root, and kubelet's parent in it. */
  cgroupRoot: string;
  cgroupParent: string;
  /** Where pods' sockets are connected: --metadata-ip and --metadata-port. */
  metadata: Endpoint;
  /** --pod-wait-ms: how long a pod with no readable process is looked for again. */
  waitMs: number;
  /** TCP tables read at once, all connections together (CPU, not I/O: the kernel writes them). */
  maxScans?: number;
}

/** Cgroups walked and processes tried per pod: a pod cannot make a lookup unbounded by forking. */
const MAX_CGROUPS = 64;
const MAX_PIDS = 32;
const RETRY_FIRST_MS = 20;
const RETRY_MAX_MS = 200;
const RECHECK_MS = 5_000;

interface Known {
  readonly uid: string;
  readonly verdict: Promise<AttestationVerdict>;
  /** The verdict once it is in and kept. */
  settled?: AttestationVerdict;
}

export class SocketAttestation {
  readonly #o: SocketAttestationOptions;
  readonly #byConnection = new WeakMap<Socket, Known>();
  readonly #scans: Slots;
  #problem: string | undefined = 'not checked yet';
  #checkedAt = -Infinity;
  #checking: Promise<string | undefined> | undefined;

  constructor(options: SocketAttestationOptions) {
    this.#o = options;
    this.#scans = new Slots(options.maxScans ?? 2);
  }

  /**
   * Whether `pod` holds the connection `socket`, asked once per connection (a keep-alive
   * connection is attested at its first request). A verdict of `no_process` is not kept:
   * the next request on the connection looks again.
   */
  attest(socket: Socket, pod: PodInfo, signal: AbortSignal): Promise<AttestationVerdict> {
    const known = this.#byConnection.get(socket);
    if (known !== undefined && known.uid === pod.uid) return known.verdict;
    const local = { ip: sourceIp(socket.remoteAddress), port: socket.remotePort ?? -1 };
    const verdict = this.check(local, pod.uid, signal);
    const entry: Known = { uid: pod.uid, verdict };
    this.#byConnection.set(socket, entry);
    void verdict.then((v) => {
      if (v !== 'no_process') entry.settled = v;
      else if (this.#byConnection.get(socket) === entry) this.#byConnection.delete(socket);
    }, () => {});
    return verdict;
  }

  /** The kept verdict of the connection for the pod `uid`, without waiting; undefined when `attest` would look. */
  verdictNow(socket: Socket, uid: string): AttestationVerdict | undefined {
    const known = this.#byConnection.get(socket);
    return known !== undefined && known.uid === uid ? known.settled : undefined;
  }

  /** The uncached attestation of a pod's socket from `local` to the metadata address. */
  async check(local: Endpoint, uid: string, signal: AbortSignal): Promise<AttestationVerdict> {
    const needles = socketNeedles(local, this.#o.metadata);
    if (needles === undefined) return 'no_socket';
    const deadline = performance.now() + this.#o.waitMs;
    let delay = RETRY_FIRST_MS;
    for (;;) {
      const v = await this.#scan(needles, uid);
      const left = deadline - performance.now();
      if (v !== 'no_process' || left <= 0 || signal.aborted) return v;
      await sleep(Math.min(delay, left), signal);
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  async #scan(needles: SocketNeedles, uid: string): Promise<AttestationVerdict> {
    const pids = await this.podPids(uid);
    const seen = new Set<string>();
    for (const pid of pids) {
      const proc = join(this.#o.procRoot, pid);
      let netns: string;
      try {
        netns = await readlink(join(proc, 'ns', 'net'));
      } catch {
        continue; // exited meanwhile: its siblings share its namespace
      }
      if (seen.has(netns)) continue;
      try {
        if (await this.#scans.run(() => holds(proc, needles))) return 'attested';
        seen.add(netns);
      } catch {
        // Exited between the two reads: try the next process.
      }
    }
    return seen.size === 0 ? 'no_process' : 'no_socket';
  }

  /** PIDs in the pod's cgroup and below (containers are child cgroups), in the node's PID namespace. */
  async podPids(uid: string): Promise<string[]> {
    for (const path of podCgroupPaths(uid, this.#o.cgroupParent)) {
      const dir = join(this.#o.cgroupRoot, path);
      const pids: string[] = [];
      const queue = [dir];
      let walked = 0;
      let exists = false;
      while (queue.length > 0 && walked < MAX_CGROUPS && pids.length < MAX_PIDS) {
        const d = queue.shift()!;
        walked++;
        let entries;
        try {
          entries = await readdir(d, { withFileTypes: true });
        } catch {
          continue;
        }
        exists = true;
        for (const e of entries) if (e.isDirectory()) queue.push(join(d, e.name));
        const procs = await readFile(join(d, 'cgroup.procs'), 'latin1').catch(() => '');
        // 0: a process outside the reader's PID namespace (the visibility check says so at start).
        for (const p of procs.split('\n')) if (/^[1-9][0-9]*$/.test(p) && pids.length < MAX_PIDS) pids.push(p);
      }
      // Kubelet makes one of these per pod: the first that exists is the pod's.
      if (exists) return pids;
    }
    return [];
  }

  /**
   * Why attestation cannot work on this host (said at start, and in /readyz while it lasts), or
   * undefined. Re-checked at most every few seconds: `problem` answers from the last check.
   */
  get problem(): string | undefined {
    if (this.#problem !== undefined && performance.now() - this.#checkedAt > RECHECK_MS) void this.checkVisibility();
    return this.#problem;
  }

  checkVisibility(): Promise<string | undefined> {
    this.#checking ??= visibilityProblem(this.#o).then((p) => {
      this.#problem = p;
      this.#checkedAt = performance.now();
      this.#checking = undefined;
      return p;
    });
    return this.#checking;
  }
}

async function holds(proc: string, needles: SocketNeedles): Promise<boolean> {
  if (needles.tcp !== undefined && await fileHolds(join(proc, 'net', 'tcp'), needles.tcp)) return true;
  return needles.tcp6 !== undefined && await fileHolds(join(proc, 'net', 'tcp6'), needles.tcp6);
}

/**
 * What the host does not let the daemon see: the node's TCP tables, its cgroup hierarchy, the
 * same PIDs in both (cgroup.procs names processes in the reader's PID namespace, 0 for the
 * others, so a private PID namespace sees none of the pods'), and kubelet's pod cgroups.
 */
export async function visibilityProblem(o: Pick<SocketAttestationOptions, 'procRoot' | 'cgroupRoot' | 'cgroupParent'>): Promise<string | undefined> {
  const self = join(o.procRoot, 'self');
  let pid: string;
  let cgroup: string;
  try {
    pid = await readlink(self);
    await readFile(join(self, 'net', 'tcp'));
    const line = (await readFile(join(self, 'cgroup'), 'utf8')).split('\n').find((l) => l.startsWith('0::'));
    if (line === undefined) return `socket attestation unavailable: ${join(self, 'cgroup')} names no cgroup v2 path`;
    cgroup = line.slice(3);
  } catch (err) {
    return `socket attestation unavailable: cannot read ${o.procRoot} (--proc-root): ${(err as Error).message}`;
  }
  const procs = await readFile(join(o.cgroupRoot, cgroup, 'cgroup.procs'), 'latin1').catch(() => undefined);
  if (procs === undefined) {
    return `socket attestation unavailable: ${join(o.cgroupRoot, cgroup)} does not exist: --cgroup-root is not the node's cgroup v2 hierarchy in the node's cgroup namespace`;
  }
  if (!procs.split('\n').includes(pid)) {
    return `socket attestation unavailable: ${o.procRoot} numbers processes differently from ${o.cgroupRoot}: the daemon needs the node's PID namespace (hostPID: true)`;
  }
  const roots = kubepodsRoots(o.cgroupParent);
  const found = await Promise.all([roots.systemd, roots.cgroupfs].map((r) => readdir(join(o.cgroupRoot, r)).then(() => true, () => false)));
  if (!found.includes(true)) {
    return `socket attestation unavailable: no kubelet pod cgroups (${roots.systemd} or ${roots.cgroupfs}) under ${o.cgroupRoot} (--cgroup-root, --kubepods-cgroup-parent)`;
  }
  return undefined;
}

/** At most `n` tasks at once, the others in arrival order. */
class Slots {
  readonly #n: number;
  #busy = 0;
  readonly #waiting: Array<() => void> = [];

  constructor(n: number) {
    this.#n = Math.max(1, n);
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#busy >= this.#n) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    else this.#busy++;
    try {
      return await task();
    } finally {
      const next = this.#waiting.shift();
      if (next !== undefined) next();
      else this.#busy--;
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => { clearTimeout(timer); signal.removeEventListener('abort', done); resolve(); };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
