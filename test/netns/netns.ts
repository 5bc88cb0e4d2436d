// Network-namespace plumbing for tests that need real packets: a "node" namespace and "pod"
// namespaces wired to it by veth pairs, the way a CNI plugin with per-pod /32 routes does it.
// Nothing here touches the root namespace: every address, route and rule lives in namespaces
// these helpers created, and they are deleted on destroy(), on test teardown, and as a last
// resort when the test process exits.
import { execFile, execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number | null;
}

export interface ExecOptions {
  input?: string;
  /** Resolve instead of rejecting on a non-zero exit. */
  allowFail?: boolean;
  timeoutMs?: number;
  env?: Record<string, string>;
}

/** Anything with tap's `teardown`, so a namespace dies with the test that made it. */
export interface TeardownHost {
  teardown(fn: () => unknown): void;
}

const NS_PREFIX = 'podid-test-';

/** The pinned Node 24 (type stripping), to run .ts or -e scripts inside a namespace. */
export const nodeBinary: string = (() => {
  try {
    return realpathSync(fileURLToPath(new URL('../../node_modules/.bin/node', import.meta.url)));
  } catch {
    return process.execPath;
  }
})();

function run(file: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, {
      encoding: 'utf8', timeout: opts.timeoutMs ?? 20_000, killSignal: 'SIGKILL',
      env: { ...process.env, ...opts.env },
    }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      if (code === 0 || opts.allowFail) return resolve({ stdout, stderr, code });
      reject(new Error(`${[file, ...args].join(' ')} failed (${code ?? err?.message}): ${stderr.trim() || stdout.trim()}`));
    });
    child.stdin?.on('error', () => {});
    child.stdin?.end(opts.input ?? '');
  });
}

/** Why these tests cannot run here, or null when they can (root and `ip netns`). */
export async function netnsUnavailable(): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  try {
    await run('ip', ['netns', 'list']);
  } catch (err) {
    return `ip netns is unavailable: ${(err as Error).message}`;
  }
  return null;
}

