// The end-to-end world: a node namespace holding the fake API server, the IMDS emulator on
// 169.254.169.254:80 (its lo) and the daemon managing iptables in that namespace only; and one
// namespace per pod, wired to the node by veth. The test process stays in the root namespace
// and only runs commands inside these namespaces; it sends no packet itself.
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseFlags } from '../../src/config/flags.ts';
import { createNode, execIn, nodeBinary } from '../netns/netns.ts';
import type { NetnsNode, NsProcess, PodNs } from '../netns/netns.ts';
import { clusterObjects, IMDS_IDENTITIES, NODE_GATEWAY, NODE_NAME, PODS } from './cluster.ts';
import type { PodKey } from './cluster.ts';
import { LineProcess } from './line-process.ts';
import type { Json } from './line-process.ts';

const here = (path: string): string => fileURLToPath(new URL(path, import.meta.url));
const CLI = here('../../src/cli.ts');
const CLIENTS = here('./clients/');

export const PROBE_PORT = 18085;
export const METRICS_PORT = 19090;
const CLEAN_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export type Backend = 'nft' | 'legacy';

/** One request the emulator received, as imds-process printed it. */
export interface ImdsRequest {
  seq: number;
  method: string;
  url: string;
  remoteAddress: string;
  headers: Record<string, string | string[] | undefined>;
  at: number;
}

export interface CurlResult {
  /** curl's exit status: 0 answered, 7 could not connect (refused), 28 timed out, ... */
  exit: number | null;
  status: number | null;
  headers: Record<string, string>;
  body: string;
  json: Record<string, unknown> | undefined;
  ms: number;
}

export interface ClientResult {
  ok: boolean;
  clientId: string | null;
  error: string | null;
  ms: number;
}

export interface DaemonRun {
  proc: NsProcess;
  startedAt: number;
  /** Date.now() at spawn, to compare with the daemon's log times. */
  startedAtEpoch: number;
  /** When /readyz first answered 200 (performance.now()). */
  readyAt?: number;
  /** `iptables -t nat -S aad-metadata` read right after that first 200. */
  rulesAtFirstReady?: string[];
  /** Where its /readyz is (its --http-probe-port). */
  probePort: number;
}

/** A daemon started with a command line of the test's choosing instead of the environment's own. */
export interface DaemonLaunch {
  /** Everything after cli.ts. */
  argv: string[];
  /** Added to the process environment (after PROCESS_ENV's blanks). */
  env?: Record<string, string>;
}

/** Everything a node process needs that the test process's environment must not leak into. */
const PROCESS_ENV = { NODE_OPTIONS: '', KUBECONFIG: '', NODE_NAME: '', FORCENAMESPACED: '' };

export class E2E {
  readonly node: NetnsNode;
  readonly dir: string;
  readonly home: string;
  readonly kubeconfig: string;
  readonly pods = {} as Record<PodKey, PodNs>;
  api!: LineProcess;
  imds!: LineProcess;
  /** The fake API server's own temp dir (removed when it shuts down cleanly). */
  apiDir = '';
  /** Every daemon started, in order; the last one is the current one. */
  readonly daemons: DaemonRun[] = [];
  /** Rewrites the daemon's flags before each start (e.g. add --manage-iptables=false to watch the test catch a bypass). */
  daemonFlags: (flags: string[]) => string[] = (f) => f;
  /** Starts the daemon's process in the node (hostNetwork tests put it in a pod cgroup with nsenter instead). */
  launchDaemon: (cmd: string, args: string[], env: Record<string, string>) => NsProcess = (cmd, args, env) => this.node.spawn(cmd, args, env);
  #destroyed = false;

  private constructor(node: NetnsNode, dir: string) {
    this.node = node;
    this.dir = dir;
    this.home = join(dir, 'home');
    mkdirSync(this.home);
    this.kubeconfig = join(dir, 'kubeconfig.yaml');
  }

