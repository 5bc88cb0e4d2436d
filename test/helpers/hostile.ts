// Shared by the hostile-pod tests: the victim beside every attacker, and metric sums.
import type { Test } from 'tap';
import { META } from './http.ts';
import { IDS, TOKEN, type Stack } from './stack.ts';

export const VICTIM = '127.0.0.10';
export const UNLABELLED = '127.0.0.11'; // shop/web, uid u-11: a pod with no identity
export const MEMORY_LIMIT_MIB = 512;

/** The victim asks `n` times, one after another; every answer must be its own token. */
export async function victimServed(t: Test, s: Stack, n: number, what: string): Promise<void> {
  for (let i = 0; i < n; i++) {
    const a = await s.ask(TOKEN, { from: VICTIM, headers: META, timeoutMs: 30_000 });
    t.equal(a.status, 200, `${what}: victim's request ${i + 1} answered 200`);
    t.equal(a.json?.client_id, IDS.reader!.clientID, `${what}: victim's request ${i + 1} got its own identity`);
  }
}

/** Sum of the samples whose line matches. */
export function metric(text: string, pattern: RegExp): number {
  let sum = 0;
  for (const line of text.split('\n')) if (pattern.test(line)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}
