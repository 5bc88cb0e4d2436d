// A long-running helper process inside a network namespace, driven by JSON lines: commands go
// to its stdin, replies and events come back on its stdout. The netns helper's spawn has no
// stdin, so this one spawns `ip netns exec` itself; it is killed on close(), on test teardown
// and, as a last resort, when the test process exits. The helpers it runs also exit on their
// own when their stdin closes, so a test process that dies takes them along.
import { spawn } from 'node:child_process';
import { NsProcess } from '../netns/netns.ts';

export type Json = Record<string, unknown>;

const live = new Set<NsProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const proc of live) {
      try { proc.child.kill('SIGKILL'); } catch { /* already gone */ }
    }
  });
}

export class LineProcess {
  readonly proc: NsProcess;
  /** Every JSON line printed so far (replies and events), in order. */
  readonly lines: Json[] = [];
  readonly #pending = new Map<number, { resolve: (v: Json) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  readonly #listeners = new Set<(line: Json) => void>();
  #nextId = 1;
  #partial = '';

  constructor(ns: string, cmd: string, args: readonly string[], env: Record<string, string> = {}) {
    installExitHook();
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env },
    });
    child.stdin.on('error', () => { /* the process is gone; exited handles it */ });
    this.proc = new NsProcess(child);
    live.add(this.proc);
    child.stdout.on('data', (chunk: string) => this.#onData(chunk));
    void this.proc.exited.then(() => {
      live.delete(this.proc);
      for (const [id, p] of this.#pending) {
        clearTimeout(p.timer);
        p.reject(new Error(`${cmd} exited before answering command ${id}: ${this.proc.stderr.trim().slice(-2000)}`));
      }
      this.#pending.clear();
    });
  }

  /** Sends one command and resolves with the reply carrying its id (rejects on `ok: false`). */
  request(command: Json, timeoutMs = 5_000): Promise<Json> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`no answer to ${JSON.stringify(command)} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      this.proc.child.stdin?.write(`${JSON.stringify({ ...command, id })}\n`);
    });
  }

  /** Resolves with the first line (already printed or to come) that satisfies `match`. */
  waitFor(match: (line: Json) => boolean, what: string, timeoutMs = 10_000): Promise<Json> {
    const seen = this.lines.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const done = (fn: () => void): void => {
        clearTimeout(timer);
        this.#listeners.delete(listener);
        clearInterval(exitCheck);
        fn();
      };
      const listener = (line: Json): void => { if (match(line)) done(() => resolve(line)); };
      const timer = setTimeout(() => done(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stderr: ${this.proc.stderr.trim().slice(-2000)}`))), timeoutMs);
      const exitCheck = setInterval(() => {
        if (!this.proc.running) done(() => reject(new Error(`process exited while waiting for ${what}: ${this.proc.stderr.trim().slice(-2000)}`)));
      }, 50);
      this.#listeners.add(listener);
    });
  }

  /** Closes stdin (the helper shuts down cleanly), then kills it if it is still there. */
  async close(graceMs = 2_000): Promise<void> {
    if (this.proc.running) {
      this.proc.child.stdin?.end();
      await Promise.race([this.proc.exited, new Promise((r) => setTimeout(r, graceMs))]);
    }
    await this.proc.kill();
  }

  #onData(chunk: string): void {
    this.#partial += chunk;
    let nl: number;
    while ((nl = this.#partial.indexOf('\n')) !== -1) {
      const text = this.#partial.slice(0, nl).trim();
      this.#partial = this.#partial.slice(nl + 1);
      if (text === '') continue;
      let line: Json;
      try {
        line = JSON.parse(text) as Json;
      } catch {
        continue; // not ours (a stray print); ignored
      }
      this.lines.push(line);
      const id = line.id;
      if (typeof id === 'number' && this.#pending.has(id)) {
        const p = this.#pending.get(id)!;
        this.#pending.delete(id);
        clearTimeout(p.timer);
        if (line.ok === false) p.reject(new Error(`command ${id} failed: ${String(line.error)}`));
        else p.resolve(line);
      }
      for (const listener of [...this.#listeners]) listener(line);
    }
  }
}