  static async start(): Promise<E2E> {
    const dir = mkdtempSync(join(tmpdir(), 'podid-e2e-'));
    let node: NetnsNode;
    try {
      node = await createNode({ gatewayIp: NODE_GATEWAY });
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    const env = new E2E(node, dir);
    try {
      await env.#init();
    } catch (err) {
      await env.destroy();
      throw err;
    }
    return env;
  }

  async #init(): Promise<void> {
    await this.node.addLoopbackAddress('169.254.169.254/32');
    for (const [key, spec] of Object.entries(PODS) as Array<[PodKey, (typeof PODS)[PodKey]]>) {
      this.pods[key] = await this.node.addPod(spec.name, spec.ip);
    }
    this.api = new LineProcess(this.node.ns, nodeBinary, [here('./apiserver-process.ts'), '--kubeconfig-out', this.kubeconfig], PROCESS_ENV);
    this.imds = new LineProcess(this.node.ns, nodeBinary, [here('./imds-process.ts'), '--identities', JSON.stringify(IMDS_IDENTITIES)], PROCESS_ENV);
    const [apiReady] = await Promise.all([
      this.api.waitFor((l) => l.event === 'ready', 'the fake API server', 60_000),
      this.imds.waitFor((l) => l.event === 'ready', 'the IMDS emulator', 60_000),
    ]);
    this.apiDir = String(apiReady.dir);
    for (const { resource, object } of clusterObjects()) await this.api.request({ op: 'create', resource, object });
  }

  // ---- the daemon ----

  get daemon(): NsProcess {
    const run = this.daemons.at(-1);
    if (run === undefined) throw new Error('no daemon started');
    return run.proc;
  }

  /** Spawns the daemon in the node namespace, without waiting for it. */
  spawnDaemon(launch?: DaemonLaunch): DaemonRun {
    const flags = launch?.argv ?? this.daemonFlags([
      '--kubeconfig', this.kubeconfig, '--node', NODE_NAME, '--operation-mode=managed',
      '--manage-iptables', '--ipt-update-interval-sec=1',
      '--nmi-port', '2579',
      '--http-probe-port', String(PROBE_PORT), '--prometheus-port', String(METRICS_PORT),
      '--probe-listen-address', '127.0.0.1', '--log-format', 'json',
    ]);
    let probePort = PROBE_PORT;
    try {
      probePort = Number(parseFlags(flags).values['http-probe-port']);
    } catch {
      // A command line the daemon will refuse: it exits, and waitDaemonReady says so.
    }
    const proc = this.launchDaemon(nodeBinary, [CLI, ...flags], { ...PROCESS_ENV, ...launch?.env });
    const run: DaemonRun = { proc, startedAt: performance.now(), startedAtEpoch: Date.now(), probePort };
    this.daemons.push(run);
    return run;
  }

  /**
   * Starts the daemon; resolves when /readyz says 200 and the daemon has logged that it is
   * listening (which it does once the rules are in place).
   */
  async startDaemon(readyTimeoutMs = 60_000, launch?: DaemonLaunch): Promise<DaemonRun> {
    const run = this.spawnDaemon(launch);
    await this.waitDaemonReady(run, readyTimeoutMs);
    return run;
  }

  async waitDaemonReady(run: DaemonRun, timeoutMs = 60_000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    let last = '';
    while (performance.now() < deadline) {
      const proc = run.proc;
      if (!proc.running) throw new Error(`daemon exited (${proc.child.exitCode}) before it was ready: ${proc.stderr.trim() || proc.stdout.trim().slice(-3000)}`);
      if (run.readyAt === undefined) {
        const r = await this.readyz(run);
        last = `${r.status} ${r.body.trim()}`;
        if (r.status === 200) {
          run.readyAt = performance.now();
          run.rulesAtFirstReady = await this.chainRules();
        }
      }
      if (run.readyAt !== undefined && /"msg":"podid-nmi listening"/.test(proc.stdout)) return;
      await sleep(50);
    }
    throw new Error(`daemon not ready within ${timeoutMs} ms (last /readyz: ${last}); log tail: ${run.proc.stdout.slice(-3000)} ${run.proc.stderr.slice(-2000)}`);
  }

  /** GET /readyz of `run`, from inside the node namespace (status 0: no answer). */
  async readyz(run: DaemonRun): Promise<{ status: number; body: string }> {
    const r = await this.node.exec('curl', ['-s', '-w', '\n@@%{http_code}', '--max-time', '1', `http://127.0.0.1:${run.probePort}/readyz`], { allowFail: true, timeoutMs: 3_000 });
    const at = r.stdout.lastIndexOf('\n@@');
    return at === -1 ? { status: 0, body: '' } : { status: Number(r.stdout.slice(at + 3)) || 0, body: r.stdout.slice(0, at) };
  }