/** Runs a command inside a namespace (no shell). Rejects on a non-zero exit unless allowFail. */
export function execIn(ns: string, cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
  return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

/** `ip -n <ns> …`: network configuration of one namespace. */
function ipIn(ns: string, ...args: string[]): Promise<ExecResult> {
  return run('ip', ['-n', ns, ...args]);
}

export class NsProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  #stdout = '';
  #stderr = '';
  #waiters = new Set<() => void>();

  constructor(child: ChildProcess) {
    this.child = child;
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => { this.#stdout += chunk; this.#notify(); });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { this.#stderr += chunk; this.#notify(); });
    this.exited = new Promise((resolve) => {
      child.on('error', () => { resolve(null); this.#notify(); });
      child.on('exit', (code) => { resolve(code); this.#notify(); });
    });
  }

  get stdout(): string { return this.#stdout; }
  get stderr(): string { return this.#stderr; }
  get running(): boolean { return this.child.exitCode === null && this.child.signalCode === null; }

  #notify(): void {
    for (const waiter of this.#waiters) waiter();
  }

  /** Resolves with the first match of `pattern` in stdout; rejects on exit or timeout. */
  waitForOutput(pattern: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const done = (fn: () => void) => { clearTimeout(timer); this.#waiters.delete(check); fn(); };
      const check = () => {
        const match = pattern.exec(this.#stdout);
        if (match) return done(() => resolve(match));
        if (!this.running) done(() => reject(new Error(`process exited before printing ${pattern}: ${this.#stderr.trim()}`)));
      };
      const timer = setTimeout(() => done(() => reject(new Error(`timed out waiting for ${pattern}; stderr: ${this.#stderr.trim()}`))), timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  async kill(): Promise<void> {
    if (this.running) this.child.kill('SIGKILL');
    await this.exited;
  }
}

// Everything still alive, for the exit-time sweep (a test that crashes or is killed by tap's
// timeout never reaches its teardown).
const liveNamespaces = new Set<string>();
const liveProcesses = new Set<NsProcess>();
let exitHookInstalled = false;

function sweepSync(): void {
  for (const proc of liveProcesses) {
    try { proc.child.kill('SIGKILL'); } catch { /* already gone */ }
  }
  for (const ns of liveNamespaces) {
    try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' }); } catch { /* already gone */ }
  }
  liveNamespaces.clear();
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', sweepSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      sweepSync();
      process.kill(process.pid, signal);
    });
  }
}

/** Starts a long-running process inside a namespace; killed by destroy() or at exit. */
export function spawnIn(ns: string, cmd: string, args: readonly string[] = [], env: Record<string, string> = {}): NsProcess {
  installExitHook();
  // `ip netns exec` execs the command in place, so killing the child kills the command.
  const proc = new NsProcess(spawn('ip', ['netns', 'exec', ns, cmd, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env },
  }));
  liveProcesses.add(proc);
  void proc.exited.then(() => liveProcesses.delete(proc));
  return proc;
}

async function addNamespace(name: string): Promise<void> {
  installExitHook();
  await run('ip', ['netns', 'add', name]);
  liveNamespaces.add(name);
  await ipIn(name, 'link', 'set', 'lo', 'up');
}

async function deleteNamespace(name: string): Promise<void> {
  if (!liveNamespaces.has(name)) return;
  await run('ip', ['netns', 'del', name], { allowFail: true });
  liveNamespaces.delete(name);
}

export interface PodNs {
  /** Short name given to addPod. */
  name: string;
  /** Namespace name. */
  ns: string;
  ip: string;
  /** The veth end on the node side. */
  hostVeth: string;
  exec(cmd: string, args?: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  spawn(cmd: string, args?: readonly string[], env?: Record<string, string>): NsProcess;
}

export interface CreateNodeOptions {
  /** Registers destroy() as the test's teardown. */
  t?: TeardownHost;
  /** Node address the pods route through, put on the node's lo (default 10.250.0.1). */
  gatewayIp?: string;
}

export class NetnsNode {
  readonly ns: string;
  readonly gatewayIp: string;
  readonly pods = new Map<string, PodNs>();
  readonly #processes = new Set<NsProcess>();
  /** Namespaces to delete, pods first; registered before they are configured. */
  readonly #owned: string[] = [];
  #destroyed = false;

  constructor(ns: string, gatewayIp: string) {
    this.ns = ns;
    this.gatewayIp = gatewayIp;
  }

  /** `ip netns exec <node>`: the commandPrefix that puts a command in this node. */
  get prefix(): string[] {
    return ['ip', 'netns', 'exec', this.ns];
  }

  exec(cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    return execIn(this.ns, cmd, args, opts);
  }

  spawn(cmd: string, args: readonly string[] = [], env: Record<string, string> = {}): NsProcess {
    return this.#track(spawnIn(this.ns, cmd, args, env));
  }

  /** Adds an address to the node's lo, e.g. '169.254.169.254/32' (no `dummy` links here). */
  async addLoopbackAddress(cidr: string): Promise<void> {
    await ipIn(this.ns, 'addr', 'add', cidr, 'dev', 'lo');
  }

  /** Sets a sysctl inside the node namespace, e.g. ('net.ipv4.conf.all.route_localnet', '1'). */
  async sysctl(key: string, value: string): Promise<void> {
    await this.exec('sysctl', ['-w', `${key}=${value}`]);
  }

  /**
   * A pod namespace with `ip`/32 on its eth0 and a default route via the node's gateway
   * address; the node routes `ip`/32 back over the veth (no bridge, no NAT), so the node sees
   * the pod's own source address, as on a real node.
   */
  async addPod(name: string, ip: string): Promise<PodNs> {
    if (!/^[a-z0-9-]{1,20}$/.test(name)) throw new Error(`pod name ${JSON.stringify(name)}: use [a-z0-9-]{1,20}`);
    if (this.pods.has(name)) throw new Error(`pod ${name} already exists`);
    const ns = `${this.ns}-${name}`;
    // Interface names are limited to 15 bytes.
    const hostVeth = `pv${randomBytes(4).toString('hex')}`;
    this.#owned.unshift(ns);
    await addNamespace(ns);
    await ipIn(this.ns, 'link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    await ipIn(this.ns, 'link', 'set', hostVeth, 'up');
    await ipIn(this.ns, 'route', 'add', `${ip}/32`, 'dev', hostVeth);
    await ipIn(ns, 'addr', 'add', `${ip}/32`, 'dev', 'eth0');
    await ipIn(ns, 'link', 'set', 'eth0', 'up');
    await ipIn(ns, 'route', 'add', this.gatewayIp, 'dev', 'eth0', 'scope', 'link');
    await ipIn(ns, 'route', 'add', 'default', 'via', this.gatewayIp, 'dev', 'eth0');
    const pod: PodNs = {
      name, ns, ip, hostVeth,
      exec: (cmd, args = [], opts = {}) => execIn(ns, cmd, args, opts),
      spawn: (cmd, args = [], env = {}) => this.#track(spawnIn(ns, cmd, args, env)),
    };
    this.pods.set(name, pod);
    return pod;
  }

  /**
   * A pod on a bridge, as kubenet, flannel and the bridge CNI wire them: the node's `bridge`
   * (made on first use, holding `gatewayCidr`) and the pod's eth0 in one L2 segment, the pod's
   * `ip` in the bridge's subnet, its default route via the bridge's address. On such a segment
   * the node finds a pod by ARP, which is what a spoofing pod poisons.
   */
  async addBridgePod(name: string, ip: string, bridge: { name: string; gatewayCidr: string }): Promise<PodNs & { mac: string }> {
    if (!/^[a-z0-9-]{1,20}$/.test(name)) throw new Error(`pod name ${JSON.stringify(name)}: use [a-z0-9-]{1,20}`);
    if (this.pods.has(name)) throw new Error(`pod ${name} already exists`);
    const [gateway, prefix] = bridge.gatewayCidr.split('/');
    if ((await ipIn(this.ns, 'link', 'show', bridge.name).catch(() => undefined)) === undefined) {
      await ipIn(this.ns, 'link', 'add', bridge.name, 'type', 'bridge');
      await ipIn(this.ns, 'addr', 'add', bridge.gatewayCidr, 'dev', bridge.name);
      await ipIn(this.ns, 'link', 'set', bridge.name, 'up');
    }
    const ns = `${this.ns}-${name}`;
    const hostVeth = `pv${randomBytes(4).toString('hex')}`;
    this.#owned.unshift(ns);
    await addNamespace(ns);
    await ipIn(this.ns, 'link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    await ipIn(this.ns, 'link', 'set', hostVeth, 'master', bridge.name);
    await ipIn(this.ns, 'link', 'set', hostVeth, 'up');
    await ipIn(ns, 'addr', 'add', `${ip}/${prefix}`, 'dev', 'eth0');
    await ipIn(ns, 'link', 'set', 'eth0', 'up');
    await ipIn(ns, 'route', 'add', 'default', 'via', gateway!, 'dev', 'eth0');
    const mac = JSON.parse((await ipIn(ns, '-j', 'link', 'show', 'eth0')).stdout)[0].address as string;
    const pod = {
      name, ns, ip, hostVeth, mac,
      exec: (cmd: string, args: readonly string[] = [], opts: ExecOptions = {}) => execIn(ns, cmd, args, opts),
      spawn: (cmd: string, args: readonly string[] = [], env: Record<string, string> = {}) => this.#track(spawnIn(ns, cmd, args, env)),
    };
    this.pods.set(name, pod);
    return pod;
  }

  /** Kills the processes started here, then deletes the pod and node namespaces. Idempotent. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    await Promise.all([...this.#processes].map((proc) => proc.kill()));
    for (const ns of this.#owned) await deleteNamespace(ns);
  }

  /** Called once by createNode. */
  async init(): Promise<void> {
    this.#owned.push(this.ns);
    await addNamespace(this.ns);
    await this.addLoopbackAddress(`${this.gatewayIp}/32`);
  }

  #track(proc: NsProcess): NsProcess {
    this.#processes.add(proc);
    void proc.exited.then(() => this.#processes.delete(proc));
    return proc;
  }
}

export async function createNode(opts: CreateNodeOptions = {}): Promise<NetnsNode> {
  const node = new NetnsNode(`${NS_PREFIX}${randomBytes(4).toString('hex')}`, opts.gatewayIp ?? '10.250.0.1');
  opts.t?.teardown(() => node.destroy());
  try {
    await node.init();
  } catch (err) {
    await node.destroy();
    throw err;
  }
  return node;
}
