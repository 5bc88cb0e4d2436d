// The benches' child processes: started, awaited until they print that they are ready, and
// killed when the bench exits, however it exits.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Every process a bench started; killed (SIGTERM) on exit. */
export const spawned: ChildProcess[] = [];
process.on('exit', () => spawned.forEach((c) => c.kill('SIGTERM')));

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  /** Default 15 s. */
  timeoutMs?: number;
  /** Sees all output, before and after ready (the pipes are drained for the whole run either way). */
  onOutput?(chunk: Buffer): void;
}

/** Spawns `command args` and resolves once its output contains `ready`; rejects if it exits or stays silent first. */
export function startProcess(command: string, args: readonly string[], ready: string, o: StartOptions = {}): Promise<ChildProcess> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(o.env === undefined ? {} : { env: o.env }) });
  spawned.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    let started = false;
    const timer = setTimeout(() => reject(new Error(`did not start: ${out}`)), o.timeoutMs ?? 15_000);
    const on = (d: Buffer): void => {
      o.onOutput?.(d);
      if (started) return;
      out += d.toString();
      if (out.includes(ready)) { started = true; clearTimeout(timer); resolve(child); }
    };
    child.stdout!.on('data', on);
    child.stderr!.on('data', on);
    child.once('exit', (code) => { clearTimeout(timer); if (!started) reject(new Error(`exited ${code}: ${out}`)); });
  });
}

/** CPU time (user + system) a process has used, in seconds. */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** A process's resident set (VmRSS), in MiB; 0 once it is gone. */
export function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? 0 : Number(m[1]) / 1024;
  } catch {
    return 0;
  }
}

/** CPU time all of a process's threads have used, in nanoseconds (schedstat: finer than `cpuSeconds`' clock ticks). */
export function cpuNanos(pid: number): number {
  let total = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      total += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return total;
}