  /** Resolves with the first JSON log line of `run` that satisfies `match` (bounded). */
  async waitDaemonLog(run: DaemonRun, match: (line: Json) => boolean, what: string, timeoutMs = 10_000): Promise<Json> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      const found = parseLog(run.proc.stdout).find(match);
      if (found !== undefined) return found;
      if (!run.proc.running) break;
      await sleep(10);
    }
    throw new Error(`daemon did not log ${what} within ${timeoutMs} ms; log tail: ${run.proc.stdout.slice(-3000)} ${run.proc.stderr.slice(-2000)}`);
  }

  /** SIGTERM and the exit code (null when it had to be killed after `timeoutMs`). */
  async stopDaemon(timeoutMs = 10_000): Promise<number | null> {
    const proc = this.daemon;
    if (!proc.running) return proc.child.exitCode;
    proc.child.kill('SIGTERM');
    const code = await Promise.race([proc.exited, sleep(timeoutMs).then(() => 'timeout' as const)]);
    if (code === 'timeout') {
      await proc.kill();
      return null;
    }
    return code;
  }

  /** The JSON log lines of one daemon run. */
  runLog(run: DaemonRun): Json[] {
    return parseLog(run.proc.stdout);
  }

  /** The JSON log lines of every daemon run so far. */
  daemonLog(): Json[] {
    return this.daemons.flatMap((run) => parseLog(run.proc.stdout));
  }

  /** The iptables flavour the current daemon picked (from its log). */
  backend(): Backend {
    const line = this.daemonLog().findLast((l) => l.msg === 'iptables backend detected');
    return line?.backend === 'legacy' ? 'legacy' : 'nft';
  }

  /** `iptables -t nat …` inside the node namespace, with the daemon's flavour. */
  iptables(...args: string[]): Promise<{ stdout: string; stderr: string; code: number | null }> {
    return this.node.exec(`iptables-${this.backend()}`, ['-w', '5', '-t', 'nat', ...args], { allowFail: true });
  }

  /** `iptables -t nat -S aad-metadata`, as lines ('' when the chain does not exist). */
  async chainRules(): Promise<string[]> {
    const r = await this.iptables('-S', 'aad-metadata');
    return r.code === 0 ? r.stdout.split('\n').filter((l) => l !== '') : [];
  }

  // ---- the emulator's record ----

  /** Every request the emulator has received up to now. */
  async imdsRequests(): Promise<ImdsRequest[]> {
    // The emulator prints every request before its reply to the flush, and lines are read in order.
    const { count } = await this.imds.request({ op: 'flush' });
    const all = this.imds.lines.filter((l) => l.event === 'request') as unknown as ImdsRequest[];
    if (all.length !== count) throw new Error(`the emulator reported ${String(count)} requests, ${all.length} were read`);
    return all;
  }

  // ---- the pods' clients ----

  /** argv that runs `cmd` with a clean environment: no AZURE_*, IDENTITY_*, MSI_*, proxies, NODE_OPTIONS. */
  #clean(cmd: string, args: readonly string[]): string[] {
    return ['-i', `PATH=${CLEAN_PATH}`, `HOME=${this.home}`, 'LANG=C.UTF-8', cmd, ...args];
  }

  /** curl from a pod to http://169.254.169.254`path` with `Metadata: true` (unless `metadata: false`). */
  async curl(pod: PodKey, path: string, opts: { maxTimeSec?: number; metadata?: boolean } = {}): Promise<CurlResult> {
    const started = performance.now();
    const args = ['-s', '-D', '-', '--max-time', String(opts.maxTimeSec ?? 5), '--noproxy', '*', '-w', '\n@@status=%{http_code}'];
    if (opts.metadata !== false) args.push('-H', 'Metadata: true');
    args.push(`http://169.254.169.254${path}`);
    const r = await this.pods[pod].exec('env', this.#clean('curl', args), { allowFail: true, timeoutMs: ((opts.maxTimeSec ?? 5) + 5) * 1000 });
    return parseCurl(r.stdout, r.code, performance.now() - started);
  }

  /**
   * Pod `pod` asks every `intervalMs` with curl --max-time `maxTimeSec`, from one shell loop
   * inside the pod (one process per request, so the loop itself loads the machine little),
   * until `stop()` is called; bounded by `maxCount` requests and `maxMs`, whichever comes first.
   */
  curlLoop(pod: PodKey, path: string, opts: { intervalMs: number; maxTimeSec: number; maxCount: number; maxMs: number }): { stop(): void; done: Promise<LoopResult[]> } {
    const stopFile = join(this.dir, `stop-loop-${Math.random().toString(36).slice(2)}`);
    const url = `http://169.254.169.254${path}`;
    const script = `
      deadline=$(( \${EPOCHREALTIME/./} / 1000 + ${Math.round(opts.maxMs)} ))
      n=0
      while [ "$n" -lt ${Math.round(opts.maxCount)} ] && [ ! -e "$1" ]; do
        now=$(( \${EPOCHREALTIME/./} / 1000 ))
        [ "$now" -ge "$deadline" ] && break
        body=$(curl -s --noproxy '*' --max-time ${opts.maxTimeSec} -H 'Metadata: true' -w ' @@status=%{http_code}' "$2")
        rc=$?
        printf '@@ %s %s %s\n' "$now" "$rc" "\${body//$'\n'/ }"
        n=$((n + 1))
        sleep ${(opts.intervalMs / 1000).toFixed(3)}
      done
    `;
    const done = this.pods[pod].exec('env', this.#clean('bash', ['-c', script, 'curl-loop', stopFile, url]),
      { allowFail: true, timeoutMs: opts.maxMs + (opts.maxTimeSec + 5) * 1000 })
      .then((r) => {
        rmSync(stopFile, { force: true });
        return r.stdout.split('\n').filter((l) => l.startsWith('@@ ')).map(parseLoopLine);
      });
    return { stop: () => writeFileSync(stopFile, ''), done };
  }

  /** Runs one client script (test/e2e/clients/NAME.ts) in a pod; its one JSON line, parsed. */
  async client(pod: PodKey, name: 'default-azure-credential' | 'managed-identity-credential' | 'msal-managed-identity', args: string[] = [], timeoutMs = 15_000): Promise<ClientResult> {
    const r = await execIn(this.pods[pod].ns, 'env', this.#clean(nodeBinary, [`${CLIENTS}${name}.ts`, ...args, '--timeout-ms', String(timeoutMs)]),
      { allowFail: true, timeoutMs: timeoutMs + 10_000 });
    const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
    if (line === undefined) return { ok: false, clientId: null, error: `no result line (exit ${r.code}): ${r.stderr.trim().slice(-2000)}`, ms: NaN };
    return JSON.parse(line) as ClientResult;
  }

  // ---- teardown ----

  /** Kills every process, deletes every namespace (and with them links and rules), removes files. Idempotent. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    await Promise.allSettled([
      ...this.daemons.map((d) => d.proc.kill()),
      this.api?.close(),
      this.imds?.close(),
    ]);
    await this.node.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function parseLog(stdout: string): Json[] {
  const out: Json[] = [];
  for (const text of stdout.split('\n')) {
    if (!text.startsWith('{')) continue;
    try { out.push(JSON.parse(text) as Json); } catch { /* a partial line */ }
  }
  return out;
}

