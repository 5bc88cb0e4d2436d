// Cgroups for tests that need sockets in pod cgroups: a private subtree of the cgroup v2
// hierarchy (podid-test-<random>, used as --kubepods-cgroup-parent), kubelet's layouts inside
// it, and processes this test starts placed into them. Only processes we started are moved;
// everything is removed on teardown.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';

export interface TeardownHost {
  teardown(fn: () => unknown): void;
}

/** Where cgroup v2 is mounted here (a pure v2 host, or the hybrid layout of these machines). */
export function cgroup2Root(): string | undefined {
  for (const dir of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) {
    if (existsSync(join(dir, 'cgroup.procs')) && existsSync(join(dir, 'cgroup.controllers'))) return dir;
  }
  return undefined;
}

export function cgroupsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'cgroups need root';
  if (cgroup2Root() === undefined) return 'no cgroup v2 hierarchy';
  return null;
}

export type Qos = 'guaranteed' | 'burstable' | 'besteffort';

export class TestCgroups {
  readonly root: string;
  /** The subtree, relative to the hierarchy root: pass as --kubepods-cgroup-parent. */
  readonly parent: string;
  readonly #dirs: string[] = [];
  readonly #children = new Set<ChildProcess>();

  constructor(t: TeardownHost) {
    this.root = cgroup2Root()!;
    this.parent = `podid-test-${randomBytes(4).toString('hex')}`;
    this.#mkdir(this.parent);
    t.teardown(() => this.destroy());
    // A test killed by tap's timeout never reaches its teardown: sweep at exit, best effort.
    process.once('exit', () => this.#sweepSync());
  }

  #sweepSync(): void {
    for (const c of this.#children) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
    for (const dir of [...this.#dirs].reverse()) { try { rmdirSync(join(this.root, dir)); } catch { /* gone or busy */ } }
  }

  /** A container cgroup of a pod in kubelet's `driver` layout; returns its path relative to the root. */
  podContainer(driver: 'systemd' | 'cgroupfs', qos: Qos, uid: string, container = 'c1'): string {
    const p = this.parent;
    const u = uid.replaceAll('-', '_');
    const dirs = driver === 'systemd'
      ? qos === 'guaranteed'
        ? ['kubepods.slice', `kubepods-pod${u}.slice`, `cri-containerd-${container}.scope`]
        : ['kubepods.slice', `kubepods-${qos}.slice`, `kubepods-${qos}-pod${u}.slice`, `cri-containerd-${container}.scope`]
      : qos === 'guaranteed'
        ? ['kubepods', `pod${uid}`, container]
        : ['kubepods', qos, `pod${uid}`, container];
    let path = p;
    for (const d of dirs) this.#mkdir((path = `${path}/${d}`));
    return path;
  }

  /** A plain cgroup under the subtree (a node process outside kubepods). */
  plain(name: string): string {
    const path = `${this.parent}/${name}`;
    this.#mkdir(path);
    return path;
  }

  /** Runs `cmd` as a process placed in cgroup `path` before it execs; resolves with its output. */
  run(path: string, cmd: string, args: readonly string[], opts: { prefix?: readonly string[]; timeoutMs?: number; env?: Record<string, string> } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = execFile('bash', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', join(this.root, path), ...(opts.prefix ?? []), cmd, ...args],
        { timeout: opts.timeoutMs ?? 20_000, killSignal: 'SIGKILL', encoding: 'utf8', env: { ...process.env, ...opts.env } },
        (err, stdout, stderr) => {
          this.#children.delete(child);
          resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr });
        });
      this.#children.add(child);
    });
  }

  /** A long-running process in cgroup `path` (e.g. the daemon); killed on teardown. */
  spawn(path: string, cmd: string, args: readonly string[], opts: { prefix?: readonly string[]; env?: Record<string, string> } = {}): ChildProcess {
    const child = spawn('bash', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', join(this.root, path), ...(opts.prefix ?? []), cmd, ...args],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
    this.#children.add(child);
    child.on('exit', () => this.#children.delete(child));
    return child;
  }

  /** The cgroup v2 path (relative) a process of ours is in. */
  cgroupOf(pid: number): string {
    const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'));
    return (line ?? '0::').slice(3).replace(/^\//, '');
  }

  async destroy(): Promise<void> {
    await Promise.all([...this.#children].map((c) => new Promise<void>((resolve) => {
      if (c.exitCode !== null || c.signalCode !== null) return resolve();
      c.once('exit', () => resolve());
      c.kill('SIGKILL');
    })));
    // Deepest first; a cgroup whose last process has just exited can take a moment to empty.
    for (const dir of [...this.#dirs].reverse()) {
      for (let i = 0; i < 50; i++) {
        try { rmdirSync(join(this.root, dir)); break; } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') break;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    }
  }

  #mkdir(path: string): void {
    const full = join(this.root, path);
    if (existsSync(full)) return;
    mkdirSync(full);
    this.#dirs.push(path);
  }
}

/** curl's answer parsed from `-s -w '\n@@%{http_code}'` output. */
export function parseCurlOut(stdout: string): { status: number; body: string; json: Record<string, unknown> | undefined } {
  const at = stdout.lastIndexOf('\n@@');
  const status = at === -1 ? 0 : Number(stdout.slice(at + 3).trim());
  const body = at === -1 ? stdout : stdout.slice(0, at);
  let json: Record<string, unknown> | undefined;
  try { json = JSON.parse(body) as Record<string, unknown>; } catch { json = undefined; }
  return { status, body, json };
}