function parseCurl(stdout: string, exit: number | null, ms: number): CurlResult {
  const marker = stdout.lastIndexOf('\n@@status=');
  const status = marker === -1 ? null : Number(stdout.slice(marker + '\n@@status='.length).trim());
  const raw = marker === -1 ? stdout : stdout.slice(0, marker);
  const split = raw.indexOf('\r\n\r\n');
  const head = split === -1 ? '' : raw.slice(0, split);
  const body = split === -1 ? raw : raw.slice(split + 4);
  const headers: Record<string, string> = {};
  for (const line of head.split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let json: Record<string, unknown> | undefined;
  try { json = JSON.parse(body) as Record<string, unknown>; } catch { json = undefined; }
  return { exit, status: status === 0 ? null : status, headers, body, json, ms: Math.round(ms) };
}

export interface LoopResult {
  /** Date.now() when the request started. */
  at: number;
  /** curl's exit status: 0 answered, 7 could not connect (refused), 28 timed out, ... */
  exit: number;
  status: number | null;
  json: Record<string, unknown> | undefined;
  raw: string;
}

function parseLoopLine(line: string): LoopResult {
  const m = /^@@ (\d+) (\d+) (.*?) ?@@status=(\d{3})\s*$/.exec(line);
  const [, at = '0', exit = '-1', body = '', status = '000'] = m ?? /^@@ (\d+) (\d+) ?(.*)$/.exec(line) ?? [];
  let json: Record<string, unknown> | undefined;
  try { json = JSON.parse(body) as Record<string, unknown>; } catch { json = undefined; }
  return { at: Number(at), exit: Number(exit), status: status === '000' ? null : Number(status), json, raw: line.slice(0, 300) };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Is `address` (possibly IPv4-mapped) one of the pods' addresses, or another in their range? */
export function isPodAddress(address: string): boolean {
  const ip = address.replace(/^::ffff:/, '');
  return ip.startsWith('10.250.') && ip !== NODE_GATEWAY;
}
